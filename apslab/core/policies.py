"""Who goes next: the waiting-queue orders of continuous batching (``[scheduler] policy``).

* ``priority`` (the seed's APS): highest static key ``bid - aging_per_s * arrival_s`` first, then
  earlier arrival, then lower request id. The running list is kept in the same order, so the
  lowest-priority running request is the preemption victim.
* ``fcfs``: by arrival, then request id. The running list is in admission order (a request
  re-admitted after preemption goes to its end); the victim is its last request.
* ``vtc``: the Virtual Token Counter of Sheng et al. (OSDI'24, "Fairness in Serving Large
  Language Models"): every tenant has a counter of the service it received, weighted by
  ``input_weight`` per prompt token and ``output_weight`` per output token, divided by its
  share. The waiting pass serves the tenant with the smallest counter (ties: scenario order),
  its oldest request first (arrival, then request id). A tenant that gets a waiting request
  while it had none is lifted to ``max(own, min counter of the other tenants with waiting
  requests)``, so idling earns no credit. A request's first admission adds
  ``input_weight * P / share`` at once; every emitted token adds ``output_weight / share`` at
  the end of its iteration; recomputation after preemption is not charged again. The running
  list is in admission order.

Each policy is given requests by handle (the batcher's dense index) with their order fields, and
answers ``peek``/``pop`` for the waiting pass and ``place`` for the running list. Time is never
read: everything is decided from the fields given.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Sequence

POLICIES = ("priority", "fcfs", "vtc")


class PriorityPolicy:
    """Waiting heap and running list ordered by (-key, arrival_s, request_id)."""

    name = "priority"

    def __init__(self) -> None:
        self.order: list[tuple[float, float, int]] = []
        self.heap: list[tuple[tuple[float, float, int], int]] = []

    def add(self, handle: int, *, neg_key: float, arrival_s: float, request_id: int,
            tenant: int = 0) -> None:
        self.order.append((neg_key, arrival_s, request_id))

    def __len__(self) -> int:
        return len(self.heap)

    def push(self, handle: int) -> None:
        heapq.heappush(self.heap, (self.order[handle], handle))

    def peek(self) -> int:
        return self.heap[0][1]

    def pop(self) -> int:
        return heapq.heappop(self.heap)[1]

    def place(self, running: list[int], handle: int) -> None:
        insort(running, handle, key=self.order.__getitem__)

    def admitted(self, handle: int, prompt_tokens: int) -> None:
        """First admission: nothing to charge."""

    def emitted(self, handle: int) -> None:
        """A token: nothing to charge."""

    def emitted_many(self, handle: int, count: int) -> None:
        """``count`` tokens at once (a static batch's whole output): nothing to charge."""


class FCFSPolicy(PriorityPolicy):
    """Waiting heap by (arrival_s, request_id); running list in admission order."""

    name = "fcfs"

    def add(self, handle: int, *, neg_key: float, arrival_s: float, request_id: int,
            tenant: int = 0) -> None:
        self.order.append((arrival_s, request_id))

    def place(self, running: list[int], handle: int) -> None:
        running.append(handle)


class VTCPolicy:
    """Virtual Token Counter fair queueing (see the module docstring)."""

    name = "vtc"

    def __init__(self, shares: Sequence[float], input_weight: float = 1.0,
                 output_weight: float = 2.0) -> None:
        self.shares = [float(s) for s in shares]
        self.input_weight = float(input_weight)
        self.output_weight = float(output_weight)
        self.counters = [0.0] * len(self.shares)
        self.tenant: list[int] = []
        self.order: list[tuple[float, int]] = []
        self.queues: list[list[tuple[tuple[float, int], int]]] = [[] for _ in self.shares]
        self.backlogged: set[int] = set()  # tenants with waiting requests
        self.waiting = 0
        self._next: int | None = None  # the tenant peek found, until a counter or queue changes

    def add(self, handle: int, *, neg_key: float, arrival_s: float, request_id: int,
            tenant: int = 0) -> None:
        self.tenant.append(tenant)
        self.order.append((arrival_s, request_id))

    def __len__(self) -> int:
        return self.waiting

    def push(self, handle: int) -> None:
        tenant = self.tenant[handle]
        self.counters[tenant] = self.lifted_counter(tenant)
        self.backlogged.add(tenant)
        heapq.heappush(self.queues[tenant], (self.order[handle], handle))
        self.waiting += 1
        self._next = None

    def lifted_counter(self, tenant: int) -> float:
        """The counter of ``tenant`` as a request of its joins the waiting queue: lifted to the
        smallest counter of the other waiting tenants if it had no waiting request (never
        lowered; nobody else waiting, no lift), else unchanged."""
        own = self.counters[tenant]
        if tenant in self.backlogged:
            return own
        others = [self.counters[u] for u in self.backlogged]
        return max(own, min(others)) if others else own

    def _next_tenant(self) -> int:
        if self._next is None:
            counters = self.counters
            self._next = min(self.backlogged, key=lambda u: (counters[u], u))
        return self._next

    def peek(self) -> int:
        return self.queues[self._next_tenant()][0][1]

    def pop(self) -> int:
        tenant = self._next_tenant()
        queue = self.queues[tenant]
        handle = heapq.heappop(queue)[1]
        if not queue:
            self.backlogged.discard(tenant)
            self._next = None
        self.waiting -= 1
        return handle

    def place(self, running: list[int], handle: int) -> None:
        running.append(handle)

    def admitted(self, handle: int, prompt_tokens: int) -> None:
        tenant = self.tenant[handle]
        self.counters[tenant] += self.input_weight * prompt_tokens / self.shares[tenant]
        self._next = None

    def emitted(self, handle: int) -> None:
        tenant = self.tenant[handle]
        self.counters[tenant] += self.output_weight / self.shares[tenant]
        self._next = None

    def emitted_many(self, handle: int, count: int) -> None:
        """``count`` tokens at once, added one by one (the same float sums as ``emitted``)."""
        tenant = self.tenant[handle]
        step = self.output_weight / self.shares[tenant]
        counter = self.counters[tenant]
        for _ in range(count):
            counter += step
        self.counters[tenant] = counter
        self._next = None


def make_policy(name: str, shares: Sequence[float] = (), input_weight: float = 1.0,
                output_weight: float = 2.0):
    """The policy called ``name`` (one of :data:`POLICIES`)."""
    if name == "priority":
        return PriorityPolicy()
    if name == "fcfs":
        return FCFSPolicy()
    if name == "vtc":
        return VTCPolicy(shares, input_weight, output_weight)
    raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {name!r}")
