"""SLO parsing, the bisection search, the plan and its recommendation, and `apslab plan`."""

import csv
import json
import re
import subprocess
import sys

import pytest
from conftest import DATA, ROOT, doc_text, marked_block
from helpers import make_scenario, make_trace

from apslab.io.errors import InputError
from apslab.plan.search import (
    SLO,
    STATUS_FAILS_AT_MIN,
    STATUS_HOLDS_AT_MAX,
    STATUS_OK,
    SearchSettings,
    check_slo_paths,
    parse_gpu_counts,
    parse_slo,
    plan_capacity,
    plot_plan,
    probe_metrics,
    search_max_load,
)
from apslab.plan.sweep import SerialExecutor, process_pool

SYNTHETIC = DATA / "azure_synthetic"

# A clock-work trace: one request per second for 50 s, each exactly 0.5 s of decode (64 tokens at
# 128 tokens/s) in batches of one with no window. At load m the gap is 1/m s, so on c GPUs no
# request ever waits while 1/m >= 0.5/c, i.e. up to m = 2c exactly, and waits beyond it.
CLOCKWORK = make_trace([(float(i), "A", 0, 64, 1.0) for i in range(50)])
NO_WAIT = [parse_slo("queue_wait_s.max<=0")]


def clockwork(gpus=1, **scheduler):
    return make_scenario([("A", 1e9, 1e9)], cluster={"gpus": gpus},
                         scheduler={"max_batch_size": 1, "batch_window_ms": 0.0, **scheduler})


# --------------------------------------------------------------------------------------------
# SLOs


@pytest.mark.parametrize("text, expected", [
    ("queue_wait_s.p99<=2", SLO("queue_wait_s.p99", "<=", 2.0)),
    (" latency_s.p95 < 5 ", SLO("latency_s.p95", "<", 5.0)),
    ("jain_fairness>=0.9", SLO("jain_fairness", ">=", 0.9)),
    ("tenants.premium.queue_wait_p99_s>1e-3", SLO("tenants.premium.queue_wait_p99_s", ">",
                                                  0.001)),
])
def test_slo_strings(text, expected):
    assert parse_slo(text) == expected


@pytest.mark.parametrize("text, message", [
    ("queue_wait_s.p99", "expected PATH OP NUMBER"),
    ("queue_wait_s.p99=<2", "expected PATH OP NUMBER"),
    ("queue_wait_s.p99<=two", "the bound must be a number, got 'two'"),
    ("queue_wait_s.p99<=nan", "the bound must be finite"),
    ("<=2", "expected PATH OP NUMBER"),
])
def test_bad_slo_strings(text, message):
    with pytest.raises(InputError, match=message):
        parse_slo(text)


def test_slo_met_and_null_metrics_fail():
    slo = parse_slo("queue_wait_s.p99<=2")
    assert slo.met({"queue_wait_s.p99": 2.0}) and not slo.met({"queue_wait_s.p99": 2.0001})
    assert not slo.met({"queue_wait_s.p99": None})
    assert parse_slo("jain_fairness>0.5").met({"jain_fairness": 0.6})


def test_slo_paths_are_checked_against_real_metric_names():
    metrics = probe_metrics(clockwork(3), CLOCKWORK, gpus=3)
    check_slo_paths([parse_slo("queue_wait_s.p99<=1"), parse_slo("gpus.utilization_per_gpu.2<1"),
                     parse_slo("tenants.A.queue_wait_p99_s<=1"),
                     parse_slo("rejected_fraction<=0")], metrics)
    with pytest.raises(InputError, match=r"'queue_wait_s\.p999' is not a SUMMARY\.json metric "
                                         r"\(did you mean queue_wait_s\.p99"):
        check_slo_paths([parse_slo("queue_wait_s.p999<=1")], metrics)
    with pytest.raises(InputError, match="'gpus.utilization_per_gpu.3' is not"):
        check_slo_paths([parse_slo("gpus.utilization_per_gpu.3<=1")], metrics)
    with pytest.raises(InputError, match="'queue_wait_s' is not"):
        check_slo_paths([parse_slo("queue_wait_s<=1")], metrics)


@pytest.mark.parametrize("text, counts", [("1..8", list(range(1, 9))), ("4", [4]),
                                          ("1,2,4, 8", [1, 2, 4, 8]), ("3..4,1", [1, 3, 4])])
def test_gpu_counts(text, counts):
    assert parse_gpu_counts(text) == counts


@pytest.mark.parametrize("text", ["0..2", "a..b", "", "1..", "-1"])
def test_bad_gpu_counts(text):
    with pytest.raises(InputError, match="--gpus"):
        parse_gpu_counts(text)


@pytest.mark.parametrize("kwargs, message", [
    ({"tolerance": 0.0}, "--tolerance must be a finite number > 0"),
    ({"min_load": 2.0}, "min load <= start <= max load"),
    ({"max_load": float("inf")}, "--max-load must be"),
])
def test_bad_search_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        SearchSettings(**kwargs)


# --------------------------------------------------------------------------------------------
# The search


def test_bisection_finds_the_exact_limit_of_the_clockwork_trace():
    search = search_max_load(clockwork(1), CLOCKWORK, NO_WAIT)
    assert search.status == STATUS_OK
    # 1 passes, 2 passes (exactly at the limit: each request arrives as the last one finishes),
    # 4 fails; every bisection point in (2, 4) fails
    assert [p.load for p in search.points[:3]] == [1.0, 2.0, 4.0]
    assert search.best.load == 2.0
    assert 2.0 < search.first_failure.load <= 2.0 * 1.01
    assert search.best.metrics["queue_wait_s.max"] == 0.0
    assert search.first_failure.metrics["queue_wait_s.max"] > 0.0
    assert search.first_failure.missed == ("queue_wait_s.max<=0",)


@pytest.mark.parametrize("gpus", [2, 3])
def test_more_gpus_move_the_limit_to_2c(gpus):
    search = search_max_load(clockwork(gpus), CLOCKWORK, NO_WAIT, SearchSettings(tolerance=0.002))
    assert search.best.load <= 2 * gpus < search.first_failure.load
    assert search.first_failure.load / search.best.load <= 1.002


def test_starting_above_the_limit_halves_down_to_it():
    search = search_max_load(clockwork(1), CLOCKWORK, NO_WAIT, SearchSettings(start=16.0))
    assert [p.load for p in search.points[:4]] == [16.0, 8.0, 4.0, 2.0]
    assert search.best.load == 2.0


def test_a_slo_that_never_holds_is_reported_not_hidden():
    search = search_max_load(clockwork(1), CLOCKWORK, [parse_slo("queue_wait_s.max<0")],
                             SearchSettings(min_load=0.25))
    assert search.status == STATUS_FAILS_AT_MIN
    assert search.best is None
    assert [p.load for p in search.points] == [1.0, 0.5, 0.25]


def test_a_slo_that_always_holds_stops_at_the_maximum_load():
    search = search_max_load(clockwork(1), CLOCKWORK, [parse_slo("queue_wait_s.max<=1000")],
                             SearchSettings(max_load=8.0))
    assert search.status == STATUS_HOLDS_AT_MAX
    assert search.best.load == 8.0 and search.first_failure is None
    assert [p.load for p in search.points] == [1.0, 2.0, 4.0, 8.0]


def test_a_null_metric_fails_its_slo():
    # tenant B sends nothing, so its p99 wait is null and the SLO cannot be shown to hold
    scenario = make_scenario([("A", 1e9, 1e9), ("B", 1e9, 1e9)],
                             scheduler={"max_batch_size": 1, "batch_window_ms": 0.0})
    search = search_max_load(scenario, CLOCKWORK, [parse_slo("tenants.B.queue_wait_p99_s<=10")],
                             SearchSettings(min_load=0.5))
    assert search.status == STATUS_FAILS_AT_MIN


# --------------------------------------------------------------------------------------------
# The plan


def clockwork_plan(executor=None, target_rps=3.0):
    return plan_capacity(clockwork(1), CLOCKWORK, NO_WAIT, [1, 2, 3], target_rps=target_rps,
                         executor=executor or SerialExecutor(), progress=False)


def test_plan_rows_and_recommendation():
    plan = clockwork_plan()
    rps1 = 50 / 49  # 50 requests over 49 s
    assert plan.rps_at_load_1 == pytest.approx(rps1)
    rows = plan.rows()
    assert [r["gpus"] for r in rows] == [1, 2, 3]
    assert rows[0]["max_load"] == 2.0 and rows[1]["max_load"] == 4.0
    assert rows[0]["max_rps"] == pytest.approx(2 * rps1)
    for row in rows:
        assert row["status"] == STATUS_OK
        assert row["rejected_fraction"] == 0.0 and row["jain_fairness"] == 1.0
        assert row["cost_per_million_tokens"] == pytest.approx(
            3.0 * row["gpus"] / 3600 / row["output_tokens_per_s"] * 1e6)
    # 3 req/s needs load 2.94: one GPU reaches 2.04 req/s, two reach 4.08
    rec = plan.recommendation
    assert rec.gpus == 2 and rec.dollars_per_hour == 6.0
    assert rec.check.load == pytest.approx(3.0 / rps1)
    assert rec.check.passed and rec.check.metrics["offered_rps"] == pytest.approx(3.0)
    text = plan.table()
    assert "target 3 req/s: cheapest is 2 GPUs ($6.00/hour)" in text
    assert re.search(r"^\s+1\s+2\s+2\.041\s", text, re.M)


def test_re_pricing_scales_the_cost_column():
    plan = clockwork_plan()
    base, double = plan.rows(), plan.rows(price_per_hour=6.0)
    for a, b in zip(base, double, strict=True):
        assert b["cost_per_million_tokens"] == pytest.approx(2 * a["cost_per_million_tokens"])
        assert b["max_rps"] == a["max_rps"]


def test_an_unreachable_target_says_so():
    plan = clockwork_plan(target_rps=100.0)
    assert plan.recommendation.gpus is None
    note = re.fullmatch(r"no GPU count in 1\.\.3 sustains it within the SLOs; the most is "
                        r"(\d+\.\d+) req/s on 3 GPUs", plan.recommendation.note)
    assert note and 6 * 0.99 * 50 / 49 <= float(note.group(1)) <= 6 * 50 / 49


def test_plan_runs_the_same_on_a_process_pool():
    serial = clockwork_plan()
    with process_pool(2) as pool:
        parallel = clockwork_plan(executor=pool)
    assert parallel.rows() == serial.rows()
    assert parallel.to_dict() == serial.to_dict()


def test_plan_checks_slo_paths_before_running():
    with pytest.raises(InputError, match="not a SUMMARY.json metric"):
        plan_capacity(clockwork(1), CLOCKWORK, [parse_slo("latency.p99<=1")], [1],
                      executor=SerialExecutor(), progress=False)
    with pytest.raises(InputError, match="at least one --slo"):
        plan_capacity(clockwork(1), CLOCKWORK, [], [1], progress=False)


def test_plan_of_a_generated_workload_scales_arrival_rates(example_scenario_path):
    from apslab.io.scenario import load_scenario

    scenario = load_scenario(example_scenario_path)
    plan = plan_capacity(scenario, None, [parse_slo("queue_wait_s.p99<=5")], [1, 2],
                         executor=SerialExecutor(), progress=False)
    assert plan.rps_at_load_1 == pytest.approx(0.3 + 0.3 + 0.5)
    rows = plan.rows()
    assert rows[0]["max_rps"] == pytest.approx(rows[0]["max_load"] * 1.1)
    assert rows[1]["max_load"] > rows[0]["max_load"]


def test_plot_plan_draws_the_rows():
    plan = clockwork_plan()
    fig = plot_plan(plan)
    left, right = fig.axes
    xs, ys = left.lines[0].get_data()
    assert list(xs) == [1, 2, 3] and list(ys) == [r["max_rps"] for r in plan.rows()]
    assert list(right.lines[0].get_ydata()) == [r["cost_per_million_tokens"]
                                                for r in plan.rows()]
    priced = plot_plan(plan, price_per_hour=1.5)
    assert list(priced.axes[1].lines[0].get_ydata()) == pytest.approx(
        [r["cost_per_million_tokens"] / 2 for r in plan.rows()])


def test_plan_files(tmp_path):
    plan = clockwork_plan()
    plan.write_csv(tmp_path / "plan.csv")
    plan.write_json(tmp_path / "plan.json")
    with open(tmp_path / "plan.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["gpus"]) for r in rows] == [1, 2, 3]
    assert float(rows[0]["max_load"]) == 2.0
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["slos"] == ["queue_wait_s.max<=0"] and data["recommendation"]["gpus"] == 2
    assert data["rows"] == json.loads(json.dumps(plan.rows()))


# --------------------------------------------------------------------------------------------
# apslab plan


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "apslab", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


PLAN_ARGS = ("plan", SYNTHETIC / "planning.toml", "--trace",
             SYNTHETIC / "AzureStyleTrace_conv.csv", "--trace-format", "azure",
             "--tenant-weights", "chat=5,assist=3,batch=2")


def test_plan_command_on_the_synthetic_azure_trace(tmp_path):
    proc = run_cli(*PLAN_ARGS, "--slo", "queue_wait_s.p99<=2", "--slo", "rejected_fraction<=0.01",
                   "--gpus", "3..4", "--target-rps", "0.5", "--csv", tmp_path / "p.csv",
                   "--json", tmp_path / "p.json", "--plot", tmp_path / "p.png", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "plan: 100%" in proc.stderr  # the tqdm progress bar
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("capacity plan: ")
    assert "queue_wait_s.p99<=2, rejected_fraction<=0.01" in lines[1]
    assert "target 0.5 req/s: cheapest is 4 GPUs ($12.00/hour)" in proc.stdout
    data = json.loads((tmp_path / "p.json").read_text())
    assert [r["gpus"] for r in data["rows"]] == [3, 4]
    assert all(r["queue_wait_s.p99"] <= 2 for r in data["rows"])
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "p.csv").read_text().startswith("gpus,status,max_load,max_rps,")
    # the same plan in this process (--workers 1) prints the same table
    again = run_cli(*PLAN_ARGS, "--slo", "queue_wait_s.p99<=2", "--slo",
                    "rejected_fraction<=0.01", "--gpus", "3..4", "--target-rps", "0.5",
                    "--workers", "1", "--no-progress")
    assert again.returncode == 0 and again.stdout == proc.stdout and again.stderr == ""


@pytest.mark.parametrize("extra, message", [
    (["--slo", "queue_wait.p99<=2"], r"'queue_wait\.p99' is not a SUMMARY\.json metric"),
    (["--slo", "queue_wait_s.p99 is small"], "expected PATH OP NUMBER"),
    (["--slo", "queue_wait_s.p99<=2", "--gpus", "0..3"], "--gpus '0..3'"),
    (["--slo", "queue_wait_s.p99<=2", "--tolerance", "-1"], "--tolerance must be"),
    (["--slo", "queue_wait_s.p99<=2", "--target-rps", "0"], "--target-rps must be"),
    (["--slo", "queue_wait_s.p99<=2", "--set", "scheduler.max_bach_size=8"],
     "did you mean 'max_batch_size'"),
    (["--slo", "queue_wait_s.p99<=2", "--workers", "0"], "--workers must be >= 1"),
])
def test_plan_command_bad_input_is_one_line_and_exit_2(extra, message):
    proc = run_cli(*PLAN_ARGS, "--no-progress", *extra)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and re.search(message, proc.stderr), proc.stderr
    assert proc.stderr.startswith("apslab: error: ")


def test_plan_refuses_to_overwrite_its_inputs(tmp_path):
    proc = run_cli(*PLAN_ARGS, "--slo", "queue_wait_s.p99<=2", "--csv",
                   SYNTHETIC / "planning.toml")
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr


def test_planning_doc_plan_is_what_the_command_prints():
    import shlex

    block = marked_block(doc_text("docs/planning.md"), "plan-output", fenced=True)
    command, _, expected = block.partition("\n")
    args = shlex.split(command.removeprefix("$ apslab "))
    assert args[0] == "plan" and "--gpus" in args and len(expected.splitlines()) == 12
    proc = run_cli(*args, "--workers", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected


def test_a_tolerance_below_float_resolution_still_ends():
    search = search_max_load(clockwork(2), CLOCKWORK, NO_WAIT, SearchSettings(tolerance=1e-300))
    assert search.best.load <= 4 < search.first_failure.load
    assert len(search.points) < 80
