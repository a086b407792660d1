"""Grid sweeps: parsing, rows, executors (serial, process pool, Dask), files and `apslab sweep`."""

import csv
import json
import re
import subprocess
import sys

import pytest
from conftest import DATA, ROOT
from helpers import make_scenario, make_trace

from apslab.io.errors import InputError
from apslab.io.scenario import load_scenario
from apslab.io.trace_formats import TenantAssignment, read_azure_trace
from apslab.plan.sweep import (
    SerialExecutor,
    base_rps,
    flatten,
    grid_points,
    map_ordered,
    metrics_of,
    parse_grid,
    parse_grid_spec,
    process_pool,
    run_sweep,
    trace_at_load,
    write_rows_csv,
    write_rows_json,
)
from apslab.sim.run import simulate

SYNTHETIC = DATA / "azure_synthetic"
GRID = {"scheduler.max_batch_size": [1, 8], "cluster.gpus": [1, 2], "load": [0.05, 0.1]}


@pytest.fixture(scope="module")
def azure_case():
    scenario = load_scenario(SYNTHETIC / "planning.toml")
    trace = read_azure_trace(SYNTHETIC / "AzureStyleTrace_conv.csv",
                             TenantAssignment.from_scenario(scenario))
    # the first 600 requests: a small, quick, still realistic sweep
    return scenario, trace.subset(slice(0, 600))


def test_grid_specs_are_read_as_toml_values():
    assert parse_grid_spec("scheduler.max_batch_size=8,16,32") == (
        "scheduler.max_batch_size", [8, 16, 32])
    assert parse_grid_spec("tenants.rate_limit = 1e3, 250.5") == (
        "tenants.rate_limit", [1000.0, 250.5])
    assert parse_grid_spec('gpu.name="A100",H100') == ("gpu.name", ["A100", "H100"])
    assert parse_grid_spec("load=0.5,1,2") == ("load", [0.5, 1, 2])


@pytest.mark.parametrize("spec, message", [
    ("cluster.gpus", "expected KEY=VALUE"),
    ("cluster.gpus=", "expected KEY=VALUE"),
    ("cluster.gpus=1,,2", "empty value"),
    ("load=0,1", "load multipliers must be numbers > 0"),
    ("load=fast", "load multipliers must be numbers > 0"),
])
def test_bad_grid_specs(spec, message):
    with pytest.raises(InputError, match=message):
        parse_grid_spec(spec)


def test_grid_points_vary_the_last_key_fastest():
    grid = parse_grid(["a=1,2", "b=x,y"])
    assert grid_points(grid) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"},
                                 {"a": 2, "b": "y"}]
    with pytest.raises(InputError, match="given twice"):
        parse_grid(["a=1", "a=2"])


def test_flatten_and_derived_metrics():
    assert flatten({"a": {"b": 1, "c": [0.5, None]}, "d": None}) == {
        "a.b": 1, "a.c.0": 0.5, "a.c.1": None, "d": None}
    scenario = make_scenario([("A", 100.0, 600.0)], cluster={"gpus": 2})
    trace = make_trace([(0.0, "A", 100, 400, 1.0), (0.1, "A", 100, 400, 1.0)])
    metrics = metrics_of(simulate(scenario, trace).summary(), offered_rps=20.0)
    assert metrics["rejected_fraction"] == 0.5 and metrics["offered_rps"] == 20.0
    assert metrics["requests.rejected_by_reason.rate_limited"] == 1
    assert "gpus.utilization_per_gpu.1" in metrics and "tenants.A.completed" in metrics


def test_load_compresses_a_trace_and_scales_a_workload(example_scenario_path):
    trace = make_trace([(0.0, "A", 1, 1, 1.0), (10.0, "A", 1, 1, 1.0), (30.0, "A", 1, 1, 1.0)])
    scenario = make_scenario()
    assert trace_at_load(scenario, trace, 2.0).arrival_s.tolist() == [0.0, 5.0, 15.0]
    assert base_rps(scenario, trace) == 3 / 30
    example = load_scenario(example_scenario_path)
    assert base_rps(example, None) == pytest.approx(1.1)
    light, heavy = (len(trace_at_load(example, None, m)) for m in (1.0, 4.0))
    assert 3 * light < heavy < 5 * light
    with pytest.raises(InputError, match="load multiplier must be"):
        trace_at_load(scenario, trace, 0.0)
    with pytest.raises(InputError, match="no \\[workload\\] section"):
        trace_at_load(scenario, None, 1.0)


def test_sweep_rows_are_the_runs_they_name(azure_case):
    scenario, trace = azure_case
    rows = run_sweep(scenario, GRID, trace, executor=SerialExecutor(), progress=False)
    assert [{k: r[k] for k in GRID} for r in rows] == grid_points(GRID)
    one = rows[5]  # max_batch_size 8, 1 GPU, load 0.1
    assert (one["scheduler.max_batch_size"], one["cluster.gpus"], one["load"]) == (8, 1, 0.1)
    direct = simulate(scenario.with_overrides({"scheduler.max_batch_size": 8}),
                      trace.compressed(0.1)).summary()
    assert one["queue_wait_s.p99"] == direct["queue_wait_s"]["p99"]
    assert one["throughput_tokens_per_s"] == direct["throughput_tokens_per_s"]
    assert one["offered_rps"] == pytest.approx(0.1 * base_rps(scenario, trace))
    # more GPUs at the same load: less waiting
    assert rows[6]["queue_wait_s.mean"] < rows[4]["queue_wait_s.mean"]


def test_a_bad_grid_point_fails_before_anything_runs(azure_case):
    scenario, trace = azure_case
    calls = []

    class Recording(SerialExecutor):
        def submit(self, fn, /, *args, **kwargs):
            calls.append(args)
            return super().submit(fn, *args, **kwargs)

    with pytest.raises(InputError, match=r"grid point cluster\.gpus=1, scheduler\.max_bach_size"
                                         r"=8: .*did you mean 'max_batch_size'"):
        run_sweep(scenario, {"cluster.gpus": [1], "scheduler.max_bach_size": [8]}, trace,
                  executor=Recording(), progress=False)
    with pytest.raises(InputError, match="cluster.gpus=0.*must be >= 1"):
        run_sweep(scenario, {"cluster.gpus": [1, 0]}, trace, executor=Recording(),
                  progress=False)
    assert calls == []


def test_process_pool_and_dask_match_the_serial_run_exactly(azure_case):
    from dask.distributed import Client, LocalCluster

    scenario, trace = azure_case
    serial = run_sweep(scenario, GRID, trace, executor=SerialExecutor(), progress=False)
    with process_pool(2) as pool:
        assert run_sweep(scenario, GRID, trace, executor=pool, progress=False) == serial
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        on_dask = run_sweep(scenario, GRID, trace, executor=client.get_executor(),
                            progress=False)
        scattered = run_sweep(scenario, GRID, trace, executor=client.get_executor(),
                              progress=False,
                              scatter=lambda obj: client.scatter(obj, broadcast=True))
        workers = client.run(lambda: __import__("os").getpid())
    assert on_dask == serial and scattered == serial
    assert len(set(workers.values())) == 2  # really other processes


def test_map_ordered_keeps_order_and_raises_the_first_failure():
    assert map_ordered(pow, [(2, 3), (3, 2), (10, 0)], SerialExecutor(), progress=False) == [
        8, 9, 1]
    with pytest.raises(ZeroDivisionError):
        map_ordered(divmod, [(1, 1), (1, 0)], SerialExecutor(), progress=False)
    assert map_ordered(pow, [], progress=False) == []


def test_row_files(tmp_path):
    rows = [{"a": 1, "b": 0.1, "c": None}, {"a": 2, "d": "x,y"}]
    write_rows_csv(tmp_path / "rows.csv", rows)
    with open(tmp_path / "rows.csv", newline="") as handle:
        read = list(csv.reader(handle))
    assert read == [["a", "b", "c", "d"], ["1", "0.1", "", ""], ["2", "", "", "x,y"]]
    write_rows_json(tmp_path / "rows.json", rows)
    assert json.loads((tmp_path / "rows.json").read_text()) == rows


# --------------------------------------------------------------------------------------------
# apslab sweep


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "apslab", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_sweep_command_writes_one_row_per_run(tmp_path, example_scenario_path,
                                              example_trace_path):
    out, js = tmp_path / "sweep.csv", tmp_path / "sweep.json"
    proc = run_cli("sweep", example_scenario_path, "--trace", example_trace_path,
                   "--grid", "scheduler.max_batch_size=1,16", "--grid", "cluster.gpus=1,2",
                   "--grid", "tenants.rate_limit=150,1000", "--out", out, "--json", js,
                   "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "sweep: 100%" in proc.stderr  # the tqdm progress bar
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    assert [(r["scheduler.max_batch_size"], r["cluster.gpus"], r["tenants.rate_limit"])
            for r in rows[:3]] == [("1", "1", "150"), ("1", "1", "1000"), ("1", "2", "150")]
    assert {"queue_wait_s.p99", "jain_fairness", "gpus.utilization_per_gpu.0",
            "tenants.premium.completed", "rejected_fraction", "offered_rps"} <= set(rows[0])
    # the rows are the same runs `apslab simulate` makes
    scenario = load_scenario(example_scenario_path).with_overrides(
        {"scheduler.max_batch_size": 16, "cluster.gpus": 2, "tenants.rate_limit": 1000})
    from apslab.io.trace import read_trace

    direct = simulate(scenario, read_trace(example_trace_path)).summary()
    assert float(rows[-1]["latency_s.p95"]) == direct["latency_s"]["p95"]
    assert json.loads(js.read_text())[-1]["latency_s.p95"] == direct["latency_s"]["p95"]
    # a short table on stdout: parameters first
    header = proc.stdout.splitlines()[0].split()
    assert header[:3] == ["scheduler.max_batch_size", "cluster.gpus", "tenants.rate_limit"]
    assert len(proc.stdout.splitlines()) == 9


def test_sweep_command_on_dask_local_matches_local_processes(tmp_path, example_scenario_path):
    args = ("sweep", example_scenario_path, "--grid", "cluster.gpus=1,2", "--grid",
            "load=1,2", "--seed", "3", "--no-progress")
    local = run_cli(*args, "--out", tmp_path / "local.csv")
    dask = run_cli(*args, "--out", tmp_path / "dask.csv", "--dask", "local", "--workers", "2")
    assert local.returncode == 0 and dask.returncode == 0, dask.stderr
    assert (tmp_path / "local.csv").read_text() == (tmp_path / "dask.csv").read_text()
    assert local.stdout == dask.stdout


@pytest.mark.parametrize("extra, message", [
    (["--grid", "cluster.gpu=1,2"], r"grid point cluster\.gpu=1: .*did you mean 'gpus'"),
    (["--grid", "cluster.gpus=1,2", "--grid", "cluster.gpus=3"], "given twice"),
    (["--grid", "load=-1"], "load multipliers must be numbers > 0"),
    (["--grid", "cluster.gpus=1", "--dask", "tcp://127.0.0.1:9", "--workers", "2"],
     "--workers applies to local runs"),
    (["--grid", "cluster.gpus=1", "--set", "cluster.gpus=1,2"], "expected one value"),
])
def test_sweep_command_bad_input_is_one_line_and_exit_2(extra, message, example_scenario_path):
    proc = run_cli("sweep", example_scenario_path, "--no-progress", *extra)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and re.search(message, proc.stderr), proc.stderr


def test_sweep_command_reports_an_unreachable_dask_scheduler(example_scenario_path):
    proc = run_cli("sweep", example_scenario_path, "--grid", "cluster.gpus=1", "--dask",
                   "tcp://127.0.0.1:9", "--dask-timeout", "1", "--no-progress", timeout=120)
    assert proc.returncode == 2
    assert "cannot connect to a Dask scheduler" in proc.stderr.splitlines()[-1]


def test_trace_tenants_missing_from_the_scenario_are_warned_about(tmp_path):
    scenario = tmp_path / "one.toml"
    scenario.write_text('[[tenants]]\nid = "premium"\nrate_limit = 400.0\nburst_cap = 4000.0\n')
    proc = run_cli("sweep", scenario, "--trace", DATA / "scenarios" / "example_trace.csv",
                   "--grid", "cluster.gpus=1", "--no-progress", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"apslab: warning: 89 request(s) from 2 tenant(s) not in {scenario} ('standard', "
        "'batch') will be rejected as unknown_tenant in every run"]
