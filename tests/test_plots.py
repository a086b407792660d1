"""apslab.lab.plots: every artist shows exactly the data it was given."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from apslab.io.scenario import load_scenario
from apslab.io.workload import generate_trace
from apslab.lab import appkit, fit, plots
from apslab.lab import experiments as lab
from apslab.lab.datasets import load_a100_decode_throughput


@pytest.fixture(scope="module")
def example_result():
    scenario, trace = lab.example()
    return lab.simulate(scenario, trace)


@pytest.fixture(scope="module")
def fits():
    return fit.fit_all_sources(load_a100_decode_throughput())


def test_new_figure_has_the_grid_and_renders_png():
    figure = plots.new_figure(2, 3)
    assert len(figure.axes) == 6
    assert appkit.png_bytes(figure).startswith(b"\x89PNG\r\n\x1a\n")


def test_waits_and_outcomes_per_tenant(example_result):
    figure = plots.overview_figure(example_result)
    waits = plots.draw_waits_by_tenant(figure.axes[0], example_result)
    trace = example_result.trace
    premium = (example_result.tenant_index == 0) & example_result.completed
    offsets = waits["premium"].get_offsets()
    assert np.allclose(offsets[:, 0], trace.arrival_s[premium])
    assert np.allclose(offsets[:, 1], example_result.start_s[premium] - trace.arrival_s[premium])
    summary = example_result.summary()
    bars = plots.draw_tenant_outcomes(figure.axes[1], summary)
    assert [b.get_height() for b in bars["rejected"]] == [0, 0, 15]
    assert [b.get_y() for b in bars["rejected"]] == [40, 36, 38]  # stacked on completed


def test_bucket_plot_draws_the_run_and_its_bound():
    times, costs = lab.bursty_stream(seed=2)
    run = lab.run_token_bucket(times, costs, 100.0, 1000.0)
    figure = plots.bucket_figure(run)
    artists = plots.draw_bucket(figure.axes[0], figure.axes[1], run)
    assert len(artists["admitted"].get_offsets()) == run.admitted.sum()
    assert len(artists["rejected"].get_offsets()) == (~run.admitted).sum()
    x, y = artists["bound"].get_data()
    assert np.allclose(np.diff(y) / np.diff(x), 100.0)  # slope = rate limit
    assert y[0] == pytest.approx(1000.0)  # intercept = burst cap
    assert np.array_equal(artists["admitted_tokens"].get_ydata(), run.admitted_tokens)
    assert len(figure.axes) == 2  # redrawing does not add axes


def test_aging_plots():
    scenario = load_scenario(lab.scenario_path("lab_two_bids"))
    trace = generate_trace(scenario.workload)
    sweep = lab.aging_sweep(scenario, trace, [0.0, 0.1, 1.0])
    figure = plots.waits_by_bid_figure(sweep[:2])
    assert len(figure.axes) == 2
    ax = plots.new_figure().axes[0]
    lines = plots.draw_aging_sweep(ax, sweep, current=0.1)
    x, y = lines[1.0].get_data()
    assert x[0] < 0.1 and np.allclose(x[1:], [0.1, 1.0])  # aging 0 drawn left of the rest
    assert np.allclose(y, [w.p99(1.0) for w in sweep])
    assert lines["current"].get_xdata()[0] == 0.1


def test_pop_plots():
    lengths = [10, 100]
    seconds = {"lazy": np.array([1e-6, 2e-6]), "eager": np.array([1e-5, 1e-4])}
    figure = plots.pop_cost_figure(lengths, seconds)
    assert np.allclose(figure.axes[0].lines[1].get_ydata(), [10.0, 100.0])  # microseconds
    work = plots.pop_work_figure(lengths, [10, 100], [4, 7])
    assert work.axes[0].lines[1].get_ydata().tolist() == [4, 7]


def test_batching_plots(example_result):
    scenario, trace = lab.example()
    points = lab.batch_size_sweep(scenario, trace, [1, 4, 16])
    figure = plots.batching_figure(points, lab.window_sweep(scenario, trace, [0, 100]))
    assert len(figure.axes) == 4  # two panels, each with its latency twin
    ax = plots.new_figure().axes[0]
    twin = ax.twinx()
    artists = plots.draw_batching_sweep(ax, twin, points, "max_batch_size", current=4)
    assert artists["served"].get_xdata().tolist() == [1, 4, 16]
    assert np.allclose(artists["latency_p99"].get_ydata(), [p.latency_p99_s for p in points])
    plots.draw_batching_sweep(ax, twin, points, "max_batch_size")
    assert len(twin.lines) == 2 and len(ax.lines) == 2  # redrawn, not stacked
    kv = plots.draw_kv_per_batch(ax, example_result)
    capacity = example_result.scenario.gpu.kv_capacity_tokens
    assert np.allclose(kv["kv"].get_offsets()[:, 1],
                       example_result.batch_kv_tokens / capacity * 100)


def test_fit_plots(fits):
    vllm = fits["argonne-llm-inference-bench-vllm"]
    grid = np.geomspace(1, 64, 20)
    ax = plots.new_figure().axes[0]
    artists = plots.draw_fit(ax, vllm.seed_scale, grid, vllm.seed_scale.predict(grid))
    assert np.allclose(artists["measured"].get_offsets()[:, 1], vllm.reference.decode_tokens_per_s)
    assert np.allclose(artists["seed"].get_ydata(), fit.sqrt_curve(grid, 0.4, 0.6))
    residuals = plots.draw_residuals(ax, vllm.seed_scale)
    assert np.allclose(residuals["residuals"].get_offsets()[:, 1],
                       vllm.seed_scale.relative_residuals * 100)
    grid_figure = plots.residuals_figure(fits)
    assert len(grid_figure.axes) == 2 * 6  # sqrt and roofline, for the six swept sources
    comparison = plots.predicted_vs_measured_figure(fits)
    roofline_points = comparison.axes[1].collections
    assert sum(len(c.get_offsets()) for c in roofline_points) == sum(
        len(f.all_rows) for f in fits.values())
    assert isinstance(plots.measurements_figure(load_a100_decode_throughput()), Figure)


def test_load_and_claim_plots():
    scenario, _ = lab.example()
    points = lab.load_sweep(scenario, [0.5, 1.0])
    figure = plots.load_sweep_figure(points)
    assert figure.axes[0].lines[0].get_ydata().tolist() == [
        p.wait_p99_by_tenant["premium"] for p in points]
    claims = lab.seed_claims(points, 3.0)
    strip = plots.claims_figure(points, claims).axes[0]
    assert len(strip.collections) == len(claims)
    bars = plots.draw_tenant_bars(strip, {"a": 1.0, "b": 3.0}, "x", highlight="b")
    assert [b.get_height() for b in bars["bars"]] == [1.0, 3.0]
    assert bars["bars"][1].get_facecolor() != bars["bars"][0].get_facecolor()
