"""The compiled continuous loop (apslab/sim/_eventloop.c) is bit-identical to the Python one.

Hypothesis draws small scenarios that reach every rule: tiny KV caches (4 to 60 blocks of 1 to
16 tokens) that force preemption, token budgets of 1 to 64 tokens (chunked prefill), 1 to 5
seats, 1 to 4 GPUs, windows of 0, 10 and 300 ms, arrivals on a quarter-second grid (exact ties
with iteration ends of the "quarter" GPU, whose iterations last exactly 0.25 s) or anywhere,
every policy (bids and aging; VTC shares and weights), token buckets that bind, a waiting-queue
limit or none, unknown tenants. Both engines must agree on every request column, the iteration
totals, the iteration log and the summary, to the last bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import make_trace
from hypothesis import given, settings
from hypothesis import strategies as st

import apslab.sim.continuous as continuous_module
from apslab.io.scenario import parse_scenario
from apslab.io.workload import generate_trace
from apslab.sim import _compiled
from apslab.sim.run import simulate

needs_compiled = pytest.mark.skipif(_compiled.continuous_loop() is None,
                                    reason="the compiled continuous loop is not built here")

QUARTER = {"hbm_bytes_per_s": 1e30, "peak_flops": 1e30, "overhead_s": 0.25}
KV_BYTES = 524288  # one token of Llama-2-7B's KV cache
REQUEST_COLUMNS = ("reason", "start_s", "first_token_s", "finish_s", "preemptions", "max_tbt_s",
                   "finish_gpu")
LOG_COLUMNS = ("gpu", "start_s", "duration_s", "requests", "prefill_tokens", "decode_tokens",
               "blocks_used", "preempted")


def assert_identical(scenario, trace):
    """Both engines, with the iteration log kept: every column, total and summary equal."""
    python = simulate(scenario, trace, engine="python", keep_iterations=True)
    compiled = simulate(scenario, trace, engine="compiled", keep_iterations=True)
    for name in REQUEST_COLUMNS:
        a, b = getattr(python, name), getattr(compiled, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b, equal_nan=True), name
    assert python.iterations == compiled.iterations
    for name in LOG_COLUMNS:
        a, b = getattr(python.iteration_log, name), getattr(compiled.iteration_log, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b), name
    assert python.summary() == compiled.summary()
    return python


@st.composite
def cases(draw):
    policy = draw(st.sampled_from(["priority", "fcfs", "vtc"]))
    tenants = []
    for index in range(draw(st.integers(1, 3))):
        tenant = {"id": f"t{index}", "rate_limit": 1e9, "burst_cap": 1e9}
        if draw(st.booleans()):  # a bucket that binds
            tenant["rate_limit"] = draw(st.sampled_from([0.5, 4.0, 25.0]))
            tenant["burst_cap"] = draw(st.sampled_from([30.0, 70.0, 200.0]))
        if policy == "vtc":
            tenant["share"] = draw(st.sampled_from([0.3, 1.0, 2.5]))
        tenants.append(tenant)
    block_size = draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
    blocks = draw(st.integers(4, 60))
    gpu = dict(QUARTER) if draw(st.booleans()) else {}  # quarter or the default A100
    gpu["kv_cache_gib"] = blocks * block_size * KV_BYTES / 2**30
    scheduler = {"batching": "continuous", "block_size": block_size, "policy": policy,
                 "max_num_batched_tokens": draw(st.integers(1, 64)),
                 "max_num_seqs": draw(st.integers(1, 5)),
                 "batch_window_ms": draw(st.sampled_from([0.0, 10.0, 300.0]))}
    if policy == "priority":
        scheduler["aging_per_s"] = draw(st.sampled_from([0.0, 0.5]))
    if policy == "vtc":
        scheduler["vtc_input_weight"] = draw(st.sampled_from([0.0, 1.0, 0.3]))
        scheduler["vtc_output_weight"] = draw(st.sampled_from([2.0, 1.0, 0.7]))
    if draw(st.booleans()):
        scheduler["max_queue_length"] = draw(st.integers(1, 6))
    scenario = parse_scenario({"gpu": gpu, "scheduler": scheduler,
                               "cluster": {"gpus": draw(st.integers(1, 4))},
                               "tenants": tenants}, source="<test>")
    grid = st.integers(0, 24).map(lambda q: q / 4)
    anywhere = st.floats(0.0, 6.0, allow_nan=False)
    arrival = draw(st.sampled_from([grid, anywhere, grid | anywhere]))
    names = [t["id"] for t in tenants] * 4 + ["ghost"]  # an unknown tenant now and then
    # Requests sized against the cache, so that a few running ones overflow it (preemption).
    tokens = blocks * block_size
    count = draw(st.integers(3, 50))
    rows = draw(st.lists(st.tuples(arrival, st.sampled_from(names),
                                   st.integers(1, max(1, min(48, tokens * 2 // 3))),
                                   st.integers(1, max(1, min(20, tokens // 2))),
                                   st.sampled_from([0.0, 1.0, 2.0, 2.5])),
                         min_size=count, max_size=count))
    return scenario, make_trace(rows)


@needs_compiled
@settings(max_examples=1000, deadline=None)
@given(cases())
def test_compiled_continuous_loop_is_bit_identical(case):
    assert_identical(*case)


def workload_scenario(policy, **scheduler):
    """Several tenants with Poisson arrivals, loaded past capacity on a small cache."""
    tenants = [("gold", 3.0, 0.5), ("silver", 2.0, 1.0), ("bronze", 1.0, 2.0),
               ("tin", 1.0, 4.0)]
    return parse_scenario({
        "gpu": {"kv_cache_gib": 0.25},
        "scheduler": {"batching": "continuous", "policy": policy, **scheduler},
        "cluster": {"gpus": 3},
        "tenants": [{"id": name, "rate_limit": 4000.0, "burst_cap": 40000.0,
                     **({"share": share} if policy == "vtc" else {})}
                    for name, _, share in tenants],
        "workload": {"duration_s": 20.0, "seed": 11, "tenants": [
            {"id": name, "arrival_rate_per_s": 12.0, "priority_bid": bid,
             "prompt_tokens": {"dist": "lognormal", "median": 300, "sigma": 0.8, "max": 2000},
             "output_tokens": {"dist": "geometric", "mean": 60}}
            for name, bid, _ in tenants]},
    }, source="<test>")


@needs_compiled
@pytest.mark.parametrize("policy", ["priority", "fcfs", "vtc"])
@pytest.mark.parametrize("scheduler", [
    {},  # the defaults: 256 seats, 2048-token budget
    {"max_num_seqs": 100_000, "max_num_batched_tokens": 1_000_000, "block_size": 1},
    {"max_queue_length": 40, "max_num_batched_tokens": 512},
])
def test_larger_workloads_agree(policy, scheduler):
    # Hundreds of running requests (the running lists grow past their first allocation),
    # preemptions on a 0.25 GiB cache, four VTC tenants.
    if policy == "priority":
        scheduler = {**scheduler, "aging_per_s": 0.1}
    scenario = workload_scenario(policy, **scheduler)
    trace = generate_trace(scenario.workload)
    python = assert_identical(scenario, trace)
    assert python.preemptions.sum() > 0
    assert python.iterations.count > 100


@needs_compiled
@pytest.mark.parametrize("max_queue_length", [None, 30])
def test_vtc_with_many_tenants_agrees(max_queue_length):
    # 40 tenants (the backlogged-tenant heap several levels deep), equal shares among many of
    # them (ties broken by tenant index), weights that are not powers of two.
    shares = [0.5, 1.0, 1.0, 3.0, 0.7]
    names = [f"t{i}" for i in range(40)]
    scheduler = {"batching": "continuous", "policy": "vtc", "vtc_input_weight": 0.3,
                 "vtc_output_weight": 1.7, "max_num_seqs": 24, "max_num_batched_tokens": 700}
    if max_queue_length is not None:
        scheduler["max_queue_length"] = max_queue_length
    scenario = parse_scenario({
        "gpu": {"kv_cache_gib": 0.5},
        "scheduler": scheduler,
        "cluster": {"gpus": 2},
        "tenants": [{"id": name, "rate_limit": 300.0 + 50 * i, "burst_cap": 6000.0,
                     "share": shares[i % len(shares)]} for i, name in enumerate(names)],
        "workload": {"duration_s": 30.0, "seed": 4, "tenants": [
            {"id": name, "arrival_rate_per_s": 0.4 + 0.05 * (i % 7),
             "prompt_tokens": {"dist": "lognormal", "median": 200, "sigma": 1.0, "max": 3000},
             "output_tokens": {"dist": "geometric", "mean": 40}}
            for i, name in enumerate(names)]},
    }, source="<test>")
    python = assert_identical(scenario, generate_trace(scenario.workload))
    assert python.preemptions.sum() > 0


@needs_compiled
def test_auto_uses_the_compiled_loop_for_every_policy_and_queue_limits(monkeypatch):
    calls = []
    original = continuous_module._run_compiled
    monkeypatch.setattr(continuous_module, "_run_compiled",
                        lambda *args: calls.append(1) or original(*args))
    trace = make_trace([(0.0, "gold", 5, 3, 1.0), (0.1, "silver", 7, 2, 1.0)])
    for policy in ("priority", "fcfs", "vtc"):
        for scheduler in ({}, {"max_queue_length": 3}):
            scenario = workload_scenario(policy, **scheduler)
            simulate(scenario, trace)
            simulate(scenario, trace, engine="python")
    assert calls == [1] * 6


def test_compiled_engine_needs_the_library(monkeypatch):
    monkeypatch.setattr(_compiled, "continuous_loop", lambda: None)
    scenario = workload_scenario("fcfs")
    trace = make_trace([(0.0, "gold", 5, 3, 1.0)])
    with pytest.raises(RuntimeError, match="compiled continuous loop is not built"):
        simulate(scenario, trace, engine="compiled")
    # auto falls back to the Python loop
    assert simulate(scenario, trace).finish_s[0] > 0


@needs_compiled
def test_integer_rates_run_in_python(monkeypatch):
    # Python divides an int by an int exactly; the C loop divides by a float. A GPU built in
    # code with integer roofs therefore runs the Python loop (and "compiled" says why).
    scenario = workload_scenario("fcfs")
    gpu = dataclasses.replace(scenario.gpu, hbm_bytes_per_s=2_000_000_000_000, eta_bandwidth=1)
    scenario = dataclasses.replace(scenario, gpu=gpu)
    assert type(scenario.gpu.iteration_cost().bandwidth) is int
    monkeypatch.setattr(continuous_module, "_run_compiled", None)  # would fail if called
    trace = make_trace([(0.0, "gold", 5, 3, 1.0)])
    assert simulate(scenario, trace).finish_s[0] > 0
    with pytest.raises(RuntimeError, match="rates and overhead must be floats"):
        simulate(scenario, trace, engine="compiled")


def test_compiled_loop_out_of_memory_is_a_memory_error(monkeypatch):
    monkeypatch.setattr(_compiled, "continuous_loop", lambda: lambda *args: -1)
    with pytest.raises(MemoryError):
        simulate(workload_scenario("fcfs"), make_trace([(0.0, "gold", 5, 3, 1.0)]))


@needs_compiled
def test_an_empty_run_and_an_all_rejected_run_agree():
    scenario = workload_scenario("priority")
    assert_identical(scenario, make_trace([(0.0, "ghost", 5, 3, 1.0)]))
    assert_identical(scenario, make_trace([(0.0, "gold", 100_000, 3, 1.0)]))
