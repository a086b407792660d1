"""Loading apslab's optional compiled kernels with ctypes, and passing numpy columns to them.

``pip install`` compiles the C files beside the modules that use them (the token-bucket walk
here in core, the event loops in :mod:`apslab.sim`) when a C compiler is present; without one,
everything uses the pure Python paths, which give bit-identical results (the tests compare
both). Nothing uses the Python C API: the libraries take numpy buffers and plain numbers.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
from pathlib import Path

DOUBLE_P = ctypes.POINTER(ctypes.c_double)
INT64_P = ctypes.POINTER(ctypes.c_int64)
UINT8_P = ctypes.POINTER(ctypes.c_uint8)


def load_library(directory: Path, stem: str) -> ctypes.CDLL | None:
    """The extension ``stem`` built in ``directory`` (e.g. ``_bucket_walk``), or None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = directory / f"{stem}{suffix}"
        if path.exists():
            try:
                return ctypes.CDLL(str(path))
            except OSError:
                return None
    return None


def pointer(array):
    """A ctypes pointer to a contiguous float64, int64, uint8 or bool numpy array."""
    kind = {"f": ctypes.c_double, "i": ctypes.c_int64, "u": ctypes.c_uint8,
            "b": ctypes.c_uint8}[array.dtype.kind]
    return array.ctypes.data_as(ctypes.POINTER(kind))
