"""docs/performance.md's figures are the ones benchmarks/RESULTS.json recorded, and
``make bench`` (benchmarks/run.py) writes them there."""

import importlib.util
import json

import pytest
from conftest import ROOT, doc_text, marked_block

spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
bench_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_run)

PAGE = "docs/performance.md"


def recorded() -> dict:
    return json.loads((ROOT / "benchmarks" / "RESULTS.json").read_text())


def test_performance_doc_quotes_the_recorded_benchmark():
    results = recorded()
    block = marked_block(doc_text(PAGE), "performance")
    assert block == bench_run.performance_block(results)
    assert all(results["targets"].values()), results["targets"]


def test_the_benchmark_updates_the_page_the_figures_live_on(tmp_path):
    assert bench_run.PERFORMANCE_DOC == ROOT / PAGE
    page = tmp_path / "performance.md"
    current = doc_text(PAGE)
    stale = current.replace(marked_block(current, "performance"), "* stale figures\n")
    page.write_text(stale)
    bench_run.update_performance_doc(recorded(), page)
    assert page.read_text() == current
    page.write_text("no markers here\n")
    with pytest.raises(ValueError, match="performance markers"):
        bench_run.update_performance_doc(recorded(), page)


def test_results_md_holds_the_same_run():
    results = recorded()
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert f"**{results['headline']['speedup']:.2f}x faster**" in text
    assert results["date"] in text and results["machine"] in text
