import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apslab.core.metrics import (
    cost_per_million_tokens,
    gpu_utilization,
    jain_fairness,
    latency_stats,
    throughput_tokens_per_s,
)


def test_jain_fairness_extremes_and_example():
    assert jain_fairness([5, 5, 5, 5]) == 1.0
    assert jain_fairness([10, 0, 0, 0]) == 0.25
    assert jain_fairness([1, 2, 3]) == pytest.approx(36 / 42)
    assert jain_fairness([]) is None
    assert jain_fairness([0, 0]) is None


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=50))
def test_jain_fairness_is_between_one_over_n_and_one(values):
    index = jain_fairness(values)
    if not any(values):
        assert index is None
    else:
        assert 1 / len(values) - 1e-12 <= index <= 1 + 1e-12


def test_latency_stats_use_numpys_linear_percentiles():
    values = np.arange(1, 101, dtype=float)
    stats = latency_stats(values)
    assert stats == {"mean": 50.5, "p50": 50.5, "p95": np.percentile(values, 95),
                     "p99": np.percentile(values, 99), "max": 100.0}
    assert latency_stats(np.array([])) == dict.fromkeys(["mean", "p50", "p95", "p99", "max"])


def test_throughput_utilisation_and_cost():
    assert throughput_tokens_per_s(1000, 10.0) == 100.0
    assert throughput_tokens_per_s(1000, 0.0) is None
    assert gpu_utilization(5.0, 10.0) == 0.5
    assert gpu_utilization(5.0, 10.0, gpus=2) == 0.25
    # $3/h at 128 tokens/s: 3 / 3600 / 128 * 1e6 = 6.5104 $ per million tokens
    assert cost_per_million_tokens(3.0, 128.0) == 3.0 / 3600 / 128.0 * 1e6
    assert cost_per_million_tokens(3.0, 128.0, gpus=2) == pytest.approx(2 * 6.5104166)
    assert cost_per_million_tokens(3.0, None) is None


@given(st.lists(st.tuples(st.integers(0, 6), st.floats(0, 1e4)), max_size=300),
       st.sampled_from([0, 1, 37.5, 50, 95, 99, 100]))
def test_grouped_percentile_is_numpys_percentile_per_group(rows, q):
    from apslab.core.metrics import grouped_percentile

    groups = np.array([g for g, _ in rows], dtype=np.int64)
    values = np.array([v for _, v in rows], dtype=np.float64)
    got = grouped_percentile(values, groups, 8, q)
    for g in range(8):
        mine = values[groups == g]
        assert got[g] == (float(np.percentile(mine, q)) if len(mine) else None)


def test_grouped_percentile_on_clustered_values():
    from apslab.core.metrics import grouped_percentile

    rng = np.random.default_rng(3)
    groups = rng.integers(0, 50, 20_000)
    values = np.round(rng.exponential(2.0, 20_000), 3)  # many ties
    got = grouped_percentile(values, groups, 50, 99)
    assert got == [float(np.percentile(values[groups == g], 99)) for g in range(50)]
