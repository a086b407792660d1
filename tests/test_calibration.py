"""The roofline GPU's calibration: the default A100, its fit, and published figures.

* The defaults in apslab.core.gpu are the published data's fit, rounded to 3 significant
  digits (re-run here).
* The fit recovers known parameters from figures the cost model generated itself.
* The continuous engine, replaying published benchmarks with the default A100, reproduces one
  first-token latency, one single-request decode rate and one peak throughput within 25%, and
  the README's table is what it measures today.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from conftest import doc_text, marked_block

from apslab.core import gpu as gpu_module
from apslab.core.gpu import RooflineGPU
from apslab.io.measurements import measurements
from apslab.lab.datasets import load_a100_decode_throughput, load_a100_first_token_latency
from apslab.lab.validation import (
    HEADLINE_FIGURES,
    default_calibration,
    validation_rows,
    validation_table,
)
from apslab.sim.calibration import calibrate, predict


def test_defaults_are_the_published_fit_rounded():
    fit = default_calibration()
    assert len(fit.rows) == 29
    assert fit.at_bound == ("eta_bandwidth",)
    assert float(f"{fit.parameters['eta_bandwidth']:.3g}") == gpu_module.A100_ETA_BANDWIDTH
    assert float(f"{fit.parameters['eta_flops']:.3g}") == gpu_module.A100_ETA_FLOPS
    assert float(f"{fit.parameters['overhead_s']:.3g}") == gpu_module.A100_OVERHEAD_S
    low, high = fit.ci95["eta_flops"]
    assert low < gpu_module.A100_ETA_FLOPS < high
    assert fit.r_squared > 0.99
    # docs/continuous.md quotes the fit.
    page = doc_text("docs/continuous.md")
    overhead_low, overhead_high = fit.ci95["overhead_s"]
    assert (f"`eta_flops` = {gpu_module.A100_ETA_FLOPS} (95% interval {low:.3f} to {high:.3f})"
            in page)
    assert (f"`overhead_s` = {gpu_module.A100_OVERHEAD_S * 1000:.3g} ms "
            f"({overhead_low * 1000:.3g} to {overhead_high * 1000:.3g} ms)" in page)
    assert f"explains {fit.r_squared:.1%} of the variance" in page
    assert f"{len(fit.rows)} figures in all" in page


@pytest.mark.parametrize("truth", [(0.8, 0.6, 0.003), (0.55, 0.35, 0.0), (0.95, 0.7, 0.008)])
def test_the_fit_recovers_known_parameters(truth):
    known = replace(RooflineGPU(), eta_bandwidth=truth[0], eta_flops=truth[1],
                    overhead_s=truth[2])
    shapes = [(p, o, b) for p in (1, 128, 1024, 2048) for o in (32, 256) for b in (1, 8, 32)]
    rows = measurements(["throughput"] * len(shapes), [s[0] for s in shapes],
                        [s[1] for s in shapes], [s[2] for s in shapes], 1.0)
    rows = replace(rows, value=predict(known, rows))
    ttft = measurements("first_token", [128, 512, 2048, 4096], 1, 1, 1.0)
    ttft = replace(ttft, value=predict(known, ttft))
    both = type(rows).concatenate([rows, ttft])
    fit = calibrate(RooflineGPU(), both)
    for name, value in zip(("eta_bandwidth", "eta_flops", "overhead_s"), truth, strict=True):
        assert fit.parameters[name] == pytest.approx(value, rel=0.02, abs=2e-5)


def test_headline_figures_within_25_percent():
    rows = validation_rows()
    for figure, source, prompt in HEADLINE_FIGURES:
        row = next(r for r in rows if r.figure == figure and r.source == source
                   and r.benchmark.startswith(f"{prompt}/"))
        assert abs(row.difference) <= 0.25, row


def test_readme_calibration_table_is_current():
    table = marked_block(doc_text("README.md"), "calibration-table")
    assert table == validation_table(validation_rows())


def test_first_token_rows_match_the_throughput_tables_notes():
    latencies = load_a100_first_token_latency()
    throughput = load_a100_decode_throughput()
    lmdeploy = latencies.source == "lmdeploy-turbomind"
    assert lmdeploy.sum() == 20
    for p, o, b, value in zip(latencies.input_len[lmdeploy], latencies.output_len[lmdeploy],
                              latencies.batch_size[lmdeploy], latencies.first_token_s[lmdeploy],
                              strict=True):
        row = ((throughput.source == "lmdeploy-turbomind") & (throughput.input_len == p)
               & (throughput.output_len == o) & (throughput.batch_size == b))
        note = throughput.notes[row][0]
        assert float(re.search(r"FTL\(ave\)=([0-9.]+) s", note).group(1)) == value
    trt = latencies.source == "tensorrt-llm-perf-v0.5"
    assert sorted(zip(latencies.input_len[trt].tolist(), latencies.first_token_s[trt].tolist(),
                      strict=True)) == [(128, 0.016), (2048, 0.133)]
    assert np.all(latencies.first_token_s > 0)
