import numpy as np
import pytest
from helpers import make_scenario

from apslab.io.workload import generate_trace


def scenario(rate_b=2.0):
    return make_scenario(
        [("a", 1e6, 1e6), ("b", 1e6, 1e6)],
        workload={"duration_s": 2000.0, "seed": 11, "tenants": [
            {"id": "a", "arrival_rate_per_s": 3.0, "priority_bid": 2.0,
             "prompt_tokens": {"dist": "lognormal", "median": 200, "sigma": 0.5, "max": 1000},
             "output_tokens": {"dist": "geometric", "mean": 50}},
            {"id": "b", "arrival_rate_per_s": rate_b,
             "prompt_tokens": {"dist": "uniform", "low": 10, "high": 20},
             "output_tokens": {"dist": "exponential", "mean": 30, "min": 1}},
        ]})


def test_generation_is_seeded_and_sorted():
    first, again = generate_trace(scenario().workload), generate_trace(scenario().workload)
    assert np.array_equal(first.arrival_s, again.arrival_s)
    assert np.array_equal(first.prompt_tokens, again.prompt_tokens)
    assert (np.diff(first.arrival_s) >= 0).all()
    other = generate_trace(scenario().workload, seed=12)
    assert not np.array_equal(first.arrival_s[:10], other.arrival_s[:10])


def test_statistics_match_the_spec():
    trace = generate_trace(scenario().workload)
    a = np.array(trace.tenant_ids) == "a"
    assert a.sum() / 2000 == pytest.approx(3.0, rel=0.05)
    assert (~a).sum() / 2000 == pytest.approx(2.0, rel=0.05)
    assert np.median(trace.prompt_tokens[a]) == pytest.approx(200, rel=0.05)
    assert trace.prompt_tokens[a].max() <= 1000
    assert trace.output_tokens[a].mean() == pytest.approx(50, rel=0.05)
    assert trace.output_tokens[a].min() >= 1
    assert set(np.unique(trace.prompt_tokens[~a])) <= set(range(10, 21))
    assert trace.output_tokens[~a].mean() == pytest.approx(30, rel=0.06)
    assert trace.output_tokens[~a].min() >= 1
    assert set(trace.priority_bid[a]) == {2.0} and set(trace.priority_bid[~a]) == {1.0}


def test_each_tenant_has_its_own_random_stream():
    base = generate_trace(scenario(2.0).workload)
    changed = generate_trace(scenario(5.0).workload)
    a_base = base.arrival_s[np.array(base.tenant_ids) == "a"]
    a_changed = changed.arrival_s[np.array(changed.tenant_ids) == "a"]
    assert np.array_equal(a_base, a_changed)
