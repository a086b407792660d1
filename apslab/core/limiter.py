"""Per-tenant rate limiting and the admission rules built on it.

The seed's token bucket, with the caller passing the time:

    available = min(burst_cap, tokens_at_last_update + (now - last_update) * rate_limit)
    if available >= cost: tokens = available - cost; admit
    else:                 tokens = available;        reject (nothing is subtracted)

A bucket starts full. Refilling is linear and capped, so updating the bucket on a rejection (as
here) or not gives the same result in exact arithmetic; doing it on every call keeps the floats
identical between the simulator, the notebooks and the live service, which all call this module.

Beside it, the limits real APIs meter with (``[[tenants]] limiter``, see :func:`make_limiter`):

* ``token_bucket`` (the seed's, charged prompt + output), optionally with
  ``requests_per_minute``: a second, continuously refilled bucket of that many requests;
* ``fixed_window`` (Azure OpenAI style): counts of tokens (prompt + output) and, optionally,
  requests reset at every multiple of ``window_s``; at most ``tokens_per_window`` tokens and
  ``requests_per_minute * window_s / 60`` requests per window;
* ``split_buckets`` (Anthropic style): separate continuously replenished buckets for input
  (prompt) tokens and output tokens, of ``input_tokens_per_minute`` and
  ``output_tokens_per_minute`` refilled over a minute, and optionally one of requests.

A request is admitted only if every limit holds, and then charged to all of them; a rejected one
consumes nothing and is named after the first limit it broke, checked in the order requests,
input, output (``rate_limited_requests``, ``rate_limited_input``, ``rate_limited_output``), or
tokens (``rate_limited``). One that no limit could ever admit (more than the bucket, window or
per-minute capacity) is ``exceeds_burst``.
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
RATE_LIMITED_REQUESTS = 6
RATE_LIMITED_INPUT = 7
RATE_LIMITED_OUTPUT = 8
REASON_NAMES: tuple[str, ...] = (
    "",
    "rate_limited",
    "exceeds_burst",
    "exceeds_kv_capacity",
    "unknown_tenant",
    "queue_full",
    "rate_limited_requests",
    "rate_limited_input",
    "rate_limited_output",
)
LIMITERS = ("token_bucket", "fixed_window", "split_buckets")


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

    def refill(self, now_s: float) -> float:
        """Bring the bucket to ``now_s`` and return what it holds (:meth:`consume`'s first
        step, alone: with :meth:`take`, several buckets can be asked before any is charged)."""
        if now_s < self.last_update_s:
            raise ValueError(f"time went backwards: {now_s!r} < {self.last_update_s!r}")
        available = self.available(now_s)
        self.tokens = available
        self.last_update_s = now_s
        return available

    def take(self, cost: float) -> None:
        """Subtract ``cost`` after :meth:`refill` found it there (the same floats as consume)."""
        self.tokens = self.tokens - cost

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
    """A tenant's limits: the seed's rate limit (tokens/s) and burst capacity (tokens), or
    another limiter's figures (see :func:`make_limiter`)."""

    tenant_id: str
    rate_limit: float | None = None
    burst_cap: float | None = None
    limiter: str = "token_bucket"
    window_s: float = 60.0
    tokens_per_window: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    requests_per_minute: float | None = None


def _per_minute_bucket(per_minute: float) -> TokenBucket:
    """A continuously replenished bucket holding ``per_minute``, refilled over a minute."""
    return TokenBucket(per_minute / 60.0, per_minute)


def _requests_bucket(requests_per_minute: float | None) -> TokenBucket | None:
    """The optional bucket of requests (None: requests are not limited)."""
    return None if requests_per_minute is None else _per_minute_bucket(requests_per_minute)


class _Buckets:
    """A limiter made of token buckets, each charged its part of a request (``_charges``):
    admitted only if every bucket holds its part, and then charged to all of them."""

    plain = False

    def _charges(self, prompt_tokens: int, output_tokens: int
                 ) -> list[tuple[TokenBucket, int, int]]:
        """(bucket, cost, code if it falls short) per bucket, in the order they are checked."""
        raise NotImplementedError

    def admit(self, prompt_tokens: int, output_tokens: int, now_s: float) -> int:
        # Every bucket is refilled before any is checked, so a rejection updates them all.
        charges = self._charges(prompt_tokens, output_tokens)
        held = [bucket.refill(now_s) >= cost for bucket, cost, _ in charges]
        for enough, (_, _, code) in zip(held, charges, strict=True):
            if not enough:
                return code
        for bucket, cost, _ in charges:
            bucket.take(cost)
        return ADMITTED

    def seconds_until_admitted(self, prompt_tokens: int, output_tokens: int,
                               now_s: float) -> float:
        """How long until :meth:`admit` would admit the request (0 now, inf never)."""
        return max(bucket.seconds_until_available(cost, now_s)
                   for bucket, cost, _ in self._charges(prompt_tokens, output_tokens))


class BucketLimiter(_Buckets):
    """The seed's token bucket (charged prompt + output), optionally with a requests bucket."""

    def __init__(self, rate_limit: float, burst_cap: float,
                 requests_per_minute: float | None = None) -> None:
        self.bucket = TokenBucket(rate_limit, burst_cap)
        self.requests = _requests_bucket(requests_per_minute)

    @property
    def plain(self) -> bool:
        """A single token bucket: decidable by column (:func:`consume_columns`)."""
        return self.requests is None

    def exceeds(self, prompt_tokens: int, output_tokens: int) -> bool:
        return prompt_tokens + output_tokens > self.bucket.burst_cap

    def _charges(self, prompt_tokens: int, output_tokens: int
                 ) -> list[tuple[TokenBucket, int, int]]:
        tokens = (self.bucket, prompt_tokens + output_tokens, RATE_LIMITED)
        if self.requests is None:
            return [tokens]
        return [(self.requests, 1, RATE_LIMITED_REQUESTS), tokens]

    def admit(self, prompt_tokens: int, output_tokens: int, now_s: float) -> int:
        if self.requests is None:  # the seed's single bucket: one consume
            return ADMITTED if self.bucket.consume(prompt_tokens + output_tokens, now_s) \
                else RATE_LIMITED
        return super().admit(prompt_tokens, output_tokens, now_s)


class FixedWindowLimiter:
    """Counts of tokens (prompt + output) and requests, reset at every multiple of window_s."""

    def __init__(self, window_s: float, tokens_per_window: float,
                 requests_per_minute: float | None = None) -> None:
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be a finite number > 0, got {window_s!r}")
        if not (tokens_per_window > 0 and math.isfinite(tokens_per_window)):
            raise ValueError(f"tokens_per_window must be > 0, got {tokens_per_window!r}")
        self.window_s = float(window_s)
        self.tokens_per_window = float(tokens_per_window)
        self.requests_per_window = None if requests_per_minute is None else \
            requests_per_minute * self.window_s / 60.0
        self.window = -math.inf  # index of the current window
        self.tokens = 0
        self.requests_used = 0

    plain = False

    def _window_of(self, now_s: float) -> float:
        return math.floor(now_s / self.window_s)

    def exceeds(self, prompt_tokens: int, output_tokens: int) -> bool:
        return (prompt_tokens + output_tokens > self.tokens_per_window
                or (self.requests_per_window is not None and self.requests_per_window < 1))

    def _roll(self, now_s: float) -> None:
        window = self._window_of(now_s)
        if window < self.window:
            raise ValueError(f"time went backwards: {now_s!r} is before window {self.window}")
        if window != self.window:
            self.window, self.tokens, self.requests_used = window, 0, 0

    def admit(self, prompt_tokens: int, output_tokens: int, now_s: float) -> int:
        self._roll(now_s)
        cost = prompt_tokens + output_tokens
        if self.requests_per_window is not None and \
                self.requests_used + 1 > self.requests_per_window:
            return RATE_LIMITED_REQUESTS
        if self.tokens + cost > self.tokens_per_window:
            return RATE_LIMITED
        self.tokens += cost
        self.requests_used += 1
        return ADMITTED

    def seconds_until_admitted(self, prompt_tokens: int, output_tokens: int,
                               now_s: float) -> float:
        if self.exceeds(prompt_tokens, output_tokens):
            return math.inf
        window = self._window_of(now_s)
        tokens, requests = (self.tokens, self.requests_used) if window == self.window else (0, 0)
        fits = tokens + prompt_tokens + output_tokens <= self.tokens_per_window and (
            self.requests_per_window is None or requests + 1 <= self.requests_per_window)
        return 0.0 if fits else (window + 1) * self.window_s - now_s


class SplitBucketLimiter(_Buckets):
    """Separate input and output token buckets (per minute), and optionally a requests one."""

    def __init__(self, input_tokens_per_minute: float, output_tokens_per_minute: float,
                 requests_per_minute: float | None = None) -> None:
        self.input = _per_minute_bucket(input_tokens_per_minute)
        self.output = _per_minute_bucket(output_tokens_per_minute)
        self.requests = _requests_bucket(requests_per_minute)

    def exceeds(self, prompt_tokens: int, output_tokens: int) -> bool:
        return prompt_tokens > self.input.burst_cap or output_tokens > self.output.burst_cap

    def _charges(self, prompt_tokens: int, output_tokens: int
                 ) -> list[tuple[TokenBucket, int, int]]:
        tokens = [(self.input, prompt_tokens, RATE_LIMITED_INPUT),
                  (self.output, output_tokens, RATE_LIMITED_OUTPUT)]
        if self.requests is None:
            return tokens
        return [(self.requests, 1, RATE_LIMITED_REQUESTS), *tokens]


def make_limiter(limits: TenantLimits):
    """The limiter a tenant's limits describe (see the module docstring)."""
    if limits.limiter == "token_bucket":
        return BucketLimiter(limits.rate_limit, limits.burst_cap, limits.requests_per_minute)
    if limits.limiter == "fixed_window":
        return FixedWindowLimiter(limits.window_s, limits.tokens_per_window,
                                  limits.requests_per_minute)
    if limits.limiter == "split_buckets":
        return SplitBucketLimiter(limits.input_tokens_per_minute,
                                  limits.output_tokens_per_minute, limits.requests_per_minute)
    raise ValueError(f"limiter must be one of {', '.join(LIMITERS)}, got {limits.limiter!r}")


class TenantManager:
    """One limiter per tenant, and the admission checks in their contractual order."""

    def __init__(self, tenants: Iterable[TenantLimits]) -> None:
        self.limiters: dict[str, BucketLimiter | FixedWindowLimiter | SplitBucketLimiter] = {}
        for tenant in tenants:
            if tenant.tenant_id in self.limiters:
                raise ValueError(f"duplicate tenant id {tenant.tenant_id!r}")
            self.limiters[tenant.tenant_id] = make_limiter(tenant)

    @property
    def buckets(self) -> dict[str, TokenBucket]:
        """The seed's token buckets, by tenant (tenants with other limiters have none)."""
        return {tenant_id: limiter.bucket for tenant_id, limiter in self.limiters.items()
                if isinstance(limiter, BucketLimiter)}

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self.limiters

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
        prompt_tokens: int | None = None,
    ) -> int:
        """Decide one request: ADMITTED or the code of the first rule it breaks.

        Order: unknown tenant, cost over the KV capacity, over what the limiter could ever admit
        (``exceeds_burst``), a full queue, then the limiter. Only an admitted request is charged.
        ``cost`` is prompt + output tokens; limiters that meter input and output apart need
        ``prompt_tokens`` too (without it the whole cost counts as output).
        """
        limiter = self.limiters.get(tenant_id)
        if limiter is None:
            return UNKNOWN_TENANT
        if cost > kv_capacity_tokens:
            return EXCEEDS_KV_CAPACITY
        prompt = 0 if prompt_tokens is None else prompt_tokens
        if limiter.exceeds(prompt, cost - prompt):
            return EXCEEDS_BURST
        if queue_full:
            return QUEUE_FULL
        return limiter.admit(prompt, cost - prompt, now_s)

    def seconds_until_admitted(self, tenant_id: str, prompt_tokens: int, output_tokens: int,
                               now_s: float) -> float:
        """Model seconds until the tenant's limiter would admit the request (the exact wait a
        429's Retry-After reports)."""
        return self.limiters[tenant_id].seconds_until_admitted(prompt_tokens, output_tokens,
                                                               now_s)


def exceeds_columns(limiters: list, tenant_index: np.ndarray, prompt_tokens: np.ndarray,
                    output_tokens: np.ndarray) -> np.ndarray:
    """Whether each row asks for more than its tenant's limiter could ever admit (rows of
    unknown tenants, index -1, are False)."""
    tenant_index = np.asarray(tenant_index)
    prompt, output = np.asarray(prompt_tokens), np.asarray(output_tokens)
    exceeds = np.zeros(len(tenant_index), dtype=bool)
    if not len(tenant_index):
        return exceeds
    caps = np.full((3, len(limiters) + 1), np.inf)  # total, prompt and output caps
    for index, limiter in enumerate(limiters):
        if isinstance(limiter, BucketLimiter):
            caps[0, index] = limiter.bucket.burst_cap
        elif isinstance(limiter, FixedWindowLimiter):
            caps[0, index] = -1.0 if limiter.exceeds(0, 0) else limiter.tokens_per_window
        else:
            caps[1, index], caps[2, index] = limiter.input.burst_cap, limiter.output.burst_cap
    total, first, second = caps[:, tenant_index]
    return (prompt + output > total) | (prompt > first) | (output > second)


def decide_columns(limiters: list, tenant_index: np.ndarray, prompt_tokens: np.ndarray,
                   output_tokens: np.ndarray, times_s: np.ndarray,
                   use_compiled: bool = True) -> np.ndarray:
    """Every limiter's decisions for its tenant's rows at once: a uint8 column, ADMITTED or the
    code of the limit a row broke. Each tenant's rows must be in time order.

    Tenants with a plain token bucket are decided by :func:`consume_columns` (bit-for-bit the
    row-by-row decisions, most rows without Python); the others are walked row by row with
    their limiter's :meth:`admit`.
    """
    tenant_index = np.asarray(tenant_index)
    codes = np.zeros(len(tenant_index), dtype=np.uint8)
    if not len(codes):
        return codes
    plain = np.array([getattr(limiter, "plain", False) for limiter in limiters] + [False])
    simple = plain[tenant_index]
    if simple.any():
        rows = np.flatnonzero(simple)
        buckets = [limiter.bucket if getattr(limiter, "plain", False) else None
                   for limiter in limiters]
        admitted = consume_columns(_only(buckets), tenant_index[rows],
                                   (np.asarray(prompt_tokens) + np.asarray(output_tokens))[rows],
                                   np.asarray(times_s)[rows], use_compiled)
        codes[rows[~admitted]] = RATE_LIMITED
    rows = np.flatnonzero(~simple)
    if len(rows):
        walked = [limiters[i].admit(p, o, t) for i, p, o, t in zip(
            np.asarray(tenant_index)[rows].tolist(), np.asarray(prompt_tokens)[rows].tolist(),
            np.asarray(output_tokens)[rows].tolist(), np.asarray(times_s)[rows].tolist(),
            strict=True)]
        codes[rows] = walked
    return codes


def _only(buckets: list) -> list:
    """The buckets list for consume_columns, with a never-used stand-in where a tenant has
    another limiter (consume_columns reads every bucket's state, used or not)."""
    return [bucket if bucket is not None else TokenBucket(1.0, 1.0) for bucket in buckets]


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
    for index in sorted(set(tenant[rows[last_row[rows]]].tolist())):  # np.unique imports numpy.ma
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
