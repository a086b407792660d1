"""The live service: the package's limiter, queue, batcher and GPU model behind FastAPI.

:func:`create_app` serves a scenario on the engine its ``[scheduler] batching`` names: the
static engine's :class:`LiveScheduler` (below) or the continuous engine's
:class:`~apslab.serve.continuous.ContinuousLiveScheduler`; both answer ``POST /infer``,
``/metrics``, ``/metrics/prometheus`` and ``/healthz`` here, and OpenAI's ``/v1`` API
(:mod:`apslab.serve.openai_api`), with per-tenant keys (:mod:`apslab.serve.keys`) when
configured. The rest of this docstring is about the static engine:

    Client -> POST /infer -> TenantManager.admit -> LazyAgingQueue -> MicroBatcher -> GPUModel
           -> the response, sent when the request's batch finishes;   GET /metrics, /healthz

Nothing here re-implements a scheduling rule: admission is :meth:`TenantManager.admit`, the order
is the lazy-aging queue's, batches come from :meth:`MicroBatcher.form_batch`, their duration from
:meth:`GPUModel.service_time_s`, and ``GET /metrics`` is :func:`apslab.sim.summary.summarize`
over the requests settled so far. This module only supplies what the virtual-time simulator does
not need: a clock, a dispatcher that the event loop calls when the next event is due, HTTP, and
Prometheus export.

**Time.** The service's clock reads *model seconds*: the event loop's monotonic clock since the
start, divided by ``time_scale``. Only this module reads a clock; the components are given ``now``.
Every rule runs on it (token-bucket refill, aging, the batch window, GPU service times), so
``time_scale = 0.001`` runs the whole system a thousand times faster than the A100 it models and
tests finish in seconds, while throughput, utilisation and $ per token stay those of the model.
Response times (``queue_wait_ms``, ``latency_ms``) and ``/metrics`` are in model time; the
``Retry-After`` header is in wall seconds, because that is what a client waits.

**When batches form** mirrors the simulator's rules in real time: a request admitted while a GPU
is idle and no formation is pending arms a timer ``batch_window_ms`` ahead; when it fires, idle
GPUs take batches (lowest index first) until none is idle or the queue is empty; a GPU that
finishes while requests wait makes a batch form at once. The dispatcher runs when an event is
due, so a batch forms a little *after* its instant (the event loop's lag, larger when it is busy
with HTTP); that lag is measured per batch and reported as ``formation_lag_s``. A batch's finish
is its start plus the model's service time exactly, and its members are answered when the wall
clock reaches it.

**Shutdown.** New requests get 503 at once; waiting and running requests are finished for up to
``drain_s`` wall seconds; whatever is still unfinished then is answered 503. No client is left
without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import heapq
import math
import signal
import socket
import threading
import time
from array import array
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..core.aging_queue import LazyAgingQueue
from ..core.batcher import MicroBatcher
from ..core.limiter import ADMITTED, EXCEEDS_KV_CAPACITY
from ..core.metrics import latency_stats
from ..io.errors import InputError
from ..io.scenario import Scenario
from ..io.trace import MAX_TOKENS
from ..sim.result import SimulationResult
from .common import (
    DEFAULT_DRAIN_S,
    DEFAULT_HISTORY,
    INVALID_BODY_LABEL,
    SHUTTING_DOWN,
    UNAUTHENTICATED_LABEL,
    UNKNOWN_TENANT_LABEL,
    LivePrometheus,
    LiveSchedulerBase,
    RateLimitState,
    Rejection,
    effective_bid,
    settled_trace,
)
from .common import np_column as _np
from .common import short as _short
from .continuous import ContinuousLiveScheduler
from .keys import KeyStore
from .openai_api import (
    Authenticator,
    add_openai_routes,
    bearer_token,
    openai_error,
    rejection_headers,
    served_model_name,
)

INF = math.inf


# --------------------------------------------------------------------------------------------
# Request and response bodies

TokenCount = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]


class InferenceRequest(BaseModel):
    """``POST /infer``: one request. Unknown keys are errors, so a typo is never ignored."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: StrictStr | None = Field(
        None, min_length=1, description="A tenant of the scenario. Optional when the "
        "Authorization header says who is calling (its key's tenant, or with no keys "
        "configured the tenant the bearer token names); if both are given they must agree.")
    prompt_tokens: TokenCount = Field(0, description="Prompt (prefill) tokens (>= 1 with "
                                                     "continuous batching).")
    output_tokens: TokenCount = Field(
        validation_alias=AliasChoices("output_tokens", "tokens_requested"),
        description="Output (decode) tokens; the seed's `tokens_requested` is accepted too "
                    "(>= 1 with continuous batching).")
    priority_bid: StrictFloat | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="Priority: higher goes first. Default: the tenant's priority_bid from the "
                    "scenario (1.0 unless it sets one); a higher bid than the tenant's max_bid "
                    "(default: its priority_bid) is capped to it.")


class InferenceResponse(BaseModel):
    """``200`` from ``POST /infer``: sent when the request's batch has finished.

    Times are model time (wall time divided by the service's time_scale).
    """

    request_id: int
    tenant_id: str
    queue_wait_ms: float = Field(description="Batch start - arrival, model milliseconds.")
    latency_ms: float = Field(description="Batch finish - arrival, model milliseconds.")
    batch_id: int
    batch_size: int
    prompt_tokens: int
    output_tokens: int
    arrival_s: float = Field(description="Arrival on the service clock, model seconds.")
    gpu: int
    priority_bid: float = Field(description="The bid the request carried (capped at the "
                                            "tenant's max_bid).")


class ContinuousInferenceResponse(BaseModel):
    """``200`` from ``POST /infer`` on the continuous engine: sent when the request's last
    token has been generated. Times are model milliseconds."""

    request_id: int
    tenant_id: str
    priority_bid: float
    arrival_s: float = Field(description="Arrival on the service clock, model seconds.")
    queue_wait_ms: float = Field(description="First scheduled - arrival.")
    ttft_ms: float = Field(description="First token - arrival.")
    tpot_ms: float | None = Field(description="(Last token - first token) / (output - 1); "
                                              "null for one output token.")
    max_tbt_ms: float | None = Field(description="Longest gap between two tokens.")
    latency_ms: float = Field(description="Last token - arrival.")
    preemptions: int
    gpu: int = Field(description="The GPU the request finished on.")
    prompt_tokens: int
    output_tokens: int
    start_s: float = Field(description="First scheduled, model seconds on the service clock.")
    first_token_s: float = Field(description="First token, model seconds.")
    finish_s: float = Field(description="Last token, model seconds.")


class RejectionBody(BaseModel):
    """An error from ``POST /infer`` that the scheduler decided (not a malformed body)."""

    detail: str
    reason: str
    request_id: int | None = None
    tenant_id: str | None = None
    arrival_s: float | None = None
    retry_after_s: float | None = Field(
        None, description="429 only: wall seconds until the tenant's bucket holds the cost.")


# --------------------------------------------------------------------------------------------
# Outcomes of one request


@dataclass(frozen=True, slots=True)
class Completion:
    """A request that ran: its batch and times (model seconds)."""

    request_id: int
    tenant_id: str
    arrival_s: float
    start_s: float
    finish_s: float
    batch_id: int
    batch_size: int
    gpu: int
    prompt_tokens: int
    output_tokens: int


@dataclass(slots=True)
class _RunningBatch:
    batch_id: int
    gpu: int
    due_s: float  # when the rules say it should have formed
    start_s: float
    finish_s: float
    service_s: float
    kv_tokens: int
    items: list


class _Settled:
    """Compact columns of settled requests (completed or rejected), the input of ``summarize``.

    About 50 bytes a request; beyond ``2 * history`` the oldest are dropped down to ``history``,
    so a long-running service keeps bounded memory and /metrics covers its recent past.
    """

    def __init__(self, history: int) -> None:
        self.history = history
        self.tenant = array("i")
        self.arrival = array("d")
        self.prompt = array("q")
        self.output = array("q")
        self.bid = array("d")
        self.reason = array("B")
        self.start = array("d")
        self.finish = array("d")
        self.batch_id = array("q")
        # finished batches: id, size, start, finish, service, kv tokens, gpu, formation lag
        self.b_id = array("q")
        self.b_size = array("q")
        self.b_start = array("d")
        self.b_finish = array("d")
        self.b_service = array("d")
        self.b_kv = array("q")
        self.b_gpu = array("i")
        self.b_lag = array("d")

    def __len__(self) -> int:
        return len(self.arrival)

    def add(self, tenant: int, arrival: float, prompt: int, output: int, bid: float,
            reason: int, start: float = math.nan, finish: float = math.nan,
            batch_id: int = -1) -> None:
        self.tenant.append(tenant)
        self.arrival.append(arrival)
        self.prompt.append(prompt)
        self.output.append(output)
        self.bid.append(bid)
        self.reason.append(reason)
        self.start.append(start)
        self.finish.append(finish)
        self.batch_id.append(batch_id)

    def add_batch(self, batch: _RunningBatch) -> None:
        self.b_id.append(batch.batch_id)
        self.b_size.append(len(batch.items))
        self.b_start.append(batch.start_s)
        self.b_finish.append(batch.finish_s)
        self.b_service.append(batch.service_s)
        self.b_kv.append(batch.kv_tokens)
        self.b_gpu.append(batch.gpu)
        self.b_lag.append(batch.start_s - batch.due_s)

    def trim(self) -> None:
        if len(self) <= 2 * self.history:
            return
        drop = len(self) - self.history
        for column in (self.tenant, self.arrival, self.prompt, self.output, self.bid,
                       self.reason, self.start, self.finish, self.batch_id):
            del column[:drop]
        first_arrival = min(self.arrival)
        keep_from = 0
        while keep_from < len(self.b_finish) and self.b_finish[keep_from] < first_arrival:
            keep_from += 1
        for column in (self.b_id, self.b_size, self.b_start, self.b_finish, self.b_service,
                       self.b_kv, self.b_gpu, self.b_lag):
            del column[:keep_from]


# --------------------------------------------------------------------------------------------
# Prometheus


class _Prometheus(LivePrometheus):
    """The static engine's Prometheus metrics."""

    def __init__(self, scheduler: LiveScheduler) -> None:
        super().__init__(scheduler, {
            "requests": "POST /infer responses by tenant and HTTP status.",
            "queue_wait": "Batch start - arrival of completed requests (model seconds).",
            "latency": "Batch finish - arrival of completed requests (model seconds).",
            "output_tokens": "Output tokens of completed requests.",
            "gpu_busy": "Model seconds the GPUs spent on finished batches.",
            "gpus_busy": "GPUs serving a batch.",
        })

    def _engine_metrics(self, registry: CollectorRegistry, scheduler: LiveScheduler) -> None:
        self.batches = Counter("apslab_batches", "Finished batches.", registry=registry)
        Gauge("apslab_queue_length", "Requests waiting in the priority queue.",
              registry=registry).set_function(lambda: len(scheduler.queue))
        Gauge("apslab_kv_tokens_in_use", "KV-cache tokens held by the batches on the GPUs.",
              registry=registry).set_function(lambda: scheduler.kv_tokens_in_use)


# --------------------------------------------------------------------------------------------
# The scheduler


class StaticTicket:
    """An admitted static-engine request, seen as the continuous engine's
    :class:`~apslab.serve.continuous.LiveRequest` is (so ``/infer`` and ``/v1`` answer both
    alike): its tokens all arrive when its batch finishes (its first token with its last)."""

    def __init__(self, future: asyncio.Future, request_id: int, tenant_id: str,
                 arrival_s: float, prompt_tokens: int, output_tokens: int,
                 priority_bid: float, rate_limit: RateLimitState) -> None:
        self.future = future
        self.request_id = request_id
        self.tenant_id = tenant_id
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.priority_bid = priority_bid
        self.rate_limit = rate_limit
        self.emitted = 0
        self.outcome: str | Rejection | None = None
        self.completion: Completion | None = None

    async def wait_until_ended(self) -> None:
        if self.outcome is None:
            result = await self.future
            if isinstance(result, Rejection):
                self.outcome = result
            else:
                self.completion, self.emitted, self.outcome = (
                    result, self.output_tokens, "completed")

    async def wait_for_tokens(self, seen: int) -> None:
        await self.wait_until_ended()

    def timings(self) -> dict[str, Any]:
        """The request's model times as ``/v1`` reports them (a batch's tokens all come at its
        finish, so the time between tokens is 0)."""
        c = self.completion
        return {
            "request_id": c.request_id, "tenant_id": c.tenant_id,
            "priority_bid": self.priority_bid, "arrival_s": c.arrival_s,
            "queue_wait_ms": (c.start_s - c.arrival_s) * 1000.0,
            "ttft_ms": (c.finish_s - c.arrival_s) * 1000.0,
            "tpot_ms": 0.0 if self.output_tokens >= 2 else None,
            "max_tbt_ms": 0.0 if self.output_tokens >= 2 else None,
            "latency_ms": (c.finish_s - c.arrival_s) * 1000.0, "preemptions": 0,
            "gpu": c.gpu, "batch_id": c.batch_id, "batch_size": c.batch_size,
            "prompt_tokens": c.prompt_tokens, "output_tokens": c.output_tokens,
            "start_s": c.start_s, "first_token_s": c.finish_s, "finish_s": c.finish_s,
        }


class LiveScheduler(LiveSchedulerBase):
    """The scheduler in real time: admission on arrival, a timer-driven dispatcher for the GPUs.

    Every method runs on the event loop's thread, so no locks are needed. ``submit`` decides a
    request at once and returns either a :class:`Rejection` or a :class:`StaticTicket` that
    the dispatcher answers with a :class:`Completion` (or a shutdown :class:`Rejection`).
    """

    engine = "static"

    def __init__(self, scenario: Scenario, time_scale: float = 1.0,
                 history: int = DEFAULT_HISTORY) -> None:
        super().__init__(scenario, time_scale, history)
        sched = scenario.scheduler
        self.kv_capacity = scenario.gpu.kv_capacity_tokens
        self.queue = LazyAgingQueue(sched.aging_per_s)
        self.batcher = MicroBatcher(sched.batch_window_s, sched.max_batch_size, self.kv_capacity)
        self.prometheus = _Prometheus(self)
        self.settled = _Settled(history)

        self._idle = list(range(self.gpu_count))  # a heap: lowest index first
        self._busy: list[tuple[float, int, _RunningBatch]] = []  # (finish_s, batch_id, batch)
        self._timer = INF  # model time a formation is due (inf: none)
        self._next_batch_id = 0

    # -- state ------------------------------------------------------------------------------

    @property
    def gpus_busy(self) -> int:
        return len(self._busy)

    def note_disconnect(self, _ticket: StaticTicket) -> None:
        """A streaming client went away (its request keeps its place; counted)."""
        self.client_disconnects += 1

    @property
    def kv_tokens_in_use(self) -> int:
        return sum(batch.kv_tokens for _finish, _id, batch in self._busy)

    @property
    def in_flight(self) -> int:
        """Admitted requests not yet answered (waiting or on a GPU)."""
        return len(self.queue) + sum(len(b.items) for _f, _i, b in self._busy)

    # -- life cycle -----------------------------------------------------------------------

    def _fail_everything(self, rejection: Rejection) -> None:
        items = [entry[3] for entry in self.queue.entries()]
        self.queue.clear()
        for _finish, _id, batch in self._busy:
            items.extend(batch.items)
        self._busy.clear()
        for item in items:
            future = item[6]
            if not future.done():
                self.cancelled_at_shutdown += rejection.reason == SHUTTING_DOWN
                future.set_result(Rejection(rejection.reason, rejection.detail,
                                            self.scenario.tenants[item[3]].id, item[2], item[4]))

    # -- admission ------------------------------------------------------------------------

    def submit(self, tenant_id: str, prompt_tokens: int, output_tokens: int,
               priority_bid: float | None = None) -> Rejection | StaticTicket:
        """Decide one request now: a Rejection, or a ticket answered when its batch finishes.
        Without a bid it carries its tenant's priority_bid; a bid given is taken as is (the
        routes cap it with :func:`effective_bid`)."""
        refused = self._refuse_if_closed(tenant_id)
        if refused is not None:
            return refused
        now = self.now()
        cost = prompt_tokens + output_tokens
        queue = self.queue
        queue_full = self.max_queue_length is not None and len(queue) >= self.max_queue_length
        code = self.tenants.admit(tenant_id, cost, now, self.kv_capacity, queue_full=queue_full,
                                  prompt_tokens=prompt_tokens)
        request_id = self._new_request_id()
        index = self.tenant_index.get(tenant_id, -1)
        bid = effective_bid(self.scenario, index, None) if priority_bid is None else priority_bid
        if code != ADMITTED:
            self.settled.add(index, now, prompt_tokens, output_tokens, bid, code)
            self.settled.trim()
            return self._reject(code, tenant_id, index, request_id, now, prompt_tokens,
                                output_tokens)
        future = self._loop.create_future()
        queue.push(request_id, bid, now,
                   (prompt_tokens, output_tokens, request_id, index, now, bid, future))
        if self._timer == INF and self._idle:
            self._timer = now + self.batcher.batch_window_s
            self._schedule()
        return StaticTicket(future, request_id, tenant_id, now, prompt_tokens, output_tokens,
                            bid, self.rate_limit(tenant_id))

    def _capacity_text(self, code: int, cost: int) -> str:
        if code == EXCEEDS_KV_CAPACITY:
            return (f"prompt_tokens + output_tokens = {cost} exceeds the KV-cache capacity of "
                    f"{self.kv_capacity} tokens: this request can never run")
        return (f"the queue is full ({self.max_queue_length} requests waiting, "
                "scheduler.max_queue_length); try again later")

    # -- the dispatcher -------------------------------------------------------------------

    def _next_event_s(self) -> float:
        """The formation timer or the earliest batch finish, whichever comes first."""
        return min(self._timer, self._busy[0][0]) if self._busy else self._timer

    def _dispatch(self) -> None:
        """Handle every event that is due: finished batches, then a formation instant."""
        self._wakeup, self._wakeup_s = None, INF
        try:
            now = self.now()
            busy, idle = self._busy, self._idle
            first_finish = None
            while busy and busy[0][0] <= now:
                finish, _batch_id, batch = heapq.heappop(busy)
                self._finish(batch)
                heapq.heappush(idle, batch.gpu)
                if first_finish is None:
                    first_finish = finish
            due = first_finish if first_finish is not None and self.queue else None
            if self._timer <= now:
                due = self._timer if due is None else min(due, self._timer)
            if due is not None:
                self._form_batches(now, due)
            if self.closing and not self.queue and not busy:
                self._drained.set()
            self._schedule()
        except Exception as exc:  # noqa: BLE001 - every waiting client is answered 500
            self._fail(exc)

    def _form_batches(self, now: float, due: float) -> None:
        """A formation instant: idle GPUs take batches until none is idle or the queue is empty."""
        queue, idle = self.queue, self._idle
        while idle and queue:
            gpu = heapq.heappop(idle)
            formed = self.batcher.form_batch(queue, now)
            size = len(formed.items)
            service = self.scenario.gpu.service_time_s(formed.prompt_tokens,
                                                       formed.output_tokens, size)
            batch = _RunningBatch(self._next_batch_id, gpu, due, now, now + service, service,
                                  formed.kv_tokens, formed.items)
            self._next_batch_id += 1
            heapq.heappush(self._busy, (batch.finish_s, batch.batch_id, batch))
        self._timer = INF

    def _finish(self, batch: _RunningBatch) -> None:
        """Settle a batch's members and answer their clients."""
        settled, prom = self.settled, self.prometheus
        tenants = self.scenario.tenants
        size = len(batch.items)
        start, finish = batch.start_s, batch.finish_s
        settled.add_batch(batch)
        prom.gpu_busy.labels(str(batch.gpu)).inc(batch.service_s)
        prom.batches.inc()
        for prompt, output, request_id, index, arrival, bid, future in batch.items:
            settled.add(index, arrival, prompt, output, bid, ADMITTED, start, finish,
                        batch.batch_id)
            tenant_id = tenants[index].id
            prom.queue_wait.labels(tenant_id).observe(start - arrival)
            prom.latency.labels(tenant_id).observe(finish - arrival)
            prom.output_tokens.labels(tenant_id).inc(output)
            if not future.done():
                future.set_result(Completion(request_id, tenant_id, arrival, start, finish,
                                             batch.batch_id, size, batch.gpu, prompt, output))
        settled.trim()

    # -- metrics --------------------------------------------------------------------------

    def settled_result(self) -> SimulationResult:
        """The settled requests and finished batches as a SimulationResult for ``summarize``.

        Requests still waiting or running are left out (they have no finish yet); rejected ones
        are in, as in SUMMARY.json. Tenants not in the scenario share one name, "(unknown)".
        """
        s = self.settled
        tenant_index = _np(s.tenant, np.int32)
        trace = settled_trace(self.scenario, tenant_index, _np(s.arrival, np.float64),
                              _np(s.prompt, np.int64), _np(s.output, np.int64),
                              _np(s.bid, np.float64))
        batch_ids = _np(s.b_id, np.int64)
        order = np.argsort(batch_ids, kind="stable")
        request_batch = _np(s.batch_id, np.int64)
        position = np.searchsorted(batch_ids[order], request_batch)
        return SimulationResult(
            scenario=self.scenario,
            trace=trace,
            reason=_np(s.reason, np.uint8),
            tenant_index=tenant_index,
            start_s=_np(s.start, np.float64),
            finish_s=_np(s.finish, np.float64),
            batch_id=np.where(request_batch >= 0, position, -1),
            batch_start_s=_np(s.b_start, np.float64)[order],
            batch_finish_s=_np(s.b_finish, np.float64)[order],
            batch_service_s=_np(s.b_service, np.float64)[order],
            batch_size=_np(s.b_size, np.int64)[order],
            batch_kv_tokens=_np(s.b_kv, np.int64)[order],
            batch_gpu=_np(s.b_gpu, np.int32)[order],
        )

    def _live_state(self) -> dict[str, Any]:
        """The static engine's part of /metrics' "service"."""
        return {
            "queue_length": len(self.queue),
            "gpus_busy": self.gpus_busy,
            "kv_tokens_in_use": self.kv_tokens_in_use,
            "kv_capacity_tokens": self.kv_capacity,
            "formation_lag_s": latency_stats(_np(self.settled.b_lag, np.float64)),
            "cancelled_at_shutdown": self.cancelled_at_shutdown,
            "client_disconnects": self.client_disconnects,
        }


# --------------------------------------------------------------------------------------------
# The FastAPI app


def create_app(scenario: Scenario, *, time_scale: float = 1.0, drain_s: float = DEFAULT_DRAIN_S,
               history: int = DEFAULT_HISTORY, keys: KeyStore | None = None,
               model_name: str | None = None) -> FastAPI:
    """The service for ``scenario``, on the engine its ``[scheduler] batching`` names.

    Its scheduler (``app.state.scheduler``: :class:`LiveScheduler` or
    :class:`~apslab.serve.continuous.ContinuousLiveScheduler`) starts with the app's lifespan
    and drains for up to ``drain_s`` wall seconds when it ends. ``keys`` (a
    :class:`~apslab.serve.keys.KeyStore`) makes every request present its tenant's key; without
    it the bearer token (or ``/infer``'s ``tenant_id``) names the tenant. ``model_name`` is the
    model id ``/v1`` serves (default: the scenario's [model] name).
    """
    if not (math.isfinite(drain_s) and drain_s >= 0):
        raise InputError(f"drain_s must be a finite number >= 0, got {drain_s!r}")
    engine = ContinuousLiveScheduler if scenario.scheduler.continuous else LiveScheduler
    scheduler = engine(scenario, time_scale=time_scale, history=history)
    auth = Authenticator(keys, scenario)
    model_name = model_name or served_model_name(scenario)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await scheduler.start()
        try:
            yield
        finally:
            await scheduler.shutdown(drain_s)

    app = FastAPI(
        title="apslab live scheduler", version=__version__, lifespan=lifespan,
        description="Token-bucket admission, a priority queue, static micro-batching or "
                    "continuous batching and an A100 model, in real time (scaled by "
                    "time_scale); OpenAI-compatible /v1/completions and /v1/chat/completions.")
    app.state.scheduler = scheduler
    app.state.drain_s = drain_s
    app.state.auth = auth
    app.state.model_name = model_name

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input back, which can hold NaN (unencodable: a 500) or
        # megabytes; name the key and the problem instead.
        if request.url.path == "/infer":
            scheduler.count_response(INVALID_BODY_LABEL, 422)
        detail = _describe_errors(exc.errors())
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type.lower():
            detail.append({"loc": [], "type": "content_type",
                           "msg": f"the body must be JSON sent with Content-Type: "
                                  f"application/json (got {_short(content_type or 'none')})"})
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # e.g. 400 for a body nested too deeply to parse, 405 for GET /infer: counted too.
        if request.url.path == "/infer":
            scheduler.count_response(INVALID_BODY_LABEL, exc.status_code)
        if request.url.path.startswith("/v1/"):
            return openai_error(exc.status_code, str(exc.detail), headers=exc.headers)
        return await http_exception_handler(request, exc)

    rejection_responses = {
        401: {"model": RejectionBody, "description": "No key, or a wrong one (keys "
                                                     "configured)."},
        403: {"model": RejectionBody, "description": "tenant_id names another tenant than "
                                                     "the Authorization header."},
        404: {"model": RejectionBody, "description": "Unknown tenant."},
        422: {"description": "Malformed body, or a request that can never run (over the KV "
                             "capacity or the tenant's burst cap; `reason` says which)."},
        429: {"model": RejectionBody,
              "description": "Rate-limited; Retry-After (wall seconds) says when to retry."},
        503: {"model": RejectionBody, "description": "Queue full, or shutting down."},
    }

    def infer_tenant(body: InferenceRequest, request: Request
                     ) -> tuple[str | None, JSONResponse | None]:
        """Who sends an /infer request: (tenant, None), or (None, the error to answer)."""
        header = request.headers.get("authorization")
        if auth.required:
            tenant, problem = auth.tenant(header)
            if problem is not None:
                return None, _error(401, problem, "unauthorized", UNAUTHENTICATED_LABEL,
                                    {"WWW-Authenticate": "Bearer"})
        else:
            tenant = bearer_token(header)
            if tenant is None and body.tenant_id is None:
                scheduler.count_response(INVALID_BODY_LABEL, 422)
                return None, JSONResponse(status_code=422, content={"detail": [{
                    "loc": ["tenant_id"], "type": "missing",
                    "msg": "Field required (or name the tenant in an Authorization: Bearer "
                           "header)"}]})
        if body.tenant_id is not None and tenant is not None and body.tenant_id != tenant:
            return None, _error(403, f"the Authorization header identifies tenant "
                                     f"{_short(tenant)}; it cannot send requests as tenant "
                                     f"{_short(body.tenant_id)}",
                                "forbidden", tenant if tenant in scheduler.tenant_index
                                else UNKNOWN_TENANT_LABEL)
        return tenant or body.tenant_id, None

    def _error(status: int, detail: str, reason: str, label: str,
               headers: dict[str, str] | None = None) -> JSONResponse:
        scheduler.count_response(label, status)
        return JSONResponse(status_code=status, headers=headers,
                            content=RejectionBody(detail=detail, reason=reason).model_dump())

    @app.post("/infer", response_model=InferenceResponse | ContinuousInferenceResponse,
              responses=rejection_responses)
    async def infer(body: InferenceRequest, request: Request) -> Any:
        tenant_id, refused = infer_tenant(body, request)
        if refused is not None:
            return refused
        continuous = scheduler.engine == "continuous"
        if continuous and (body.prompt_tokens < 1 or body.output_tokens < 1):
            scheduler.count_response(INVALID_BODY_LABEL, 422)
            return JSONResponse(status_code=422, content={"detail": [{
                "loc": ["prompt_tokens" if body.prompt_tokens < 1 else "output_tokens"],
                "type": "greater_than_equal",
                "msg": "must be >= 1 with continuous batching (a token needs a prompt to "
                       "attend to, and every request emits at least one)"}]})
        index = scheduler.tenant_index.get(tenant_id, -1)
        bid = effective_bid(scenario, index, body.priority_bid)
        ticket = scheduler.submit(tenant_id, body.prompt_tokens, body.output_tokens, bid)
        label = tenant_id if index >= 0 else UNKNOWN_TENANT_LABEL
        if not isinstance(ticket, Rejection):
            await ticket.wait_until_ended()
        outcome = ticket if isinstance(ticket, Rejection) else ticket.outcome
        if isinstance(outcome, Rejection):
            scheduler.count_response(label, outcome.status)
            return _rejection_response(outcome)
        scheduler.count_response(label, 200)
        headers = {"x-apslab-bid": f"{bid:g}", **ticket.rate_limit.headers()}
        if continuous:
            return JSONResponse(ContinuousInferenceResponse(**ticket.timings()).model_dump(),
                                headers=headers)
        done = ticket.completion
        return JSONResponse(InferenceResponse(
            request_id=done.request_id,
            tenant_id=done.tenant_id,
            queue_wait_ms=(done.start_s - done.arrival_s) * 1000.0,
            latency_ms=(done.finish_s - done.arrival_s) * 1000.0,
            batch_id=done.batch_id,
            batch_size=done.batch_size,
            prompt_tokens=done.prompt_tokens,
            output_tokens=done.output_tokens,
            arrival_s=done.arrival_s,
            gpu=done.gpu,
            priority_bid=bid,
        ).model_dump(), headers=headers)

    add_openai_routes(app, scheduler, auth, model_name)

    @app.get("/metrics")
    async def metrics() -> JSONResponse:
        return JSONResponse(scheduler.metrics())

    @app.get("/metrics/prometheus")
    async def prometheus() -> Response:
        return Response(scheduler.prometheus.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        healthy = scheduler.started and not scheduler.closing and scheduler.failed is None
        state = "ok" if healthy else ("failed" if scheduler.failed else SHUTTING_DOWN)
        return JSONResponse(
            {"status": state, "scenario": scenario.source,
             "tenants": [t.id for t in scenario.tenants], "gpus": scheduler.gpu_count,
             "time_scale": scheduler.time_scale, "engine": scheduler.engine,
             "model": model_name, "authentication": "keys" if auth.required else "none"},
            status_code=200 if healthy else 503)

    return app


def _rejection_response(rejection: Rejection) -> JSONResponse:
    body = RejectionBody(detail=rejection.detail, reason=rejection.reason,
                         request_id=rejection.request_id, tenant_id=rejection.tenant_id,
                         arrival_s=rejection.arrival_s, retry_after_s=rejection.retry_after_s)
    return JSONResponse(status_code=rejection.status, content=body.model_dump(),
                        headers=rejection_headers(rejection) or None)


def _describe_errors(errors: list[dict]) -> list[dict[str, Any]]:
    """Pydantic errors without the echoed input; a "did you mean" for a mistyped key."""
    known = list(InferenceRequest.model_fields) + ["tokens_requested"]
    described = []
    for error in errors:
        loc = [part for part in error.get("loc", ()) if part != "body"]
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden" and loc and isinstance(loc[-1], str):
            close = difflib.get_close_matches(loc[-1], known, n=1)
            message = f"unknown key {_short(loc[-1])}" + (
                f"; did you mean {close[0]!r}?" if close else
                f"; allowed: {', '.join(known)}")
        described.append({"loc": [part if isinstance(part, int) else str(part)[:80]
                                  for part in loc],
                          "msg": message, "type": str(error.get("type", ""))})
    return described


# --------------------------------------------------------------------------------------------
# Running it: uvicorn with a drain-first shutdown, in the foreground or in a background thread


class ServiceServer(uvicorn.Server):
    """uvicorn, but on shutdown the scheduler drains *before* uvicorn waits for connections.

    uvicorn's own order (wait for open requests, then end the lifespan) would wait on requests
    that only the scheduler can answer. Here the listener closes first, then the scheduler
    finishes what it can within ``drain_s`` and answers the rest 503, then uvicorn closes the
    connections, every one of which now has its answer.
    """

    on_started: Callable[[], None] | None = None

    @contextlib.contextmanager
    def capture_signals(self):
        """SIGINT/SIGTERM start the graceful shutdown; unlike uvicorn's, the signal is not raised
        again afterwards, so a drained service exits with status 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit)
                    for sig in uvicorn.server.HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in getattr(self, "servers", []):
            server.close()
        app = self.config.app
        await app.state.scheduler.shutdown(app.state.drain_s)
        await super().shutdown(sockets=sockets)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0 = any free port); InputError if not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host!r}: cannot resolve it ({exc.strerror})") from None
    family, socktype, proto, _name, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def service_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app: FastAPI, *, log_level: str = "info", access_log: bool | None = None
                ) -> ServiceServer:
    drain_s = app.state.drain_s
    config = uvicorn.Config(app, log_level=log_level, lifespan="on",
                            access_log=log_level in ("info", "debug", "trace")
                            if access_log is None else access_log,
                            timeout_graceful_shutdown=int(math.ceil(drain_s)) + 5)
    return ServiceServer(config)


@dataclass
class BackgroundService:
    """A service running in a daemon thread (for notebooks and tests); ``stop()`` drains it."""

    url: str
    app: FastAPI
    server: ServiceServer
    thread: threading.Thread
    errors: list = field(default_factory=list)

    @property
    def scheduler(self) -> LiveScheduler:
        return self.app.state.scheduler

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Shut down (drain, 503 the rest) and wait; True once the thread has ended."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def __enter__(self) -> BackgroundService:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_in_thread(scenario: Scenario, *, time_scale: float = 1.0, host: str = "127.0.0.1",
                    port: int = 0, drain_s: float = DEFAULT_DRAIN_S, log_level: str = "warning",
                    startup_timeout_s: float = 30.0, keys: KeyStore | None = None,
                    model_name: str | None = None) -> BackgroundService:
    """Start the service in a background thread on host:port (default: a free loopback port)."""
    app = create_app(scenario, time_scale=time_scale, drain_s=drain_s, keys=keys,
                     model_name=model_name)
    sock = bind_socket(host, port)
    server = make_server(app, log_level=log_level, access_log=False)
    errors: list = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="apslab-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the service did not start: {errors or 'timed out'}")
        time.sleep(0.005)
    return BackgroundService(service_url(sock), app, server, thread, errors)


def serve(scenario: Scenario, *, host: str = "127.0.0.1", port: int = 8000,
          time_scale: float = 1.0, drain_s: float = DEFAULT_DRAIN_S, log_level: str = "info",
          keys: KeyStore | None = None, model_name: str | None = None,
          announce: Callable[[str], None] | None = None) -> None:
    """Run the service in the foreground until SIGINT/SIGTERM, then drain and stop."""
    if announce is None:
        def announce(line: str) -> None:
            print(line, flush=True)
    app = create_app(scenario, time_scale=time_scale, drain_s=drain_s, keys=keys,
                     model_name=model_name)
    sock = bind_socket(host, port)
    server = make_server(app, log_level=log_level)
    url = service_url(sock)
    engine = app.state.scheduler.engine

    def started() -> None:
        announce(f"apslab serve: {scenario.source} ({len(scenario.tenants)} tenant(s), "
                 f"{scenario.cluster.gpus} GPU(s), {engine} batching, time scale "
                 f"{time_scale:g}) listening on {url}  (Ctrl+C drains and stops)")
        announce(f"apslab serve: model {app.state.model_name!r}; {app.state.auth.describe()}")

    server.on_started = started
    server.run(sockets=[sock])
