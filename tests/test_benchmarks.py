"""A toy-sized run of benchmarks/run.py, so the benchmark never rots (no timing asserted)."""

import subprocess
import sys

from conftest import ROOT


def test_benchmark_smoke_run(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke",
                           "--workdir", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = (tmp_path / "RESULTS.md").read_text()
    for heading in ("## Headline", "## Scaling", "## The continuous engine", "## Aging queues",
                    "## Targets"):
        assert heading in results
    assert "byte-identical REQUESTS.csv" in results
    assert (tmp_path / "pop_cost.png").stat().st_size > 1000
    assert (tmp_path / "apslab_headline.csv").read_bytes() == \
        (tmp_path / "simpy_headline.csv").read_bytes()
    assert (tmp_path / "apslab_continuous.csv").read_bytes() == \
        (tmp_path / "baseline_continuous.csv").read_bytes()
