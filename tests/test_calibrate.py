"""`apslab calibrate`: measurement files (CSV and vLLM's benchmark JSON), recovery of known
parameters from data the engine generated, the published A100 rows, the GPU file it writes, and
bad files named with their line."""

import csv
import json
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import DATA, ROOT

from apslab.core.catalogue import CATALOGUE
from apslab.core.gpu import RooflineGPU
from apslab.io.errors import InputError
from apslab.io.measurements import (
    FIRST_TOKEN_COLUMNS,
    THROUGHPUT_COLUMNS,
    read_measurement_file,
    read_vllm_bench_json,
)
from apslab.io.scenario import load_gpu_tables, load_scenario
from apslab.lab.validation import default_calibration, default_measurements
from apslab.plan.hardware import calibrate_files, preset_gpu
from apslab.sim.calibration import bench_serve_result, calibrate, predict

# The parameters the engine is run with; the fit must find them again within 2%.
TRUE = {"eta_bandwidth": 0.8, "eta_flops": 0.5, "overhead_s": 0.004}
PROMPTS = [96, 384, 1024, 2048, 200, 768, 1500, 64]
OUTPUTS = [48, 8, 128, 16, 300, 2, 40, 1]


def true_gpu(preset="A100-80GB") -> RooflineGPU:
    return replace(preset_gpu(preset), **TRUE)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "apslab", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def main(capsys, *args) -> tuple[int, str, str]:
    """The `apslab` command run in this process (as the CLI's exit code and its output)."""
    from apslab.cli import main as cli_main

    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_bench_result_written_by_the_engine_has_vllms_fields():
    result = bench_serve_result(true_gpu(), PROMPTS, OUTPUTS)
    for key in ("completed", "total_input_tokens", "total_output_tokens", "request_throughput",
                "output_throughput", "mean_ttft_ms", "p99_tpot_ms", "median_itl_ms",
                "mean_e2el_ms", "input_lens", "output_lens", "ttfts", "itls", "max_concurrency"):
        assert key in result
    assert result["max_concurrency"] == 1 and result["completed"] == len(PROMPTS)
    assert [len(gaps) for gaps in result["itls"]] == [o - 1 for o in OUTPUTS]
    cost = true_gpu().iteration_cost()
    assert result["ttfts"][2] == pytest.approx(cost.static_batch_seconds([1024], 1), rel=1e-12)
    assert result["latencies"][2] == pytest.approx(cost.static_batch_seconds([1024], 128),
                                                   rel=1e-12)


@pytest.mark.parametrize("preset", ["A100-80GB", "H100-SXM-80GB", "L4"])
def test_calibration_recovers_known_parameters_from_the_engine(tmp_path, preset):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench_serve_result(true_gpu(preset), PROMPTS, OUTPUTS)))
    run = calibrate_files([str(path)], preset)
    assert len(run.rows) == 2 * len(PROMPTS) - 1  # a TTFT each, a decode rate when O >= 2
    for name, value in TRUE.items():
        assert run.calibration.parameters[name] == pytest.approx(value, rel=0.02)
    assert run.calibration.r_squared > 0.9999


def test_the_means_of_a_run_without_save_detailed(tmp_path):
    """Without --save-detailed only means are saved: exact when every request has the same
    lengths (vLLM's random dataset); three such runs identify the three parameters."""
    files = []
    for prompt, output in ((128, 64), (2048, 8), (512, 512)):
        result = bench_serve_result(true_gpu(), [prompt] * 3, [output] * 3, detailed=False)
        assert "ttfts" not in result
        path = tmp_path / f"run_{prompt}.json"
        path.write_text(json.dumps(result))
        files.append(str(path))
    rows = read_vllm_bench_json(files[0])
    assert rows.kind.tolist() == ["first_token", "decode_throughput"]
    assert rows.input_len.tolist() == [128, 128] and rows.output_len.tolist() == [1, 64]
    run = calibrate_files(files, "A100-80GB")
    for name, value in TRUE.items():
        assert run.calibration.parameters[name] == pytest.approx(value, rel=0.02)


def write_rows_as_csv(rows, throughput_path, first_token_path):
    """The Measurements as the two published CSV formats (decode-only rows say so)."""
    with open(throughput_path, "w", newline="") as t, open(first_token_path, "w", newline="") as f:
        tw, fw = csv.writer(t), csv.writer(f)
        tw.writerow(THROUGHPUT_COLUMNS)
        fw.writerow(FIRST_TOKEN_COLUMNS)
        for kind, p, o, b, value, label in zip(rows.kind, rows.input_len, rows.output_len,
                                               rows.batch_size, rows.value, rows.label,
                                               strict=True):
            if kind == "first_token":
                fw.writerow([label, "Llama-2-7B", "A100", "fp16", p, o, b, repr(float(value)), ""])
            else:
                notes = "decode phase only (prefill excluded)" \
                    if kind == "decode_throughput" else ""
                tw.writerow([label, "Llama-2-7B", "A100", "fp16", p, o, b, repr(float(value)),
                             notes])


def test_on_the_published_a100_rows_it_is_the_default_fit(tmp_path):
    """The 29 published figures the default A100 is fitted to, written in the two CSV formats
    and fitted by `apslab calibrate`, give the default's parameters again."""
    rows = default_measurements()
    throughput, first = tmp_path / "throughput.csv", tmp_path / "first_token.csv"
    write_rows_as_csv(rows, throughput, first)
    out = tmp_path / "a100.toml"
    proc = run_cli("calibrate", throughput, first, "--gpu-preset", "A100-80GB", "--out", out)
    assert proc.returncode == 0, proc.stderr
    default = default_calibration()
    fitted = load_gpu_tables(out)["gpu"]
    for name in ("eta_bandwidth", "eta_flops", "overhead_s"):
        assert fitted[name] == pytest.approx(default.parameters[name], rel=1e-6)
    assert round(fitted["eta_flops"], 3) == CATALOGUE["A100-80GB"].eta_flops
    assert "calibrated A100-80GB serving Llama-2-7B to 29 measurement(s)" in proc.stdout
    assert "eta_bandwidth 1 (on its bound: no interval)" in proc.stdout
    assert re.search(r"eta_flops +0\.55\d\d \(95% interval 0\.47\d\d to 0\.63\d\d\)", proc.stdout)
    assert f"R^2 {default.r_squared:.4f}" in proc.stdout


def test_the_published_files_straight_from_data(tmp_path):
    """The published tables as they are, filtered by source: batches that do not fit in 80 GB
    are left out and said so."""
    proc = run_cli("calibrate", DATA / "a100_decode_throughput.csv",
                   "--gpu-preset", "A100-80GB", "--source", "lmdeploy-turbomind")
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert re.fullmatch(r"calibrated A100-80GB serving Llama-2-7B to \d+ measurement\(s\) from "
                        r"\S+a100_decode_throughput\.csv \(\d+ left out: their batch's KV cache "
                        r"does not fit in 80 GB beside the weights\)", first)
    assert "data/a100_decode_throughput.csv line 23" in proc.stdout  # every row says where


def test_the_gpu_file_is_what_simulate_and_plan_take(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(bench_serve_result(true_gpu("H100-SXM-80GB"), PROMPTS, OUTPUTS)))
    out = tmp_path / "h100.toml"
    proc = run_cli("calibrate", bench, "--gpu-preset", "H100-SXM-80GB", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(f"wrote {out}")
    text = out.read_text()
    assert text.startswith("# apslab calibrate: H100-SXM-80GB fitted to 15 measurement(s)")
    tables = load_gpu_tables(out)
    assert tables["gpu"]["preset"] == "H100-SXM-80GB"
    scenario = load_scenario(DATA / "scenarios" / "example_continuous.toml").with_gpu(tables)
    assert scenario.gpu.hbm_bytes_per_s == CATALOGUE["H100-SXM-80GB"].hbm_bytes_per_s
    assert scenario.gpu.eta_flops == pytest.approx(0.5, rel=0.02)
    # the fitted GPU predicts the engine's own measurements
    rows = read_measurement_file(bench)
    assert np.allclose(predict(scenario.gpu, rows), rows.value, rtol=0.02)
    sim = run_cli("simulate", DATA / "scenarios" / "example_continuous.toml", "--trace",
                  DATA / "scenarios" / "example_trace.csv", "--gpu", out, "--quiet",
                  "--summary", tmp_path / "s.json")
    assert sim.returncode == 0, sim.stderr


def test_a_model_file_changes_what_is_fitted(tmp_path, capsys):
    model = tmp_path / "model.toml"
    model.write_text('[model]\nname = "small"\nhidden = 2048\nlayers = 16\nheads = 16\n'
                     'kv_heads = 16\nintermediate = 5504\n')
    gpu = preset_gpu("A100-80GB", str(model))
    assert gpu.model.name == "small" and gpu.kv_cache_gib > preset_gpu("A100-80GB").kv_cache_gib
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(bench_serve_result(replace(gpu, **TRUE), PROMPTS, OUTPUTS)))
    out = tmp_path / "small.toml"
    code, _out, err = main(capsys, "calibrate", bench, "--gpu-preset", "A100-80GB",
                           "--model-file", model, "--out", out)
    assert code == 0, err
    tables = load_gpu_tables(out)
    assert tables["model"]["hidden"] == 2048
    assert tables["gpu"]["eta_bandwidth"] == pytest.approx(0.8, rel=0.02)
    big = tmp_path / "big.toml"
    big.write_text('[model]\nname = "Llama-2-13B"\nhidden = 5120\nlayers = 40\nheads = 40\n'
                   'kv_heads = 40\nintermediate = 13824\n')
    code, _out, err = main(capsys, "calibrate", bench, "--gpu-preset", "L4", "--model-file", big)
    assert code == 2 and "cannot hold the model 'Llama-2-13B'" in err


def bad_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = ",".join(THROUGHPUT_COLUMNS)


@pytest.mark.parametrize("name, text, message", [
    ("m.csv", f"{HEADER}\na,b,c,d,128,x,1,50.0,\n", "m.csv line 2: output_len must be a whole "
                                                     "number, got 'x'"),
    ("m.csv", f"{HEADER}\na,b,c,d,128,128,1,50.0,\na,b,c,d,128,128,1,-5,\n",
     "m.csv line 3: decode_tokens_per_s must be finite and > 0, got '-5'"),
    ("m.csv", f"{HEADER}\na,b,c,d,128,128,1\n", "m.csv line 2: expected 9 fields, got 7"),
    ("m.csv", "source,batch\n", "m.csv line 1: header must be source,model,gpu"),
    ("m.csv", "", "m.csv: empty file"),
    ("m.txt", "hello", "m.txt: expected a .csv measurement table or a .json vLLM"),
    ("m.json", '{"max_concurrency": 1,\n  "completed": 3,\n}', "m.json line 3: not valid JSON"),
    ("m.json", '{"max_concurrency": 8, "completed": 3}',
     "m.json: max_concurrency is 8; apslab calibrate reads runs made with --max-concurrency 1"),
    ("m.json", '{"max_concurrency": 1, "completed": 3, "total_input_tokens": 30}',
     "m.json: total_output_tokens must be a number, got None"),
    ("m.json", '{"max_concurrency": 1, "input_lens": [10, 20], "output_lens": [5],'
               ' "ttfts": [0.1, 0.1], "itls": [[0.01], [0.01]]}',
     "m.json: input_lens, output_lens, ttfts and itls must have one entry per request"),
    ("m.json", '{"max_concurrency": 1, "input_lens": [10], "output_lens": [5],'
               ' "ttfts": [0.1], "itls": [[]]}',
     "m.json request 0: itls must be a non-empty list"),
])
def test_bad_measurement_files_exit_2_naming_file_and_line(tmp_path, capsys, name, text,
                                                          message):
    path = bad_file(tmp_path, name, text)
    with pytest.raises(InputError, match=re.escape(message)):
        read_measurement_file(path)
    code, _out, err = main(capsys, "calibrate", path, "--gpu-preset", "A100-80GB")
    assert code == 2
    assert err.startswith("apslab: error: ") and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("extra, message", [
    (["--gpu-preset", "A100"], "--gpu-preset 'A100' is not in the GPU catalogue (did you mean "
                               "'A100-40GB'?)"),
    (["--gpu-preset", "L4", "--source", "nobody"], "--source nobody: no measurement row"),
    (["--gpu-preset", "L4"], "missing.csv: measurements file not found"),
])
def test_bad_calibrate_options(tmp_path, capsys, extra, message):
    files = [DATA / "a100_decode_throughput.csv"] if "--source" in extra else \
        [tmp_path / "missing.csv"]
    code, _out, err = main(capsys, "calibrate", *files, *extra)
    assert code == 2 and message in err, err


def test_too_few_usable_measurements(tmp_path):
    path = bad_file(tmp_path, "two.csv", f"{HEADER}\na,b,c,d,128,128,1,50.0,\n"
                                         "a,b,c,d,128,128,2,90.0,\n")
    with pytest.raises(InputError, match="2 usable measurement"):
        calibrate_files([str(path)], "A100-80GB")


def test_calibrate_and_predict_agree_on_the_engine_rows():
    rows = read_vllm_bench_json_dict(bench_serve_result(true_gpu(), PROMPTS, OUTPUTS))
    fit = calibrate(RooflineGPU(), rows)
    assert np.allclose(fit.predicted, rows.value, rtol=1e-6)


def read_vllm_bench_json_dict(data, tmp=None):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "b.json"
        path.write_text(json.dumps(data))
        return read_vllm_bench_json(path)
