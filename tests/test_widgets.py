"""Widget apps: setting a control's value re-runs the model and redraws what the model says."""

from __future__ import annotations

import numpy as np
import pytest

from apslab.lab import experiments as lab
from apslab.lab import fit
from apslab.lab.widgets import (
    AgingApp,
    BatchingApp,
    FairnessApp,
    FitApp,
    OverviewApp,
    TokenBucketApp,
)


def _image_changes(app, control: str, value) -> bytes:
    before = app.image.value
    updates = app.updates
    app.controls[control].value = value
    assert app.updates == updates + 1, "one control change, one redraw"
    assert app.image.value != before, "the rendered plot changed"
    return app.image.value


def test_overview_starts_at_the_readme_example_and_follows_the_load():
    app = OverviewApp()
    scenario, trace = lab.example()
    assert app.summary == lab.simulate(scenario, trace).summary()
    assert "110.9 output tokens/s" in app.status.value
    _image_changes(app, "load", 2.0)
    assert app.summary["requests"]["submitted"] > 2 * 129 * 0.8
    completed = sum(b.get_height() for b in app.artists["outcomes"]["completed"])
    assert completed == app.summary["requests"]["completed"]
    rejected = app.summary["requests"]["rejected_by_reason"]["rate_limited"]
    _image_changes(app, "rate_limit_scale", 4.0)
    assert app.summary["requests"]["rejected_by_reason"]["rate_limited"] < rejected / 4


def test_token_bucket_app_follows_the_rate_and_the_cap():
    app = TokenBucketApp()
    admitted_before = app.run.admitted.sum()
    _image_changes(app, "rate_limit", 600)
    assert app.run.admitted.sum() > admitted_before
    x, y = app.artists["bound"].get_data()
    assert np.allclose(np.diff(y) / np.diff(x), 600)
    assert len(app.artists["admitted"].get_offsets()) == app.run.admitted.sum()
    _image_changes(app, "burst_cap", 400)
    assert app.artists["bound"].get_ydata()[0] == pytest.approx(400)
    assert app.run.curve_level.max() <= 400
    assert app.run.worst_window_slack() >= 0


def test_aging_app_ends_starvation_as_the_slider_rises():
    app = AgingApp()
    starved = app.waits.served_after_arrivals_end[1.0]
    low_max = app.artists["waits"][1.0].get_offsets()[:, 1].max()
    _image_changes(app, "aging_per_s", 0.2)
    assert app.waits.served_after_arrivals_end[1.0] < starved / 3
    assert app.artists["waits"][1.0].get_offsets()[:, 1].max() < low_max / 2
    assert app.artists["sweep"]["current"].get_xdata()[0] == 0.2
    assert "bid 1" in app.status.value


def test_batching_app_shows_the_kv_cache_binding():
    app = BatchingApp(duration_s=300.0)
    roomy_kv = app.artists["kv"]["kv"].get_offsets()[:, 1].max()
    roomy_batch = app.point.mean_batch_size
    _image_changes(app, "kv_cache_gib", 1)
    tight_kv = app.artists["kv"]["kv"].get_offsets()[:, 1]
    assert tight_kv.max() > 5 * roomy_kv and tight_kv.max() <= 100
    assert app.point.mean_batch_size < roomy_batch
    assert app.point.kv_bound_share > 0.5
    _image_changes(app, "max_batch_size", 2)
    assert app.artists["sizes"]["current"].get_xdata()[0] == 2
    assert app.point.mean_batch_size <= 2
    _image_changes(app, "batch_window_ms", 1000)
    assert app.artists["windows"]["current"].get_xdata()[0] == 1000


def test_fit_app_switches_source_series_and_model():
    app = FitApp()
    assert app.controls["source"].value == "optimum-benchmark"
    updates = app.updates
    app.controls["source"].value = "argonne-llm-inference-bench-vllm"
    assert app.updates == updates + 1, "options and value change together: one redraw"
    options = [label for label, _ in app.controls["series"].options]
    assert options == ["128/128", "256/256", "512/512", "1024/1024", "2048/2048"]
    measured = app.artists["fit"]["measured"].get_offsets()
    assert measured[:, 0].tolist() == [1, 16, 32, 64]
    assert app.fit["b"] == pytest.approx(fit.fit_all_sources(app.data)[
        "argonne-llm-inference-bench-vllm"].seed_scale["b"])
    _image_changes(app, "form", fit.FORM_ROOFLINE)
    assert app.fit.form == fit.FORM_ROOFLINE
    _image_changes(app, "series", (2048, 2048))
    residuals = app.artists["residuals"]["residuals"].get_offsets()[:, 1]
    assert np.allclose(residuals, app.fit.relative_residuals * 100)
    assert len(residuals) == 4
    # The roofline curve flattens at long context: the KV cache no longer fits.
    curve = app.artists["fit"]["curve"].get_ydata()
    assert curve[-1] < 2 * curve[len(curve) // 2]


def test_fairness_app_rate_limit_protects_the_others():
    app = FairnessApp()
    heights = [b.get_height() for b in app.artists["p99"]["bars"]]
    assert heights == list(app.point.wait_p99_by_tenant.values())
    alpha_unlimited = app.point.wait_p99_by_tenant["alpha"]
    _image_changes(app, "flood_rate_limit", 10 ** 2.5)
    assert app.point.wait_p99_by_tenant["alpha"] < alpha_unlimited / 10
    assert app.point.rejected_share_by_tenant["flood"] > 0.2
    assert "Jain" in app.status.value
    _image_changes(app, "flood_multiplier", 1.0)
    assert app.point.rejected_share_by_tenant["flood"] < 0.1


def test_apps_display_as_their_widget():
    app = TokenBucketApp()
    bundle = app._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
