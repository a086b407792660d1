"""The README's performance figures are the ones benchmarks/RESULTS.json recorded."""

import importlib.util
import json
import re

from conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
bench_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_run)


def test_readme_quotes_the_recorded_benchmark():
    results = json.loads((ROOT / "benchmarks" / "RESULTS.json").read_text())
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- performance:start -->\n(.*?)<!-- performance:end -->", readme, re.S)
    assert block.group(1) == bench_run.readme_block(results)
    assert all(results["targets"].values()), results["targets"]


def test_results_md_holds_the_same_run():
    results = json.loads((ROOT / "benchmarks" / "RESULTS.json").read_text())
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert f"**{results['headline']['speedup']:.2f}x faster**" in text
    assert results["date"] in text and results["machine"] in text
