"""The experiments behind the lab notebooks: each stage run on its own, and load sweeps.

Everything here calls the package's components (token bucket, aging queues, micro-batcher, GPU
model, simulator, metrics); nothing re-implements them. Notebooks and widget apps call these
functions, and tests call them too, so a number a notebook teaches is a number a test checks.
Random inputs take a seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.aging_queue import (
    EagerAgingQueue,
    LazyAgingQueue,
    effective_priority,
    static_priority_key,
)
from ..core.limiter import TokenBucket
from ..core.metrics import jain_fairness
from ..io.scenario import Scenario, load_scenario
from ..io.trace import Trace, read_trace
from ..io.workload import generate_trace
from ..sim.result import SimulationResult
from ..sim.run import simulate
from .datasets import DATA_DIR

SCENARIOS_DIR = DATA_DIR / "scenarios"


def scenario_path(name: str) -> Path:
    """``data/scenarios/<name>.toml``."""
    return SCENARIOS_DIR / f"{name}.toml"


def example() -> tuple[Scenario, Trace]:
    """The README's worked example: three tenants on one A100 and their stored trace."""
    return (load_scenario(scenario_path("example")),
            read_trace(SCENARIOS_DIR / "example_trace.csv"))


def run_generated(scenario: Scenario, seed: int | None = None) -> SimulationResult:
    """Simulate a scenario on the trace its own ``[workload]`` generates."""
    return simulate(scenario, generate_trace(scenario.workload, seed))


def without_rate_limits(scenario: Scenario) -> Scenario:
    """The scenario with every bucket so large that it never rejects: the GPU alone decides."""
    return scenario.with_overrides({"tenants.rate_limit": 1e9, "tenants.burst_cap": 1e12})


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          formats: Sequence[str] | None = None) -> str:
    """A plain-text table: right-aligned columns, one format spec per column ("" = str)."""
    formats = formats or [""] * len(headers)
    cells = [[("n/a" if value is None or (isinstance(value, float) and math.isnan(value))
               else format(value, spec)) for value, spec in zip(row, formats, strict=True)]
             for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def tenant_demand(scenario: Scenario, trace: Trace) -> dict[str, float]:
    """Tokens per second (prompt + output) each tenant offers over the trace's span."""
    span = float(trace.arrival_s.max() - trace.arrival_s.min()) if len(trace) else 0.0
    tokens = trace.kv_tokens
    names = trace.tenant_names
    demand = {}
    for tenant in scenario.tenant_ids():
        if tenant in names:
            mask = trace.tenant_codes == names.index(tenant)
            demand[tenant] = float(tokens[mask].sum() / span) if span else math.nan
        else:
            demand[tenant] = 0.0
    return demand


# --------------------------------------------------------------------------------------------
# 01: the token bucket


def bursty_stream(duration_s: float = 60.0, background_per_s: float = 0.5,
                  burst_every_s: float = 12.0, burst_size: int = 15, burst_spread_s: float = 1.0,
                  cost_range: tuple[int, int] = (100, 400), seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times and token costs of a bursty client: a Poisson trickle plus regular bursts.

    Every ``burst_every_s`` seconds ``burst_size`` requests arrive within ``burst_spread_s``;
    between bursts requests arrive at ``background_per_s``. Costs (prompt + output tokens) are
    uniform integers in ``cost_range``. Returned sorted by time.
    """
    rng = np.random.default_rng(seed)
    background = rng.uniform(0.0, duration_s, size=rng.poisson(background_per_s * duration_s))
    starts = np.arange(burst_every_s / 2, duration_s, burst_every_s)
    bursts = (starts[:, None] + rng.uniform(0.0, burst_spread_s, size=(len(starts), burst_size)))
    times = np.sort(np.concatenate((background, bursts.ravel())))
    times = times[times < duration_s]
    costs = rng.integers(cost_range[0], cost_range[1] + 1, size=len(times))
    return times, costs


@dataclass(frozen=True)
class BucketRun:
    """One token bucket deciding a stream of requests, with what a plot needs."""

    rate_limit: float
    burst_cap: float
    times_s: np.ndarray
    costs: np.ndarray
    admitted: np.ndarray
    level_before: np.ndarray  # tokens available at each arrival, before deciding
    level_after: np.ndarray  # tokens left after deciding
    curve_t: np.ndarray  # the bucket level as a piecewise-linear curve over time
    curve_level: np.ndarray

    @property
    def admitted_tokens(self) -> np.ndarray:
        """Cumulative tokens admitted, after each arrival."""
        return np.cumsum(np.where(self.admitted, self.costs, 0))

    @property
    def offered_tokens(self) -> np.ndarray:
        return np.cumsum(self.costs)

    @property
    def admitted_fraction(self) -> float:
        return float(self.admitted.mean()) if len(self.admitted) else math.nan

    def bound(self, t_s) -> np.ndarray:
        """burst_cap + rate_limit x (t - first arrival): what any bucket can have admitted."""
        start = self.times_s[0] if len(self.times_s) else 0.0
        return self.burst_cap + self.rate_limit * (np.asarray(t_s) - start)

    def worst_window_slack(self) -> float:
        """min over all windows [t_i, t_j] of (burst + rate x (t_j - t_i)) - tokens admitted.

        The token-bucket guarantee is that this is >= 0: no window, however placed, admits more
        than a burst plus the rate times its length. O(n) with a running minimum.
        """
        if not len(self.times_s):
            return math.inf
        admitted = self.admitted_tokens.astype(np.float64)
        before = admitted - np.where(self.admitted, self.costs, 0)  # admitted before row i
        start_key = before - self.rate_limit * self.times_s  # for a window opening at row i
        end_key = admitted - self.rate_limit * self.times_s  # for a window closing at row j
        excess = end_key - np.minimum.accumulate(start_key) - self.burst_cap
        return float(-excess.max())


def peak_window_tokens(times_s: np.ndarray, tokens: np.ndarray, window_s: float) -> float:
    """The most tokens in any window [t, t + window_s] (two pointers over sorted times)."""
    times_s = np.asarray(times_s, dtype=np.float64)
    cumulative = np.concatenate(([0.0], np.cumsum(np.asarray(tokens, dtype=np.float64))))
    ends = np.searchsorted(times_s, times_s + window_s, side="right")
    if not len(times_s):
        return 0.0
    return float((cumulative[ends] - cumulative[:-1]).max())


def run_token_bucket(times_s: np.ndarray, costs: np.ndarray, rate_limit: float,
                     burst_cap: float) -> BucketRun:
    """Feed the stream to a :class:`~apslab.core.limiter.TokenBucket` one request at a time."""
    bucket = TokenBucket(rate_limit, burst_cap)
    n = len(times_s)
    admitted = np.zeros(n, dtype=bool)
    before = np.zeros(n)
    after = np.zeros(n)
    curve_t: list[float] = []
    curve_level: list[float] = []
    for i, (t, cost) in enumerate(zip(np.asarray(times_s).tolist(), np.asarray(costs).tolist(),
                                      strict=True)):
        before[i] = bucket.available(t)
        if i and before[i] >= burst_cap > after[i - 1]:
            # The bucket filled up between the two arrivals: mark where the refill hit the cap.
            curve_t.append(curve_t[-1] + (burst_cap - after[i - 1]) / rate_limit)
            curve_level.append(burst_cap)
        admitted[i] = bucket.consume(cost, t)
        after[i] = bucket.tokens
        curve_t += [t, t]
        curve_level += [before[i], after[i]]
    return BucketRun(float(rate_limit), float(burst_cap), np.asarray(times_s, dtype=np.float64),
                     np.asarray(costs), admitted, before, after, np.array(curve_t),
                     np.array(curve_level))


# --------------------------------------------------------------------------------------------
# 02: bids and aging


@dataclass(frozen=True)
class BidClassWaits:
    """Queue waits of one run split by the requests' bids."""

    aging_per_s: float
    bids: tuple[float, ...]  # highest first
    arrival_s: dict[float, np.ndarray]  # completed requests of each bid
    wait_s: dict[float, np.ndarray]
    served_after_arrivals_end: dict[float, float]  # share of the bid's requests

    def p99(self, bid: float) -> float:
        return float(np.percentile(self.wait_s[bid], 99))

    def max(self, bid: float) -> float:
        return float(self.wait_s[bid].max())


def waits_by_bid(result: SimulationResult, arrivals_end_s: float | None = None
                 ) -> BidClassWaits:
    """Split a run's queue waits by bid; count requests served only once arrivals stopped.

    A request that starts after the last arrival of the trace was never served while others
    kept coming: with no aging that is what starvation looks like in a finite run.
    """
    trace = result.trace
    done = result.completed
    end = float(trace.arrival_s.max()) if arrivals_end_s is None else arrivals_end_s
    bids = tuple(sorted(set(trace.priority_bid[done].tolist()), reverse=True))
    arrival, wait, late = {}, {}, {}
    for bid in bids:
        mask = done & (trace.priority_bid == bid)
        arrival[bid] = trace.arrival_s[mask]
        wait[bid] = result.start_s[mask] - trace.arrival_s[mask]
        late[bid] = float((result.start_s[mask] > end).mean())
    return BidClassWaits(result.scenario.scheduler.aging_per_s, bids, arrival, wait, late)


def aging_sweep(scenario: Scenario, trace: Trace, agings: Sequence[float]
                ) -> list[BidClassWaits]:
    """:func:`waits_by_bid` for the same trace at each aging rate."""
    return [waits_by_bid(simulate(scenario.with_overrides({"scheduler.aging_per_s": a}), trace))
            for a in agings]


def _random_requests(n: int, seed: int) -> list[tuple[int, float, float]]:
    rng = np.random.default_rng(seed)
    bids = rng.integers(1, 4, size=n).astype(np.float64)
    arrivals = np.sort(rng.uniform(0.0, 100.0, size=n))
    return list(zip(range(n), bids.tolist(), arrivals.tolist(), strict=True))


def pop_orders(n: int, aging_per_s: float, now_s: float, seed: int = 0
               ) -> tuple[list[int], list[int]]:
    """Pop ``n`` random requests from the lazy and the eager queue; both orders."""
    orders = []
    for queue in (LazyAgingQueue(aging_per_s), EagerAgingQueue(aging_per_s)):
        for request_id, bid, arrival in _random_requests(n, seed):
            queue.push(request_id, bid, arrival)
        orders.append([queue.pop(now_s)[0] for _ in range(n)])
    return orders[0], orders[1]


def order_is_time_invariant(n: int, aging_per_s: float, times_s: Sequence[float],
                            seed: int = 0) -> bool:
    """Whether sorting by effective priority gives the same order at every time in ``times_s``.

    It does, and it equals the order of the static key: every waiting request gains the same
    ``aging_per_s * dt`` between two instants, so no pair ever swaps.
    """
    requests = _random_requests(n, seed)
    by_key = sorted(requests, key=lambda r: (-static_priority_key(r[1], r[2], aging_per_s),
                                             r[2], r[0]))
    expected = [r[0] for r in by_key]
    for now in times_s:
        current = sorted(requests, key=lambda r: (-effective_priority(r[1], r[2], aging_per_s, now),
                                                  r[2], r[0]))
        if [r[0] for r in current] != expected:
            return False
    return True


def eager_work_per_pop(queue_length: int, aging_per_s: float = 0.1, seed: int = 0) -> int:
    """Entries the eager queue recomputes and re-heapifies for one pop at ``queue_length``."""
    queue = EagerAgingQueue(aging_per_s)
    for request_id, bid, arrival in _random_requests(queue_length, seed):
        queue.push(request_id, bid, arrival)
    queue.pop(200.0)
    return queue.heapify_work


def lazy_heap_depth(queue_length: int) -> int:
    """Levels of a binary heap of ``queue_length`` entries: a pop sifts through at most these."""
    return max(1, math.ceil(math.log2(queue_length + 1)))


def time_pops(queue_lengths: Sequence[int], pops: int = 20, aging_per_s: float = 0.1,
              seed: int = 0) -> dict[str, np.ndarray]:
    """Measured seconds per pop for the lazy and the eager queue at each length (wall clock).

    Each queue is filled, prepared once (so the lazy queue's deferred heapify is not counted as
    a pop), then ``pops`` pops are timed and the queue refilled by as many pushes. The numbers
    depend on the machine; notebooks show them in cells whose output nbval does not compare.
    """
    results = {"lazy": [], "eager": []}
    for length in queue_lengths:
        requests = _random_requests(length + pops, seed)
        for name, cls in (("lazy", LazyAgingQueue), ("eager", EagerAgingQueue)):
            queue = cls(aging_per_s)
            for request_id, bid, arrival in requests[:length]:
                queue.push(request_id, bid, arrival)
            queue.prepare(100.0)
            elapsed = 0.0
            for request_id, bid, arrival in requests[length:]:
                started = time.perf_counter()
                queue.pop(100.0)
                elapsed += time.perf_counter() - started
                queue.push(request_id, bid, arrival)
            results[name].append(elapsed / pops)
    return {name: np.array(values) for name, values in results.items()}


# --------------------------------------------------------------------------------------------
# 03: micro-batching and the KV cache


def with_batching(scenario: Scenario, batch_window_ms: float | None = None,
                  max_batch_size: int | None = None, kv_cache_gib: float | None = None
                  ) -> Scenario:
    """The scenario with any of the three batching knobs changed."""
    overrides: dict[str, object] = {}
    if batch_window_ms is not None:
        overrides["scheduler.batch_window_ms"] = float(batch_window_ms)
    if max_batch_size is not None:
        overrides["scheduler.max_batch_size"] = int(max_batch_size)
    if kv_cache_gib is not None:
        overrides["gpu.kv_cache_gib"] = float(kv_cache_gib)
    return scenario.with_overrides(overrides) if overrides else scenario


@dataclass(frozen=True)
class BatchingPoint:
    """Headline numbers of one batching configuration."""

    max_batch_size: int
    batch_window_ms: float
    kv_cache_gib: float
    throughput_tokens_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    mean_batch_size: float
    gpu_utilization: float
    tokens_per_busy_s: float  # output tokens per GPU-busy second: the capacity this batching buys
    kv_utilization_mean: float
    kv_bound_share: float  # share of batches that stopped because the next request did not fit
    rejected_kv: int


def batching_point(scenario: Scenario, trace: Trace) -> tuple[BatchingPoint, SimulationResult]:
    """Simulate and summarise one configuration."""
    result = simulate(scenario, trace)
    summary = result.summary()
    sched = scenario.scheduler
    return BatchingPoint(
        max_batch_size=sched.max_batch_size,
        batch_window_ms=sched.batch_window_ms,
        kv_cache_gib=scenario.gpu.kv_cache_gib,
        throughput_tokens_per_s=summary["throughput_tokens_per_s"] or 0.0,
        latency_p50_s=summary["latency_s"]["p50"] or math.nan,
        latency_p99_s=summary["latency_s"]["p99"] or math.nan,
        mean_batch_size=summary["batches"]["mean_size"] or 0.0,
        gpu_utilization=summary["gpu_utilization"] or 0.0,
        tokens_per_busy_s=float(trace.output_tokens[result.completed].sum()
                                / result.batch_service_s.sum()) if len(result.batch_size)
        else 0.0,
        kv_utilization_mean=summary["batches"]["kv_utilization_mean"] or 0.0,
        kv_bound_share=kv_bound_share(result),
        rejected_kv=summary["requests"]["rejected_by_reason"]["exceeds_kv_capacity"],
    ), result


def kv_bound_share(result: SimulationResult) -> float:
    """Share of batches cut short by the KV cache rather than by the size cap or the queue.

    A batch is KV-bound when it is below ``max_batch_size`` while requests that were already
    waiting when it formed were left in the queue.
    """
    sizes = result.batch_size
    if not len(sizes):
        return 0.0
    trace = result.trace
    done = result.completed
    arrival = trace.arrival_s[done]
    started = result.start_s[done]
    # Requests waiting at each batch start but not in it: arrived before, started later.
    starts = result.batch_start_s
    order = np.argsort(arrival)
    arrived_by = np.searchsorted(arrival[order], starts, side="right")
    started_sorted = np.sort(started)
    started_by = np.searchsorted(started_sorted, starts, side="right")  # includes this batch
    left_waiting = arrived_by - started_by
    cap = result.scenario.scheduler.max_batch_size
    return float(((sizes < cap) & (left_waiting > 0)).mean())


def batch_size_sweep(scenario: Scenario, trace: Trace, sizes: Sequence[int]
                     ) -> list[BatchingPoint]:
    """:func:`batching_point` at each ``max_batch_size`` (other knobs as in ``scenario``)."""
    return [batching_point(with_batching(scenario, max_batch_size=s), trace)[0] for s in sizes]


def window_sweep(scenario: Scenario, trace: Trace, windows_ms: Sequence[float]
                 ) -> list[BatchingPoint]:
    """:func:`batching_point` at each batch window."""
    return [batching_point(with_batching(scenario, batch_window_ms=w), trace)[0]
            for w in windows_ms]


# --------------------------------------------------------------------------------------------
# 05: latency, fairness and the seed's claims


def with_bid_classes(trace: Trace, bids: Sequence[float], shares: Sequence[float], seed: int = 0
                     ) -> Trace:
    """The trace with each request's bid redrawn: ``bids[k]`` with probability ``shares[k]``.

    Lets every tenant send both urgent and routine requests, so bid classes and tenants can be
    studied apart.
    """
    rng = np.random.default_rng(seed)
    shares = np.asarray(shares, dtype=np.float64)
    drawn = rng.choice(np.asarray(bids, dtype=np.float64), size=len(trace), p=shares / shares.sum())
    return Trace(trace.arrival_s, trace.tenant_codes, list(trace.tenant_names),
                 trace.prompt_tokens, trace.output_tokens, drawn, source=trace.source)


@dataclass(frozen=True)
class LoadPoint:
    """One run of a load sweep: the headline metrics and waits per tenant and per bid."""

    load: float
    offered_output_tokens_per_s: float
    throughput_tokens_per_s: float
    gpu_utilization: float
    jain_fairness: float | None
    wait_p50_by_tenant: dict[str, float]
    wait_p99_by_tenant: dict[str, float]
    latency_p99_by_tenant: dict[str, float]
    latency_p99_by_bid: dict[float, float]
    wait_p50_by_bid: dict[float, float]
    wait_mean_by_bid: dict[float, float]
    wait_p99_by_bid: dict[float, float]
    rejected_share: float
    rejected_share_by_tenant: dict[str, float]
    wait_growth_s_per_s: float  # slope of queue wait against arrival time

    @property
    def saturated(self) -> bool:
        """Waits grow by more than 10 ms per second of the run: the queue has no steady state."""
        return self.wait_growth_s_per_s > 0.01


def percentile_or_nan(values: np.ndarray, q: float) -> float:
    """numpy's ``q``-th percentile, or NaN with no values (a table cell, where None would not
    format)."""
    return float(np.percentile(values, q)) if len(values) else math.nan


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """The least-squares slope of y on x, from numpy sums alone.

    ``np.polyfit`` would go through LAPACK, whose last digits differ from one CPU to the next;
    elementwise arithmetic and numpy's pairwise sums give the same digits on every machine.
    """
    dx = x - x.mean()
    return float((dx * (y - y.mean())).sum() / (dx * dx).sum())


def load_point(scenario: Scenario, trace: Trace, load: float) -> LoadPoint:
    """Simulate one trace and measure it per tenant and per bid."""
    return measure_load(simulate(scenario, trace), load)


def measure_load(result: SimulationResult, load: float) -> LoadPoint:
    """A run's headline metrics and its waits per tenant and per bid."""
    scenario, trace = result.scenario, result.trace
    summary = result.summary()
    done = result.completed
    wait = result.start_s - trace.arrival_s
    latency = result.finish_s - trace.arrival_s
    duration = float(trace.arrival_s.max() - trace.arrival_s.min()) if len(trace) else 0.0
    by_tenant_p50, by_tenant_p99, latency_p99, rejected = {}, {}, {}, {}
    for index, tenant in enumerate(scenario.tenant_ids()):
        submitted = result.tenant_index == index
        rejected[tenant] = float(1.0 - done[submitted].mean()) if submitted.any() else math.nan
        mask = done & submitted
        by_tenant_p50[tenant] = percentile_or_nan(wait[mask], 50)
        by_tenant_p99[tenant] = percentile_or_nan(wait[mask], 99)
        latency_p99[tenant] = percentile_or_nan(latency[mask], 99)
    by_bid_p50, by_bid_mean, by_bid_p99, latency_by_bid = {}, {}, {}, {}
    for bid in sorted(set(trace.priority_bid.tolist()), reverse=True):
        mask = done & (trace.priority_bid == bid)
        latency_by_bid[bid] = percentile_or_nan(latency[mask], 99)
        by_bid_p50[bid] = percentile_or_nan(wait[mask], 50)
        by_bid_mean[bid] = float(wait[mask].mean()) if mask.any() else math.nan
        by_bid_p99[bid] = percentile_or_nan(wait[mask], 99)
    growth = _slope(trace.arrival_s[done], wait[done]) if done.sum() > 2 else math.nan
    return LoadPoint(
        load=float(load),
        offered_output_tokens_per_s=float(trace.output_tokens.sum() / duration) if duration
        else math.nan,
        throughput_tokens_per_s=summary["throughput_tokens_per_s"] or 0.0,
        gpu_utilization=summary["gpu_utilization"] or 0.0,
        jain_fairness=summary["jain_fairness"],
        wait_p50_by_tenant=by_tenant_p50,
        wait_p99_by_tenant=by_tenant_p99,
        latency_p99_by_tenant=latency_p99,
        latency_p99_by_bid=latency_by_bid,
        wait_p50_by_bid=by_bid_p50,
        wait_mean_by_bid=by_bid_mean,
        wait_p99_by_bid=by_bid_p99,
        rejected_share=float(1.0 - done.mean()) if len(done) else 0.0,
        rejected_share_by_tenant=rejected,
        wait_growth_s_per_s=growth,
    )


def load_sweep(scenario: Scenario, loads: Sequence[float], seed: int | None = None,
               bid_classes: tuple[Sequence[float], Sequence[float]] | None = None,
               min_requests: int = 0) -> list[LoadPoint]:
    """Run the scenario's workload at each load multiplier (same seed, so runs are comparable).

    ``bid_classes`` = (bids, shares) redraws every request's bid (:func:`with_bid_classes`).
    ``min_requests`` lengthens the run at light loads until about that many requests arrive, so
    a p99 at 1% load is a percentile of thousands of waits, not of five.
    """
    points = []
    base_rate = sum(t.arrival_rate_per_s for t in scenario.workload.tenants)
    for load in loads:
        scaled = scenario.scaled_load(load)
        duration = scenario.workload.duration_s
        if min_requests and base_rate * load * duration < min_requests:
            scaled = scaled.with_overrides(
                {"workload.duration_s": float(math.ceil(min_requests / (base_rate * load)))})
        trace = generate_trace(scaled.workload, seed)
        if bid_classes is not None:
            trace = with_bid_classes(trace, *bid_classes, seed=0 if seed is None else seed)
        points.append(load_point(scaled, trace, load))
    return points


def fairness_table(result: SimulationResult) -> dict[str, float | None]:
    """Jain's index of tokens served, raw and per unit of demand, for one run.

    Raw Jain compares what tenants got; when their demands differ it is below 1 even if every
    request was served. Dividing each tenant's served tokens by its submitted tokens measures
    whether tenants were treated alike instead.
    """
    scenario, trace = result.scenario, result.trace
    summary = result.summary()
    served, demand = [], []
    for index, tenant in enumerate(scenario.tenant_ids()):
        row = summary["tenants"][tenant]
        if not row["submitted"]:
            continue
        served.append(row["tokens_completed"])
        demand.append(int(trace.kv_tokens[result.tenant_index == index].sum()))
    normalised = [s / d for s, d in zip(served, demand, strict=True)]
    return {"jain_served": jain_fairness(served), "jain_per_demand": jain_fairness(normalised),
            "throughput_tokens_per_s": summary["throughput_tokens_per_s"],
            "wait_p99_s": summary["queue_wait_s"]["p99"]}


def tenant_mix(scenario: Scenario, arrival_rates: dict[str, float]) -> Scenario:
    """The scenario with each named tenant's generated arrival rate replaced."""
    return scenario.with_overrides({f"workload.tenants.{tenant}.arrival_rate_per_s": rate
                                    for tenant, rate in arrival_rates.items()})


@dataclass(frozen=True)
class ClaimRange:
    """Where one of the seed's claims holds across a load sweep."""

    claim: str
    holds: np.ndarray  # per load point
    loads: np.ndarray
    utilizations: np.ndarray

    def runs(self) -> list[tuple[int, int]]:
        """(first, last) indices of each unbroken run of load points where the claim held."""
        runs, start = [], None
        for i, ok in enumerate(self.holds.tolist() + [False]):
            if ok and start is None:
                start = i
            elif not ok and start is not None:
                runs.append((start, i - 1))
                start = None
        return runs

    @property
    def load_range(self) -> tuple[float, float] | None:
        """The smallest and largest load at which the claim held (None if never)."""
        if not self.holds.any():
            return None
        return float(self.loads[self.holds].min()), float(self.loads[self.holds].max())

    def describe(self) -> str:
        """Each unbroken range of loads where the claim held, with the GPU utilisation there."""
        runs = self.runs()
        if not runs:
            return f"{self.claim}: holds at no load tested"
        parts = [f"load x{self.loads[lo]:.3g} to x{self.loads[hi]:.3g} (utilisation "
                 f"{self.utilizations[lo]:.1%} to {self.utilizations[hi]:.1%})"
                 for lo, hi in runs]
        return f"{self.claim}: holds for " + "; ".join(parts)


def seed_claims(points: Sequence[LoadPoint], high_bid: float) -> list[ClaimRange]:
    """Test the seed's three performance claims at every point of a load sweep.

    * "<50 ms queue time for high priority", read three ways: the median, the mean and the p99
      queue wait of the highest bid below 50 ms;
    * "95% GPU utilisation": utilisation at least 0.95;
    * "128 tokens/s sustained": throughput at least 128 output tokens/s with a queue that has a
      steady state (waits not growing through the run, see :attr:`LoadPoint.saturated`).
    """
    loads = np.array([p.load for p in points])
    utils = np.array([p.gpu_utilization for p in points])

    def fast(stat: str) -> np.ndarray:
        values = [getattr(p, f"wait_{stat}_by_bid").get(high_bid, math.inf) for p in points]
        return np.array([v < 0.050 for v in values])

    sustained = np.array([p.throughput_tokens_per_s >= 128.0 and not p.saturated
                          for p in points])
    return [
        ClaimRange("<50 ms median queue wait, highest bid", fast("p50"), loads, utils),
        ClaimRange("<50 ms mean queue wait, highest bid", fast("mean"), loads, utils),
        ClaimRange("<50 ms p99 queue wait, highest bid", fast("p99"), loads, utils),
        ClaimRange(">=95% GPU utilisation", utils >= 0.95, loads, utils),
        ClaimRange(">=128 output tokens/s, steady queue", sustained, loads, utils),
    ]
