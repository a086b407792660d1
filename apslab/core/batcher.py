"""Micro-batching bounded by batch size and by the KV cache.

When a batch forms, requests are taken in priority order while the batch has fewer than
``max_batch_size`` requests and its KV tokens (prompt + output of every member) stay within
``kv_capacity_tokens``. Formation stops at the first request that does not fit: no skipping
ahead, so a large high-priority request is never overtaken by smaller low-priority ones.

Queue items are ``(prompt_tokens, output_tokens, ...)`` tuples: the first two fields are what
the batcher and the GPU model need; anything after them (a tenant, a future, a client handle)
rides along.

Under the VTC policy (:class:`apslab.core.policies.VTCPolicy`) the waiting requests sit in a
:class:`PolicyQueue` instead, and :meth:`MicroBatcher.form_policy_batch` takes them in the
policy's order: the tenant with the smallest counter, its oldest request, charged at once its
prompt and, a static batch producing all its output at formation, every output token.
"""

from __future__ import annotations

from dataclasses import dataclass
from heapq import heappop
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

_REQUEST_ID = itemgetter(2)
_ITEM = itemgetter(3)
_PROMPT = itemgetter(0)
_OUTPUT = itemgetter(1)


class AgingQueue(Protocol):
    """What the batcher needs of a queue (both aging queues provide it).

    The waiting entries (-priority, arrival_s, request_id, item, ...) are ``heap`` plus
    ``pending``; ``prepare(now_s)`` moves them all into ``heap`` in heap order for ``now_s``.
    """

    heap: list
    pending: list

    def prepare(self, now_s: float) -> None: ...


class FormedBatch(NamedTuple):
    """One batch: its members in pop order and the totals the GPU model needs."""

    request_ids: list[int]
    items: list[Any]
    kv_tokens: int
    prompt_tokens: int
    output_tokens: int

    @property
    def size(self) -> int:
        return len(self.request_ids)


@dataclass(frozen=True)
class MicroBatcher:
    """The batching rules: a window before the first batch, a size cap and a KV-token budget."""

    batch_window_s: float
    max_batch_size: int
    kv_capacity_tokens: int

    def __post_init__(self) -> None:
        if not self.batch_window_s >= 0:
            raise ValueError(f"batch_window_s must be >= 0, got {self.batch_window_s!r}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size!r}")
        if self.kv_capacity_tokens < 0:
            raise ValueError(f"kv_capacity_tokens must be >= 0, got {self.kv_capacity_tokens!r}")

    def form_batch(self, queue: AgingQueue, now_s: float) -> FormedBatch:
        """Pop one batch from ``queue`` with priorities evaluated at ``now_s``.

        When every waiting request fits (count and KV tokens), the batch is all of them and no
        ordering is needed; this is the common case below saturation and costs no heap work.
        Otherwise requests are popped in priority order until the first that does not fit.
        """
        heap, pending = queue.heap, queue.pending
        if len(heap) + len(pending) <= self.max_batch_size:
            entries = heap + pending
            items = list(map(_ITEM, entries))
            prompt_total = sum(map(_PROMPT, items))
            output_total = sum(map(_OUTPUT, items))
            if prompt_total + output_total <= self.kv_capacity_tokens:
                heap.clear()
                pending.clear()
                return FormedBatch(list(map(_REQUEST_ID, entries)), items,
                                   prompt_total + output_total, prompt_total, output_total)
        queue.prepare(now_s)
        ids: list[int] = []
        items = []
        used = prompt_total = output_total = 0
        budget = self.kv_capacity_tokens
        room = self.max_batch_size
        while heap and room:
            entry = heap[0]
            item = entry[3]
            prompt, output = item[0], item[1]
            if used + prompt + output > budget:
                break  # no skipping ahead
            heappop(heap)
            ids.append(entry[2])
            items.append(item)
            used += prompt + output
            prompt_total += prompt
            output_total += output
            room -= 1
        return FormedBatch(ids, items, used, prompt_total, output_total)

    def form_policy_batch(self, queue: PolicyQueue, now_s: float) -> FormedBatch:
        """Pop one batch in the policy's order until the next request does not fit (no skipping
        ahead), charging each member's prompt and output to the policy as it is taken."""
        policy, entries = queue.policy, queue.entries
        ids: list[int] = []
        items: list[Any] = []
        used = prompt_total = output_total = 0
        while len(policy) and len(ids) < self.max_batch_size:
            handle = policy.peek()
            entry = entries[handle]
            item = entry[3]
            prompt, output = item[0], item[1]
            if used + prompt + output > self.kv_capacity_tokens:
                break  # no skipping ahead
            policy.pop()
            policy.admitted(handle, prompt)
            policy.emitted_many(handle, output)
            ids.append(entry[2])
            items.append(item)
            used += prompt + output
            prompt_total += prompt
            output_total += output
        return FormedBatch(ids, items, used, prompt_total, output_total)


class _Waiting:
    """The length (and truth) of a policy's waiting queue, where the event loop looks for the
    lazy queue's ``heap``."""

    __slots__ = ("policy",)

    def __init__(self, policy) -> None:
        self.policy = policy

    def __len__(self) -> int:
        return len(self.policy)


class PolicyQueue:
    """Waiting requests ordered by a policy object (VTC), shaped like the lazy queue for the
    static engine's loop: entries ``(-key, arrival_s, request_id, (prompt, output, tenant))``
    go in through ``push_entry``; ``heap`` and ``pending`` report how many wait."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.entries: list[tuple] = []
        self.heap = _Waiting(policy)
        self.pending: tuple = ()

    def push_entry(self, entry: tuple) -> None:
        handle = len(self.entries)
        self.entries.append(entry)
        self.policy.add(handle, neg_key=entry[0], arrival_s=entry[1], request_id=entry[2],
                        tenant=entry[3][2])
        self.policy.push(handle)
