"""Property tests for clusters of GPUs sharing one queue (``[cluster] gpus = N``).

They extend the core invariants to N GPUs: no GPU runs two batches at once, the lowest idle GPU
takes a forming batch, no request waits past its window while a GPU idles, nothing is created or
lost (requests, tokens, busy time, cost), admission does not depend on the GPU count, and an
FCFS cluster never starts a request later when it has more GPUs.
"""

import numpy as np
import pytest
from helpers import make_scenario, make_trace
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_sim import reference_simulate

from apslab.sim.run import simulate


@st.composite
def cluster_cases(draw, min_gpus=1, max_gpus=6):
    tenants = [
        ("t0", draw(st.sampled_from([8.0, 80.0, 1e6])), draw(st.sampled_from([400.0, 4000.0]))),
        ("t1", draw(st.sampled_from([30.0, 1e6])), draw(st.sampled_from([1500.0, 1e6]))),
    ]
    scheduler = {
        "batch_window_ms": draw(st.sampled_from([0.0, 10.0, 300.0])),
        "max_batch_size": draw(st.integers(1, 6)),
        "aging_per_s": draw(st.sampled_from([0.0, 0.5])),
    }
    gpu = {"kv_cache_gib": draw(st.sampled_from([32.0, 0.0005])),  # 0.0005 GiB = 1024 tokens
           "decode_tokens_per_s": draw(st.sampled_from([128.0, 2000.0]))}
    gpus = draw(st.integers(min_gpus, max_gpus))
    scenario = make_scenario(tenants, gpu=gpu, scheduler=scheduler, cluster={"gpus": gpus})
    grid = draw(st.booleans())  # coarse times: ties between arrivals, finishes and timers
    rows = draw(st.lists(st.tuples(
        st.integers(0, 30).map(lambda k: k / 4) if grid else st.floats(0, 8),
        st.sampled_from(["t0", "t1", "t1", "nobody"]),
        st.integers(0, 600), st.integers(0, 600), st.sampled_from([1.0, 2.0, 3.0])),
        min_size=1, max_size=70))
    return scenario, make_trace(rows)


def busy_at(result, gpu: int, t: float) -> bool:
    """GPU ``gpu`` is serving at ``t``, or took a batch at exactly ``t``."""
    mine = result.batch_gpu == gpu
    starts, finishes = result.batch_start_s[mine], result.batch_finish_s[mine]
    return bool(((starts <= t) & (t < finishes)).any() or (starts == t).any())


def idle_intervals(result, gpu: int) -> list[tuple[float, float]]:
    mine = result.batch_gpu == gpu
    starts, finishes = result.batch_start_s[mine], result.batch_finish_s[mine]
    if not len(starts):
        return [(-np.inf, np.inf)]
    gaps = [(-np.inf, float(starts[0]))]
    gaps += [(float(f), float(s)) for f, s in zip(finishes[:-1], starts[1:], strict=True) if s > f]
    gaps.append((float(finishes[-1]), np.inf))
    return gaps


@given(cluster_cases())
def test_no_gpu_runs_two_batches_at_once_and_gpu_ids_are_valid(case):
    scenario, trace = case
    result = simulate(scenario, trace)
    gpus = scenario.cluster.gpus
    assert ((result.batch_gpu >= 0) & (result.batch_gpu < gpus)).all()
    for g in range(gpus):
        mine = result.batch_gpu == g
        starts, finishes = result.batch_start_s[mine], result.batch_finish_s[mine]
        assert (np.diff(starts) >= 0).all()
        assert (starts[1:] >= finishes[:-1]).all()
    # a request's GPU is its batch's GPU; rejected requests have none
    done = result.completed
    assert (result.gpu[done] == result.batch_gpu[result.batch_id[done]]).all()
    assert (result.gpu[~done] == -1).all()


@given(cluster_cases())
def test_the_lowest_idle_gpu_takes_a_forming_batch(case):
    scenario, trace = case
    result = simulate(scenario, trace)
    for start, gpu in zip(result.batch_start_s.tolist(), result.batch_gpu.tolist(), strict=True):
        for lower in range(gpu):
            assert busy_at(result, lower, start), (
                f"batch on GPU {gpu} at t={start} while GPU {lower} was idle")


@given(cluster_cases())
def test_no_request_waits_past_its_window_while_a_gpu_idles(case):
    scenario, trace = case
    result = simulate(scenario, trace)
    window = scenario.scheduler.batch_window_s
    idle = [idle_intervals(result, g) for g in range(scenario.cluster.gpus)]
    done = np.flatnonzero(result.completed)
    for arrival, start in zip(trace.arrival_s[done].tolist(), result.start_s[done].tolist(),
                              strict=True):
        lo, hi = arrival + window, start  # waiting past lo is allowed only while all are busy
        if hi <= lo:
            continue
        for gaps in idle:
            for gap_lo, gap_hi in gaps:
                assert not (max(lo, gap_lo) < min(hi, gap_hi)), (
                    f"request arrived {arrival}, started {start}, but a GPU idled in "
                    f"({gap_lo}, {gap_hi})")


@given(cluster_cases())
def test_conservation_of_requests_tokens_time_and_cost(case):
    scenario, trace = case
    result = simulate(scenario, trace)
    summary = result.summary()
    n, done = len(trace), result.completed
    requests = summary["requests"]
    assert requests["submitted"] == n == requests["completed"] + requests["rejected"]
    assert sum(requests["rejected_by_reason"].values()) == requests["rejected"]
    assert int(result.batch_size.sum()) == requests["completed"]
    for row in summary["tenants"].values():
        assert row["submitted"] == row["completed"] + row["rejected"]
    assert sum(r["tokens_completed"] for r in summary["tenants"].values()) == \
        int(result.batch_kv_tokens.sum()) == int(trace.kv_tokens[done].sum())
    gpus = summary["gpus"]
    assert gpus["count"] == scenario.cluster.gpus == len(gpus["utilization_per_gpu"])
    if summary["elapsed_s"]:
        per_gpu = np.array(gpus["utilization_per_gpu"])
        assert (per_gpu >= 0).all() and (per_gpu <= 1 + 1e-9).all()
        assert per_gpu.mean() == pytest.approx(summary["gpu_utilization"], rel=1e-9, abs=1e-12)
        busy = np.bincount(result.batch_gpu, weights=result.batch_service_s,
                           minlength=scenario.cluster.gpus)
        assert (busy / summary["elapsed_s"]) == pytest.approx(per_gpu, rel=1e-9, abs=1e-12)
    if summary["throughput_tokens_per_s"]:
        expected = (scenario.gpu.price_per_hour * scenario.cluster.gpus / 3600
                    / summary["throughput_tokens_per_s"] * 1e6)
        assert summary["cost_per_million_tokens"] == pytest.approx(expected, rel=1e-12)


@given(cluster_cases(), st.integers(1, 6))
def test_admission_does_not_depend_on_the_gpu_count(case, other_gpus):
    scenario, trace = case
    other = scenario.with_overrides({"cluster.gpus": other_gpus})
    assert np.array_equal(simulate(scenario, trace).reason, simulate(other, trace).reason)


@given(cluster_cases(min_gpus=4, max_gpus=8))
@settings(max_examples=60)
def test_large_clusters_agree_with_the_reference_simulator(case):
    scenario, trace = case
    result = simulate(scenario, trace)
    expected = reference_simulate(scenario, trace)
    assert result.reason_names() == expected["reason"]
    done = result.completed
    assert [float(v) if ok else None for v, ok in zip(result.start_s, done, strict=True)] == \
        expected["start"]
    assert [g if g >= 0 else None for g in result.gpu.tolist()] == expected["gpu"]


@given(st.lists(st.tuples(st.integers(0, 40).map(lambda k: k / 8), st.integers(0, 600)),
                min_size=1, max_size=60), st.integers(1, 4))
def test_fcfs_cluster_never_starts_a_request_later_with_more_gpus(rows, gpus):
    """Batches of one, no window, one bid: FCFS G/G/c, where start times fall as c grows."""
    trace = make_trace([(t, "A", 0, out, 1.0) for t, out in rows])
    fewer = make_scenario([("A", 1e9, 1e9)], cluster={"gpus": gpus},
                          scheduler={"max_batch_size": 1, "batch_window_ms": 0.0})
    more = fewer.with_overrides({"cluster.gpus": gpus + 1})
    a, b = simulate(fewer, trace), simulate(more, trace)
    assert (b.start_s <= a.start_s).all()
    assert b.summary()["queue_wait_s"]["mean"] <= a.summary()["queue_wait_s"]["mean"]
