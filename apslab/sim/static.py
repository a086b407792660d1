"""The discrete-event simulator: a trace through limiter, aging queue, batcher and GPUs.

Semantics (the contract ``apslab simulate`` is checked against, request by request):

* Requests are handled in (arrival_s, row) order. Admission happens at arrival, checked in this
  order: tenant not in the scenario (``unknown_tenant``), prompt + output over the KV capacity
  (``exceeds_kv_capacity``), over the tenant's burst cap (``exceeds_burst``), the queue at
  ``max_queue_length`` (``queue_full``, only when that key is set), then the token bucket
  (``rate_limited``). A rejected request consumes nothing.
* A *formation timer* is armed when a request is admitted while a GPU is idle and no timer is
  armed; it fires ``batch_window_ms`` later. A batch also forms the moment a GPU finishes while
  requests wait. At a formation instant, idle GPUs take batches one after another, lowest index
  first, until the queue is empty or no GPU is idle; then the timer is disarmed. With one GPU this
  is: admitted while idle -> a batch forms a window later; finished with requests waiting -> the
  next batch forms at once; finished with none waiting -> idle.
* At equal times, arrivals are handled before batches form or finish; GPUs that finish at the
  same instant all become idle before any of them takes a batch.
* Priorities are evaluated at the instant the batch forms (by the lazy-aging queue's static key).
* Static batching: every member of a batch starts when it forms and finishes after the GPU
  model's service time for the whole batch.

The Python event loop touches plain Python lists and the package's own components (token
buckets, the lazy queue, the micro-batcher, the GPU model); everything per request outside it is
numpy. An optional compiled loop (apslab/sim/_eventloop.c) runs the same rules bit-identically
and is
used automatically when built; the Python loop stays the reference (see ``simulate``'s engine).
"""

from __future__ import annotations

import heapq
import math
from array import array

import numpy as np

from ..core._gc import paused_gc
from ..core.aging_queue import LazyAgingQueue, static_priority_key
from ..core.batcher import MicroBatcher, PolicyQueue
from ..core.gpu import RooflineGPU
from ..core.limiter import (
    QUEUE_FULL,
)
from ..core.policies import make_policy
from ..io.scenario import Scenario
from ..io.trace import Trace
from . import _compiled
from .admission import admit_by_column
from .result import SimulationResult


def simulate_static(scenario: Scenario, trace: Trace, chunk_size: int = 1 << 16,
                    engine: str = "auto") -> SimulationResult:
    """Run ``trace`` through the static engine in virtual time; every request's fate.

    ``engine`` picks the event loop and the token-bucket walk: "python" (the readable
    reference), "compiled" (the optional C kernels, apslab/sim/_eventloop.c, bit-identical and
    several times faster) or "auto" (compiled when built and the run allows it, else python).
    Runs with ``max_queue_length`` always use the Python loop, whose admission depends on the
    queue.
    ``chunk_size`` bounds how many requests the Python loop holds as objects at once (memory
    only; results do not depend on it).
    """
    if engine not in ("auto", "python", "compiled"):
        raise ValueError(f"engine must be 'auto', 'python' or 'compiled', got {engine!r}")
    if scenario.scheduler.continuous:
        raise ValueError("simulate_static needs [scheduler] batching = \"static\"; "
                         "apslab.simulate runs either engine")
    gpu_model = scenario.gpu
    sched = scenario.scheduler
    kv_capacity = gpu_model.kv_capacity_tokens
    admission = admit_by_column(scenario, trace, trace.kv_tokens > kv_capacity,
                                use_compiled=engine != "python")
    reason, tenant_index, order = admission.reason, admission.tenant_index, admission.order
    policy = sched.policy
    roofline = isinstance(gpu_model, RooflineGPU)
    compiled = _compiled.function("apslab_run_event_loop") if engine != "python" else None
    vtc = policy == "vtc"
    unsupported = ("not built (reinstall apslab with a C compiler)" if compiled is None
                   else "not used with the roofline GPU model" if roofline
                   else "not used with policy = \"vtc\"" if vtc
                   else "not used with max_queue_length (admission depends on the queue)"
                   if admission.in_loop else None)
    if unsupported is None:
        return _assemble(scenario, trace, reason, tenant_index,
                         *_run_compiled(compiled, trace, order, scenario))
    if engine == "compiled":
        raise RuntimeError("the compiled event loop is " + unsupported)

    loop = _EventLoop(
        chunks=_arrival_chunks(trace, order, sched.aging_per_s, policy, tenant_index,
                               admission.limiters, admission.limiter_of, chunk_size),
        queue=PolicyQueue(make_policy("vtc", [t.share for t in scenario.tenants],
                                      sched.vtc_input_weight, sched.vtc_output_weight))
        if vtc else LazyAgingQueue(sched.aging_per_s),
        batcher=MicroBatcher(sched.batch_window_s, sched.max_batch_size, kv_capacity),
        service_time_s=_batch_timer(gpu_model, sched.max_batch_size),
        gpus=scenario.cluster.gpus,
        max_queue_length=sched.max_queue_length,
    )
    # The loop creates millions of short-lived tuples and no reference cycles: the cyclic
    # garbage collector would only rescan them (a third of the run time), so pause it.
    with paused_gc():
        loop.run()
    rejected = np.frombuffer(loop.rejected, dtype=np.int64).reshape(-1, 2)
    reason[rejected[:, 0]] = rejected[:, 1]
    reason[np.frombuffer(loop.queue_full, dtype=np.int64)] = QUEUE_FULL

    columns = list(zip(*loop.batches, strict=True)) or [()] * 6
    batches = (np.array(columns[0], dtype=np.int64), np.array(columns[1], dtype=np.float64),
               np.array(columns[2], dtype=np.float64), np.array(columns[3], dtype=np.float64),
               np.array(columns[4], dtype=np.int64), np.array(columns[5], dtype=np.int32))
    return _assemble(scenario, trace, reason, tenant_index,
                     np.frombuffer(loop.members, dtype=np.int64), *batches)


def _assemble(scenario: Scenario, trace: Trace, reason: np.ndarray, tenant_index: np.ndarray,
              members: np.ndarray, sizes: np.ndarray, batch_start: np.ndarray,
              batch_finish: np.ndarray, batch_service: np.ndarray, batch_kv: np.ndarray,
              batch_gpu: np.ndarray) -> SimulationResult:
    """Per-request columns from the batches (members listed batch after batch)."""
    n = len(trace)
    start = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    batch_id = np.full(n, -1, dtype=np.int64)
    per_member_batch = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    batch_id[members] = per_member_batch
    start[members] = batch_start[per_member_batch]
    finish[members] = batch_finish[per_member_batch]
    return SimulationResult(
        scenario=scenario,
        trace=trace,
        reason=reason,
        tenant_index=tenant_index,
        start_s=start,
        finish_s=finish,
        batch_id=batch_id,
        batch_start_s=batch_start,
        batch_finish_s=batch_finish,
        batch_service_s=batch_service,
        batch_size=sizes,
        batch_kv_tokens=batch_kv,
        batch_gpu=batch_gpu.astype(np.int32),
    )


# ----------------------------------------------------------------------------------------------
# The optional compiled loop


def _batch_timer(gpu_model, max_batch_size: int):
    """The service time of a formed batch under the scenario's GPU model.

    The seed's sqrt model prices a batch from its totals; the roofline runs one prefill
    iteration of every prompt and then max(O) - 1 decode iterations of the whole batch.
    """
    if isinstance(gpu_model, RooflineGPU):
        static_batch_seconds = gpu_model.iteration_cost().static_batch_seconds

        def roofline_service_s(batch) -> float:
            items = batch.items
            return static_batch_seconds([item[0] for item in items],
                                        max(item[1] for item in items))

        return roofline_service_s
    timer = gpu_model.batch_service_timer(max_batch_size)

    def sqrt_service_s(batch) -> float:
        return timer(batch.prompt_tokens, batch.output_tokens, len(batch.request_ids))

    return sqrt_service_s


def compiled_engine_available() -> bool:
    """Whether the compiled event loop was built with this installation."""
    return _compiled.available()


def _run_compiled(function, trace: Trace, order: np.ndarray, scenario: Scenario):
    """Run the C loop on the admitted candidates; returns members and per-batch columns."""
    sched, gpu = scenario.scheduler, scenario.gpu
    count = len(order)
    decode_rate = np.array(gpu.decode_rate_table(sched.max_batch_size))
    arrival = trace.arrival_s[order]
    if sched.policy == "priority":
        neg_key = static_priority_key(trace.priority_bid[order], arrival, sched.aging_per_s)
        np.negative(neg_key, out=neg_key)
    else:  # fcfs: one key for all, so the heap orders by arrival, then request id
        neg_key = np.zeros(count)
    inputs = [np.ascontiguousarray(column, dtype=dtype) for column, dtype in (
        (arrival, np.float64), (order, np.int64), (neg_key, np.float64),
        (trace.prompt_tokens[order], np.int64), (trace.output_tokens[order], np.int64))]
    del arrival, neg_key
    members = np.empty(count, dtype=np.int64)
    sizes, kv, gpus = (np.empty(count, dtype=np.int64) for _ in range(3))
    start, finish, service = (np.empty(count, dtype=np.float64) for _ in range(3))
    pointer = _compiled.pointer
    batches = function(count, *map(pointer, inputs), scenario.cluster.gpus,
                       sched.batch_window_s, sched.max_batch_size, gpu.kv_capacity_tokens,
                       gpu.prefill_tokens_per_s, pointer(decode_rate), pointer(members),
                       pointer(sizes), pointer(start), pointer(finish), pointer(service),
                       pointer(kv), pointer(gpus))
    if batches < 0:
        raise MemoryError("the compiled event loop ran out of memory")
    member_count = int(sizes[:batches].sum())
    return (members[:member_count], sizes[:batches].copy(), start[:batches].copy(),
            finish[:batches].copy(), service[:batches].copy(), kv[:batches].copy(),
            gpus[:batches])


def _arrival_chunks(trace: Trace, order: np.ndarray, aging_per_s: float, policy: str,
                    tenant_index: np.ndarray, limiters: list, limiter_of: np.ndarray | None,
                    chunk_size: int):
    """Candidate arrivals as plain lists, ``chunk_size`` at a time, in processing order.

    Yields (arrival_s, request_id, -static key, (prompt, output, tenant) items, admit or None):
    under fcfs every key is 0, so the queue orders by arrival, then request id; ``admit`` are
    the limiters' decisions (prompt, output, now) -> code, asked in the loop when the queue
    decides admission too.
    """
    for lo in range(0, len(order), chunk_size):
        rows = order[lo:lo + chunk_size]
        arrival = trace.arrival_s[rows]
        if policy == "priority":
            neg_key = (-static_priority_key(trace.priority_bid[rows], arrival,
                                            aging_per_s)).tolist()
        else:
            neg_key = [0.0] * len(rows)
        items = list(zip(trace.prompt_tokens[rows].tolist(), trace.output_tokens[rows].tolist(),
                         tenant_index[rows].tolist(), strict=True))
        admit = None if limiter_of is None else [
            limiters[i].admit for i in limiter_of[lo:lo + chunk_size].tolist()]
        yield arrival.tolist(), rows.tolist(), neg_key, items, admit


class _EventLoop:
    """The event loop over pre-sorted candidate arrivals (see the module docstring)."""

    def __init__(self, *, chunks, queue, batcher, service_time_s, gpus, max_queue_length):
        self.chunks = chunks
        self.queue = queue
        self.batcher = batcher
        self.service_time_s = service_time_s
        self.gpus = gpus
        self.max_queue_length = max_queue_length
        # Compact typed arrays: a million requests cost 8 bytes each here, not a Python object.
        self.rejected = array("q")  # (request id, reason code) pairs, flattened
        self.queue_full = array("q")
        self.members = array("q")  # request ids, batch after batch
        # (size, start_s, finish_s, service_s, kv_tokens, gpu) per batch
        self.batches: list[tuple[int, float, float, float, int, int]] = []

    def run(self) -> None:
        inf = math.inf
        chunks = self.chunks
        queue = self.queue
        push_entry = queue.push_entry  # = pending.append: no Python call per request
        heap, pending = queue.heap, queue.pending  # waiting requests, for cheap emptiness tests
        form_batch = self.batcher.form_batch if isinstance(queue, LazyAgingQueue) \
            else self.batcher.form_policy_batch
        window = self.batcher.batch_window_s
        service_time_s = self.service_time_s
        max_queue = self.max_queue_length if self.max_queue_length is not None else inf
        rejected, queue_full = self.rejected.extend, self.queue_full.append
        members_all = self.members
        add_batch = self.batches.append
        heappush, heappop = heapq.heappush, heapq.heappop

        idle = list(range(self.gpus))  # a heap: the lowest idle index takes the next batch
        busy: list[tuple[float, int]] = []  # (finish_s, gpu)
        timer = inf
        arrival = request_id = neg_key = items = admit = ()
        count = k = 0
        while True:
            t = busy[0][0] if busy and busy[0][0] < timer else timer
            # Arrivals first, up to and including t (t moves earlier when a timer is armed).
            while True:
                if k == count:
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    arrival, request_id, neg_key, items, admit = chunk
                    count, k = len(arrival), 0
                    continue
                a = arrival[k]
                if a > t:
                    break
                item = items[k]
                if admit is not None:
                    if len(heap) + len(pending) >= max_queue:
                        queue_full(request_id[k])
                        k += 1
                        continue
                    code = admit[k](item[0], item[1], a)
                    if code:
                        rejected((request_id[k], code))
                        k += 1
                        continue
                push_entry((neg_key[k], a, request_id[k], item))
                k += 1
                if timer == inf and idle:
                    timer = a + window
                    if timer < t:
                        t = timer
            if t == inf:
                break
            while busy and busy[0][0] == t:
                heappush(idle, heappop(busy)[1])
            if pending or heap:
                while idle and (pending or heap):
                    gpu = heappop(idle)
                    batch = form_batch(queue, t)
                    ids = batch.request_ids
                    size = len(ids)
                    service = service_time_s(batch)
                    finish = t + service
                    heappush(busy, (finish, gpu))
                    members_all.extend(ids)
                    add_batch((size, t, finish, service, batch.kv_tokens, gpu))
                timer = inf
