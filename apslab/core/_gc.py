"""Pausing Python's cyclic garbage collector around bulk work.

Reading, simulating and writing a million requests create millions of short-lived tuples and
lists and no reference cycles. The collector, triggered by those allocations, would rescan every
long-lived object (a ten-thousand-tenant scenario is a hundred thousand of them) again and again
for nothing; pausing it around the bulk loops removes that cost and nothing else.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic collector inside the block (restoring its state afterwards)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
