"""Goodput: the per-request predicate, SUMMARY's goodput keys worked out by hand on small traces,
the static engine's TTFT/TPOT convention, and `apslab simulate --goodput`."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA, ROOT
from helpers import make_scenario, make_trace

from apslab.core.metrics import GoodputTargets, goodput_rps, meets_targets, slo_attainment
from apslab.io.arguments import parse_goodput
from apslab.io.errors import InputError
from apslab.sim.run import simulate
from apslab.sim.summary import format_summary, token_times

NAN = math.nan


def test_the_predicate_by_hand():
    completed = np.array([True, True, True, True, False, True])
    ttft = np.array([0.1, 0.6, 0.1, 0.1, NAN, 0.5])
    tpot = np.array([0.01, 0.01, 0.09, NAN, NAN, 0.05])  # NaN: one output token
    e2e = np.array([1.0, 1.0, 1.0, 9.0, NAN, 2.0])
    both = GoodputTargets(ttft_s=0.5, tpot_s=0.05)
    assert meets_targets(completed, ttft, tpot, e2e, both).tolist() == [
        True, False, False, True, False, True]  # bounds are inclusive; NaN TPOT meets it
    e2e_only = GoodputTargets(e2e_s=2.0)
    assert meets_targets(completed, ttft, tpot, e2e, e2e_only).tolist() == [
        True, True, True, False, False, True]
    assert meets_targets(completed, ttft, tpot, e2e, GoodputTargets()).tolist() == \
        completed.tolist()
    assert goodput_rps(3, 1.5) == 2.0 and goodput_rps(3, 0.0) is None
    assert slo_attainment(3, 4) == 0.75 and slo_attainment(0, 0) is None
    assert str(both) == "ttft<=0.5s, tpot<=0.05s" and not GoodputTargets()


# A clock-work static run: one request a second for 10 s, each 64 output tokens decoded alone at
# 128 tokens/s (0.5 s), no window: every request starts on arrival and finishes 0.5 s later.
CLOCKWORK = make_trace([(float(i), "A", 0, 64, 1.0) for i in range(10)])


def clockwork():
    return make_scenario([("A", 1e9, 1e9)],
                         scheduler={"max_batch_size": 1, "batch_window_ms": 0.0})


def test_static_runs_return_each_response_whole():
    result = simulate(clockwork(), CLOCKWORK)
    ttft, tpot = token_times(result)
    assert ttft.tolist() == [0.5] * 10  # first token = finish: TTFT is the latency
    assert tpot.tolist() == [0.0] * 10  # every token arrives at once
    summary = result.summary(GoodputTargets(ttft_s=0.5, tpot_s=0.001))
    elapsed = 9.5  # last finish (9.5) - first arrival (0)
    assert summary["elapsed_s"] == elapsed
    assert summary["goodput_rps"] == 10 / elapsed
    assert summary["slo_attainment"] == 1.0
    assert summary["goodput_targets"] == {"ttft_s": 0.5, "tpot_s": 0.001, "e2e_s": None}
    tight = result.summary(GoodputTargets(ttft_s=0.4999))
    assert tight["goodput_rps"] == 0.0 and tight["slo_attainment"] == 0.0
    plain = result.summary()
    assert "goodput_rps" not in plain and "goodput_rps" not in plain["tenants"]["A"]


def test_rejected_requests_count_against_attainment_not_for_goodput():
    scenario = make_scenario([("A", 1e9, 1e9), ("B", 1e9, 100.0)],
                             scheduler={"max_batch_size": 1, "batch_window_ms": 0.0})
    trace = make_trace([(0.0, "A", 0, 64, 1.0), (1.0, "B", 0, 64, 1.0),  # B's fits its cap
                        (2.0, "B", 100, 64, 1.0)])  # over B's burst cap: rejected
    summary = simulate(scenario, trace).summary(GoodputTargets(e2e_s=1.0))
    assert summary["requests"]["rejected"] == 1
    assert summary["slo_attainment"] == 2 / 3
    assert summary["goodput_rps"] == 2 / summary["elapsed_s"]
    tenants = summary["tenants"]
    assert tenants["A"]["slo_attainment"] == 1.0 and tenants["B"]["slo_attainment"] == 0.5
    assert tenants["A"]["goodput_rps"] + tenants["B"]["goodput_rps"] == pytest.approx(
        summary["goodput_rps"], rel=1e-15)


def continuous(**gpu):
    return make_scenario([("A", 1e9, 1e9), ("B", 1e9, 1e9)],
                         gpu={"model": "roofline", **gpu},
                         scheduler={"batching": "continuous", "batch_window_ms": 0.0})


def test_continuous_goodput_by_hand():
    """Two requests far apart, each alone on the GPU: TTFT is its prefill iteration, TPOT its
    decode iterations over O - 1, worked out from the cost model directly."""
    scenario = continuous()
    trace = make_trace([(0.0, "A", 512, 33, 1.0), (100.0, "B", 1024, 1, 1.0)])
    result = simulate(scenario, trace)
    cost = scenario.gpu.iteration_cost()
    prefill_a = cost.static_batch_seconds([512], 1)
    total_a = cost.static_batch_seconds([512], 33)
    prefill_b = cost.static_batch_seconds([1024], 1)
    ttft, tpot = token_times(result)
    assert ttft.tolist() == pytest.approx([prefill_a, prefill_b], rel=1e-12)
    assert tpot[0] == pytest.approx((total_a - prefill_a) / 32, rel=1e-9)
    assert math.isnan(tpot[1])  # one output token: no TPOT, so it meets any TPOT target
    between = (prefill_a + prefill_b) / 2  # A's prefill is the shorter one
    summary = result.summary(GoodputTargets(ttft_s=between, tpot_s=1e-9))
    # A misses the TPOT target; B has no TPOT and its TTFT misses: nobody is good
    assert summary["slo_attainment"] == 0.0
    summary = result.summary(GoodputTargets(ttft_s=prefill_b, tpot_s=tpot[0]))
    assert summary["slo_attainment"] == 1.0
    assert summary["goodput_rps"] == 2 / summary["elapsed_s"]
    summary = result.summary(GoodputTargets(ttft_s=between))
    assert summary["slo_attainment"] == 0.5
    assert summary["tenants"]["A"]["goodput_rps"] == 1 / summary["elapsed_s"]
    assert summary["tenants"]["B"]["goodput_rps"] == 0.0
    assert "goodput         " in format_summary(summary)


@pytest.mark.parametrize("text, expected", [
    ("ttft=0.5,tpot=0.05", GoodputTargets(0.5, 0.05, None)),
    (" e2e = 10 ", GoodputTargets(None, None, 10.0)),
    ("tpot=1e-2,ttft=2,e2e=30", GoodputTargets(2.0, 0.01, 30.0)),
])
def test_goodput_option(text, expected):
    assert parse_goodput(text) == expected
    assert parse_goodput(None) is None


@pytest.mark.parametrize("text, message", [
    ("ttft", "expected ttft=S,tpot=S"),
    ("ttf=1", "unknown target 'ttf' (did you mean 'ttft'?)"),
    ("ttft=x", "ttft must be a number of seconds"),
    ("ttft=0", "must be a finite number > 0"),
    ("ttft=inf", "must be a finite number > 0"),
    ("ttft=1,ttft=2", "ttft is given twice"),
])
def test_bad_goodput_option(text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?")):
        parse_goodput(text)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "apslab", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_simulate_goodput_writes_the_keys(tmp_path):
    proc = run_cli("simulate", DATA / "scenarios" / "example_continuous.toml", "--trace",
                   DATA / "scenarios" / "example_trace.csv", "--goodput", "ttft=0.05,tpot=0.0125",
                   "--summary", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["goodput_targets"] == {"ttft_s": 0.05, "tpot_s": 0.0125, "e2e_s": None}
    good = round(summary["slo_attainment"] * summary["requests"]["submitted"])
    assert summary["goodput_rps"] == pytest.approx(good / summary["elapsed_s"], rel=1e-12)
    assert sum(t["goodput_rps"] for t in summary["tenants"].values()) == pytest.approx(
        summary["goodput_rps"], rel=1e-12)
    assert "  goodput         " in proc.stdout and "of submitted" in proc.stdout


def test_simulate_bad_goodput_is_one_line_and_exit_2():
    proc = run_cli("simulate", DATA / "scenarios" / "example.toml", "--goodput", "tpot=-1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("apslab: error: --goodput 'tpot=-1'")
    assert proc.stderr.count("\n") == 1
