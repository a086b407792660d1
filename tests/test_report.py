"""`apslab report`: notebook 06 executed by papermill for a scenario, rendered as one HTML file."""

import re
import subprocess
import sys

import nbformat
import pytest
from conftest import DATA, ROOT

from apslab.io.errors import InputError
from apslab.plan.report import report_parameters

SYNTHETIC = DATA / "azure_synthetic"


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "apslab", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_report_end_to_end_is_self_contained_html(tmp_path):
    out, executed = tmp_path / "report.html", tmp_path / "executed.ipynb"
    proc = run_cli("report", SYNTHETIC / "planning.toml", "--trace",
                   SYNTHETIC / "AzureStyleTrace_conv.csv", "--trace-format", "azure",
                   "--tenant-weights", "chat=5,assist=3,batch=2", "--slo", "queue_wait_s.p99<=2",
                   "--gpus", "3..4", "--target-rps", "0.5", "--out", out,
                   "--keep-notebook", executed)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    html = out.read_text()
    assert html.lstrip().startswith("<!DOCTYPE html>")
    # the plan for this scenario, with the parameters given on the command line
    assert "capacity plan: " + str((SYNTHETIC / "planning.toml").resolve()) in html
    assert ("target 0.5 req/s: cheapest is 4 x A100 (seed model, Llama-2-7B fp16) "
            "($12.00/hour)") in html
    assert "the scenario already uses static batching: nothing to compare" in html
    assert re.search(r"\n\s+3\s+0\.0\d+\s+0\.\d+\s", html)
    # self-contained: images inline, no scripts or stylesheets fetched from elsewhere
    assert html.count("data:image/png;base64,") >= 2
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+href=[\"']https?:", html)
    assert "application/vnd.jupyter.widget" not in html
    assert html.count("[an interactive widget: open the notebook in JupyterLab to use it]") == 2
    assert "run/s]" not in html and "VBox(" not in html
    # the executed notebook ran every cell, with papermill's injected parameters
    nb = nbformat.read(executed, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'gpus = "3..4"' in injected[0].source
    assert all(o["output_type"] != "error" for c in nb.cells for o in c.get("outputs", []))


def test_report_parameters_check_everything_before_a_kernel_starts(tmp_path):
    params = report_parameters(DATA / "scenarios" / "example.toml")
    assert params == {"scenario_path": str((DATA / "scenarios" / "example.toml").resolve()),
                      "trace_path": "", "trace_format": "apslab", "tenant_weights": "",
                      "tenant_seed": 0, "trace_span": None, "gpu_types": "", "target_rps": None}
    # the criteria travel together: one given, the others are emptied
    params = report_parameters(DATA / "scenarios" / "example_continuous.toml",
                               trace=DATA / "scenarios" / "example_trace.csv",
                               goodput="ttft=0.5", min_attainment=0.8, gpu_types="L4,A100-80GB",
                               trace_span=60)
    assert (params["slos"], params["goodput"], params["min_attainment"]) == ([], "ttft=0.5", 0.8)
    assert params["gpu_types"] == "L4,A100-80GB" and params["trace_span"] == 60.0
    with pytest.raises(InputError, match="--min-attainment needs --goodput"):
        report_parameters(DATA / "scenarios" / "example.toml", min_attainment=0.9)
    with pytest.raises(InputError, match="did you mean 'H100-SXM-80GB'"):
        report_parameters(DATA / "scenarios" / "example.toml", gpu_types="H100")
    with pytest.raises(InputError, match="scenario file not found"):
        report_parameters(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="is not a SUMMARY.json metric"):
        report_parameters(DATA / "scenarios" / "example.toml", slos=["queue_wait.p99<=1"])
    with pytest.raises(InputError, match="--gpus"):
        report_parameters(DATA / "scenarios" / "example.toml", gpus="none")


@pytest.mark.parametrize("extra, message", [
    (["--slo", "latency_s.p99<=x"], "the bound must be a number"),
    (["--trace", "missing.csv"], "trace file not found"),
    (["--notebook", "missing.ipynb"], "report notebook not found"),
])
def test_report_bad_input_exits_2_with_one_line(tmp_path, extra, message):
    proc = run_cli("report", DATA / "scenarios" / "example.toml", "--out",
                   tmp_path / "r.html", *extra)
    assert proc.returncode == 2
    assert message in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "r.html").exists()


def test_a_failing_notebook_is_reported_in_one_line(tmp_path):
    broken = tmp_path / "broken.ipynb"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("scenario_path = ''", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("raise RuntimeError('the GPUs caught fire')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, broken)
    proc = run_cli("report", DATA / "scenarios" / "example.toml", "--out", tmp_path / "r.html",
                   "--notebook", broken)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "apslab: error: broken.ipynb failed in the cell starting \"raise RuntimeError('the GPUs "
        "caught fire')\": RuntimeError: the GPUs caught fire")
    assert not (tmp_path / "r.html").exists()
