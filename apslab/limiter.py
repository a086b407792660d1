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

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

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
        """:meth:`consume` for one tenant's requests in time order; a boolean column.

        Bit-for-bit the same as calling :meth:`consume` row by row, but fast: wherever the gap
        since the previous request refills at least ``burst_cap`` (``gap * rate >= burst_cap``,
        computed with the same float operations), the bucket is exactly full whatever came
        before, so the request is admitted and leaves exactly ``burst_cap - cost``. Only the
        rows in between are walked one by one.
        """
        costs = np.asarray(costs)
        times_s = np.asarray(times_s, dtype=np.float64)
        if not len(costs):
            return np.zeros(0, dtype=bool)
        previous = np.empty_like(times_s)
        previous[0] = self.last_update_s
        previous[1:] = times_s[:-1]
        if (times_s < previous).any():
            row = int(np.flatnonzero(times_s < previous)[0])
            raise ValueError(f"time went backwards: {times_s[row]!r} < {previous[row]!r}")
        rate, burst = self.rate_limit, self.burst_cap
        with np.errstate(invalid="ignore"):  # -inf start: inf gap, a full bucket
            full = (times_s - previous) * rate >= burst
        admitted = full & (costs <= burst)
        tokens, last = self.tokens, self.last_update_s
        walk = np.flatnonzero(~full)
        if len(walk):
            cost_list = costs.tolist()
            time_list = times_s.tolist()
            full_list = full.tolist()
            decisions = []
            for row in walk.tolist():
                if row and full_list[row - 1]:
                    # The row before found a full bucket: its state after is known exactly.
                    last = time_list[row - 1]
                    previous_cost = cost_list[row - 1]
                    tokens = burst - previous_cost if burst >= previous_cost else burst
                now, cost = time_list[row], cost_list[row]
                available = min(burst, tokens + (now - last) * rate)
                last = now
                if available >= cost:
                    tokens = available - cost
                    decisions.append(True)
                else:
                    tokens = available
                    decisions.append(False)
            admitted[walk] = decisions
        end = len(costs) - 1
        if full[end]:
            last_cost = costs[end].item()
            tokens = burst - last_cost if burst >= last_cost else burst
        self.tokens = tokens
        self.last_update_s = float(times_s[end])
        return admitted

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


def consume_columns(
    buckets: list[TokenBucket],
    tenant_index: np.ndarray,
    costs: np.ndarray,
    times_s: np.ndarray,
) -> np.ndarray:
    """Ask every tenant's bucket about its requests at once; rows must be in time order.

    Buckets are independent, so grouping the rows by tenant (one stable sort) and feeding each
    bucket its own column gives exactly the decisions of asking them one row at a time.
    Returns a boolean column: True = admitted.
    """
    admitted = np.zeros(len(costs), dtype=bool)
    if not len(costs):
        return admitted
    order = np.argsort(tenant_index, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(tenant_index, minlength=len(buckets)))))
    for i, bucket in enumerate(buckets):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        if lo == hi:
            continue
        rows = order[lo:hi]
        admitted[rows] = bucket.consume_many(costs[rows], times_s[rows])
    return admitted
