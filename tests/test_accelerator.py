"""The optional compiled event loop gives bit-identical results to the Python loop."""

import shutil

import numpy as np
import pytest
from helpers import make_scenario

from apslab.io.workload import generate_trace
from apslab.sim.static import compiled_engine_available
from apslab.sim.static import simulate_static as simulate

needs_compiled = pytest.mark.skipif(not compiled_engine_available(),
                                    reason="the compiled event loop is not built here")

COLUMNS = ("reason", "start_s", "finish_s", "batch_id", "batch_start_s", "batch_finish_s",
           "batch_service_s", "batch_size", "batch_kv_tokens", "batch_gpu")


def test_compiled_loop_is_built_where_a_c_compiler_exists():
    if shutil.which("cc") or shutil.which("gcc"):
        assert compiled_engine_available(), "pip install -e . should have built the C loop"


def workload_scenario(gpus, max_batch, kv_gib, aging, window_ms, load):
    return make_scenario(
        [("gold", 1e4, 1e5), ("silver", 40.0, 6000.0), ("bronze", 200.0, 4000.0)],
        gpu={"kv_cache_gib": kv_gib},
        scheduler={"max_batch_size": max_batch, "aging_per_s": aging,
                   "batch_window_ms": window_ms},
        cluster={"gpus": gpus},
        workload={"duration_s": 3000.0, "seed": 5, "tenants": [
            {"id": name, "arrival_rate_per_s": load * share, "priority_bid": bid,
             "prompt_tokens": {"dist": "lognormal", "median": 300, "sigma": 0.8, "max": 3000},
             "output_tokens": {"dist": "geometric", "mean": 90}}
            for name, share, bid in (("gold", 0.3, 3.0), ("silver", 0.3, 2.0),
                                     ("bronze", 0.4, 1.0))]})


@needs_compiled
@pytest.mark.parametrize("gpus, max_batch, kv_gib, aging, window_ms, load", [
    (1, 16, 32.0, 0.0, 10.0, 1.5),     # the seed's defaults, loaded
    (1, 32, 2.0, 0.01, 10.0, 3.0),     # a small KV cache binds; aging on
    (3, 8, 32.0, 0.5, 0.0, 4.0),       # a cluster, no window
    (2, 1, 32.0, 0.0, 250.0, 1.0),     # one request per batch, long window
    (4, 64, 0.5, 0.1, 10.0, 12.0),     # overloaded: long queues, heap path
])
def test_compiled_and_python_loops_agree_exactly(gpus, max_batch, kv_gib, aging, window_ms,
                                                 load):
    scenario = workload_scenario(gpus, max_batch, kv_gib, aging, window_ms, load)
    trace = generate_trace(scenario.workload)
    python = simulate(scenario, trace, engine="python")
    compiled = simulate(scenario, trace, engine="compiled")
    assert python.reason.tolist().count(1) > 0 or load < 2  # rate limits bind in loaded cases
    assert len(python.batch_size) > 100
    for name in COLUMNS:
        assert np.array_equal(getattr(python, name), getattr(compiled, name), equal_nan=True), \
            name
    assert python.summary() == compiled.summary()


@needs_compiled
def test_auto_uses_the_compiled_loop_and_the_python_loop_for_queue_limits(monkeypatch):
    import apslab.sim.static as simulator_module

    calls = []
    original = simulator_module._run_compiled
    monkeypatch.setattr(simulator_module, "_run_compiled",
                        lambda *args: calls.append(1) or original(*args))
    scenario = workload_scenario(1, 16, 32.0, 0.0, 10.0, 1.0)
    trace = generate_trace(scenario.workload)
    simulate(scenario, trace)
    assert calls == [1]
    limited = scenario.with_overrides({"scheduler.max_queue_length": 5})
    simulate(limited, trace)
    assert calls == [1]
    with pytest.raises(RuntimeError, match="max_queue_length"):
        simulate(limited, trace, engine="compiled")


def test_unknown_engine_is_refused():
    scenario = workload_scenario(1, 16, 32.0, 0.0, 10.0, 1.0)
    with pytest.raises(ValueError, match="engine"):
        simulate(scenario, generate_trace(scenario.workload), engine="fast")


@needs_compiled
@pytest.mark.parametrize("gpus, max_batch, kv_gib", [(1, 8, 2.0), (3, 4, 32.0)])
def test_fcfs_static_batches_agree_exactly(gpus, max_batch, kv_gib):
    """Under fcfs the static engine gives every request one key, so the compiled loop (whose
    heap orders by key, arrival, request id) serves in arrival order exactly as Python does."""
    scenario = workload_scenario(gpus, max_batch, kv_gib, 0.0, 10.0, 3.0).with_overrides(
        {"scheduler.policy": "fcfs"})
    trace = generate_trace(scenario.workload)
    python = simulate(scenario, trace, engine="python")
    compiled = simulate(scenario, trace, engine="compiled")
    for name in COLUMNS:
        assert np.array_equal(getattr(python, name), getattr(compiled, name), equal_nan=True), \
            name
    assert python.summary() == compiled.summary()
    # fcfs: among the requests of one batch formation, no later arrival starts before an earlier
    # one waiting at the same time (bids play no part).
    done = python.completed
    order = np.argsort(trace.arrival_s[done], kind="stable")
    assert np.all(np.diff(python.start_s[done][order]) >= 0)


def test_vtc_static_batches_run_in_python_and_refuse_the_compiled_loop():
    scenario = workload_scenario(1, 8, 32.0, 0.0, 10.0, 1.0).with_overrides(
        {"scheduler.policy": "vtc"})
    trace = generate_trace(scenario.workload)
    assert simulate(scenario, trace).completed.any()
    if compiled_engine_available():
        with pytest.raises(RuntimeError, match="vtc"):
            simulate(scenario, trace, engine="compiled")
