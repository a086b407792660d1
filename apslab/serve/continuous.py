"""The live service on the continuous engine: the simulator's components, driven by a clock.

    submit -> TenantManager.admit -> ContinuousBatcher (a policy from make_policy) -> IterationCost
           -> every generated token, released when the wall clock reaches its iteration's end

Nothing here re-implements a scheduling rule. Admission is :meth:`TenantManager.admit` in the
continuous engine's order (unknown tenant; ``exceeds_kv_capacity`` by blocks; burst cap; the
*waiting* queue at ``max_queue_length``; the token bucket); rounds are
:meth:`ContinuousBatcher.schedule` and :meth:`~ContinuousBatcher.complete`; iterations last what
:class:`~apslab.core.roofline.IterationCost` says. What this module adds is the clock and the
order of events, which follow :mod:`apslab.sim.continuous` exactly:

* an arrival is handled before anything else at its instant: it arms the batch-window timer
  (``arrival + batch_window_ms``) when a GPU is idle and no timer is armed;
* at an instant where iterations end or the timer fires, every ending iteration completes
  first, then the GPUs are visited in index order and each idle one runs a round, then the
  timer is disarmed.

**Model time, exactly.** The clock reads model seconds (the event loop's monotonic clock since
the start, divided by ``time_scale``); an arrival's time is the clock when the request is
submitted. Events are handled in model-time order *whenever* the process gets to them: before an
arrival at ``a`` is admitted, every event strictly before ``a`` is handled (:meth:`_advance`),
and a timer callback handles every event strictly before the clock's current reading. A late
wakeup (a busy event loop, a slow machine) therefore delays when tokens reach their clients but
never changes a model time: given the service's own arrival times, ``apslab simulate`` computes
the very same start, first-token, finish, preemption and GPU of every request
(``settled_result()`` builds that trace; tests/test_openai_service.py replays it).

**Tokens.** Each admitted request is a :class:`LiveRequest`; when an iteration ending at ``t``
emits its token, the request's count goes up and its waiter wakes, at the wall instant
``t0 + t * time_scale`` or, if the loop was busy, as soon after as it can.

**Shutdown.** New requests are refused at once; running and waiting ones are finished for up to
``drain_s`` wall seconds; whatever is left then ends with a ``shutting_down`` rejection.

**Memory.** Settled requests are kept as compact columns, bounded like the static engine's
(``history``); once the oldest are dropped, /metrics subtracts a snapshot of the iteration
totals taken every 1,024 iterations, so it covers the window (give or take that many
iterations). The batcher's own per-request state (a few list slots per admitted request) is
not trimmed: about 150 bytes per request over the service's life.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..core.aging_queue import static_priority_key
from ..core.limiter import ADMITTED, EXCEEDS_KV_CAPACITY
from ..core.metrics import latency_stats
from ..io.errors import InputError
from ..io.scenario import Scenario
from ..sim.continuous import IterationTally, build_batcher, longest_gap, run_instant
from ..sim.result import ContinuousResult, IterationTotals
from ..sim.run import simulate
from ..sim.summary import summarize
from .common import (
    DEFAULT_HISTORY,
    INTERNAL_ERROR,
    SHUTTING_DOWN,
    LivePrometheus,
    LiveSchedulerBase,
    RateLimitState,
    Rejection,
    np_column,
    settled_trace,
)

INF = math.inf
NAN = math.nan
#: Time between tokens, model seconds: from a few milliseconds per iteration to stalls.
TPOT_BUCKETS_S = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)
TTFT_BUCKETS_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 100.0, math.inf)
_LAG_HISTORY = 100_000
_CHECKPOINT_EVERY = 1024  # iterations between snapshots of the running totals


class LiveRequest:
    """An admitted request: its model times so far and a way to wait for its tokens.

    ``emitted`` counts the tokens generated so far; ``outcome`` is None while it runs, then
    ``"completed"`` or the :class:`Rejection` that ended it (a shutdown or a failure).
    Times are model seconds (NaN until they happen).
    """

    __slots__ = ("request_id", "tenant", "tenant_id", "arrival_s", "prompt_tokens",
                 "output_tokens", "priority_bid", "rate_limit", "start_s", "first_token_s",
                 "last_token_s", "finish_s", "max_tbt_s", "preemptions", "gpu", "emitted",
                 "outcome", "disconnected", "_changed")

    def __init__(self, request_id: int, tenant: int, tenant_id: str, arrival_s: float,
                 prompt_tokens: int, output_tokens: int, priority_bid: float,
                 rate_limit: RateLimitState | None = None) -> None:
        self.request_id = request_id
        self.tenant = tenant
        self.tenant_id = tenant_id
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.priority_bid = priority_bid
        self.rate_limit = rate_limit
        self.start_s = self.first_token_s = self.last_token_s = self.finish_s = NAN
        self.max_tbt_s = NAN
        self.preemptions = 0
        self.gpu = -1
        self.emitted = 0
        self.outcome: str | Rejection | None = None
        self.disconnected = False
        self._changed = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    async def wait_for_tokens(self, seen: int) -> None:
        """Return once more than ``seen`` tokens were emitted, or the request has ended."""
        while self.emitted <= seen and self.outcome is None:
            self._changed.clear()
            await self._changed.wait()

    async def wait_until_ended(self) -> None:
        while self.outcome is None:
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()

    def timings(self) -> dict[str, Any]:
        """The request's model times as the API reports them: durations in milliseconds, and
        the instants themselves (model seconds on the service clock, exact)."""
        output = self.output_tokens
        tpot = ((self.finish_s - self.first_token_s) / (output - 1) * 1000.0
                if output >= 2 and self.outcome == "completed" else None)
        return {
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "priority_bid": self.priority_bid,
            "arrival_s": self.arrival_s,
            "queue_wait_ms": (self.start_s - self.arrival_s) * 1000.0,
            "ttft_ms": (self.first_token_s - self.arrival_s) * 1000.0,
            "tpot_ms": tpot,
            "max_tbt_ms": None if output < 2 else self.max_tbt_s * 1000.0,
            "latency_ms": (self.finish_s - self.arrival_s) * 1000.0,
            "preemptions": self.preemptions,
            "gpu": self.gpu,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": output,
            "start_s": self.start_s,
            "first_token_s": self.first_token_s,
            "finish_s": self.finish_s,
        }


COMPLETED = "completed"


class _Settled:
    """Compact columns of settled requests (completed or rejected), in the order they settled;
    beyond ``2 * history`` the oldest are dropped down to ``history``."""

    COLUMNS = (("request_id", "q"), ("tenant", "i"), ("arrival", "d"), ("prompt", "q"),
               ("output", "q"), ("bid", "d"), ("reason", "B"), ("start", "d"), ("first", "d"),
               ("finish", "d"), ("max_tbt", "d"), ("preemptions", "q"), ("gpu", "i"))

    def __init__(self, history: int) -> None:
        self.history = history
        for name, code in self.COLUMNS:
            setattr(self, name, array(code))

    def __len__(self) -> int:
        return len(self.arrival)

    def add(self, request_id: int, tenant: int, arrival: float, prompt: int, output: int,
            bid: float, reason: int, start: float = NAN, first: float = NAN,
            finish: float = NAN, max_tbt: float = NAN, preemptions: int = 0,
            gpu: int = -1) -> None:
        for (name, _code), value in zip(self.COLUMNS, (
                request_id, tenant, arrival, prompt, output, bid, reason, start, first, finish,
                max_tbt, preemptions, gpu), strict=True):
            getattr(self, name).append(value)

    def trim(self) -> float | None:
        """Drop the oldest beyond the window; the first arrival kept, if anything was dropped."""
        if len(self) <= 2 * self.history:
            return None
        drop = len(self) - self.history
        for name, _code in self.COLUMNS:
            del getattr(self, name)[:drop]
        return min(self.arrival)


class _Prometheus(LivePrometheus):
    """The continuous engine's Prometheus metrics."""

    def __init__(self, scheduler: ContinuousLiveScheduler) -> None:
        super().__init__(scheduler, {
            "requests": "Responses (POST /infer and /v1) by tenant and HTTP status.",
            "queue_wait": "First scheduled - arrival of completed requests (model seconds).",
            "latency": "Last token - arrival of completed requests (model seconds).",
            "output_tokens": "Output tokens generated, by tenant.",
            "gpu_busy": "Model seconds of iterations started, by GPU.",
            "gpus_busy": "GPUs running an iteration.",
        })

    def _request_metrics(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "apslab_ttft_seconds", "Time to first token of completed requests (model seconds).",
            ["tenant"], buckets=TTFT_BUCKETS_S, registry=registry)
        self.tpot = Histogram(
            "apslab_tpot_seconds", "Time per output token after the first, (finish - first "
            "token)/(output - 1), of completed requests with 2 or more output tokens "
            "(model seconds).", ["tenant"], buckets=TPOT_BUCKETS_S, registry=registry)
        self.preemptions = Counter(
            "apslab_preemptions", "Requests preempted (KV blocks ran out), by tenant.",
            ["tenant"], registry=registry)

    def _engine_metrics(self, registry: CollectorRegistry,
                        scheduler: ContinuousLiveScheduler) -> None:
        self.iterations = Counter("apslab_iterations", "Iterations started.", registry=registry)
        batcher = scheduler.batcher
        Gauge("apslab_queue_length", "Requests waiting (admitted or preempted, not running).",
              registry=registry).set_function(lambda: batcher.waiting)
        Gauge("apslab_running_requests", "Requests on a GPU's running list.",
              registry=registry).set_function(lambda: sum(map(len, batcher.running)))
        Gauge("apslab_kv_blocks_in_use", "KV-cache blocks held, over every GPU.",
              registry=registry).set_function(lambda: scheduler.kv_blocks_in_use)


class ContinuousLiveScheduler(LiveSchedulerBase):
    """The continuous engine in real time (see the module docstring).

    Every method runs on the event loop's thread, so no locks are needed. ``submit`` decides a
    request at once: a :class:`Rejection`, or a :class:`LiveRequest` whose tokens arrive as the
    model emits them.
    """

    engine = "continuous"

    def __init__(self, scenario: Scenario, time_scale: float = 1.0,
                 history: int = DEFAULT_HISTORY) -> None:
        if not scenario.scheduler.continuous:
            raise InputError("ContinuousLiveScheduler needs [scheduler] batching = "
                             "\"continuous\"")
        super().__init__(scenario, time_scale, history)
        sched = scenario.scheduler
        self.block_size = sched.block_size
        self.total_blocks = scenario.gpu.total_blocks(sched.block_size)
        # ceil((P + O) / block_size) > total_blocks  <=>  P + O > total_blocks * block_size,
        # so TenantManager.admit's token comparison is the engine's block rule exactly.
        self.kv_capacity_tokens = self.total_blocks * sched.block_size
        # The batcher and the service difference between backlogged tenants, as the simulator
        # sets them up.
        self.fairness, self.batcher = build_batcher(scenario, self.total_blocks)
        self.window = sched.batch_window_s
        self.aging = sched.aging_per_s
        self.prometheus = _Prometheus(self)
        self.settled = _Settled(history)

        self._ends = [INF] * self.gpu_count  # when each GPU's iteration ends (inf: idle)
        self._timer = INF  # the batch-window timer (inf: not armed)
        self._by_handle: list[LiveRequest | None] = []  # batcher handle -> unfinished request
        self._in_flight = 0
        # The iterations' totals, accumulated as the simulator does.
        self._tally = IterationTally(scenario.gpu.iteration_cost(), self.gpu_count)
        # (start of an iteration, the totals before it), every _CHECKPOINT_EVERY iterations:
        # what /metrics subtracts once the oldest settled requests have been dropped.
        self._checkpoints: list[tuple[float, IterationTotals]] = []
        self._window_start = -INF  # the first arrival kept (-inf: nothing dropped yet)
        self._lag = array("d")  # how late each iteration end was handled (model seconds)

    # -- clock and state ----------------------------------------------------------------------

    @property
    def gpus_busy(self) -> int:
        return sum(1 for end in self._ends if end != INF)

    @property
    def kv_blocks_in_use(self) -> int:
        return sum(self.total_blocks - free for free in self.batcher.free_blocks)

    @property
    def in_flight(self) -> int:
        """Admitted requests not finished yet (waiting, running or preempted)."""
        return self._in_flight

    def _fail_everything(self, rejection: Rejection) -> None:
        for handle, request in enumerate(self._by_handle):
            if request is None or request.outcome is not None:
                continue
            self._by_handle[handle] = None
            self._in_flight -= 1
            self.cancelled_at_shutdown += rejection.reason == SHUTTING_DOWN
            request.outcome = Rejection(rejection.reason, rejection.detail, request.tenant_id,
                                        request.request_id, request.arrival_s)
            request._notify()

    # -- admission ----------------------------------------------------------------------------

    def submit(self, tenant_id: str, prompt_tokens: int, output_tokens: int,
               priority_bid: float = 1.0) -> Rejection | LiveRequest:
        """Decide one request now (the bid is the one it carries, already capped)."""
        refused = self._refuse_if_closed(tenant_id)
        if refused is not None:
            return refused
        if prompt_tokens < 1 or output_tokens < 1:
            raise ValueError("continuous batching needs prompt_tokens >= 1 and "
                             "output_tokens >= 1")
        now = self.now()
        try:
            self._advance(now)  # everything before this arrival happens first
        except Exception as exc:  # noqa: BLE001 - answered 500, never left hanging
            self._fail(exc)
            return Rejection(INTERNAL_ERROR, f"scheduler failed: {exc!r}", tenant_id)
        batcher = self.batcher
        queue_full = (self.max_queue_length is not None
                      and batcher.waiting >= self.max_queue_length)
        code = self.tenants.admit(tenant_id, prompt_tokens + output_tokens, now,
                                  self.kv_capacity_tokens, queue_full=queue_full,
                                  prompt_tokens=prompt_tokens)
        request_id = self._new_request_id()
        index = self.tenant_index.get(tenant_id, -1)
        if code != ADMITTED:
            self._schedule()  # the events handled above may have moved the next one
            self.settled.add(request_id, index, now, prompt_tokens, output_tokens,
                             priority_bid, code)
            self._trim()
            return self._reject(code, tenant_id, index, request_id, now, prompt_tokens,
                                output_tokens)
        handle = batcher.add(prompt_tokens, output_tokens,
                             neg_key=-static_priority_key(priority_bid, now, self.aging),
                             arrival_s=now, request_id=request_id, tenant=index)
        request = LiveRequest(request_id, index, tenant_id, now, prompt_tokens, output_tokens,
                              priority_bid, self.rate_limit(tenant_id))
        assert handle == len(self._by_handle)
        self._by_handle.append(request)
        self._in_flight += 1
        if self._timer == INF and INF in self._ends:
            self._timer = now + self.window
        self._schedule()  # the events handled above, or this arrival's timer, may move the next
        return request

    def _capacity_text(self, code: int, cost: int) -> str:
        if code == EXCEEDS_KV_CAPACITY:
            return (f"prompt_tokens + output_tokens = {cost} needs "
                    f"{-(-cost // self.block_size)} KV blocks of {self.block_size} tokens, more "
                    f"than a GPU's {self.total_blocks} ({self.kv_capacity_tokens} tokens): this "
                    "request can never run")
        return (f"the waiting queue is full ({self.max_queue_length} requests, "
                "scheduler.max_queue_length); try again later")

    # -- events -------------------------------------------------------------------------------

    def _advance(self, until: float) -> None:
        """Handle, in model-time order, every event strictly before ``until`` (the rules of
        apslab.sim.continuous: completions, then rounds on GPUs in index order, then the
        timer is disarmed)."""
        ends = self._ends
        while True:
            t = min(min(ends), self._timer)
            if not t < until:  # also stops at inf
                return
            completed = run_instant(t, ends, self._complete, self._start, self.fairness)
            self._lag.extend([until - t] * completed)
            self._timer = INF

    def _start(self, gpu: int, t: float) -> float:
        """A round on ``gpu`` at ``t``; returns when its iteration ends (inf: it idles)."""
        iteration = self.batcher.schedule(gpu)
        if iteration is None:
            return INF
        if self._tally.count % _CHECKPOINT_EVERY == 0:
            self._checkpoints.append((t, self._totals()))
        duration = self._tally.add(gpu, iteration)
        by_handle = self._by_handle
        # A request ended at shutdown (None here) still runs in the model; nobody listens.
        for handle in iteration.newly_started:
            if by_handle[handle] is not None:
                by_handle[handle].start_s = t
        prom = self.prometheus
        for handle in iteration.preempted:
            request = by_handle[handle]
            if request is None:
                continue
            request.preemptions += 1
            prom.preemptions.labels(request.tenant_id).inc()
        prom.iterations.inc()
        prom.gpu_busy.labels(str(gpu)).inc(duration)
        return t + duration

    def _complete(self, gpu: int, t: float) -> None:
        done = self.batcher.complete(gpu)
        by_handle = self._by_handle
        for handle in done.emitted:
            request = by_handle[handle]
            if request is None:
                continue
            previous = request.last_token_s
            if previous != previous:  # NaN: the first token
                request.first_token_s = t
            else:
                request.max_tbt_s = longest_gap(request.max_tbt_s, t - previous)
            request.last_token_s = t
            request.emitted += 1
            request._notify()
        for handle in done.finished:
            request = by_handle[handle]
            if request is None:
                continue
            by_handle[handle] = None
            request.finish_s = t
            request.gpu = gpu
            self._in_flight -= 1
            self._settle(request)
            request.outcome = COMPLETED
            request._notify()
        self._tally.ended(t)

    def _settle(self, request: LiveRequest) -> None:
        self.settled.add(request.request_id, request.tenant, request.arrival_s,
                         request.prompt_tokens, request.output_tokens, request.priority_bid,
                         ADMITTED, request.start_s, request.first_token_s, request.finish_s,
                         request.max_tbt_s, request.preemptions, request.gpu)
        tenant, prom = request.tenant_id, self.prometheus
        arrival = request.arrival_s
        prom.queue_wait.labels(tenant).observe(request.start_s - arrival)
        prom.latency.labels(tenant).observe(request.finish_s - arrival)
        prom.ttft.labels(tenant).observe(request.first_token_s - arrival)
        if request.output_tokens >= 2:
            prom.tpot.labels(tenant).observe((request.finish_s - request.first_token_s)
                                             / (request.output_tokens - 1))
        prom.output_tokens.labels(tenant).inc(request.output_tokens)
        self._trim()

    def _totals(self) -> IterationTotals:
        return self._tally.totals(self.fairness)

    def _trim(self) -> None:
        first_kept = self.settled.trim()
        if first_kept is not None:
            self._window_start = first_kept
            while len(self._checkpoints) > 1 and self._checkpoints[1][0] <= first_kept:
                del self._checkpoints[0]
        if len(self._lag) > 2 * _LAG_HISTORY:
            del self._lag[:-_LAG_HISTORY]

    # -- the dispatcher: a timer callback at the next event's wall deadline ----------------------

    def _next_event_s(self) -> float:
        """The earliest iteration end or the batch-window timer."""
        return min(min(self._ends), self._timer)

    def _dispatch(self) -> None:
        self._wakeup, self._wakeup_s = None, INF
        if self.failed is not None:
            return
        try:
            self._advance(self.now())
            if self.closing and not self._in_flight:
                self._drained.set()
            self._schedule()
        except Exception as exc:  # noqa: BLE001 - every waiting client is answered 500
            self._fail(exc)

    # -- metrics ------------------------------------------------------------------------------

    def note_disconnect(self, request: LiveRequest) -> None:
        """A streaming client went away: its request keeps its place in the model."""
        if not request.disconnected:
            request.disconnected = True
            self.client_disconnects += 1

    def settled_result(self) -> ContinuousResult:
        """The settled requests, in request-id order, as a ContinuousResult for ``summarize``.

        Its ``trace`` holds every request the scheduler decided (arrival on the service clock,
        tenant, tokens, the bid it carried), so ``apslab.sim.run.simulate(scenario,
        result.trace)`` replays a settled run: with nothing in flight, its per-request results
        equal this one's exactly. Requests still in flight are left out; tenants not in the
        scenario share the name "(unknown)".
        """
        s = self.settled
        order = np.argsort(np_column(s.request_id, np.int64), kind="stable")

        def column(name, dtype):
            return np_column(getattr(s, name), dtype)[order]

        tenant_index = column("tenant", np.int32)
        trace = settled_trace(self.scenario, tenant_index, column("arrival", np.float64),
                              column("prompt", np.int64), column("output", np.int64),
                              column("bid", np.float64))
        totals = self._totals()
        if self._checkpoints and self._checkpoints[0][0] <= self._window_start:
            # The iterations since the last snapshot before the window (a few more than the
            # window's own: at most _CHECKPOINT_EVERY).
            _t, before = self._checkpoints[0]
            totals = IterationTotals(
                totals.count - before.count, totals.requests - before.requests,
                totals.tokens - before.tokens,
                [now - then for now, then in zip(totals.busy_s_per_gpu, before.busy_s_per_gpu,
                                                 strict=True)],
                totals.bytes_moved - before.bytes_moved, totals.flops - before.flops,
                totals.block_seconds - before.block_seconds, totals.last_end_s,
                None)  # a largest difference since the start does not describe a window
        return ContinuousResult(
            scenario=self.scenario, trace=trace, reason=column("reason", np.uint8),
            tenant_index=tenant_index, start_s=column("start", np.float64),
            finish_s=column("finish", np.float64), first_token_s=column("first", np.float64),
            preemptions=column("preemptions", np.int64), max_tbt_s=column("max_tbt", np.float64),
            finish_gpu=column("gpu", np.int32), total_blocks=self.total_blocks,
            iterations=totals)

    def _live_state(self) -> dict[str, Any]:
        """The continuous engine's part of /metrics' "service"."""
        batcher = self.batcher
        return {
            "queue_length": batcher.waiting,
            "running": sum(map(len, batcher.running)),
            "gpus_busy": self.gpus_busy,
            "kv_blocks_in_use": self.kv_blocks_in_use,
            "kv_blocks_total": self.total_blocks * self.gpu_count,
            "event_lag_s": latency_stats(np_column(self._lag, np.float64)),
            "client_disconnects": self.client_disconnects,
            "cancelled_at_shutdown": self.cancelled_at_shutdown,
        }


REPLAYED_COLUMNS = ("reason", "tenant_index", "start_s", "first_token_s", "finish_s",
                    "preemptions", "max_tbt_s", "finish_gpu")


def replay(result: ContinuousResult) -> tuple[ContinuousResult, list[str]]:
    """The service's replay test: ``apslab simulate`` on a settled live run's own arrivals
    (``result.trace``), and the columns in which the two runs differ (none, when every request
    was decided as the engine's rules say). Also compares their SUMMARY.json."""
    simulated = simulate(result.scenario, result.trace)
    differences = []
    for name in REPLAYED_COLUMNS:
        live, model = getattr(result, name), getattr(simulated, name)
        same = np.array_equal(live, model, equal_nan=live.dtype.kind == "f")
        if not same:
            rows = np.flatnonzero(~((live == model) | (np.isnan(live) & np.isnan(model))
                                    if live.dtype.kind == "f" else live == model))
            differences.append(f"{name}: {len(rows)} request(s) differ, the first row "
                               f"{int(rows[0])}")
    if not differences and summarize(result) != summarize(simulated):
        differences.append("SUMMARY.json differs")
    return simulated, differences
