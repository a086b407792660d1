"""The experiments behind the notebooks (apslab.lab): each checked against first principles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apslab.core.aging_queue import EagerAgingQueue
from apslab.core.limiter import TokenBucket
from apslab.io.scenario import load_scenario
from apslab.io.workload import generate_trace
from apslab.lab import experiments as lab

# --------------------------------------------------------------------------------------------
# 00


def test_example_is_the_readme_example():
    scenario, trace = lab.example()
    summary = lab.simulate(scenario, trace).summary()
    assert (summary["requests"]["submitted"], summary["requests"]["rejected"]) == (129, 15)
    regenerated = lab.run_generated(scenario)  # the stored trace is the workload's own
    assert regenerated.summary() == summary


def test_tenant_demand_is_tokens_per_second_of_the_trace_span():
    scenario, trace = lab.example()
    demand = lab.tenant_demand(scenario, trace)
    span = trace.arrival_s.max() - trace.arrival_s.min()
    batch = trace.tenant_codes == trace.tenant_names.index("batch")
    assert demand["batch"] == pytest.approx(trace.kv_tokens[batch].sum() / span)
    assert demand["batch"] > scenario.tenants[2].rate_limit  # why only batch is rejected


def test_table_aligns_and_shows_missing_values():
    text = lab.table(["a", "bee"], [(1, None), (22, 3.14159)], ["d", ".2f"])
    assert text.splitlines() == [" a   bee", " 1   n/a", "22  3.14"]


# --------------------------------------------------------------------------------------------
# 01


def test_bursty_stream_is_seeded_sorted_and_bursty():
    times, costs = lab.bursty_stream(seed=3)
    again, same_costs = lab.bursty_stream(seed=3)
    assert np.array_equal(times, again) and np.array_equal(costs, same_costs)
    assert (np.diff(times) >= 0).all() and times.max() < 60.0
    assert costs.min() >= 100 and costs.max() <= 400
    peak = lab.peak_window_tokens(times, costs, 1.0)
    assert peak > 5 * costs.sum() / 60.0  # a burst second carries many average seconds


def test_run_token_bucket_makes_the_limiters_decisions():
    times, costs = lab.bursty_stream(seed=1)
    run = lab.run_token_bucket(times, costs, 200.0, 2000.0)
    bucket = TokenBucket(200.0, 2000.0)
    expected = [bucket.consume(c, t) for c, t in zip(costs, times, strict=True)]
    assert run.admitted.tolist() == expected
    assert run.admitted_tokens[-1] == costs[run.admitted].sum()
    assert (run.level_after <= run.burst_cap).all() and (run.level_after >= 0).all()
    assert run.curve_level.max() <= run.burst_cap


def _brute_force_slack(run: lab.BucketRun) -> float:
    admitted = np.where(run.admitted, run.costs, 0)
    worst = math.inf
    for i in range(len(run.times_s)):
        for j in range(i, len(run.times_s)):
            window = admitted[i:j + 1].sum()
            bound = run.burst_cap + run.rate_limit * (run.times_s[j] - run.times_s[i])
            worst = min(worst, bound - window)
    return worst


@given(rate=st.floats(10, 2000), burst=st.floats(400, 8000), seed=st.integers(0, 50))
def test_no_window_ever_admits_more_than_burst_plus_rate_times_length(rate, burst, seed):
    times, costs = lab.bursty_stream(duration_s=20.0, seed=seed)
    run = lab.run_token_bucket(times, costs, rate, burst)
    slack = run.worst_window_slack()
    assert slack >= -1e-6
    assert slack == pytest.approx(_brute_force_slack(run), abs=1e-6)


def test_peak_window_tokens_matches_brute_force():
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 10, 80))
    tokens = rng.integers(1, 100, 80)
    brute = max(tokens[(times >= t) & (times <= t + 0.7)].sum() for t in times)
    assert lab.peak_window_tokens(times, tokens, 0.7) == brute


# --------------------------------------------------------------------------------------------
# 02


def test_the_order_never_depends_on_the_time():
    assert lab.order_is_time_invariant(300, 0.2, [0.0, 5.0, 500.0, 1e6])
    lazy, eager = lab.pop_orders(500, 0.2, now_s=123.0)
    assert lazy == eager and sorted(lazy) == list(range(500))


def test_eager_work_is_the_queue_length_and_lazy_depth_is_logarithmic():
    for n in (10, 100, 1000):
        assert lab.eager_work_per_pop(n) == n
    assert [lab.lazy_heap_depth(n) for n in (1, 2, 3, 7, 8, 1023, 1024)] == [1, 2, 2, 3, 4, 10, 11]


def test_time_pops_measures_both_queues():
    timings = lab.time_pops([50, 500], pops=5)
    assert set(timings) == {"lazy", "eager"}
    assert all(len(v) == 2 and (v > 0).all() for v in timings.values())


@pytest.fixture(scope="module")
def two_bids():
    scenario = load_scenario(lab.scenario_path("lab_two_bids"))
    return scenario, generate_trace(scenario.workload)


def test_without_aging_low_bids_starve_and_aging_ends_it(two_bids):
    scenario, trace = two_bids
    none, some, lots = lab.aging_sweep(scenario, trace, [0.0, 0.1, 1.0])
    assert none.bids == (2.0, 1.0)
    assert none.served_after_arrivals_end[1.0] > 0.4 > none.served_after_arrivals_end[2.0]
    assert some.served_after_arrivals_end[1.0] < none.served_after_arrivals_end[1.0] / 3
    assert none.p99(1.0) > 3 * some.p99(1.0)
    # Aging is paid for by the high bid...
    assert some.p99(2.0) > 2 * none.p99(2.0)
    # ...and with a lot of it both classes wait about the same (first come, first served).
    assert lots.p99(1.0) == pytest.approx(lots.p99(2.0), rel=0.1)


def test_with_aging_a_low_bid_waits_about_bid_gap_over_aging_longer():
    """Effective priorities: a bid-1 request ties a bid-2 one that arrived 1/aging later."""
    queue = EagerAgingQueue(0.1)
    queue.push(0, 1.0, 0.0)
    queue.push(1, 2.0, 10.0)  # arrived exactly 1/0.1 s later: a tie, broken by arrival
    queue.push(2, 2.0, 9.0)  # arrived earlier: overtakes
    assert [queue.pop(30.0)[0] for _ in range(3)] == [2, 0, 1]


# --------------------------------------------------------------------------------------------
# 03


@pytest.fixture(scope="module")
def busy_example():
    scenario, _ = lab.example()
    busy = lab.without_rate_limits(scenario).scaled_load(1.2).with_overrides(
        {"workload.duration_s": 300.0})
    return busy, generate_trace(busy.workload)


def test_bigger_batches_buy_capacity(busy_example):
    scenario, trace = busy_example
    points = lab.batch_size_sweep(scenario, trace, [1, 4, 16])
    capacity = [p.tokens_per_busy_s for p in points]
    assert capacity == sorted(capacity) and capacity[-1] > 1.5 * capacity[0]
    assert points[0].latency_p50_s > 5 * points[-1].latency_p50_s  # batch size 1 overloads


def test_kv_binding_is_detected_and_shrinks_batches(busy_example):
    scenario, trace = busy_example
    roomy, _ = lab.batching_point(scenario, trace)
    tight, result = lab.batching_point(lab.with_batching(scenario, kv_cache_gib=1.0), trace)
    assert roomy.kv_bound_share == 0.0 and tight.kv_bound_share > 0.5
    assert tight.mean_batch_size < roomy.mean_batch_size
    assert (result.batch_kv_tokens <= result.scenario.gpu.kv_capacity_tokens).all()
    tiny, _ = lab.batching_point(lab.with_batching(scenario, kv_cache_gib=0.25), trace)
    too_big = (trace.kv_tokens > 512).sum()
    assert tiny.rejected_kv == too_big > 0


def test_kv_bound_share_counts_batches_that_left_waiting_requests_behind():
    from helpers import make_scenario, make_trace

    scenario = make_scenario(gpu={"kv_cache_gib": 1000 * 524288 / 2**30},  # 1000 tokens
                             scheduler={"max_batch_size": 4})
    # Three requests of 400 tokens arrive together: the first batch takes two, the third waits.
    trace = make_trace([(0.0, "A", 300, 100, 1.0), (0.0, "A", 300, 100, 1.0),
                        (0.0, "A", 300, 100, 1.0)])
    result = lab.simulate(scenario, trace)
    assert result.batch_size.tolist() == [2, 1]
    assert lab.kv_bound_share(result) == 0.5


def test_window_only_adds_latency_below_saturation():
    scenario, _ = lab.example()
    light = lab.without_rate_limits(scenario).scaled_load(0.3).with_overrides(
        {"workload.duration_s": 300.0})
    trace = generate_trace(light.workload)
    short, long_ = lab.window_sweep(light, trace, [0, 2000])
    assert long_.latency_p50_s > short.latency_p50_s + 1.0
    assert long_.mean_batch_size > short.mean_batch_size
    assert long_.throughput_tokens_per_s == pytest.approx(short.throughput_tokens_per_s, rel=0.02)


# --------------------------------------------------------------------------------------------
# 05


def test_with_bid_classes_redraws_bids_in_the_given_shares():
    scenario, _ = lab.example()
    trace = generate_trace(scenario.scaled_load(10).workload)
    redrawn = lab.with_bid_classes(trace, [3.0, 1.0], [0.2, 0.8], seed=0)
    assert set(redrawn.priority_bid.tolist()) == {3.0, 1.0}
    assert (redrawn.priority_bid == 3.0).mean() == pytest.approx(0.2, abs=0.03)
    assert np.array_equal(redrawn.arrival_s, trace.arrival_s)


def test_load_sweep_lengthens_light_runs_to_min_requests():
    scenario, _ = lab.example()
    free = lab.without_rate_limits(scenario)
    light, heavy = lab.load_sweep(free, [0.01, 2.0], min_requests=1000)
    assert light.gpu_utilization < 0.05 and not light.saturated
    assert heavy.saturated and heavy.gpu_utilization > 0.99
    assert set(light.wait_p99_by_tenant) == {"premium", "standard", "batch"}
    assert light.rejected_share_by_tenant == {"premium": 0.0, "standard": 0.0, "batch": 0.0}


def test_seed_claims_ranges():
    scenario, _ = lab.example()
    free = lab.without_rate_limits(scenario).with_overrides({"workload.duration_s": 1800.0})
    points = lab.load_sweep(free, [0.002, 0.2, 1.0, 1.2, 3.0], min_requests=2000)
    claims = {c.claim: c for c in lab.seed_claims(points, high_bid=3.0)}
    p99 = claims["<50 ms p99 queue wait, highest bid"]
    assert p99.holds.tolist() == [True, False, False, False, False]
    assert claims["<50 ms median queue wait, highest bid"].holds.tolist()[:2] == [True, True]
    busy = claims[">=95% GPU utilisation"]
    assert busy.holds.tolist() == [False, False, True, True, True]
    sustained = claims[">=128 output tokens/s, steady queue"]
    assert sustained.holds.tolist() == [False, False, True, True, False]
    assert sustained.load_range == (1.0, 1.2)
    assert "load x1 to x1.2" in sustained.describe()
    # No load satisfies the latency claim and the utilisation claim together.
    assert not (p99.holds & busy.holds).any()


def test_claim_runs_split_at_gaps():
    claim = lab.ClaimRange("c", np.array([True, True, False, True]), np.array([1.0, 2, 3, 4]),
                           np.array([0.1, 0.2, 0.3, 0.4]))
    assert claim.runs() == [(0, 1), (3, 3)]
    assert claim.describe() == ("c: holds for load x1 to x2 (utilisation 10.0% to 20.0%); "
                                "load x4 to x4 (utilisation 40.0% to 40.0%)")
    never = lab.ClaimRange("n", np.array([False]), np.array([1.0]), np.array([0.5]))
    assert never.load_range is None and "no load" in never.describe()


def test_fairness_table_separates_equality_from_equal_treatment():
    scenario, _ = lab.example()
    heavy = lab.tenant_mix(lab.without_rate_limits(scenario),
                           {"premium": 0.1, "standard": 0.1, "batch": 0.3})
    fairness = lab.fairness_table(lab.run_generated(heavy))
    # Everyone served in full (no limits, light load): equal treatment, unequal allocation.
    assert fairness["jain_per_demand"] == pytest.approx(1.0)
    assert fairness["jain_served"] < 0.9


def test_a_flooder_is_contained_by_its_own_rate_limit():
    base = load_scenario(lab.scenario_path("lab_flood"))
    flood = lab.tenant_mix(base, {"flood": 1.5})
    unlimited = flood.with_overrides({"tenants.flood.rate_limit": 1e6})
    limited = flood.with_overrides({"tenants.flood.rate_limit": 300.0})
    free = lab.measure_load(lab.run_generated(unlimited), 1.0)
    capped = lab.measure_load(lab.run_generated(limited), 1.0)
    assert free.wait_p99_by_tenant["alpha"] > 10 * capped.wait_p99_by_tenant["alpha"]
    assert free.wait_p99_by_tenant["flood"] < free.wait_p99_by_tenant["alpha"] / 5
    assert capped.rejected_share_by_tenant["flood"] > 0.2
    assert capped.rejected_share_by_tenant["alpha"] == 0.0
