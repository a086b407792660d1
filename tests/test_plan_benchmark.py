"""benchmarks/plan_gpu_types.py: a toy-sized run so the script never rots, and the README's
figure is the one the recorded run measured (no timing asserted here)."""

import json
import subprocess
import sys

from conftest import ROOT, doc_text


def test_plan_benchmark_smoke_run(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plan_gpu_types.py"),
                           "--smoke", "--workdir", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "PLAN_GPU_TYPES.json").read_text())
    assert result["smoke"] is True and result["search_runs"] > 0 and result["wall_s"] > 0
    assert result["engine"].startswith(("compiled", "Python"))
    text = (tmp_path / "PLAN_GPU_TYPES.md").read_text()
    assert "--gpu-types A100-80GB,H100-SXM-80GB,L4 --gpus 1..2" in text
    assert "| engine | wall time | CPU time | search runs | target |" in text
    assert result["cpu_s"] > 0
    assert "target 10 req/s: " in text


def test_the_readme_quotes_the_recorded_benchmark():
    result = json.loads((ROOT / "benchmarks" / "PLAN_GPU_TYPES.json").read_text())
    assert result["smoke"] is False
    assert "--gpus 1..8" in result["command"] and "--trace-span" not in result["command"]
    readme = doc_text("README.md")
    engine = "compiled loop" if result["engine"].startswith("compiled") else "Python loop"
    flat = " ".join(readme.split())
    assert f"took {result['wall_s']:.1f} s with the engine's {engine}" in flat
    assert f"({result['cpu_s']:.1f} CPU-seconds for {result['search_runs']} searched " \
           "loads; for 10 req/s the answer is again one H100)" in flat
    assert result["wall_s"] <= 120 and "within the 2-minute target" in flat
    recorded = (ROOT / "benchmarks" / "PLAN_GPU_TYPES.md").read_text()
    assert f"{result['wall_s']:.1f} s" in recorded
    assert "target 10 req/s: cheapest is 1 x H100-SXM-80GB" in recorded
