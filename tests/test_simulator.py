import math

import numpy as np
import pytest
from helpers import make_scenario, make_trace
from hypothesis import given
from hypothesis import strategies as st
from reference_sim import reference_simulate

from apslab.sim.static import compiled_engine_available
from apslab.sim.static import simulate_static as simulate


def fates(result):
    return [result.reason_names()[i] or "completed" for i in range(len(result.reason))]


def test_hand_worked_timeline():
    scenario = make_scenario([("A", 100.0, 2000.0)])
    trace = make_trace([
        (0.0, "A", 512, 128, 1.0),     # admitted (2000 -> 1360); GPU idle: batch at 0.01
        (0.005, "A", 0, 256, 2.0),     # admitted (1360.5 -> 1104.5); joins the window
        (1.0, "A", 0, 1024, 1.0),      # admitted (1104.5 + 99.5 = 1204 -> 180); GPU busy
        (1.5, "A", 100, 400, 1.0),     # 180 + 50 = 230 < 500: rate_limited
        (2.0, "Z", 1, 1, 1.0),         # not in the scenario
        (2.5, "A", 70_000, 0, 1.0),    # over the 65,536-token KV cache
        (3.0, "A", 1500, 600, 1.0),    # 2100 tokens > burst 2000
        (20.0, "A", 0, 10, 1.0),       # bucket refilled to its cap; GPU idle again
    ])
    result = simulate(scenario, trace)
    assert fates(result) == ["completed", "completed", "completed", "rate_limited",
                             "unknown_tenant", "exceeds_kv_capacity", "exceeds_burst",
                             "completed"]
    first = 0.01 + (512 / 1024 + 384 / (128 * (0.4 + 0.6 * math.sqrt(2))))
    assert result.start_s[0] == result.start_s[1] == 0.01
    assert result.finish_s[0] == result.finish_s[1] == first
    # Request 2 waited through batch 0 and starts the moment it finishes: no second window.
    assert result.start_s[2] == first
    assert result.finish_s[2] == first + 1024 / 128
    assert result.start_s[7] == 20.0 + 0.01
    assert result.finish_s[7] == 20.01 + 10 / 128
    assert result.batch_id.tolist() == [0, 0, 1, -1, -1, -1, -1, 2]
    assert result.batch_size.tolist() == [2, 1, 1]
    summary = result.summary()
    assert summary["requests"]["rejected_by_reason"] == {
        "rate_limited": 1, "exceeds_burst": 1, "exceeds_kv_capacity": 1, "unknown_tenant": 1}
    assert summary["elapsed_s"] == result.finish_s[7] - 0.0
    assert summary["throughput_tokens_per_s"] == (128 + 256 + 1024 + 10) / summary["elapsed_s"]
    assert summary["tenants"]["A"] == {
        "submitted": 7, "completed": 4, "rejected": 3,
        "tokens_completed": 640 + 256 + 1024 + 10,
        "queue_wait_p99_s": pytest.approx(np.percentile([0.01, 0.005, first - 1.0, 0.01], 99)),
        # input_weight x prompt + output_weight x output: 512 prompt, 1418 output tokens
        "weighted_service": 1 * 512 + 2 * (128 + 256 + 1024 + 10),
    }


def test_arrival_at_a_finish_joins_the_batch_that_forms_then():
    # window 0.5 s; each batch of one 128-token request takes exactly 1 s.
    scenario = make_scenario([("A", 1e6, 1e6)], scheduler={"batch_window_ms": 500.0})
    trace = make_trace([(0.0, "A", 0, 128, 1.0), (1.5, "A", 0, 128, 1.0)])
    result = simulate(scenario, trace)
    assert result.start_s.tolist() == [0.5, 1.5]  # not 2.0: arrivals first, then the finish


def test_arrival_at_the_formation_instant_is_in_the_batch():
    scenario = make_scenario([("A", 1e6, 1e6)])
    trace = make_trace([(0.0, "A", 0, 128, 1.0), (0.01, "A", 0, 128, 1.0),
                        (0.010000001, "A", 0, 128, 1.0)])
    result = simulate(scenario, trace)
    assert result.batch_id.tolist() == [0, 0, 1]


def test_rows_in_any_order_are_processed_by_arrival_then_row():
    scenario = make_scenario([("A", 1e6, 1e6)], scheduler={"max_batch_size": 1,
                                                           "batch_window_ms": 0.0})
    trace = make_trace([(1.0, "A", 0, 128, 1.0), (0.0, "A", 0, 128, 1.0),
                        (0.0, "A", 0, 128, 1.0)])
    result = simulate(scenario, trace)
    # rows 1 and 2 tie at t=0: row 1 is handled (and served) first
    assert result.start_s.tolist() == [2.0, 0.0, 1.0]


def test_priorities_and_aging_decide_who_waits():
    base = {"max_batch_size": 1, "batch_window_ms": 0.0}
    rows = [(0.0, "A", 0, 1280, 1.0),   # occupies the GPU for 10 s
            (1.0, "A", 0, 128, 1.0),    # low bid, arrived early
            (9.0, "A", 0, 128, 2.0)]    # high bid, arrived late
    no_aging = simulate(make_scenario([("A", 1e6, 1e6)], scheduler=base), make_trace(rows))
    assert no_aging.start_s[2] == 10.0 and no_aging.start_s[1] == 11.0
    aging = simulate(make_scenario([("A", 1e6, 1e6)], scheduler={**base, "aging_per_s": 0.5}),
                     make_trace(rows))
    # at t=10: 1 + 0.5*9 = 5.5 beats 2 + 0.5*1 = 2.5
    assert aging.start_s[1] == 10.0 and aging.start_s[2] == 11.0


def test_two_gpus_share_one_queue_lowest_index_first():
    scenario = make_scenario([("A", 1e6, 1e6)], cluster={"gpus": 2},
                             scheduler={"max_batch_size": 1, "batch_window_ms": 0.0})
    trace = make_trace([(0.0, "A", 0, 128, 1.0)] * 3)
    result = simulate(scenario, trace)
    assert result.gpu.tolist() == [0, 1, 0]
    assert result.start_s.tolist() == [0.0, 0.0, 1.0]
    summary = result.summary()
    assert summary["gpus"]["utilization_per_gpu"] == [1.0, 0.5]
    assert summary["gpu_utilization"] == 0.75


def test_queue_limit_rejects_arrivals_when_full():
    scenario = make_scenario([("A", 1e6, 1e6)], scheduler={
        "max_batch_size": 1, "batch_window_ms": 0.0, "max_queue_length": 1})
    trace = make_trace([(0.0, "A", 0, 128, 1.0), (0.0, "A", 0, 128, 1.0),
                        (0.5, "A", 0, 128, 1.0), (0.6, "A", 0, 128, 1.0)])
    result = simulate(scenario, trace)
    assert fates(result) == ["completed", "queue_full", "completed", "queue_full"]
    assert result.summary()["requests"]["rejected_by_reason"]["queue_full"] == 2


def test_nothing_completed_gives_nulls_not_nans():
    scenario = make_scenario([("A", 1.0, 10.0)])
    result = simulate(scenario, make_trace([(0.0, "A", 50, 50, 1.0), (1.0, "B", 1, 1, 1.0)]))
    summary = result.summary()
    assert summary["requests"]["completed"] == 0
    assert summary["throughput_tokens_per_s"] is None
    assert summary["cost_per_million_tokens"] is None
    assert summary["jain_fairness"] is None
    assert summary["queue_wait_s"]["p99"] is None
    assert summary["batches"] == {"count": 0, "mean_size": None, "kv_utilization_mean": None}


# ---------------------------------------------------------------------------------------------
# Agreement with the plain reference simulator on random scenarios and traces


@st.composite
def scenarios_and_traces(draw):
    tenants = [
        ("t0", draw(st.sampled_from([5.0, 50.0, 1e6])), draw(st.sampled_from([300.0, 3000.0]))),
        ("t1", draw(st.sampled_from([20.0, 500.0])), draw(st.sampled_from([1000.0, 5000.0]))),
    ]
    scheduler = {
        "batch_window_ms": draw(st.sampled_from([0.0, 10.0, 250.0])),
        "max_batch_size": draw(st.integers(1, 8)),
        "aging_per_s": draw(st.sampled_from([0.0, 0.1, 2.0])),
    }
    if draw(st.booleans()):
        scheduler["max_queue_length"] = draw(st.integers(1, 6))
    gpu = {"kv_cache_gib": draw(st.sampled_from([32.0, 0.0005])),  # 0.0005 GiB = 1024 tokens
           "decode_tokens_per_s": draw(st.sampled_from([128.0, 1000.0]))}
    scenario = make_scenario(tenants, gpu=gpu, scheduler=scheduler,
                             cluster={"gpus": draw(st.integers(1, 3))})
    grid = draw(st.booleans())  # coarse times make exact ties between events likely
    rows = draw(st.lists(st.tuples(
        st.integers(0, 40).map(lambda k: k / 4) if grid else st.floats(0, 10),
        st.sampled_from(["t0", "t1", "stranger"]),
        st.integers(0, 700), st.integers(0, 700), st.sampled_from([1.0, 2.0, 3.0])),
        min_size=1, max_size=60))
    return scenario, make_trace(rows)


ENGINES = ["python"] + (["compiled"] if compiled_engine_available() else [])


@pytest.mark.parametrize("engine", ENGINES)
@given(case=scenarios_and_traces(), chunk_size=st.sampled_from([1, 3, 1 << 16]))
def test_simulate_agrees_with_the_reference_request_by_request(case, chunk_size, engine):
    scenario, trace = case
    if engine == "compiled" and scenario.scheduler.max_queue_length is not None:
        engine = "python"  # the compiled loop does not take queue limits
    result = simulate(scenario, trace, chunk_size=chunk_size, engine=engine)
    expected = reference_simulate(scenario, trace)
    assert result.reason_names() == expected["reason"]
    done = result.completed
    for name, column in (("start", result.start_s), ("finish", result.finish_s)):
        got = [float(v) if ok else None for v, ok in zip(column, done, strict=True)]
        assert got == expected[name]
    assert [b if b >= 0 else None for b in result.batch_id.tolist()] == expected["batch"]
    assert [g if g >= 0 else None for g in result.gpu.tolist()] == expected["gpu"]
    assert result.batch_service_s.tolist() == [b[5] for b in expected["batches"]]


# ---------------------------------------------------------------------------------------------
# Invariants


@given(scenarios_and_traces())
def test_invariants(case):
    scenario, trace = case
    result = simulate(scenario, trace)
    n = len(trace)
    done = result.completed
    # every request ends exactly once: completed with a batch, or rejected without one
    assert len(result.reason) == n
    assert np.array_equal(done, result.batch_id >= 0)
    assert np.isnan(result.start_s[~done]).all() and not np.isnan(result.start_s[done]).any()
    assert np.bincount(result.batch_id[done], minlength=len(result.batch_size)).tolist() == \
        result.batch_size.tolist()
    # batches respect the size cap and the KV cache
    assert (result.batch_size <= scenario.scheduler.max_batch_size).all()
    assert (result.batch_kv_tokens <= scenario.gpu.kv_capacity_tokens).all()
    kv = np.bincount(result.batch_id[done], weights=trace.kv_tokens[done],
                     minlength=len(result.batch_size))
    assert kv.tolist() == result.batch_kv_tokens.tolist()
    # causality
    assert (result.start_s[done] >= trace.arrival_s[done]).all()
    assert (result.finish_s[done] >= result.start_s[done]).all()
    # no GPU runs two batches at once
    for g in range(scenario.cluster.gpus):
        mine = result.batch_gpu == g
        starts, finishes = result.batch_start_s[mine], result.batch_finish_s[mine]
        assert (starts[1:] >= finishes[:-1]).all()
    # the token-bucket bound: admitted cost of arrivals in [0, t] <= burst + rate * t
    for i, tenant in enumerate(scenario.tenants):
        mine = done & (result.tenant_index == i)
        times = np.sort(trace.arrival_s[mine])
        costs = trace.kv_tokens[mine][np.argsort(trace.arrival_s[mine], kind="stable")]
        admitted = np.cumsum(costs)
        assert (admitted <= tenant.burst_cap + tenant.rate_limit * times + 1e-6).all()


def test_chunk_size_does_not_change_results(example_scenario_path, example_trace_path):
    from apslab import load_scenario, read_trace

    scenario, trace = load_scenario(example_scenario_path), read_trace(example_trace_path)
    a, b = simulate(scenario, trace), simulate(scenario, trace, chunk_size=7)
    for name in ("reason", "start_s", "finish_s", "batch_id"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True)
