"""The optional compiled event loops (apslab/sim/_eventloop.c), loaded with ctypes when built.

Without a C compiler the engines run their pure Python loops, which give bit-identical results
(tests/test_accelerator.py compares both).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from ..core._native import DOUBLE_P, INT64_P, UINT8_P, load_library, pointer

__all__ = ["ContinuousIteration", "available", "continuous_loop", "function", "library",
           "pointer", "service_difference_replay"]

INT32_P = ctypes.POINTER(ctypes.c_int32)
UINT64_P = ctypes.POINTER(ctypes.c_uint64)


class ContinuousIteration(ctypes.Structure):
    """One row of the compiled continuous loop's iteration log (the C struct of that name)."""

    _fields_ = [("gpu", ctypes.c_int64), ("start_s", ctypes.c_double),
                ("duration_s", ctypes.c_double), ("requests", ctypes.c_int64),
                ("prefill_tokens", ctypes.c_int64), ("decode_tokens", ctypes.c_int64),
                ("blocks_used", ctypes.c_int64), ("preempted", ctypes.c_int64)]


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built event-loop library with its functions' signatures set, or None."""
    lib = load_library(Path(__file__).parent, "_eventloop")
    if lib is None:
        return None
    try:
        loop = lib.apslab_run_event_loop
    except AttributeError:
        return None
    loop.restype = ctypes.c_int64
    loop.argtypes = [
        ctypes.c_int64, DOUBLE_P, INT64_P, DOUBLE_P, INT64_P, INT64_P,  # candidates
        ctypes.c_int64, ctypes.c_double, ctypes.c_int64, ctypes.c_int64,  # rules
        ctypes.c_double, DOUBLE_P,  # prefill rate, decode rate by batch size
        INT64_P, INT64_P, DOUBLE_P, DOUBLE_P, DOUBLE_P, INT64_P, INT64_P,  # outputs
    ]
    continuous = getattr(lib, "apslab_run_continuous", None)
    if continuous is not None:
        continuous.restype = ctypes.c_int64
        continuous.argtypes = [
            ctypes.c_int64, DOUBLE_P, INT64_P, INT64_P, INT64_P, INT64_P, INT64_P,  # candidates
            ctypes.c_int64,  # trace rows
            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # gpus, blocks, ...
            ctypes.c_int64, ctypes.c_double, ctypes.c_int64,  # budget, window, policy code
            ctypes.c_int64, DOUBLE_P, ctypes.c_double, ctypes.c_double,  # VTC
            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # IterationCost ints
            ctypes.c_double, ctypes.c_double, ctypes.c_double,  # its floats
            ctypes.c_int64, DOUBLE_P, DOUBLE_P, DOUBLE_P, DOUBLE_P,  # queue limit, buckets
            DOUBLE_P, DOUBLE_P, DOUBLE_P, INT64_P, DOUBLE_P, INT32_P, UINT8_P,  # per request
            INT64_P, UINT64_P, DOUBLE_P, DOUBLE_P,  # totals
            ctypes.c_int64,  # track the service difference
            ctypes.c_int64, ctypes.POINTER(ctypes.POINTER(ContinuousIteration)), INT64_P,  # log
        ]
        lib.apslab_free_continuous_log.restype = None
        lib.apslab_free_continuous_log.argtypes = [ctypes.POINTER(ContinuousIteration)]
    replay = getattr(lib, "apslab_replay_service_difference", None)
    if replay is not None:
        replay.restype = ctypes.c_double
        replay.argtypes = [ctypes.c_int64, DOUBLE_P, UINT8_P, INT64_P, DOUBLE_P, ctypes.c_int64]
    return lib


def available() -> bool:
    """Whether the compiled event loop was built with this installation."""
    return library() is not None


def function(name: str):
    """The library's function ``name`` (e.g. ``apslab_run_event_loop``, its signature set by
    :func:`library`) as a ctypes function, or None when it is not built."""
    lib = library()
    return getattr(lib, name, None) if lib is not None else None


# The loaders other modules name (apslab.sim.summary, the benchmarks, the tests, the docs).
continuous_loop = functools.partial(function, "apslab_run_continuous")
service_difference_replay = functools.partial(function, "apslab_replay_service_difference")


def free_continuous_log(log) -> None:
    """Release an iteration log the compiled continuous loop returned."""
    library().apslab_free_continuous_log(log)
