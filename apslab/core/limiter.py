"""Per-tenant token-bucket rate limiting and the admission rules built on it.

The seed's algorithm, with the caller passing the time:

    available = min(burst_cap, tokens_at_last_update + (now - last_update) * rate_limit)
    if available >= cost: tokens = available - cost; admit
    else:                 tokens = available;        reject (nothing is subtracted)

A bucket starts full. Refilling is linear and capped, so updating the bucket on a rejection (as
here) or not gives the same result in exact arithmetic; doing it on every call keeps the floats
identical between the simulator, the notebooks and the live service, which all call this module.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._native import DOUBLE_P, INT64_P, UINT8_P, load_library, pointer

# Admission outcomes. The integer codes are what the simulator stores per request.
ADMITTED = 0
RATE_LIMITED = 1
EXCEEDS_BURST = 2
EXCEEDS_KV_CAPACITY = 3
UNKNOWN_TENANT = 4
QUEUE_FULL = 5
REASON_NAMES: tuple[str, ...] = (
    "",
    "rate_limited",
    "exceeds_burst",
    "exceeds_kv_capacity",
    "unknown_tenant",
    "queue_full",
)


class TokenBucket:
    """One tenant's bucket of tokens, refilled at ``rate_limit`` up to ``burst_cap``."""

    __slots__ = ("rate_limit", "burst_cap", "tokens", "last_update_s")

    def __init__(self, rate_limit: float, burst_cap: float) -> None:
        if not (rate_limit > 0 and math.isfinite(rate_limit)):
            raise ValueError(f"rate_limit must be a finite number > 0, got {rate_limit!r}")
        if not (burst_cap > 0 and math.isfinite(burst_cap)):
            raise ValueError(f"burst_cap must be a finite number > 0, got {burst_cap!r}")
        self.rate_limit = float(rate_limit)
        self.burst_cap = float(burst_cap)
        self.tokens = float(burst_cap)
        # -inf: the first refill tops the bucket up to burst_cap whatever the first time is.
        self.last_update_s = -math.inf

    def available(self, now_s: float) -> float:
        """Tokens the bucket would hold at ``now_s`` (no state change)."""
        return min(self.burst_cap, self.tokens + (now_s - self.last_update_s) * self.rate_limit)

    def consume(self, cost: float, now_s: float) -> bool:
        """Refill to ``now_s``, then take ``cost`` tokens if they are there. True = admitted."""
        if now_s < self.last_update_s:
            raise ValueError(f"time went backwards: {now_s!r} < {self.last_update_s!r}")
        refilled = self.tokens + (now_s - self.last_update_s) * self.rate_limit
        available = min(self.burst_cap, refilled)
        self.last_update_s = now_s
        if available >= cost:
            self.tokens = available - cost
            return True
        self.tokens = available
        return False

    def consume_many(self, costs: np.ndarray, times_s: np.ndarray) -> np.ndarray:
        """:meth:`consume` for this tenant's requests in time order, at once (see
        :func:`consume_columns`); a boolean column, True = admitted."""
        costs = np.asarray(costs)
        return consume_columns([self], np.zeros(len(costs), dtype=np.int64), costs, times_s)

    def seconds_until_available(self, cost: float, now_s: float) -> float:
        """How long until the bucket holds ``cost`` tokens (0 if it already does, inf if never)."""
        if cost > self.burst_cap:
            return math.inf
        shortfall = cost - self.available(now_s)
        return max(0.0, shortfall / self.rate_limit)


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's rate limit (tokens/s) and burst capacity (tokens)."""

    tenant_id: str
    rate_limit: float
    burst_cap: float


class TenantManager:
    """One token bucket per tenant, and the admission checks in their contractual order."""

    def __init__(self, tenants: Iterable[TenantLimits]) -> None:
        self.buckets: dict[str, TokenBucket] = {}
        for tenant in tenants:
            if tenant.tenant_id in self.buckets:
                raise ValueError(f"duplicate tenant id {tenant.tenant_id!r}")
            self.buckets[tenant.tenant_id] = TokenBucket(tenant.rate_limit, tenant.burst_cap)

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self.buckets

    def consume(self, tenant_id: str, cost: float, now_s: float) -> bool:
        """Take ``cost`` tokens from the tenant's bucket at ``now_s``; KeyError if unknown."""
        return self.buckets[tenant_id].consume(cost, now_s)

    def admit(
        self,
        tenant_id: str,
        cost: int,
        now_s: float,
        kv_capacity_tokens: int,
        queue_full: bool = False,
    ) -> int:
        """Decide one request: ADMITTED or the code of the first rule it breaks.

        Order: unknown tenant, cost over the KV capacity, cost over the burst cap, a full queue,
        then the bucket. Only an admitted request takes tokens.
        """
        bucket = self.buckets.get(tenant_id)
        if bucket is None:
            return UNKNOWN_TENANT
        if cost > kv_capacity_tokens:
            return EXCEEDS_KV_CAPACITY
        if cost > bucket.burst_cap:
            return EXCEEDS_BURST
        if queue_full:
            return QUEUE_FULL
        return ADMITTED if bucket.consume(cost, now_s) else RATE_LIMITED


def static_rejections(
    tenant_codes: np.ndarray,
    costs: np.ndarray,
    burst_caps: np.ndarray,
    kv_capacity_tokens: int,
) -> np.ndarray:
    """The state-free admission checks for whole columns at once.

    ``tenant_codes`` index ``burst_caps``; a negative code is a tenant not in the scenario.
    Returns a uint8 column: ADMITTED where only the bucket (and queue) remain to be asked, else
    the code of the first rule broken, in the same order as :meth:`TenantManager.admit`.
    """
    reasons = np.zeros(len(costs), dtype=np.uint8)
    # Code -1 (unknown tenant) picks the appended +inf, so only the unknown-tenant rule fires.
    caps = np.append(np.asarray(burst_caps, dtype=np.float64), np.inf)[tenant_codes]
    reasons[costs > caps] = EXCEEDS_BURST
    reasons[costs > kv_capacity_tokens] = EXCEEDS_KV_CAPACITY
    reasons[tenant_codes < 0] = UNKNOWN_TENANT
    return reasons


_WALK_SLICE = 1 << 15


def consume_columns(
    buckets: list[TokenBucket],
    tenant_index: np.ndarray,
    costs: np.ndarray,
    times_s: np.ndarray,
    use_compiled: bool = True,
) -> np.ndarray:
    """Ask every tenant's bucket about its requests at once; a boolean column, True = admitted.

    ``tenant_index`` picks each row's bucket; each tenant's rows must be in time order. The
    decisions, and the buckets' final states, are bit-for-bit those of calling
    :meth:`TokenBucket.consume` row by row, but most rows cost no Python at all: wherever the gap
    since the tenant's previous request refills at least ``burst_cap`` (``gap * rate >=
    burst_cap``, computed with the same float operations as ``consume``), the bucket is exactly
    full whatever came before, so the request is admitted (if it is within the burst cap) and
    leaves exactly ``burst_cap - cost``. Only the rows in between are walked one by one: by the
    compiled kernel when it is built (``use_compiled``), else in Python; both are bit-identical.
    """
    costs = np.asarray(costs)
    times_s = np.asarray(times_s, dtype=np.float64)
    count = len(costs)
    admitted = np.zeros(count, dtype=bool)
    if not count:
        return admitted
    tenant_index = np.asarray(tenant_index)
    # Grouped by tenant, time order kept within each group (a radix sort for 16-bit indices).
    narrow = tenant_index.astype(np.int16) if len(buckets) <= np.iinfo(np.int16).max else \
        tenant_index
    order = np.argsort(narrow, kind="stable")
    tenant = tenant_index[order]
    times = times_s[order]
    cost = costs[order]
    first = np.ones(count, dtype=bool)
    first[1:] = tenant[1:] != tenant[:-1]
    last_row = np.ones(count, dtype=bool)
    last_row[:-1] = first[1:]
    previous = np.empty(count)
    previous[1:] = times[:-1]
    previous[first] = np.array([b.last_update_s for b in buckets])[tenant[first]]
    backwards = times < previous
    if backwards.any():
        row = int(np.flatnonzero(backwards)[0])
        raise ValueError(f"time went backwards: {times[row]!r} < {previous[row]!r}")
    # refill = (now - last_update) * rate_limit, the very operations of TokenBucket.consume,
    # computed in place to keep the peak memory of a million-row call low.
    refill = np.subtract(times, previous, out=previous)
    del previous
    with np.errstate(invalid="ignore"):  # a fresh bucket's -inf start: an infinite gap
        refill *= np.array([b.rate_limit for b in buckets])[tenant]
    bursts = np.array([b.burst_cap for b in buckets])[tenant]
    full = refill >= bursts
    del refill
    decided = full & (cost <= bursts)
    del bursts
    if not full.all():
        walk = _walk_compiled if use_compiled and compiled_walk() is not None else _walk_python
        walk(buckets, tenant, times, cost, first, full, last_row, decided)
    # Final state of each tenant whose last row found a full bucket (after the walk, which
    # starts from the buckets' states before this call).
    for row in np.flatnonzero(last_row & full).tolist():
        bucket = buckets[int(tenant[row])]
        bucket.last_update_s = float(times[row])
        row_cost = cost[row].item()
        bucket.tokens = bucket.burst_cap - row_cost if bucket.burst_cap >= row_cost \
            else bucket.burst_cap
    admitted[order] = decided
    return admitted


def _walk_python(buckets, tenant, times, cost, first, full, last_row, decided) -> None:
    """The walk of :func:`consume_columns` in Python, in slices of bounded memory."""
    walk = np.flatnonzero(~full)
    bucket = buckets[0]
    rate = burst = tokens = last = 0.0
    for lo in range(0, len(walk), _WALK_SLICE):
        rows = walk[lo:lo + _WALK_SLICE]
        before = np.maximum(rows - 1, 0)
        time_list, cost_list = times[rows].tolist(), cost[rows].tolist()
        time_before, cost_before = times[before].tolist(), cost[before].tolist()
        full_before = (full[before] & ~first[rows]).tolist()
        first_list, last_list = first[rows].tolist(), last_row[rows].tolist()
        tenant_list = tenant[rows].tolist()
        decisions = []
        for i in range(len(time_list)):
            if first_list[i]:
                bucket = buckets[tenant_list[i]]
                rate, burst = bucket.rate_limit, bucket.burst_cap
                tokens, last = bucket.tokens, bucket.last_update_s
            elif full_before[i]:
                # The row before found a full bucket: the state it left is known exactly.
                bucket = buckets[tenant_list[i]]
                rate, burst = bucket.rate_limit, bucket.burst_cap
                last = time_before[i]
                previous_cost = cost_before[i]
                tokens = burst - previous_cost if burst >= previous_cost else burst
            now, row_cost = time_list[i], cost_list[i]
            available = min(burst, tokens + (now - last) * rate)  # as in TokenBucket.consume
            last = now
            if available >= row_cost:
                tokens = available - row_cost
                decisions.append(True)
            else:
                tokens = available
                decisions.append(False)
            if last_list[i]:
                bucket.tokens, bucket.last_update_s = tokens, last
        decided[rows] = decisions


def _walk_compiled(buckets, tenant, times, cost, first, full, last_row, decided) -> None:
    """The same walk by the compiled kernel (apslab/core/_bucket_walk.c)."""
    rates = np.array([b.rate_limit for b in buckets], dtype=np.float64)
    bursts = np.array([b.burst_cap for b in buckets], dtype=np.float64)
    tokens = np.array([b.tokens for b in buckets], dtype=np.float64)
    last = np.array([b.last_update_s for b in buckets], dtype=np.float64)
    walked = np.zeros(len(times), dtype=np.uint8)
    columns = [np.ascontiguousarray(column, dtype=dtype) for column, dtype in (
        (times, np.float64), (cost, np.int64), (first, np.uint8), (full, np.uint8),
        (last_row, np.uint8), (tenant, np.int64))]
    compiled_walk()(
        len(times), *map(pointer, columns), pointer(rates), pointer(bursts), pointer(tokens),
        pointer(last), pointer(walked))
    rows = np.flatnonzero(~full)
    decided[rows] = walked[rows].astype(bool)
    for index in np.unique(tenant[rows[last_row[rows]]]).tolist():
        buckets[index].tokens = float(tokens[index])
        buckets[index].last_update_s = float(last[index])


@functools.cache
def compiled_walk():
    """The compiled bucket walk (apslab/core/_bucket_walk.c) as a ctypes function, or None."""
    lib = load_library(Path(__file__).parent, "_bucket_walk")
    if lib is None:
        return None
    try:
        walk = lib.apslab_walk_buckets
    except AttributeError:
        return None
    walk.restype = None
    walk.argtypes = [
        ctypes.c_int64, DOUBLE_P, INT64_P, UINT8_P, UINT8_P, UINT8_P, INT64_P,
        DOUBLE_P, DOUBLE_P, DOUBLE_P, DOUBLE_P, UINT8_P,
    ]
    return walk
