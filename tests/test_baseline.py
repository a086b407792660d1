"""The SimPy baseline computes exactly what apslab computes, request by request."""

import importlib.util
import json

import pytest
from conftest import ROOT
from helpers import make_scenario, make_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from apslab.cli import main as apslab_main
from apslab.io.trace import write_trace

spec = importlib.util.spec_from_file_location("simpy_baseline",
                                              ROOT / "benchmarks" / "simpy_baseline.py")
baseline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(baseline)


@st.composite
def cases(draw):
    scheduler = {"batch_window_ms": draw(st.sampled_from([0.0, 10.0, 300.0])),
                 "max_batch_size": draw(st.integers(1, 6)),
                 "aging_per_s": draw(st.sampled_from([0.0, 0.5]))}
    if draw(st.booleans()):
        scheduler["max_queue_length"] = draw(st.integers(1, 4))
    scenario = make_scenario(
        [("a", draw(st.sampled_from([30.0, 1e5])), 900.0), ("b", 200.0, 3000.0)],
        gpu={"kv_cache_gib": draw(st.sampled_from([32.0, 0.0005]))}, scheduler=scheduler)
    grid = draw(st.booleans())
    rows = draw(st.lists(st.tuples(
        st.integers(0, 30).map(lambda k: k / 4) if grid else st.floats(0, 8),
        st.sampled_from(["a", "b", "ghost"]), st.integers(0, 600), st.integers(0, 600),
        st.sampled_from([1.0, 2.0, 3.0])), min_size=1, max_size=40))
    return scenario, make_trace(rows)


@settings(max_examples=40)
@given(cases())
def test_baseline_and_apslab_agree(tmp_path_factory, case):
    scenario, trace = case
    work = tmp_path_factory.mktemp("agree")
    scenario.write(work / "s.toml")
    write_trace(work / "t.csv", trace)
    assert apslab_main(["simulate", str(work / "s.toml"), "--trace", str(work / "t.csv"),
                        "--summary", str(work / "a.json"), "--requests", str(work / "a.csv"),
                        "--quiet"]) == 0
    baseline.main(str(work / "s.toml"), str(work / "t.csv"), str(work / "b.json"),
                  str(work / "b.csv"))
    assert (work / "a.csv").read_text() == (work / "b.csv").read_text()
    ours = json.loads((work / "a.json").read_text())
    theirs = json.loads((work / "b.json").read_text())
    ours.pop("gpus")
    # The baseline computes the seed's SUMMARY keys; the fairness keys added since (the service
    # difference between backlogged tenants, each tenant's weighted service) are apslab's own,
    # tested in tests/test_policies.py.
    ours.pop("service_difference")
    for row in ours["tenants"].values():
        row.pop("weighted_service")
    assert ours == theirs


def test_baseline_refuses_clusters(tmp_path):
    scenario = make_scenario([("a", 1.0, 10.0)], cluster={"gpus": 2})
    scenario.write(tmp_path / "s.toml")
    write_trace(tmp_path / "t.csv", make_trace([(0.0, "a", 1, 1, 1.0)]))
    with pytest.raises(SystemExit, match="one GPU"):
        baseline.main(str(tmp_path / "s.toml"), str(tmp_path / "t.csv"), "x.json", "x.csv")
