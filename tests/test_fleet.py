"""Planning across GPU types and against goodput: --gpu-types, --min-attainment, the cheapest
fleet confirmed at the target, the search monotone where the SLO is and honest where it is not,
and the documented fleet plan on the published conversation trace."""

import json
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA, ROOT, doc_text, marked_block
from helpers import make_scenario, make_trace

from apslab.core.metrics import GoodputTargets
from apslab.io.errors import InputError
from apslab.plan import search as search_module
from apslab.plan.search import (
    SLO,
    SearchSettings,
    evaluate,
    parse_gpu_types,
    parse_slo,
    plan_capacity,
    plan_fleet,
    search_max_load,
    slos_with_attainment,
)
from apslab.plan.sweep import SerialExecutor

CONV = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
GOODPUT = GoodputTargets(ttft_s=0.5, tpot_s=0.05)


def steady_trace(count=40, gap=0.5, prompt=512, output=32):
    """Identical requests at a steady pace: every latency grows with load."""
    return make_trace([(i * gap, "A", prompt, output, 1.0) for i in range(count)])


def continuous(preset="A100-80GB", **scheduler):
    return make_scenario([("A", 1e9, 1e9)], gpu={"preset": preset},
                         scheduler={"batching": "continuous", **scheduler})


# --------------------------------------------------------------------------------------------
# GPU types and the attainment bound


def test_gpu_types_name_catalogue_entries_or_gpu_files(tmp_path):
    assert parse_gpu_types("A100-80GB, l4") == {"A100-80GB": {"gpu": {"preset": "A100-80GB"}},
                                                "L4": {"gpu": {"preset": "L4"}}}
    mine = tmp_path / "mine.toml"
    mine.write_text('[gpu]\npreset = "L4"\nname = "my L4"\neta_flops = 0.4\n')
    anon = tmp_path / "anon.toml"
    anon.write_text('[gpu]\npreset = "L4"\n')
    types = parse_gpu_types(f"{mine},{anon}")
    assert list(types) == ["my L4", "anon"]
    assert types["my L4"]["gpu"]["eta_flops"] == 0.4


@pytest.mark.parametrize("text, message", [
    ("A100-80GB,H100", "'H100' is not in the GPU catalogue (did you mean 'H100-SXM-80GB'?)"),
    ("L4,,A100-80GB", "empty GPU type"),
    ("L4,l4", "'L4' is given twice"),
    ("missing.toml", "missing.toml: GPU file not found"),
])
def test_bad_gpu_types(text, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse_gpu_types(text)


def test_min_attainment_is_an_slo_that_needs_targets():
    slos = slos_with_attainment([parse_slo("ttft_s.p99<=1")], 0.9, GOODPUT)
    assert slos[-1] == SLO("slo_attainment", ">=", 0.9)
    assert slos_with_attainment(slos[:1], None, None) == slos[:1]
    with pytest.raises(InputError, match="--min-attainment needs --goodput"):
        slos_with_attainment([], 0.9, None)
    with pytest.raises(InputError, match=r"a share in \(0, 1\]"):
        slos_with_attainment([], 1.5, GOODPUT)


def test_goodput_slos_without_targets_say_what_is_missing():
    with pytest.raises(InputError, match="reported only with per-request targets: add --goodput"):
        plan_capacity(continuous(), steady_trace(), [parse_slo("slo_attainment>=0.9")], [1],
                      executor=SerialExecutor(), progress=False)


# --------------------------------------------------------------------------------------------
# The search: monotone where the SLO is, honest where it is not


def test_a_latency_slo_is_monotone_and_the_search_finds_its_edge():
    scenario, trace = continuous(), steady_trace()
    slos = [parse_slo("ttft_s.p99<=0.2")]
    found = search_max_load(scenario, trace, slos, SearchSettings(tolerance=0.02))
    assert found.status == "ok"
    best, fail = found.best.load, found.first_failure.load
    assert fail / best <= 1.02
    for load in np.geomspace(best / 8, best, 6):  # everything below the edge passes...
        assert evaluate(scenario, trace, slos, load).passed
    for load in np.geomspace(fail, fail * 8, 6):  # ...and everything above fails
        assert not evaluate(scenario, trace, slos, load).passed


class FakeRuns:
    """Stands in for the simulator: an SLO metric that is a chosen function of the load."""

    def __init__(self, passes):
        self.passes, self.loads = passes, []

    def __call__(self, scenario, trace, load, seed=None, rps=None, goodput=None):
        self.loads.append((scenario.cluster.gpus, load))
        return {"offered_rps": None if rps is None else rps * load,
                "ok": 1.0 if self.passes(scenario.cluster.gpus, load) else 0.0}


def test_a_criterion_that_is_not_monotone_is_reported_for_what_was_run(monkeypatch):
    # passes at loads up to 1 and again between 3 and 4: the search brackets the first edge
    fake = FakeRuns(lambda gpus, load: load <= 1 or 3 <= load <= 4)
    monkeypatch.setattr(search_module, "run_metrics", fake)
    found = search_max_load(continuous(), steady_trace(), [parse_slo("ok>=1")],
                            SearchSettings(tolerance=0.01))
    # what it says is true: the reported load passed and one at most 1% above it failed
    assert found.best.passed and not found.first_failure.passed
    assert found.best.load == 1 and found.first_failure.load / found.best.load <= 1.01
    assert all(point.load in [load for _, load in fake.loads] for point in found.points)


def test_the_recommendation_is_confirmed_at_the_target_and_says_what_it_skipped(monkeypatch):
    # 1 GPU passes up to load 2 in the search but fails at exactly 1.5; 2 GPUs pass everywhere
    fake = FakeRuns(lambda gpus, load: gpus == 2 or (load <= 2 and not 1.4 < load < 1.6))
    monkeypatch.setattr(search_module, "run_metrics", fake)
    plan = plan_capacity(continuous(), steady_trace(), [parse_slo("ok>=1")], [1, 2],
                         target_rps=1.5 * 2.0, executor=SerialExecutor(), progress=False,
                         settings=SearchSettings(max_load=64))
    assert plan.rps_at_load_1 == pytest.approx(40 / 19.5)
    rec = plan.recommendation
    assert rec.gpus == 2
    assert rec.note == "1 GPUs reached the target in the search but missed an SLO at exactly " \
                       "the target load"


# --------------------------------------------------------------------------------------------
# The fleet plan


@pytest.fixture(scope="module")
def fleet():
    types = {"A100-80GB": continuous("A100-80GB"), "H100-SXM-80GB": continuous("H100-SXM-80GB")}
    slos = slos_with_attainment([parse_slo("ttft_s.p99<=1")], 0.9, GOODPUT)
    return plan_fleet(types, steady_trace(60, 0.25, 1024, 64), slos, [1, 2], target_rps=12.0,
                      settings=SearchSettings(tolerance=0.05, goodput=GOODPUT),
                      executor=SerialExecutor(), progress=False)


def test_the_fleet_plan_has_a_table_per_type_and_the_cheapest_confirmed_fleet(fleet):
    assert list(fleet.plans) == ["A100-80GB", "H100-SXM-80GB"]
    rows = fleet.rows()
    assert [(r["gpu_type"], r["gpus"]) for r in rows] == [
        ("A100-80GB", 1), ("A100-80GB", 2), ("H100-SXM-80GB", 1), ("H100-SXM-80GB", 2)]
    for row in rows:
        assert row["dollars_per_hour"] == pytest.approx(
            fleet.plans[row["gpu_type"]].price_per_hour * row["gpus"])
        if row["max_rps"] is not None:
            assert row["slo_attainment"] >= 0.9 and row["ttft_s.p99"] <= 1
            assert row["goodput_rps"] > 0 and 0 < row["mbu"] < 1
    rec = fleet.recommendation
    assert rec.check.passed and rec.check.metrics["offered_rps"] == pytest.approx(12.0)
    # nothing cheaper reached the target in the search
    cheaper = [r for r in rows if r["dollars_per_hour"] < rec.dollars_per_hour
               and r["max_rps"] is not None and r["max_rps"] >= 12.0]
    assert not cheaper
    text = fleet.table()
    assert text.splitlines()[2] == "A100-80GB ($2.498 per GPU-hour)"
    assert f"target 12 req/s: cheapest is {rec.gpus} x {rec.gpu_type}" in text
    assert "goodput req/s  attainment  output tok/s   $/hour  $/M tokens     MBU" in text


def test_the_fleet_plan_files(fleet, tmp_path):
    fleet.write_json(tmp_path / "p.json")
    fleet.write_csv(tmp_path / "p.csv")
    data = json.loads((tmp_path / "p.json").read_text())
    assert list(data["gpu_types"]) == ["A100-80GB", "H100-SXM-80GB"]
    assert data["goodput_targets"] == {"ttft_s": 0.5, "tpot_s": 0.05, "e2e_s": None}
    assert data["recommendation"]["gpu_type"] == fleet.recommendation.gpu_type
    assert data["recommendation"]["at_target"]["slo_attainment"] >= 0.9
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header.startswith("gpu_type,gpus,status,max_load,max_rps,")
    assert "goodput_rps,slo_attainment,mbu" in header and "dollars_per_hour" in header


def test_no_fleet_reaching_the_target_says_so():
    types = {"L4": continuous("L4")}
    slos = slos_with_attainment([], 0.9, GOODPUT)
    plan = plan_fleet(types, steady_trace(20), slos, [1], target_rps=5.0,
                      settings=SearchSettings(min_load=0.25, goodput=GOODPUT),
                      executor=SerialExecutor(), progress=False)
    assert plan.plans["L4"].searches[0].status == "fails_at_min_load"
    assert plan.recommendation.gpus is None
    assert plan.table().endswith("target 5 req/s: no GPU type and count in 1..1 sustains it "
                                 "within the SLOs; none meets them even at the lowest load")


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "apslab", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


CONV_ARGS = ("plan", DATA / "scenarios" / "conversation.toml", "--trace", CONV,
             "--trace-format", "azure", "--tenant-weights", "chat=5,assist=3,batch=2")


@pytest.mark.parametrize("extra, message", [
    (["--gpu-types", "A100-80GB,H100"], "did you mean 'H100-SXM-80GB'?"),
    (["--gpu-types", "A100-80GB", "--plot", "p.png"], "--plot draws one GPU type's plan"),
    (["--min-attainment", "0.9"], "--min-attainment needs --goodput"),
    (["--goodput", "ttft=0.5", "--min-attainment", "0"], "--min-attainment must be a share"),
    (["--goodput", "ttft=fast"], "--goodput 'ttft=fast': ttft must be a number"),
    (["--slo", "slo_attainment>=0.9"], "add --goodput"),
    (["--slo", "ttft_s.p100<=1"], "'ttft_s.p100' is not a SUMMARY.json metric (did you mean"),
    ([], "give at least one --slo"),
    (["--slo", "ttft_s.p99<=1", "--trace-span", "0"], "--trace-span must be a number"),
])
def test_plan_bad_input_is_one_line_and_exit_2(extra, message):
    proc = run_cli(*CONV_ARGS, "--trace-span", "5", "--no-progress", "--workers", "1", *extra)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("apslab: error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr, proc.stderr


def test_plan_gpu_types_on_a_slice_of_the_published_trace(tmp_path):
    proc = run_cli(*CONV_ARGS, "--trace-span", "20", "--goodput", "ttft=0.5,tpot=0.05",
                   "--min-attainment", "0.9", "--gpu-types", "A100-80GB,H100-SXM-80GB",
                   "--gpus", "1", "--tolerance", "0.1", "--target-rps", "2", "--workers", "1",
                   "--no-progress", "--set", "gpu.price_per_hour=1.5",
                   "--json", tmp_path / "p.json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("(31 requests)")  # the first 20 s of the trace
    assert lines[2] == "A100-80GB ($1.5 per GPU-hour)"  # --set applies on top of each preset
    assert lines[5] == "H100-SXM-80GB ($1.5 per GPU-hour)"
    # equal prices: the tie goes to fewer GPUs, then to the type named first
    assert lines[-1].startswith("target 2 req/s: cheapest is 1 x A100-80GB ($1.50/hour)")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["gpu_types"]["H100-SXM-80GB"]["price_per_hour"] == 1.5


def test_the_documented_fleet_plan_is_what_the_command_prints():
    """docs/planning.md's fleet plan on the published conversation trace, rerun (the same
    settings as notebook 06); the README's tour quotes its command and last line."""
    block = marked_block(doc_text("docs/planning.md"), "fleet-output", fenced=True)
    command, _, expected = block.partition("\n")
    args = shlex.split(command.removeprefix("$ apslab "))
    proc = run_cli(*args, "--no-progress", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected
    readme = doc_text("README.md")
    tour = re.search(r"^```\n(\$ apslab plan .*?)```$", readme, re.S | re.M)
    assert tour, "the README's tour has no apslab plan example"
    lines = tour.group(1).splitlines()
    shown = " ".join(line.rstrip("\\").strip() for line in lines if line.startswith(("$", " ")))
    assert shlex.split(shown) == shlex.split(command)
    assert lines[-1] == expected.splitlines()[-1]
