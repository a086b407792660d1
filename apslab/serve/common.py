"""What both live engines share: how a request can end, its HTTP status, rate-limit headers,
bids, the schedulers' clock, life cycle, admission answers and /metrics
(:class:`LiveSchedulerBase`), their Prometheus metrics (:class:`LivePrometheus`), and small
helpers. Imports no web framework, so the engines can be driven without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..core.limiter import (
    EXCEEDS_BURST,
    EXCEEDS_KV_CAPACITY,
    QUEUE_FULL,
    RATE_LIMITED_INPUT,
    RATE_LIMITED_OUTPUT,
    RATE_LIMITED_REQUESTS,
    REASON_NAMES,
    UNKNOWN_TENANT,
    BucketLimiter,
    FixedWindowLimiter,
    TenantManager,
    TokenBucket,
)
from ..core.metrics import latency_stats
from ..io.errors import InputError
from ..io.scenario import Scenario
from ..io.trace import Trace
from ..sim.summary import summarize

SHUTTING_DOWN = "shutting_down"
INTERNAL_ERROR = "internal_error"
#: HTTP status of each way a request can end (``POST /infer``; ``/v1`` maps some differently).
STATUS_OF_REASON: dict[str, int] = {
    "unknown_tenant": 404,
    "exceeds_kv_capacity": 422,
    "exceeds_burst": 422,
    "rate_limited": 429,
    "rate_limited_requests": 429,
    "rate_limited_input": 429,
    "rate_limited_output": 429,
    "queue_full": 503,
    SHUTTING_DOWN: 503,
    INTERNAL_ERROR: 500,
}
#: Label used in per-tenant metrics for requests that name no scenario tenant.
UNKNOWN_TENANT_LABEL = "(unknown)"
INVALID_BODY_LABEL = "(invalid)"
UNAUTHENTICATED_LABEL = "(unauthenticated)"
#: Histogram buckets in model seconds: from one batch window to several minutes of queueing.
TIME_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0,
                  250.0, math.inf)
DEFAULT_DRAIN_S = 5.0
DEFAULT_HISTORY = 1_000_000


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """A tenant's token bucket as OpenAI's ``x-ratelimit-*-tokens`` headers describe it."""

    limit_tokens: float  # the bucket's size: burst_cap
    remaining_tokens: float  # what it holds at the request's arrival (after an admitted charge)
    reset_s: float  # wall seconds until it is full again

    def headers(self) -> dict[str, str]:
        return {"x-ratelimit-limit-tokens": str(int(self.limit_tokens)),
                "x-ratelimit-remaining-tokens": str(int(math.floor(self.remaining_tokens))),
                "x-ratelimit-reset-tokens": duration_text(self.reset_s)}


def _bucket_state(bucket: TokenBucket, time_scale: float) -> RateLimitState:
    """A token bucket as of its last update (every admission decision updates it)."""
    missing = max(0.0, bucket.burst_cap - bucket.tokens)
    return RateLimitState(bucket.burst_cap, bucket.tokens,
                          missing / bucket.rate_limit * time_scale)


def rate_limit_state(limiter, now_s: float, time_scale: float) -> RateLimitState:
    """What OpenAI's ``x-ratelimit-*-tokens`` headers say of a tenant's limiter at ``now_s``:
    the token bucket; a fixed window's allowance, what is left of it and when it resets; or
    the input bucket of split input/output buckets."""
    if isinstance(limiter, BucketLimiter):
        return _bucket_state(limiter.bucket, time_scale)
    if isinstance(limiter, FixedWindowLimiter):
        window = math.floor(now_s / limiter.window_s)
        used = limiter.tokens if window == limiter.window else 0
        return RateLimitState(limiter.tokens_per_window, limiter.tokens_per_window - used,
                              ((window + 1) * limiter.window_s - now_s) * time_scale)
    return _bucket_state(limiter.input, time_scale)


def limit_text(limiter) -> str:
    """A tenant's limits in words, for rejection messages."""
    if isinstance(limiter, BucketLimiter):
        text = f"{limiter.bucket.rate_limit:g} tokens/s"
    elif isinstance(limiter, FixedWindowLimiter):
        text = f"{limiter.tokens_per_window:g} tokens per {limiter.window_s:g} s window"
    else:
        text = (f"{limiter.input.burst_cap:g} input and {limiter.output.burst_cap:g} output "
                "tokens per minute")
    requests = getattr(limiter, "requests", None)
    if requests is not None:
        text += f", {requests.burst_cap:g} requests per minute"
    elif getattr(limiter, "requests_per_window", None) is not None:
        text += f", {limiter.requests_per_window:g} requests per window"
    return text


def over_limit_text(code: int, tenant_id: str, limiter, cost: int,
                    retry_wall_s: float | None) -> str:
    """Why a request was refused by its tenant's limiter (exceeds_burst or rate_limited_*)."""
    if code == EXCEEDS_BURST:
        if isinstance(limiter, BucketLimiter):
            return (f"prompt_tokens + output_tokens = {cost} exceeds the burst_cap of tenant "
                    f"{tenant_id!r} ({limiter.bucket.burst_cap:g} tokens): this request can "
                    "never be admitted")
        return (f"this request asks for more than tenant {tenant_id!r}'s limits "
                f"({limit_text(limiter)}) could ever admit")
    if isinstance(limiter, BucketLimiter) and limiter.plain:
        return (f"tenant {tenant_id!r} is over its rate limit ({limit_text(limiter)}); its "
                f"bucket holds the {cost} tokens asked for in {retry_wall_s:.6g} s")
    which = {RATE_LIMITED_REQUESTS: "requests", RATE_LIMITED_INPUT: "input tokens",
             RATE_LIMITED_OUTPUT: "output tokens"}.get(code, "tokens")
    return (f"tenant {tenant_id!r} is over its {which} limit ({limit_text(limiter)}); the "
            f"request would be admitted in {retry_wall_s:.6g} s")


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request the service answered without running it (or could not finish)."""

    reason: str  # a REASON_NAMES entry, SHUTTING_DOWN or INTERNAL_ERROR
    detail: str
    tenant_id: str | None = None
    request_id: int | None = None
    arrival_s: float | None = None
    retry_after_s: float | None = None  # wall seconds (429 only)
    rate_limit: RateLimitState | None = None

    @property
    def status(self) -> int:
        return STATUS_OF_REASON[self.reason]


def retry_after_seconds(wall_s: float) -> int:
    """The Retry-After header for a wait of ``wall_s``: HTTP wants whole seconds, and rounding up
    (to at least 1, as the request was just refused) never invites a retry that is too early."""
    return max(1, math.ceil(wall_s))


def duration_text(seconds: float) -> str:
    """A wait as OpenAI writes ``x-ratelimit-reset-tokens``: ``120ms``, ``1.5s``, ``6m0s``
    (rounded up to the millisecond)."""
    millis = math.ceil(round(max(0.0, seconds) * 1000.0, 6))
    if millis < 1000:
        return f"{millis}ms"
    minutes, millis = divmod(millis, 60_000)
    text = f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


def effective_bid(scenario: Scenario, tenant_index: int, requested: float | None) -> float:
    """The bid a request carries: the tenant's ``priority_bid`` unless it asks for another,
    never above the tenant's ``max_bid`` (which defaults to its priority_bid). A request may
    lower its bid, never raise it past the cap; a tenant not in the scenario keeps what it
    asked for (it is rejected anyway)."""
    if tenant_index < 0:
        return 1.0 if requested is None else float(requested)
    tenant = scenario.tenants[tenant_index]
    if requested is None:
        return tenant.priority_bid
    return min(float(requested), tenant.bid_cap)


def np_column(column: array, dtype) -> np.ndarray:
    """A numpy copy of a typed array (a copy, so the array may keep growing)."""
    return np.array(column, dtype=dtype)


def short(text: str, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[:limit] + "...'"


def check_time_scale(time_scale: float, history: int) -> float:
    """``time_scale`` as a float; InputError unless it is finite and > 0 and history >= 1."""
    if not (isinstance(time_scale, (int, float)) and math.isfinite(time_scale)
            and time_scale > 0):
        raise InputError(f"time_scale must be a finite number > 0, got {time_scale!r}")
    if history < 1:
        raise InputError(f"history must be >= 1, got {history!r}")
    return float(time_scale)


def unknown_tenant_text(tenant_id: str, known: list[str], source: str) -> str:
    """The detail of an ``unknown_tenant`` rejection, with a "did you mean"."""
    close = difflib.get_close_matches(tenant_id, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    shown = ", ".join(map(repr, known[:10])) + (" ..." if len(known) > 10 else "")
    return f"unknown tenant {short(tenant_id)}: not in {source} (tenants: {shown}){hint}"


def settled_trace(scenario: Scenario, tenant_index: np.ndarray, arrival_s: np.ndarray,
                  prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                  priority_bid: np.ndarray) -> Trace:
    """The trace of a live run's settled requests, for ``summarize`` and replays: tenants not
    in the scenario (index -1) share one name, "(unknown)"."""
    names = [t.id for t in scenario.tenants] + [UNKNOWN_TENANT_LABEL]
    codes = np.where(tenant_index >= 0, tenant_index, len(names) - 1)
    return Trace(arrival_s, codes, names, prompt_tokens, output_tokens, priority_bid,
                 source="<live service>")


def summary_with_tenant_latency(result, scenario: Scenario) -> dict:
    """SUMMARY.json's keys over a live run's settled requests, plus each tenant's latency
    percentiles (``GET /metrics``)."""
    summary = summarize(result)
    done = result.completed
    latency = result.finish_s - result.trace.arrival_s
    summary["tenant_latency_s"] = {
        tenant.id: latency_stats(latency[done & (result.tenant_index == i)])
        for i, tenant in enumerate(scenario.tenants)
    }
    return summary


class LivePrometheus:
    """The Prometheus metrics both engines export, in a registry of their own (several apps
    per process). ``help_texts`` holds the texts that differ by engine; a subclass adds its own
    metrics in :meth:`_request_metrics` and :meth:`_engine_metrics`, called where they appear
    in the exposition."""

    def __init__(self, scheduler: LiveSchedulerBase, help_texts: Mapping[str, str]) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("apslab_requests", help_texts["requests"],
                                ["tenant", "status"], registry=registry)
        self.rejections = Counter(
            "apslab_rejections", "Requests the scheduler rejected, by tenant and reason.",
            ["tenant", "reason"], registry=registry)
        self.queue_wait = Histogram("apslab_queue_wait_seconds", help_texts["queue_wait"],
                                    ["tenant"], buckets=TIME_BUCKETS_S, registry=registry)
        self.latency = Histogram("apslab_latency_seconds", help_texts["latency"], ["tenant"],
                                 buckets=TIME_BUCKETS_S, registry=registry)
        self._request_metrics(registry)
        self.output_tokens = Counter("apslab_output_tokens", help_texts["output_tokens"],
                                     ["tenant"], registry=registry)
        self.gpu_busy = Counter("apslab_gpu_busy_seconds", help_texts["gpu_busy"], ["gpu"],
                                registry=registry)
        self._engine_metrics(registry, scheduler)
        Gauge("apslab_gpus_busy", help_texts["gpus_busy"],
              registry=registry).set_function(lambda: scheduler.gpus_busy)
        Gauge("apslab_time_scale", "Wall seconds per model second.",
              registry=registry).set(scheduler.time_scale)

    def _request_metrics(self, registry: CollectorRegistry) -> None:
        """Per-request metrics beyond queue wait and latency (none here)."""

    def _engine_metrics(self, registry: CollectorRegistry, scheduler: LiveSchedulerBase
                        ) -> None:
        """The engine's own counters and gauges (none here)."""

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class LiveSchedulerBase:
    """What both live schedulers share: the scaled clock on the running event loop, the
    tenants' limiters, the life cycle (start, drain, shut down), the dispatcher's wake-up,
    the answers to refused requests, response counting and ``GET /metrics``.

    A subclass provides ``_dispatch`` (handle every due event, then :meth:`_schedule` the next
    wake-up), ``_next_event_s`` (the model time of the next event, inf for none),
    ``_fail_everything`` (end every unanswered request with a rejection), ``_capacity_text``
    (its wording for a request that can never fit and for a full queue), ``settled``,
    ``settled_result``, ``in_flight``, ``_live_state`` (its part of /metrics' "service") and
    ``prometheus`` (a :class:`LivePrometheus`). Every method runs on the event loop's thread,
    so no locks are needed.
    """

    engine = ""

    def __init__(self, scenario: Scenario, time_scale: float, history: int) -> None:
        self.time_scale = check_time_scale(time_scale, history)
        self.scenario = scenario
        self.gpu_count = scenario.cluster.gpus
        self.max_queue_length = scenario.scheduler.max_queue_length
        self.tenants = TenantManager(t.limits() for t in scenario.tenants)
        self.tenant_index = {t.id: i for i, t in enumerate(scenario.tenants)}
        self.responses: dict[int, int] = {}
        self.cancelled_at_shutdown = 0
        self.client_disconnects = 0
        self.closing = False
        self.failed: BaseException | None = None
        self._next_request_id = 0
        self._t0: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.TimerHandle | None = None  # the dispatcher's next call
        self._wakeup_s = math.inf  # its model time (inf: none)
        self._drained: asyncio.Event | None = None
        self._shutdown_done = False

    # -- clock ----------------------------------------------------------------------------

    def now(self) -> float:
        """Model seconds since :meth:`start` (the event loop's monotonic clock, scaled)."""
        return (self._loop.time() - self._t0) / self.time_scale

    def _wall_deadline(self, model_s: float) -> float:
        """The event loop's time at model time ``model_s`` (what ``call_at`` takes)."""
        return self._t0 + model_s * self.time_scale

    @property
    def started(self) -> bool:
        return self._loop is not None

    def rate_limit(self, tenant_id: str) -> RateLimitState:
        """The tenant's limiter as of its last admission decision (x-ratelimit-* headers)."""
        return rate_limit_state(self.tenants.limiters[tenant_id], self.now(), self.time_scale)

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the clock; events are handled on the running event loop from now on."""
        if self._loop is not None:
            raise RuntimeError("the scheduler is already running")
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()  # the loop's clock, so call_at deadlines agree with now()
        self._drained = asyncio.Event()

    async def shutdown(self, drain_s: float = DEFAULT_DRAIN_S) -> None:
        """Refuse new requests, finish the admitted ones for up to ``drain_s`` wall seconds,
        then end whatever is left with a ``shutting_down`` rejection (503). Safe to call more
        than once."""
        self.closing = True
        if self._loop is None or self._shutdown_done:
            return
        self._shutdown_done = True
        self._dispatch()  # notices at once if nothing is in flight
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout=max(0.0, drain_s))
        self._cancel_wakeup()
        self._fail_everything(Rejection(SHUTTING_DOWN, "the service is shutting down"))

    def _fail(self, exc: BaseException) -> None:
        """A bug must not leave clients waiting forever: end every request with a 500."""
        self.failed = exc
        logging.getLogger(type(self).__module__).exception(
            "apslab %s scheduler failed", self.engine, exc_info=exc)
        self._cancel_wakeup()
        self._fail_everything(Rejection(INTERNAL_ERROR, f"scheduler failed: {exc!r}"))

    # -- the dispatcher's wake-up -----------------------------------------------------------

    def _schedule(self) -> None:
        """Arrange for ``_dispatch`` to run when the next event is due (a timer callback
        rather than a task: it only does synchronous work, and a callback runs as soon as its
        deadline passes, without the extra event-loop turn a task would wait for)."""
        next_s = self._next_event_s()
        if next_s == self._wakeup_s:
            return
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup_s = next_s
        self._wakeup = None if next_s == math.inf else self._loop.call_at(
            self._wall_deadline(next_s), self._dispatch)

    def _cancel_wakeup(self) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup, self._wakeup_s = None, math.inf

    # -- admission answers ----------------------------------------------------------------

    def _refuse_if_closed(self, tenant_id: str) -> Rejection | None:
        """The answer to a request once the scheduler has failed (500) or is closing, or
        before it has started (503); None while it takes requests."""
        if self.failed is not None:
            return Rejection(INTERNAL_ERROR, f"scheduler failed: {self.failed!r}", tenant_id)
        if self.closing or self._loop is None:
            return Rejection(SHUTTING_DOWN, "the service is shutting down", tenant_id)
        return None

    def _new_request_id(self) -> int:
        """Ids count every decided request, admitted or not."""
        request_id = self._next_request_id
        self._next_request_id += 1
        return request_id

    def _reject(self, code: int, tenant_id: str, index: int, request_id: int, now: float,
                prompt_tokens: int, output_tokens: int) -> Rejection:
        """Count a request the limiter refused (Prometheus) and answer it; a 429 says when to
        retry (wall seconds) and what the tenant's limiter holds."""
        reason = REASON_NAMES[code]
        label = tenant_id if index >= 0 else UNKNOWN_TENANT_LABEL
        self.prometheus.rejections.labels(label, reason).inc()
        retry = limits = None
        if STATUS_OF_REASON.get(reason) == 429:
            retry = self.tenants.seconds_until_admitted(tenant_id, prompt_tokens,
                                                        output_tokens, now) * self.time_scale
            limits = self.rate_limit(tenant_id)
        return Rejection(reason, self._explain(code, tenant_id, prompt_tokens + output_tokens,
                                               retry),
                         tenant_id, request_id, now, retry, limits)

    # -- texts, counts and metrics ----------------------------------------------------------

    def _explain(self, code: int, tenant_id: str, cost: int, retry_wall_s: float | None) -> str:
        """Why a request was rejected, for its answer's body."""
        if code == UNKNOWN_TENANT:
            return unknown_tenant_text(tenant_id, list(self.tenant_index), self.scenario.source)
        if code in (EXCEEDS_KV_CAPACITY, QUEUE_FULL):
            return self._capacity_text(code, cost)
        return over_limit_text(code, tenant_id, self.tenants.limiters[tenant_id], cost,
                               None if code == EXCEEDS_BURST else retry_wall_s)

    def count_response(self, tenant_label: str, status: int) -> None:
        """Count one response (JSON /metrics and Prometheus agree by construction)."""
        self.responses[status] = self.responses.get(status, 0) + 1
        self.prometheus.requests.labels(tenant_label, str(status)).inc()

    def metrics(self) -> dict[str, Any]:
        """``GET /metrics``: SUMMARY.json's keys over the settled requests (those of ``apslab
        simulate`` on the scenario), plus the live state under "service"."""
        summary = summary_with_tenant_latency(self.settled_result(), self.scenario)
        summary["service"] = {
            "engine": self.engine,
            "time_scale": self.time_scale,
            "uptime_s": self.now() if self._t0 is not None else 0.0,
            "responses": {str(code): count for code, count in sorted(self.responses.items())},
            "in_flight": self.in_flight,
            **self._live_state(),
            "window_requests": len(self.settled),
            "closing": self.closing,
        }
        return summary
