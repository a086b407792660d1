"""Notebook 09's experiments: fair sharing of one GPU, in the shapes of the VTC paper.

Sheng et al. (OSDI'24, "Fairness in Serving Large Language Models") measure fairness as
*service* (``input_weight * P + output_weight * O``, divided by the tenant's share) and compare
schedulers by the service difference between tenants that are backlogged (have waiting
requests) at the same time. This module runs the package's continuous engine
(:func:`apslab.sim.continuous.simulate_continuous`) on that paper's workload shapes under the
mechanisms a provider has:

* ``fcfs``: first come, first served, no limits (what most servers do);
* ``rpm``: FCFS behind a ``requests_per_minute`` limit per tenant;
* ``token_bucket``: FCFS behind a token bucket per tenant (``rate_limit`` tokens/s);
* ``priority``: the seed's priority queue, in which the heaviest tenant bids more;
* ``vtc``: the Virtual Token Counter (``[scheduler] policy = "vtc"``), no limits.

Both limits are set at each tenant's fair share of what the GPU can serve
(:func:`capacity`), the usual way to size them so that the limits together never promise more
than the GPU has. Nothing here re-implements a scheduling rule: the engine decides everything,
and this module reads its columns, its iteration log and its service-difference curve.

* :func:`lab_scenario`: ``data/scenarios/lab_fair_sharing.toml`` (four tenants on one roofline
  A100 with a 2 GiB KV cache, so VTC's bound is small enough to see);
  :data:`SHAPES`: the tenants and loads of each experiment; :func:`shape_scenario` and
  :func:`shape_trace` build one.
* :func:`run_mechanism` / :func:`run_shape` run a shape under one or every mechanism and
  measure it (:class:`FairRun`: per tenant :class:`TenantOutcome`, the service difference and
  its bound :func:`vtc_bound`, and :class:`IdleReport`: how long the GPU idled while requests
  were rejected).
* :func:`service_curves`: each tenant's cumulative service over time;
  :func:`idle_gaps`: when each GPU ran no iteration.
* :func:`run_with_policy`: the engine's own Python loop with another policy object (the
  exercise plugs a student's counter lift into :class:`~apslab.core.policies.VTCPolicy`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..core.limiter import REASON_NAMES
from ..io.scenario import Scenario, load_scenario, parse_scenario
from ..io.trace import Trace
from ..io.workload import generate_trace
from ..sim import continuous as engine
from ..sim.result import ContinuousResult, IterationLog
from .experiments import percentile_or_nan, scenario_path, table

LAB_SCENARIO = "lab_fair_sharing"
MECHANISMS = ("fcfs", "rpm", "token_bucket", "priority", "vtc")
MECHANISM_LABELS = {"fcfs": "FCFS", "rpm": "RPM limits", "token_bucket": "token buckets",
                    "priority": "priority bids", "vtc": "VTC"}
#: A token bucket holds this many seconds of its rate (and at least the largest request).
BUCKET_SECONDS = 10.0
#: Bids under ``priority``: the shape's heaviest tenant pays for priority, the others do not.
HIGH_BID, LOW_BID = 2.0, 1.0


def lab_scenario() -> Scenario:
    """``data/scenarios/lab_fair_sharing.toml``: four tenants, one roofline A100, 2 GiB of KV."""
    return load_scenario(scenario_path(LAB_SCENARIO))


# --------------------------------------------------------------------------------------------
# What the GPU can serve


@dataclass(frozen=True)
class Capacity:
    """What the GPU serves when it is never short of work (see :func:`capacity`)."""

    requests_per_s: float
    tokens_per_s: float  # prompt + output tokens of completed requests
    service_per_s: float  # input_weight * P + output_weight * O

    def fair_rpm(self, tenants: int) -> float:
        """Each of ``tenants`` tenants' fair share, in requests per minute."""
        return 60.0 * self.requests_per_s / tenants

    def fair_tokens_per_s(self, tenants: int) -> float:
        """Each of ``tenants`` tenants' fair share, in tokens (prompt + output) per second."""
        return self.tokens_per_s / tenants


def capacity(scenario: Scenario | None = None, requests: int = 600) -> Capacity:
    """The GPU's throughput on the scenario's request shapes: ``requests`` requests drawn from
    its workload (every tenant's token distributions), all arriving at t = 0 and served FCFS
    without limits, over the time until the last finishes."""
    base = scenario or lab_scenario()
    workload = base.workload
    rate = requests / (workload.duration_s * len(workload.tenants))
    drawn = shape_scenario(base, {t.tenant_id: rate for t in workload.tenants}, "fcfs")
    trace = generate_trace(drawn.workload)
    closed = replace(trace, arrival_s=np.zeros(len(trace)), source="<all at t = 0>")
    result = engine.simulate_continuous(drawn, closed)
    summary = result.summary()
    elapsed = summary["elapsed_s"]
    done = result.completed
    prompt = int(closed.prompt_tokens[done].sum())
    output = int(closed.output_tokens[done].sum())
    sched = drawn.scheduler
    return Capacity(int(done.sum()) / elapsed, (prompt + output) / elapsed,
                    (sched.vtc_input_weight * prompt + sched.vtc_output_weight * output)
                    / elapsed)


# --------------------------------------------------------------------------------------------
# The experiments' shapes


@dataclass(frozen=True)
class Shape:
    """One experiment: the tenants that take part and their load, each a multiple of the
    GPU's capacity (in requests per second); the last tenant is the heaviest."""

    name: str
    title: str
    loads: dict[str, float]

    @property
    def heavy(self) -> str:
        return list(self.loads)[-1]

    def rates(self, cap: Capacity, heavy_load: float | None = None) -> dict[str, float]:
        """Arrival rates (requests/s); ``heavy_load`` replaces the heaviest tenant's load."""
        loads = dict(self.loads)
        if heavy_load is not None:
            loads[self.heavy] = float(heavy_load)
        return {tenant: load * cap.requests_per_s for tenant, load in loads.items()}


SHAPES = {
    "equal": Shape("equal", "two tenants, equal demand, together 1.6x what the GPU serves",
                   {"alpha": 0.8, "beta": 0.8}),
    "unequal": Shape("unequal", "two tenants, unequal demand (0.6x and 1.2x), both over their "
                                "half", {"alpha": 0.6, "beta": 1.2}),
    "flood": Shape("flood", "three light tenants (0.05x each) beside one that floods (1.2x)",
                   {"alpha": 0.05, "beta": 0.05, "gamma": 0.05, "flood": 1.2}),
}


def shape_scenario(base: Scenario, rates: dict[str, float], mechanism: str = "vtc", *,
                   cap: Capacity | None = None, shares: dict[str, float] | None = None,
                   bids: dict[str, float] | None = None) -> Scenario:
    """``base`` with only the tenants of ``rates`` (arrival rates, requests/s), under
    ``mechanism`` (one of :data:`MECHANISMS`).

    ``rpm`` and ``token_bucket`` need ``cap``: each tenant's limit is its fair share of it
    (:meth:`Capacity.fair_rpm`, :meth:`Capacity.fair_tokens_per_s`; the bucket holds
    :data:`BUCKET_SECONDS` of its rate). ``shares`` weigh the tenants' service under ``vtc``.
    ``bids`` (default: the last tenant :data:`HIGH_BID`, the others :data:`LOW_BID`) are the
    workload's priority bids; every mechanism gets the same trace, only ``priority`` reads them.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if mechanism in ("rpm", "token_bucket") and cap is None:
        raise ValueError(f"mechanism {mechanism!r} needs the GPU's capacity (cap=...)")
    if shares and mechanism != "vtc" and any(s != 1.0 for s in shares.values()):
        raise ValueError("shares only weigh service under mechanism 'vtc'")
    names = list(rates)
    if bids is None:
        bids = {name: HIGH_BID if name == names[-1] else LOW_BID for name in names}
    data = base.to_dict()
    sched = data["scheduler"]
    sched["policy"] = {"priority": "priority", "vtc": "vtc"}.get(mechanism, "fcfs")
    if mechanism != "vtc":
        sched.pop("vtc_input_weight", None)
        sched.pop("vtc_output_weight", None)
    if mechanism == "priority":
        sched.setdefault("aging_per_s", 0.0)
    else:
        sched.pop("aging_per_s", None)
    tenants = {t["id"]: t for t in data["tenants"]}
    workloads = {w["id"]: w for w in data["workload"]["tenants"]}
    unknown = [name for name in names if name not in tenants or name not in workloads]
    if unknown:
        raise ValueError(f"not tenants of {base.source}: {', '.join(unknown)}")
    biggest = max(_largest_request(workloads[name]) for name in names)
    data["tenants"], data["workload"]["tenants"] = [], []
    for name in names:
        tenant = {"id": name, "rate_limit": 1e9, "burst_cap": 1e9,
                  "priority_bid": float(bids[name])}
        if mechanism == "rpm":
            tenant["requests_per_minute"] = cap.fair_rpm(len(names))
        elif mechanism == "token_bucket":
            rate = cap.fair_tokens_per_s(len(names))
            tenant.update(rate_limit=rate, burst_cap=max(BUCKET_SECONDS * rate, biggest))
        if mechanism == "vtc":
            tenant["share"] = float((shares or {}).get(name, 1.0))
        data["tenants"].append(tenant)
        data["workload"]["tenants"].append(
            {**workloads[name], "arrival_rate_per_s": float(rates[name]),
             "priority_bid": float(bids[name])})
    return parse_scenario(data, source=base.source)


def _largest_request(workload: dict) -> float:
    """The largest P + O a workload tenant can draw (its distributions' caps), or 0."""
    caps = [workload[key].get("max") for key in ("prompt_tokens", "output_tokens")]
    return float(sum(caps)) if all(c is not None for c in caps) else 0.0


def shape_trace(scenario: Scenario, seed: int | None = None) -> Trace:
    """The trace the shape's workload generates; every mechanism of a shape runs this one."""
    return generate_trace(scenario.workload, seed)


# --------------------------------------------------------------------------------------------
# Measures


def bound_terms(scenario: Scenario, trace: Trace) -> tuple[int, int]:
    """(L_input, M) of :func:`vtc_bound`: the longest prompt of the trace, and the tokens the
    running batches can hold (every GPU's KV cache: gpus * total_blocks * block_size)."""
    sched = scenario.scheduler
    memory = scenario.cluster.gpus * scenario.gpu.total_blocks(sched.block_size) \
        * sched.block_size
    return (int(trace.prompt_tokens.max()) if len(trace) else 0), int(memory)


def vtc_bound(scenario: Scenario, trace: Trace) -> float:
    """VTC's bound on the service difference of two backlogged tenants (Sheng et al.,
    Theorem 4.4, mapped to this engine as in tests/test_policies.py):
    ``2 * max(input_weight * L_input, output_weight * M) / min share``, with L_input and M
    from :func:`bound_terms`."""
    sched = scenario.scheduler
    longest, memory = bound_terms(scenario, trace)
    share = min(t.share for t in scenario.tenants)
    return 2 * max(sched.vtc_input_weight * longest, sched.vtc_output_weight * memory) / share


def service_curves(result: ContinuousResult, times: np.ndarray) -> dict[str, np.ndarray]:
    """Each tenant's cumulative weighted service at ``times``: ``input_weight * P / share`` at
    the request's start (when VTC charges its prompt) and ``output_weight / share`` per token.

    The engine records a request's first and last token times, not the ones between, so the
    O - 2 tokens in between are spread evenly over (first token, finish): exact at both ends
    and at every request's start, an interpolation in between (the VTC artifact's plots
    likewise count service per request). The engine's own service difference
    (``service_difference``, ``service_curve``) is exact.
    """
    scenario, trace = result.scenario, result.trace
    sched = scenario.scheduler
    times = np.asarray(times, dtype=np.float64)
    done = result.completed
    out = {}
    for index, tenant in enumerate(scenario.tenant_ids()):
        mine = np.flatnonzero(done & (result.tenant_index == index))
        share = scenario.tenants[index].share
        start, first, finish = (column[mine][:, None] for column in
                                (result.start_s, result.first_token_s, result.finish_s))
        prompt = trace.prompt_tokens[mine][:, None].astype(np.float64)
        output = trace.output_tokens[mine][:, None].astype(np.float64)
        span = finish - first
        fraction = np.divide(times - first, span, out=np.ones((len(mine), len(times))),
                             where=span > 0)
        emitted = np.where(times < first, 0.0,
                           np.where(times >= finish, output,
                                    1.0 + np.floor(np.clip(fraction, 0.0, 1.0) * (output - 1))))
        service = (sched.vtc_input_weight * prompt * (times >= start)
                   + sched.vtc_output_weight * emitted) / share
        out[tenant] = service.sum(axis=0)
    return out


def idle_gaps(log: IterationLog, start_s: float, end_s: float, gpus: int = 1
              ) -> list[tuple[int, float, float]]:
    """(gpu, from, to) of every stretch in [start_s, end_s] in which a GPU ran no iteration."""
    gaps = []
    for gpu in range(gpus):
        mine = log.gpu == gpu
        starts, ends = log.start_s[mine], log.start_s[mine] + log.duration_s[mine]
        edges_from = np.concatenate(([start_s], ends))
        edges_to = np.concatenate((starts, [end_s]))
        for a, b in zip(np.maximum(edges_from, start_s).tolist(),
                        np.minimum(edges_to, end_s).tolist(), strict=True):
            if b > a:
                gaps.append((gpu, a, b))
    return gaps


@dataclass(frozen=True)
class IdleReport:
    """GPU idle time while arrivals lasted ([first arrival, last arrival]), set beside the
    requests the run rejected and the ones that waited.

    ``rejected_while_idle``: rejected requests that arrived while a GPU ran nothing;
    ``idle_while_rejecting_s``: GPU-seconds of idle stretches in which at least one request was
    rejected; ``rejected_with_room``: rejected requests that arrived while some GPU had the KV
    blocks its prompt needs free and a running slot left (idle, or beside the iteration in
    flight: ``blocks_used`` and ``requests`` of the iteration log), so it could have joined the
    next round; ``idle_while_waiting_s``: GPU-seconds in which a GPU idled while an admitted
    request waited for its first iteration (0 for a work-conserving scheduler).
    """

    span_s: float
    idle_s: float
    rejected: int
    rejected_while_idle: int
    idle_while_rejecting_s: float
    rejected_with_room: int
    idle_while_waiting_s: float


def idle_report(result: ContinuousResult) -> IdleReport:
    """:class:`IdleReport` of a run kept with ``keep_iterations=True``."""
    if result.iteration_log is None:
        raise ValueError("run the continuous engine with keep_iterations=True")
    trace = result.trace
    if not len(trace):
        return IdleReport(0.0, 0.0, 0, 0, 0.0, 0, 0.0)
    start, end = float(trace.arrival_s.min()), float(trace.arrival_s.max())
    gpus = result.scenario.cluster.gpus
    gaps = idle_gaps(result.iteration_log, start, end, gpus)
    rejected = np.flatnonzero(~result.completed)
    rejected = rejected[np.argsort(trace.arrival_s[rejected], kind="stable")]
    rejected_at = trace.arrival_s[rejected]
    done = result.completed
    waits = sorted(zip(trace.arrival_s[done].tolist(), result.start_s[done].tolist(),
                       strict=True))
    union = _union([(a, b) for a, b in waits if b > a])
    idle = idle_rejecting = idle_waiting = 0.0
    rejected_idle = 0
    for _gpu, a, b in gaps:
        idle += b - a
        inside = int(np.searchsorted(rejected_at, b, "left")
                     - np.searchsorted(rejected_at, a, "left"))
        if inside:
            idle_rejecting += b - a
            rejected_idle += inside
        idle_waiting += sum(max(0.0, min(b, w1) - max(a, w0)) for w0, w1 in union
                            if w0 < b and w1 > a)
    in_span = int(((rejected_at >= start) & (rejected_at <= end)).sum())
    room = _room_for(result, rejected)
    return IdleReport(end - start, idle, in_span, min(rejected_idle, in_span), idle_rejecting,
                      int(room.sum()), idle_waiting)


def _room_for(result: ContinuousResult, rows: np.ndarray) -> np.ndarray:
    """For each trace row: whether, at its arrival, some GPU was idle or ran an iteration that
    left the blocks of its prompt's first chunk free and fewer than max_num_seqs requests."""
    scenario, trace, log = result.scenario, result.trace, result.iteration_log
    sched = scenario.scheduler
    arrival = trace.arrival_s[rows]
    chunk = np.minimum(trace.prompt_tokens[rows], sched.max_num_batched_tokens)
    need = -(-chunk // sched.block_size)
    room = np.zeros(len(rows), dtype=bool)
    for gpu in range(scenario.cluster.gpus):
        mine = np.flatnonzero(log.gpu == gpu)
        starts = log.start_s[mine]
        # the iteration in flight at each arrival: the last to start at or before it
        at = np.searchsorted(starts, arrival, "right") - 1
        in_flight = (at >= 0) & (arrival < starts[np.maximum(at, 0)]
                                 + log.duration_s[mine][np.maximum(at, 0)])
        row = mine[np.maximum(at, 0)]
        used = np.where(in_flight, log.blocks_used[row], 0)
        running = np.where(in_flight, log.requests[row], 0)
        room |= (result.total_blocks - used >= need) & (running < sched.max_num_seqs)
    return room


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


@dataclass(frozen=True)
class TenantOutcome:
    """One tenant's side of a run."""

    tenant: str
    submitted: int
    rejected: int
    served_tokens: int  # prompt + output of its completed requests
    service: float  # weighted service of its completed requests (SUMMARY.json)
    service_in_span: float  # weighted service received while arrivals lasted
    ttft_p50_s: float
    ttft_p99_s: float


@dataclass
class FairRun:
    """One shape under one mechanism: per tenant outcomes, the service difference and its
    bound, and the GPU's idle time (``result`` is the engine's run)."""

    shape: str
    mechanism: str
    result: ContinuousResult
    tenants: dict[str, TenantOutcome]
    service_difference: float
    bound: float
    idle: IdleReport
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return MECHANISM_LABELS[self.mechanism]

    @property
    def within_bound(self) -> bool:
        return self.service_difference <= self.bound

    @property
    def arrivals_end_s(self) -> float:
        return float(self.result.trace.arrival_s.max()) if len(self.result.trace) else 0.0

    @property
    def service_rate(self) -> float:
        """Weighted service per second, all tenants together, while arrivals lasted."""
        span = self.idle.span_s
        return sum(o.service_in_span for o in self.tenants.values()) / span if span else 0.0


def measure(result: ContinuousResult, shape: str = "", mechanism: str = "vtc") -> FairRun:
    """:class:`FairRun` of one continuous run (kept with ``keep_iterations=True``)."""
    scenario, trace = result.scenario, result.trace
    summary = result.summary()
    done = result.completed
    end = float(trace.arrival_s.max()) if len(trace) else 0.0
    in_span = service_curves(result, np.array([end]))
    tenants = {}
    for index, tenant in enumerate(scenario.tenant_ids()):
        row = summary["tenants"][tenant]
        mine = done & (result.tenant_index == index)
        ttft = result.first_token_s[mine] - trace.arrival_s[mine]
        tenants[tenant] = TenantOutcome(
            tenant, row["submitted"], row["rejected"], row["tokens_completed"],
            row["weighted_service"], float(in_span[tenant][0]), percentile_or_nan(ttft, 50),
            percentile_or_nan(ttft, 99))
    by_reason = {name: count for name, count in
                 summary["requests"]["rejected_by_reason"].items() if count}
    difference = summary["service_difference"]
    return FairRun(shape, mechanism, result, tenants,
                   math.nan if difference is None else float(difference),
                   vtc_bound(scenario, trace), idle_report(result), by_reason)


def run_mechanism(scenario: Scenario, trace: Trace, shape: str = "", mechanism: str = "vtc",
                  keep_curve: bool = False) -> FairRun:
    """Run ``scenario`` (built by :func:`shape_scenario` for ``mechanism``) on ``trace`` and
    measure it. ``keep_curve`` records the engine's service-difference curve over time
    (``run.result.service_curve``), which only the Python loop does: keep such traces small."""
    result = engine.simulate_continuous(scenario, trace, keep_iterations=True,
                                        engine="python" if keep_curve else "auto",
                                        keep_service_curve=keep_curve)
    return measure(result, shape, mechanism)


def run_shape(base: Scenario, shape: str | Shape, cap: Capacity,
              mechanisms: Sequence[str] = MECHANISMS, *, heavy_load: float | None = None,
              shares: dict[str, float] | None = None, keep_curve: bool = False,
              seed: int | None = None) -> dict[str, FairRun]:
    """One shape (a name of :data:`SHAPES` or a :class:`Shape`) under each mechanism, on one
    trace: ``{mechanism: FairRun}``. ``shares`` apply to ``vtc`` only."""
    shape = SHAPES[shape] if isinstance(shape, str) else shape
    rates = shape.rates(cap, heavy_load)
    trace = shape_trace(shape_scenario(base, rates, "fcfs"), seed)
    runs = {}
    for mechanism in mechanisms:
        scenario = shape_scenario(base, rates, mechanism, cap=cap,
                                  shares=shares if mechanism == "vtc" else None)
        runs[mechanism] = run_mechanism(scenario, trace, shape.name, mechanism, keep_curve)
    return runs


# --------------------------------------------------------------------------------------------
# Tables


def fairness_table(runs: Sequence[FairRun]) -> str:
    """Per run: the service difference against VTC's bound, rejections, GPU idle time."""
    return table(
        ["shape", "mechanism", "service difference", "bound", "within", "rejected",
         "GPU idle (s)", "idle while rejecting (s)"],
        [(run.shape, run.label, run.service_difference, run.bound,
          "yes" if run.within_bound else "NO", run.idle.rejected, run.idle.idle_s,
          run.idle.idle_while_rejecting_s) for run in runs],
        ["", "", ",.0f", ",.0f", "", "d", ".1f", ".1f"])


def tenant_table(runs: Sequence[FairRun]) -> str:
    """Per run and tenant: requests, rejections, tokens served, service, TTFT."""
    rows = []
    for run in runs:
        for outcome in run.tenants.values():
            rows.append((run.label, outcome.tenant, outcome.submitted, outcome.rejected,
                         outcome.served_tokens, outcome.service_in_span, outcome.ttft_p50_s,
                         outcome.ttft_p99_s))
    return table(["mechanism", "tenant", "requests", "rejected", "tokens served",
                  "service while arrivals lasted", "TTFT p50 (s)", "TTFT p99 (s)"], rows,
                 ["", "", "d", "d", ",d", ",.0f", ".3f", ".3f"])


def idle_table(runs: Sequence[FairRun]) -> str:
    """Per run: the GPU's idle time while arrivals lasted against its rejections."""
    return table(["mechanism", "rejected", "with KV room", "at an idle GPU", "GPU idle (s)",
                  "idle while rejecting (s)", "idle while a request waited (s)",
                  "service/s while arrivals lasted"],
                 [(run.label, run.idle.rejected, run.idle.rejected_with_room,
                   run.idle.rejected_while_idle, run.idle.idle_s, run.idle.idle_while_rejecting_s,
                   run.idle.idle_while_waiting_s, run.service_rate) for run in runs],
                 ["", "d", "d", "d", ".1f", ".1f", ".3f", ",.0f"])


def reason_names(run: FairRun) -> list[str]:
    """The names of the rejections in a run (e.g. ``rate_limited_requests``)."""
    return [name for name in REASON_NAMES if run.rejected_by_reason.get(name)]


# --------------------------------------------------------------------------------------------
# The engine with another policy (the exercise)


def run_with_policy(scenario: Scenario, trace: Trace, policy) -> np.ndarray:
    """The start time of every request (by trace row; NaN if rejected) when the continuous
    engine's Python loop runs ``scenario`` on ``trace`` with ``policy`` in place of the one
    ``[scheduler] policy`` names. Everything else (admission, rounds, costs) is the engine's
    own; with the policy the scenario names it reproduces ``simulate`` exactly."""
    if not scenario.scheduler.continuous:
        raise ValueError("run_with_policy needs [scheduler] batching = \"continuous\"")
    return engine.simulate_continuous(scenario, trace, engine="python", policy=policy).start_s
