"""The optional compiled event loops (apslab/sim/_eventloop.c), loaded with ctypes when built.

Without a C compiler the engines run their pure Python loops, which give bit-identical results
(tests/test_accelerator.py compares both).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from ..core._native import DOUBLE_P, INT64_P, load_library, pointer

__all__ = ["available", "library", "pointer"]


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
    return lib


def available() -> bool:
    """Whether the compiled event loop was built with this installation."""
    return library() is not None


def continuous_loop():
    """The compiled continuous-batching loop as a ctypes function, or None when not built."""
    lib = library()
    return getattr(lib, "apslab_run_continuous", None) if lib is not None else None
