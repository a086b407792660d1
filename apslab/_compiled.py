"""The optional compiled kernels (apslab/_eventloop.c), loaded with ctypes when they are built.

``pip install`` compiles them when a C compiler is present; without one, everything uses the
pure Python paths, which give bit-identical results (the tests compare both). Nothing here uses
the Python C API: the library takes numpy buffers and plain numbers.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
from pathlib import Path

_DOUBLE_P = ctypes.POINTER(ctypes.c_double)
_INT64_P = ctypes.POINTER(ctypes.c_int64)
_UINT8_P = ctypes.POINTER(ctypes.c_uint8)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built library with its functions' signatures set, or None."""
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_eventloop{suffix}"
        if not path.exists():
            continue
        try:
            lib = ctypes.CDLL(str(path))
            loop, walk = lib.apslab_run_event_loop, lib.apslab_walk_buckets
        except (OSError, AttributeError):
            return None
        loop.restype = ctypes.c_int64
        loop.argtypes = [
            ctypes.c_int64, _DOUBLE_P, _INT64_P, _DOUBLE_P, _INT64_P, _INT64_P,  # candidates
            ctypes.c_int64, ctypes.c_double, ctypes.c_int64, ctypes.c_int64,  # rules
            ctypes.c_double, _DOUBLE_P,  # prefill rate, decode rate by batch size
            _INT64_P, _INT64_P, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, _INT64_P, _INT64_P,  # outputs
        ]
        walk.restype = None
        walk.argtypes = [
            ctypes.c_int64, _DOUBLE_P, _INT64_P, _UINT8_P, _UINT8_P, _UINT8_P, _INT64_P,
            _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, _DOUBLE_P, _UINT8_P,
        ]
        return lib
    return None


def available() -> bool:
    """Whether the compiled kernels were built with this installation."""
    return library() is not None


def pointer(array):
    """A ctypes pointer to a contiguous float64, int64, uint8 or bool numpy array."""
    kind = {"f": ctypes.c_double, "i": ctypes.c_int64, "u": ctypes.c_uint8,
            "b": ctypes.c_uint8}[array.dtype.kind]
    return array.ctypes.data_as(ctypes.POINTER(kind))
