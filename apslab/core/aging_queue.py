"""Priority queues with aging (APS): a lazy O(log n) one and an eager one for teaching.

A waiting request's effective priority at time ``now`` is

    priority_bid + aging_per_s * (now - arrival_s)

and the highest goes first; ties go to the earlier arrival, then to the lower request id.
Every waiting request ages at the same rate, so the *difference* between two effective
priorities never changes. The order is therefore the order of the time-independent key

    priority_bid - aging_per_s * arrival_s

which is computed once at push time: nothing is ever re-heapified ("lazy aging"). The eager
queue recomputes every priority and re-heapifies on each pop, O(n) per pop; it exists to show
that both give the same order and what laziness saves.

Both queues hold entries ``(-key, arrival_s, request_id, item)`` (the eager one as lists whose
first field it rewrites). The lazy queue also defers ordering: pushes go to an unordered
``pending`` list in O(1) and are merged into the heap only when an order is needed. A batch that
takes every waiting request never needs one (see :mod:`apslab.core.batcher`).
"""

from __future__ import annotations

import heapq
from typing import Any


def static_priority_key(priority_bid, arrival_s, aging_per_s):
    """The time-independent key: higher goes first. Works on scalars and numpy arrays."""
    return priority_bid - aging_per_s * arrival_s


def effective_priority(priority_bid, arrival_s, aging_per_s, now_s):
    """The aged priority at ``now_s``: the seed's bid plus aging for the time waited."""
    return priority_bid + aging_per_s * (now_s - arrival_s)


def queue_entry(request_id: int, priority_bid: float, arrival_s: float, aging_per_s: float,
                item: Any = None) -> tuple[float, float, int, Any]:
    """The entry both queues order by: ``-key`` first so a min-heap pops the highest key."""
    return (-static_priority_key(priority_bid, arrival_s, aging_per_s), arrival_s, request_id,
            item)


class LazyAgingQueue:
    """The lazy-aging queue: push O(1), pop O(log n) amortised, keys never updated.

    ``heap`` is a binary min-heap of entries; ``pending`` holds entries pushed since the last
    :meth:`prepare`. ``push_entry`` is ``pending.append`` itself, so a caller that built entries
    in bulk (the simulator) pushes without a Python call per request. ``now_s`` arguments are
    accepted for symmetry with the eager queue; the order does not depend on them.
    """

    __slots__ = ("aging_per_s", "heap", "pending", "push_entry")

    def __init__(self, aging_per_s: float = 0.0) -> None:
        if not aging_per_s >= 0:
            raise ValueError(f"aging_per_s must be >= 0, got {aging_per_s!r}")
        self.aging_per_s = float(aging_per_s)
        self.heap: list[tuple[float, float, int, Any]] = []
        self.pending: list[tuple[float, float, int, Any]] = []
        self.push_entry = self.pending.append

    def __len__(self) -> int:
        return len(self.heap) + len(self.pending)

    def __bool__(self) -> bool:
        return bool(self.heap) or bool(self.pending)

    def push(self, request_id: int, priority_bid: float, arrival_s: float,
             item: Any = None) -> None:
        """Add a request."""
        self.pending.append(queue_entry(request_id, priority_bid, arrival_s, self.aging_per_s,
                                        item))

    def prepare(self, now_s: float | None = None) -> None:
        """Merge pending entries into the heap (O(k log n), or O(n) when k is large)."""
        pending = self.pending
        if not pending:
            return
        heap = self.heap
        if len(pending) * 8 > len(heap):
            heap.extend(pending)
            heapq.heapify(heap)
        else:
            for entry in pending:
                heapq.heappush(heap, entry)
        pending.clear()

    def peek(self, now_s: float | None = None) -> int:
        """The request id that would be popped next."""
        self.prepare()
        return self.heap[0][2]

    def pop(self, now_s: float | None = None) -> tuple[int, Any]:
        """Remove and return (request_id, item) of the highest effective priority."""
        self.prepare()
        entry = heapq.heappop(self.heap)
        return entry[2], entry[3]

    def entries(self) -> list:
        """Every waiting entry, in no particular order."""
        return self.heap + self.pending

    def clear(self) -> None:
        self.heap.clear()
        self.pending.clear()

    def effective_priorities(self, now_s: float) -> dict[int, float]:
        """Every waiting request's effective priority at ``now_s`` (for plots and teaching)."""
        aging = self.aging_per_s
        return {rid: -neg_key + aging * now_s for neg_key, _arrival, rid, _item in self.entries()}


class EagerAgingQueue:
    """The textbook version: recompute every effective priority and re-heapify on each pop."""

    __slots__ = ("aging_per_s", "heap", "pending", "heapify_work")

    def __init__(self, aging_per_s: float = 0.0) -> None:
        if not aging_per_s >= 0:
            raise ValueError(f"aging_per_s must be >= 0, got {aging_per_s!r}")
        self.aging_per_s = float(aging_per_s)
        # Entries [-effective priority, arrival_s, request_id, item, priority_bid]: the lazy
        # queue's layout plus the bid the priority is recomputed from.
        self.heap: list[list[Any]] = []
        self.pending: list[list[Any]] = []  # always empty: pushes go straight into ``heap``
        self.heapify_work = 0  # entries touched by re-heapifying, to show the O(n) cost

    def __len__(self) -> int:
        return len(self.heap)

    def __bool__(self) -> bool:
        return bool(self.heap)

    def push(self, request_id: int, priority_bid: float, arrival_s: float,
             item: Any = None) -> None:
        self.heap.append([-priority_bid, arrival_s, request_id, item, priority_bid])

    def prepare(self, now_s: float) -> None:
        """Recompute every priority for ``now_s`` and re-heapify: the O(n) eager step."""
        aging = self.aging_per_s
        for entry in self.heap:
            entry[0] = -effective_priority(entry[4], entry[1], aging, now_s)
        heapq.heapify(self.heap)
        self.heapify_work += len(self.heap)

    def peek(self, now_s: float) -> int:
        self.prepare(now_s)
        return self.heap[0][2]

    def pop(self, now_s: float) -> tuple[int, Any]:
        self.prepare(now_s)
        entry = heapq.heappop(self.heap)
        return entry[2], entry[3]

    def entries(self) -> list:
        return list(self.heap)

    def clear(self) -> None:
        self.heap.clear()

    def effective_priorities(self, now_s: float) -> dict[int, float]:
        aging = self.aging_per_s
        return {e[2]: effective_priority(e[4], e[1], aging, now_s) for e in self.heap}
