"""The fits of notebook 04: sqrt curves, the roofline, and what they say about the seed."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from apslab.core.roofline import A100_40GB, A100_80GB_SXM, LLAMA2_7B, Roofline
from apslab.io.scenario import parse_scenario
from apslab.lab import fit
from apslab.lab.datasets import load_a100_decode_throughput

BATCH = np.array([1, 2, 4, 8, 16, 32, 64], dtype=np.float64)


@pytest.fixture(scope="module")
def data():
    return load_a100_decode_throughput()


@pytest.fixture(scope="module")
def fits(data):
    return fit.fit_all_sources(data)


# --------------------------------------------------------------------------------------------
# The sqrt curves on synthetic data with known answers


def test_fit_sqrt_recovers_the_seed_curve_exactly():
    result = fit.fit_sqrt(BATCH, fit.sqrt_curve(BATCH, 0.4, 0.6))
    assert result["a"] == pytest.approx(0.4, abs=1e-9)
    assert result["b"] == pytest.approx(0.6, abs=1e-9)
    assert result.r_squared == pytest.approx(1.0)
    assert np.allclose(result.residuals, 0, atol=1e-6)
    assert result.dof == len(BATCH) - 2


def test_fit_sqrt_intervals_cover_the_truth_and_shrink_with_less_noise():
    rng = np.random.default_rng(5)
    truth = fit.sqrt_curve(BATCH, -1.0, 2.5)
    widths = []
    for noise in (20.0, 2.0):
        result = fit.fit_sqrt(BATCH, truth + rng.normal(0, noise, len(BATCH)))
        assert result.contains("a", -1.0) and result.contains("b", 2.5)
        low, high = result.ci95["b"]
        widths.append(high - low)
    assert widths[1] < widths[0] / 5


def test_fit_sqrt_interval_matches_the_textbook_formula():
    """For a linear model the covariance is s^2 (X^T X)^-1; the interval uses Student t."""
    from scipy import stats

    rng = np.random.default_rng(1)
    y = fit.sqrt_curve(BATCH, 0.2, 1.1) + rng.normal(0, 10, len(BATCH))
    result = fit.fit_sqrt(BATCH, y)
    design = 128 * np.column_stack([np.ones_like(BATCH), np.sqrt(BATCH)])
    residual = y - design @ np.array([result["a"], result["b"]])
    s2 = residual @ residual / (len(BATCH) - 2)
    se_b = math.sqrt(s2 * np.linalg.inv(design.T @ design)[1, 1])
    half = stats.t.ppf(0.975, len(BATCH) - 2) * se_b
    assert result.ci95["b"] == pytest.approx((result["b"] - half, result["b"] + half), rel=1e-6)


def test_free_scale_fit_recovers_scale_and_shape():
    y = 77.0 * ((1 - 1.5) + 1.5 * np.sqrt(BATCH))
    result = fit.fit_sqrt_free_scale(BATCH, y)
    assert result["s"] == pytest.approx(77.0, rel=1e-7)
    assert result["b"] == pytest.approx(1.5, rel=1e-7)
    assert result["a"] == pytest.approx(-0.5, rel=1e-6)
    assert result.ci95["a"][0] <= result["a"] <= result.ci95["a"][1]


def test_a_curve_needs_three_batch_sizes():
    with pytest.raises(ValueError, match="at least three batch sizes"):
        fit.fit_sqrt([1, 1, 16], [40.0, 41.0, 400.0], label="two sizes")


def test_r_squared_of_a_perfect_and_a_flat_prediction():
    y = np.array([1.0, 2.0, 3.0])
    assert fit.r_squared(y, y) == 1.0
    assert fit.r_squared(y, np.full(3, 2.0)) == 0.0
    assert fit.r_squared(y, np.array([3.0, 2.0, 1.0])) < 0


# --------------------------------------------------------------------------------------------
# The roofline


def test_llama2_constants_match_the_published_config():
    assert LLAMA2_7B.params == 6_738_415_616  # the 6.74 B of the model card
    # = apslab.core.gpu.LLAMA2_7B_KV_BYTES_PER_TOKEN
    assert LLAMA2_7B.kv_bytes_per_token == 524_288
    assert LLAMA2_7B.weight_bytes == 2 * LLAMA2_7B.params


def test_a_single_sequence_decode_step_is_reading_the_weights():
    roof = Roofline(A100_80GB_SXM, LLAMA2_7B)
    step = roof.decode_step_s(1, 1)
    assert step == pytest.approx((LLAMA2_7B.weight_bytes + LLAMA2_7B.kv_bytes_per_token)
                                 / A100_80GB_SXM.hbm_bytes_per_s)
    assert 1 / step == pytest.approx(151, abs=1)  # the ideal single-request rate, tokens/s


def test_throughput_grows_almost_linearly_until_kv_traffic_or_capacity_binds():
    roof = Roofline(A100_80GB_SXM, LLAMA2_7B, 0.7, 0.5)
    short = roof.throughput(np.array([1, 16]), 128, 128, False)
    assert short[1] / short[0] > 12  # weight-bandwidth regime: nearly proportional to B
    long_ = roof.throughput(np.array([16, 64]), 2048, 2048, False)
    assert long_[1] / long_[0] < 2  # 64 x 4096 tokens of KV cannot all be resident
    assert roof.max_concurrent(4096) == math.floor((80e9 - LLAMA2_7B.weight_bytes)
                                                   / (4096 * 524_288))


def test_decode_only_rows_exclude_prefill():
    roof = Roofline(A100_80GB_SXM, LLAMA2_7B, 0.5, 0.5)
    with_prefill = roof.throughput(8, 2048, 64, False)
    decode_only = roof.throughput(8, 2048, 64, True)
    assert decode_only > with_prefill


def test_regimes_are_told_apart():
    roof = Roofline(A100_40GB, LLAMA2_7B, 0.7, 0.3)
    regimes = roof.regime(np.array([1, 64, 16]), np.array([128, 2048, 2048]),
                          np.array([128, 2048, 512]), False)
    assert regimes.tolist() == ["weight bandwidth", "kv capacity", "kv bandwidth"]


def test_fit_roofline_recovers_known_efficiencies(data):
    rows = fit.llama_rows(data).select(source="argonne-llm-inference-bench-vllm")
    truth = Roofline(A100_40GB, LLAMA2_7B, 0.62, 0.41)
    synthetic = dataclasses.replace(rows, decode_tokens_per_s=truth.throughput(
        rows.batch_size, rows.input_len, rows.output_len, rows.decode_only))
    result = fit.fit_roofline(synthetic, A100_40GB)
    assert result["eta_bandwidth"] == pytest.approx(0.62, rel=1e-4)
    assert result["eta_flops"] == pytest.approx(0.41, rel=1e-4)
    assert result.r_squared == pytest.approx(1.0)
    assert not result.unidentified


def test_a_roof_that_never_binds_is_reported_as_not_identified(data):
    rows = fit.llama_rows(data).select(source="optimum-benchmark")
    result = fit.fit_roofline(rows, A100_80GB_SXM)
    assert result.unidentified == ("eta_flops",)
    assert "not identified" in result.describe()
    low, high = result.ci95["eta_flops"]
    assert 0 < low < high == 1.0


# --------------------------------------------------------------------------------------------
# The published data: the numbers notebook 04 and the README state


def test_every_source_with_a_batch_sweep_gets_both_sqrt_fits(fits):
    with_sweep = [s for s, f in fits.items() if f.reference is not None]
    assert len(with_sweep) == 6
    assert fits["tensorrt-llm-perf-v0.6.1"].reference is None  # one peak point per shape
    for source in with_sweep:
        f = fits[source]
        assert len(np.unique(f.reference.batch_size)) >= 3
        assert f.seed_scale.r_squared > 0.94 and f.free_scale.r_squared > 0.94


def test_the_seed_b_is_outside_every_sources_interval(fits):
    comparisons = fit.seed_comparison(fits)
    assert len(comparisons) == 6
    assert not any(c["seed_b_in_ci"] for c in comparisons)
    at_16 = [c["measured_speedup"] for c in comparisons if c["batch"] == 16]
    assert min(at_16) > 4 * 2.8  # measured batching gains dwarf the seed's 2.8x
    assert all(c["single_request_tokens_per_s"] < 128 for c in comparisons)


def test_the_vllm_fit_notebook_04_puts_into_the_simulator(fits):
    vllm = fits["argonne-llm-inference-bench-vllm"].seed_scale
    assert (round(vllm["a"], 2), round(vllm["b"], 2)) == (-2.28, 2.68)
    overrides = fit.scenario_gpu_overrides(vllm)
    scenario = parse_scenario({"tenants": [{"id": "t", "rate_limit": 1, "burst_cap": 1}]}
                              ).with_overrides(overrides)
    # rounded to 4 significant digits: a fit's last digits differ from one CPU to the next
    assert scenario.gpu.batch_speedup == (-2.283, 2.677)
    assert scenario.gpu.batch_speedup == pytest.approx((vllm["a"], vllm["b"]), rel=1e-3)
    assert fit.prefill_tokens_per_s(fits["argonne-llm-inference-bench-vllm"]) == 7961.0


def test_a_non_positive_fitted_rate_cannot_become_a_gpu(fits):
    with pytest.raises(ValueError, match="not positive"):
        fit.scenario_gpu_overrides(fits["lmdeploy-turbomind"].free_scale)
    with pytest.raises(ValueError, match="no \\(a, b\\)"):
        fit.scenario_gpu_overrides(fits["lmdeploy-turbomind"].roofline)
    with pytest.raises(ValueError, match="not identified"):
        fit.prefill_tokens_per_s(fits["optimum-benchmark"])


def test_the_roofline_beats_the_sqrt_curve_across_context_lengths(fits):
    for source in ("lmdeploy-turbomind", "argonne-llm-inference-bench-vllm",
                   "argonne-llm-inference-bench-tensorrt-llm",
                   "argonne-llm-inference-bench-deepspeed-mii"):
        f = fits[source]
        assert f.roofline.r_squared > 0.95 > 0.6 > f.sqrt_all_rows.r_squared
    # ...but not on plain HF transformers, whose per-step overhead is no roof.
    optimum = fits["optimum-benchmark"]
    assert optimum.roofline.r_squared < optimum.sqrt_all_rows.r_squared


def test_argonne_rows_fit_the_40gb_a100_better(fits):
    for source in ("argonne-llm-inference-bench-vllm", "argonne-llm-inference-bench-tensorrt-llm",
                   "argonne-llm-inference-bench-deepspeed-mii"):
        assert set(fits[source].roofline_by_accelerator) == {"A100 80GB SXM", "A100 40GB"}
        assert fits[source].accelerator == "A100 40GB"
    assert list(fits["optimum-benchmark"].roofline_by_accelerator) == ["A100 80GB SXM"]


def test_regime_errors_favour_the_roofline_where_memory_binds(fits):
    errors = {r["regime"]: r for r in fit.regime_errors(fits)}
    for regime in ("weight bandwidth", "kv capacity"):
        assert errors[regime]["roofline_median_error"] < errors[regime]["sqrt_median_error"] / 3
    assert sum(r["rows"] for r in errors.values()) == sum(
        len(f.all_rows) for f in fits.values() if f.sqrt_all_rows is not None)


def test_tables_name_every_source(fits):
    sqrt_table = fit.sqrt_fit_table(fits)
    roof_table = fit.roofline_table(fits)
    for source in fits:
        assert fit.short_source(source) in roof_table
    assert "tensorrt-llm-perf" not in sqrt_table
    assert "not identified" in roof_table


def test_fit_result_subset_recomputes_r_squared(fits):
    f = fits["argonne-llm-inference-bench-vllm"]
    mask = f.all_rows.input_len == 128
    part = f.roofline.subset(mask, "vllm 128/128")
    assert len(part.measured) == mask.sum()
    assert part.r_squared == pytest.approx(fit.r_squared(part.measured, part.predicted))
    assert part.parameters == f.roofline.parameters
