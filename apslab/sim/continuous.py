"""The continuous engine: iteration-level batching of a trace, in virtual time.

Semantics (the contract a held-out implementation is compared with, request by request):

* **Admission** at arrival, in this order: tenant not in the scenario (``unknown_tenant``);
  ``ceil((P + O) / block_size) > total_blocks`` (``exceeds_kv_capacity``); over the tenant's
  burst cap (``exceeds_burst``); the *waiting* queue holding ``max_queue_length`` requests
  (``queue_full``, only when set); the token bucket, charged P + O (``rate_limited``). Arrivals
  are handled in (arrival_s, row) order and before anything else at the same instant.
* **Rounds**: a request admitted while at least one GPU is idle and no timer is armed arms a
  timer for arrival + ``batch_window_ms``. At any instant where an iteration ends or the timer
  fires (after that instant's arrivals), every iteration ending then completes; then the GPUs
  are visited in index order and each one that just completed an iteration or is idle runs a
  scheduling round (:class:`apslab.core.continuous_batcher.ContinuousBatcher`); then the timer
  is disarmed. All GPUs share one waiting queue; each has its own running list and KV blocks.
* **An iteration** lasts ``overhead_s + max(moved / (eta_bandwidth * hbm_bytes_per_s),
  flops / (eta_flops * peak_flops))`` (:class:`apslab.core.roofline.IterationCost`). A request's
  ``start_s`` is the start of the first iteration that schedules it; its tokens are emitted at
  the ends of iterations; ``first_token_s`` is its first token's, ``finish_s`` its last's.

The Python loop here is the readable reference; a compiled loop (apslab/sim/_eventloop.c) runs
the same rules bit-identically and is used automatically when built.
"""

from __future__ import annotations

import ctypes
import math
from array import array

import numpy as np

from ..core._gc import paused_gc
from ..core.aging_queue import static_priority_key
from ..core.continuous_batcher import ContinuousBatcher, check_limits
from ..core.fairness import MAX_TRACKED_TENANTS, ServiceDifference
from ..core.kv_blocks import exceeds_kv_capacity
from ..core.limiter import QUEUE_FULL
from ..core.policies import make_policy
from ..io.errors import InputError
from ..io.scenario import Scenario
from ..io.trace import Trace
from . import _compiled
from .admission import admit_by_column
from .result import ContinuousResult, IterationLog, IterationTotals


def check_trace(trace: Trace) -> None:
    """Continuous batching needs P >= 1 and O >= 1 in every row (the first token needs a
    prompt to attend to, and every request emits at least one)."""
    for column in ("prompt_tokens", "output_tokens"):
        bad = np.flatnonzero(getattr(trace, column) < 1)
        if len(bad):
            row = int(bad[0])
            raise InputError(f"{trace.source} line {row + 2}: {column} must be >= 1 with "
                             f"batching = \"continuous\", got {int(getattr(trace, column)[row])}"
                             + (f" ({len(bad) - 1} more such rows)" if len(bad) > 1 else ""))


def exceeds_kv(scenario: Scenario, trace: Trace) -> tuple[np.ndarray, int]:
    """(rows whose ceil((P + O) / block_size) > total_blocks, total_blocks)."""
    sched = scenario.scheduler
    total_blocks = scenario.gpu.total_blocks(sched.block_size)
    return exceeds_kv_capacity(trace.prompt_tokens, trace.output_tokens, sched.block_size,
                               total_blocks), total_blocks


def simulate_continuous(scenario: Scenario, trace: Trace, *, keep_iterations: bool = False,
                        engine: str = "auto", keep_service_curve: bool = False,
                        policy=None) -> ContinuousResult:
    """Run ``trace`` through the continuous engine; ``keep_iterations`` keeps one row per
    iteration (``result.iteration_log``), otherwise only their totals are kept.

    ``engine``: "python" (this module's loop), "compiled" (apslab/sim/_eventloop.c) or "auto".
    ``keep_service_curve`` records the service difference between backlogged tenants at every
    instant it changes (``result.service_curve``, for plots); the Python loop records it, so
    "auto" runs that loop then. ``policy`` (an object with the interface of
    :mod:`apslab.core.policies`) replaces the one ``[scheduler] policy`` names, for experiments
    and exercises that plug in their own; the Python loop runs it.
    """
    if engine not in ("auto", "python", "compiled"):
        raise ValueError(f"engine must be 'auto', 'python' or 'compiled', got {engine!r}")
    if not scenario.scheduler.continuous:
        raise ValueError("simulate_continuous needs [scheduler] batching = \"continuous\"")
    check_trace(trace)
    too_large, total_blocks = exceeds_kv(scenario, trace)
    service_curve = None
    admission = admit_by_column(scenario, trace, too_large, use_compiled=engine != "python")
    reason, tenant_index, order = admission.reason, admission.tenant_index, admission.order
    limiter_of, limiters = admission.limiter_of, admission.limiters

    python_only = keep_service_curve or policy is not None
    if python_only and engine == "compiled":
        raise RuntimeError("the service curve and plugged-in policies run in the Python loop "
                           "(engine=\"python\")")
    compiled = _compiled.continuous_loop() if engine != "python" and not python_only else None
    if engine == "compiled" and compiled is None:
        raise RuntimeError("the compiled continuous loop is not built (reinstall apslab with a "
                           "C compiler)")
    if compiled is not None:
        unsupported = _compiled_unsupported(scenario, trace, admission)
        if unsupported is not None:
            if engine == "compiled":
                raise RuntimeError(f"the compiled continuous loop cannot run this: {unsupported}")
            compiled = None
    if compiled is not None:
        status, per_request, totals, log = _run_compiled(
            compiled, scenario, trace, order, tenant_index, admission.in_loop,
            [getattr(limiter, "bucket", None) for limiter in limiters], total_blocks,
            keep_iterations)
        reason[order] = status  # every candidate's code: admitted, rate_limited or queue_full
    else:
        loop = _Loop(scenario, trace, order, tenant_index, limiter_of, limiters, total_blocks,
                     keep_iterations, keep_service_curve, policy)
        with paused_gc():
            loop.run()
        per_request, rejected, queue_full, totals, log = loop.columns()
        reason[rejected[:, 0]] = rejected[:, 1]
        reason[queue_full] = QUEUE_FULL
        if keep_service_curve and loop.fairness is not None:
            service_curve = np.array(loop.fairness.curve, dtype=np.float64).reshape(-1, 2)
    start, first, finish, preemptions, max_tbt, finish_gpu = per_request
    return ContinuousResult(
        scenario=scenario, trace=trace, reason=reason, tenant_index=tenant_index,
        start_s=start, finish_s=finish, first_token_s=first, preemptions=preemptions,
        max_tbt_s=max_tbt, finish_gpu=finish_gpu, total_blocks=total_blocks,
        iterations=totals, iteration_log=log, service_curve=service_curve)


class _Loop:
    """The event loop over pre-sorted candidate arrivals (see the module docstring)."""

    def __init__(self, scenario, trace, order, tenant_index, limiter_of, limiters, total_blocks,
                 keep_iterations, keep_curve=False, policy=None):
        sched = scenario.scheduler
        self.n = len(trace)
        self.gpus = scenario.cluster.gpus
        self.window = sched.batch_window_s
        self.max_queue = sched.max_queue_length if sched.max_queue_length is not None \
            else math.inf
        self.fairness, self.batcher = build_batcher(scenario, total_blocks, policy, keep_curve)
        arrival = trace.arrival_s[order]
        self.arrival = arrival.tolist()
        self.rows = order.tolist()
        self.neg_key = (-static_priority_key(trace.priority_bid[order], arrival,
                                             sched.aging_per_s)).tolist()
        self.prompt = trace.prompt_tokens[order].tolist()
        self.output = trace.output_tokens[order].tolist()
        self.tenant = tenant_index[order].tolist()
        self.admit = None if limiter_of is None else [limiters[i].admit
                                                      for i in limiter_of.tolist()]
        self.keep_iterations = keep_iterations
        self.rejected = array("q")  # (row, reason code) pairs, flattened
        self.queue_full = array("q")
        self.row_of: list[int] = []  # handle -> trace row
        nan = math.nan
        self.start = [nan] * self.n
        self.first = [nan] * self.n
        self.finish = [nan] * self.n
        self.last_token = [nan] * self.n
        self.max_tbt = [nan] * self.n
        self.finish_gpu = [-1] * self.n
        self.log: list[tuple] = []
        self.tally = IterationTally(scenario.gpu.iteration_cost(), self.gpus)

    def run(self) -> None:
        inf = math.inf
        batcher = self.batcher
        ends = [inf] * self.gpus  # when each GPU's iteration ends (inf: idle)
        timer = inf
        arrival, admit, count = self.arrival, self.admit, len(self.arrival)
        fairness, complete, start = self.fairness, self._complete, self._start
        k = 0
        while True:
            t = min(min(ends), timer)
            # Arrivals first, up to and including t (t moves earlier when a timer is armed).
            while k < count and arrival[k] <= t:
                a = arrival[k]
                row = self.rows[k]
                if admit is not None:
                    if batcher.waiting >= self.max_queue:
                        self.queue_full.append(row)
                        k += 1
                        continue
                    code = admit[k](self.prompt[k], self.output[k], a)
                    if code:
                        self.rejected.extend((row, code))
                        k += 1
                        continue
                batcher.add(self.prompt[k], self.output[k], neg_key=self.neg_key[k],
                            arrival_s=a, request_id=row, tenant=self.tenant[k])
                self.row_of.append(row)
                k += 1
                if timer == inf and inf in ends:
                    timer = a + self.window
                    if timer < t:
                        t = timer
            if t == inf:
                break
            run_instant(t, ends, complete, start, fairness)
            timer = inf

    def _start(self, gpu: int, t: float) -> float:
        """A round on ``gpu`` at ``t``; returns when its iteration ends (inf: it idles)."""
        iteration = self.batcher.schedule(gpu)
        if iteration is None:
            return math.inf
        duration = self.tally.add(gpu, iteration)
        row_of, start = self.row_of, self.start
        for handle in iteration.newly_started:
            start[row_of[handle]] = t
        if self.keep_iterations:
            self.log.append((gpu, t, duration, len(iteration.handles), iteration.prefill_tokens,
                             iteration.decode_tokens, iteration.blocks_used,
                             len(iteration.preempted)))
        return t + duration

    def _complete(self, gpu: int, t: float) -> None:
        done = self.batcher.complete(gpu)
        row_of, first, last, max_tbt = self.row_of, self.first, self.last_token, self.max_tbt
        for handle in done.emitted:
            row = row_of[handle]
            previous = last[row]
            if previous != previous:  # NaN: the first token
                first[row] = t
            else:
                max_tbt[row] = longest_gap(max_tbt[row], t - previous)
            last[row] = t
        for handle in done.finished:
            row = row_of[handle]
            self.finish[row] = t
            self.finish_gpu[row] = gpu
        self.tally.ended(t)

    def columns(self):
        n = self.n
        preemptions = np.zeros(n, dtype=np.int64)
        if self.row_of:
            preemptions[np.array(self.row_of)] = self.batcher.preemptions
        per_request = (np.array(self.start, dtype=np.float64),
                       np.array(self.first, dtype=np.float64),
                       np.array(self.finish, dtype=np.float64), preemptions,
                       np.array(self.max_tbt, dtype=np.float64),
                       np.array(self.finish_gpu, dtype=np.int32))
        totals = self.tally.totals(self.fairness)
        log = None
        if self.keep_iterations:
            cols = list(zip(*self.log, strict=True)) or [()] * 8
            log = IterationLog(
                gpu=np.array(cols[0], dtype=np.int32), start_s=np.array(cols[1], dtype=float),
                duration_s=np.array(cols[2], dtype=float),
                requests=np.array(cols[3], dtype=np.int64),
                prefill_tokens=np.array(cols[4], dtype=np.int64),
                decode_tokens=np.array(cols[5], dtype=np.int64),
                blocks_used=np.array(cols[6], dtype=np.int64),
                preempted=np.array(cols[7], dtype=np.int64))
        return (per_request, np.frombuffer(self.rejected, dtype=np.int64).reshape(-1, 2),
                np.frombuffer(self.queue_full, dtype=np.int64), totals, log)


# ----------------------------------------------------------------------------------------------
# The pieces of the event step the live service (apslab.serve.continuous) runs too, so the two
# decide alike and add up their totals in the same order


def build_batcher(scenario: Scenario, total_blocks: int, policy=None, keep_curve: bool = False
                  ) -> tuple[ServiceDifference | None, ContinuousBatcher]:
    """(the service-difference tracker, or None beyond MAX_TRACKED_TENANTS tenants; the
    batcher reporting to it) for ``scenario``; ``policy`` replaces the one [scheduler] names."""
    sched, tenants = scenario.scheduler, scenario.tenants
    shares = [t.share for t in tenants]
    fairness = ServiceDifference(
        shares, sched.vtc_input_weight, sched.vtc_output_weight, keep_curve=keep_curve) \
        if len(tenants) <= MAX_TRACKED_TENANTS else None
    batcher = ContinuousBatcher(
        gpus=scenario.cluster.gpus, total_blocks=total_blocks, block_size=sched.block_size,
        max_num_seqs=sched.max_num_seqs, max_num_batched_tokens=sched.max_num_batched_tokens,
        policy=policy if policy is not None else make_policy(
            sched.policy, shares, sched.vtc_input_weight, sched.vtc_output_weight),
        observer=fairness)
    return fairness, batcher


def run_instant(t: float, ends: list[float], complete, start, fairness) -> int:
    """One event instant ``t``: every iteration ending at ``t`` completes (``complete(gpu,
    t)``), then each idle GPU, in index order, runs a round (``ends[gpu] = start(gpu, t)``,
    inf when it stays idle), then the fairness tracker settles. Returns how many iterations
    completed."""
    inf = math.inf
    completed = 0
    for gpu, end in enumerate(ends):
        if end == t:
            complete(gpu, t)
            ends[gpu] = inf
            completed += 1
    for gpu, end in enumerate(ends):
        if end == inf:
            ends[gpu] = start(gpu, t)
    if fairness is not None:
        fairness.settle(t)
    return completed


def longest_gap(longest: float, gap: float) -> float:
    """The longest gap between a request's tokens once one more ``gap`` is seen (``longest``
    is NaN before the first gap, which then replaces it)."""
    return longest if gap <= longest else gap


class IterationTally:
    """The iterations' running totals (:class:`IterationTotals`): every iteration's duration
    from the cost model, summed in one order wherever the engine runs."""

    __slots__ = ("cost", "count", "requests", "tokens", "busy", "moved", "flops",
                 "block_seconds", "last_end")

    def __init__(self, cost, gpus: int) -> None:
        self.cost = cost
        self.count = self.requests = self.tokens = 0
        self.busy = [0.0] * gpus
        self.moved = self.flops = 0
        self.block_seconds = 0.0
        self.last_end = -math.inf

    def add(self, gpu: int, iteration) -> float:
        """Count an iteration started on ``gpu``; returns its duration."""
        moved, flops = self.cost.work(iteration.context_tokens, iteration.new_tokens,
                                      iteration.attention_pairs)
        duration = self.cost.seconds(moved, flops)
        self.count += 1
        self.requests += len(iteration.handles)
        self.tokens += iteration.new_tokens
        self.busy[gpu] += duration
        self.moved += moved
        self.flops += flops
        self.block_seconds += iteration.blocks_used * duration
        return duration

    def ended(self, t: float) -> None:
        """Iterations ended at ``t``."""
        if t > self.last_end:
            self.last_end = t

    def totals(self, fairness: ServiceDifference | None) -> IterationTotals:
        return IterationTotals(self.count, self.requests, self.tokens, list(self.busy),
                               self.moved, self.flops, self.block_seconds, self.last_end,
                               None if fairness is None else fairness.max_difference)


# ----------------------------------------------------------------------------------------------
# The compiled loop (apslab/sim/_eventloop.c's apslab_run_continuous), marshalled with ctypes

_POLICY_CODES = {"priority": 0, "fcfs": 1, "vtc": 2}


def _compiled_unsupported(scenario: Scenario, trace: Trace, admission) -> str | None:
    """Why the C loop could not repeat the Python loop's arithmetic exactly here, or None.

    The C loop takes the cost model's constants as int64 and float64 (Python would divide an
    int by an int exactly, were a rate an int), and compares token counts as doubles (exact
    below 2**53). Scenarios parsed from TOML always qualify.
    """
    cost, sched = scenario.gpu.iteration_cost(), scenario.scheduler
    if admission.in_loop and not all(getattr(limiter, "plain", False)
                                     for limiter in admission.limiters):
        return "with max_queue_length, only plain token buckets are decided in the C loop"
    integers = (cost.weight_bytes, cost.kv_bytes_per_token, cost.matmul_flops_per_token,
                cost.attention_flops_per_pair)
    if not all(type(value) is int and 0 <= value < 1 << 63 for value in integers):
        return "the cost model's integer constants must fit in int64"
    limits = (scenario.cluster.gpus, sched.block_size, sched.max_num_seqs,
              sched.max_num_batched_tokens, sched.max_queue_length or 0)
    if not all(abs(value) < 1 << 62 for value in limits):
        return "the scheduler's limits must fit in int64"
    if sched.policy == "vtc" and not all(t.share > 0 for t in scenario.tenants):
        return "VTC shares must be > 0"
    if not all(type(value) is float for value in (cost.bandwidth, cost.flop_rate,
                                                  cost.overhead_s)):
        return "the cost model's rates and overhead must be floats"
    if len(trace) and int(trace.prompt_tokens.max()) + int(trace.output_tokens.max()) >= 1 << 53:
        return "token counts must stay below 2**53"
    return None


def _run_compiled(function, scenario, trace, order, tenant_index, limited, buckets,
                  total_blocks, keep_iterations):
    """Run the C loop on the candidates; returns each candidate's reason code (in ``order``)
    and the per-request columns, totals and log that :meth:`_Loop.columns` returns.
    ``limited``: the loop decides the token buckets (``buckets``, one per tenant) itself.

    Everything per request is numpy: the candidates' columns in (arrival_s, row) order, the
    priority order as an integer rank (a lexsort of the priority policy's very tuple
    (-key, arrival_s, request_id), so the C loop compares integers, never re-derives a float),
    and output columns by trace row that the C loop fills.
    """
    sched, tenants = scenario.scheduler, scenario.tenants
    cost = scenario.gpu.iteration_cost()
    gpus, count, n = scenario.cluster.gpus, len(order), len(trace)
    check_limits(gpus=gpus, total_blocks=total_blocks, block_size=sched.block_size,
                 max_num_seqs=sched.max_num_seqs,
                 max_num_batched_tokens=sched.max_num_batched_tokens)
    arrival = np.ascontiguousarray(trace.arrival_s[order], dtype=np.float64)
    rows = np.ascontiguousarray(order, dtype=np.int64)
    prompt = np.ascontiguousarray(trace.prompt_tokens[order], dtype=np.int64)
    output = np.ascontiguousarray(trace.output_tokens[order], dtype=np.int64)
    tenant = np.ascontiguousarray(tenant_index[order], dtype=np.int64)
    rank = np.arange(count, dtype=np.int64)  # fcfs and vtc: (arrival_s, row) = candidate order
    if sched.policy == "priority":
        neg_key = -static_priority_key(trace.priority_bid[order], arrival, sched.aging_per_s)
        rank[np.lexsort((rows, arrival, neg_key))] = rank.copy()
        del neg_key
    shares = np.array([t.share for t in tenants] or [1.0], dtype=np.float64)
    rate, burst, tokens, last = (np.array([getattr(b, name) if limited else 0.0
                                           for b in buckets] or [0.0], dtype=np.float64)
                                 for name in ("rate_limit", "burst_cap", "tokens",
                                              "last_update_s"))
    start, first, finish, max_tbt = (np.empty(n, dtype=np.float64) for _ in range(4))
    preemptions = np.empty(n, dtype=np.int64)
    finish_gpu = np.empty(n, dtype=np.int32)
    status = np.zeros(count, dtype=np.uint8)  # the C loop writes each one's code
    totals = np.zeros(3, dtype=np.int64)
    wide = np.zeros(4, dtype=np.uint64)
    busy = np.zeros(gpus, dtype=np.float64)
    float_totals = np.zeros(3, dtype=np.float64)
    track_fairness = len(tenants) <= MAX_TRACKED_TENANTS
    log = ctypes.POINTER(_compiled.ContinuousIteration)()
    log_len = ctypes.c_int64(0)
    p = _compiled.pointer
    code = function(
        count, p(arrival), p(rows), p(prompt), p(output), p(tenant), p(rank), n,
        gpus, total_blocks, sched.block_size, sched.max_num_seqs, sched.max_num_batched_tokens,
        sched.batch_window_s, _POLICY_CODES[sched.policy],
        len(tenants), p(shares), float(sched.vtc_input_weight), float(sched.vtc_output_weight),
        cost.weight_bytes, cost.kv_bytes_per_token, cost.matmul_flops_per_token,
        cost.attention_flops_per_pair, cost.bandwidth, cost.flop_rate, cost.overhead_s,
        sched.max_queue_length if limited else -1, p(rate), p(burst), p(tokens), p(last),
        p(start), p(first), p(finish), p(preemptions), p(max_tbt),
        finish_gpu.ctypes.data_as(_compiled.INT32_P), p(status),
        p(totals), wide.ctypes.data_as(_compiled.UINT64_P), p(busy), p(float_totals),
        int(track_fairness), int(keep_iterations), ctypes.byref(log), ctypes.byref(log_len))
    if code < 0:
        raise MemoryError("the compiled continuous loop ran out of memory")
    if limited:  # the buckets' final states, as the Python loop leaves them
        for bucket, level, when in zip(buckets, tokens.tolist(), last.tolist(), strict=False):
            bucket.tokens, bucket.last_update_s = level, when
    iteration_log = None
    if keep_iterations:
        iteration_log = _iteration_log(log, log_len.value)
    moved = int(wide[0]) | int(wide[1]) << 64
    flops = int(wide[2]) | int(wide[3]) << 64
    iteration_totals = IterationTotals(int(totals[0]), int(totals[1]), int(totals[2]),
                                       busy.tolist(), moved, flops, float(float_totals[0]),
                                       float(float_totals[1]),
                                       float(float_totals[2]) if track_fairness else None)
    per_request = (start, first, finish, preemptions, max_tbt, finish_gpu)
    return status, per_request, iteration_totals, iteration_log


def _iteration_log(log, length: int) -> IterationLog:
    """The C loop's iteration rows as an :class:`IterationLog`; releases the C buffer."""
    dtypes = (np.int32, float, float, np.int64, np.int64, np.int64, np.int64, np.int64)
    names = [name for name, _ in _compiled.ContinuousIteration._fields_]
    if not length:
        return IterationLog(*(np.array((), dtype=dtype) for dtype in dtypes))
    try:
        table = np.ctypeslib.as_array(log, shape=(length,))
        columns = [table[name].astype(dtype) for name, dtype in zip(names, dtypes, strict=True)]
    finally:
        _compiled.free_continuous_log(log)
    return IterationLog(*columns)
