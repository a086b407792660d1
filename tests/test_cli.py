import csv
import json
import shutil
import subprocess
import sys

import pytest

from apslab.cli import main

REQUEST_HEADER = ["request_id", "tenant_id", "arrival_s", "status", "reason", "start_s",
                  "finish_s", "batch_id", "batch_size", "gpu"]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "apslab", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_simulate_example_writes_the_contract_outputs(tmp_path, example_scenario_path,
                                                      example_trace_path):
    summary, requests = tmp_path / "SUMMARY.json", tmp_path / "REQUESTS.csv"
    proc = run("simulate", example_scenario_path, "--trace", example_trace_path,
               "--summary", summary, "--requests", requests)
    assert proc.returncode == 0, proc.stderr
    assert "throughput" in proc.stdout and "Jain fairness" in proc.stdout
    data = json.loads(summary.read_text())
    assert set(data) >= {"requests", "elapsed_s", "throughput_tokens_per_s", "gpu_utilization",
                         "cost_per_million_tokens", "jain_fairness", "queue_wait_s",
                         "latency_s", "batches", "tenants"}
    assert set(data["queue_wait_s"]) == {"mean", "p50", "p95", "p99", "max"}
    assert set(data["requests"]["rejected_by_reason"]) == {
        "rate_limited", "exceeds_burst", "exceeds_kv_capacity", "unknown_tenant"}
    with open(requests, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == REQUEST_HEADER
    assert len(rows) - 1 == data["requests"]["submitted"]
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    for row in rows[1:]:
        if row[3] == "completed":
            assert row[4] == "" and float(row[5]) >= float(row[2])
        else:
            assert row[3] == "rejected" and row[4] and row[5:] == ["", "", "", "", ""]
    # full precision: the text reads back to the double the simulator computed
    from apslab import load_scenario, read_trace, simulate

    result = simulate(load_scenario(example_scenario_path), read_trace(example_trace_path))
    starts = [float(r[5]) for r in rows[1:] if r[5]]
    assert starts == result.start_s[result.completed].tolist()


def test_console_script_and_python_m_agree(tmp_path, example_scenario_path):
    exe = shutil.which("apslab", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "the apslab console script is installed"
    a = subprocess.run([exe, "simulate", str(example_scenario_path), "--seed", "3",
                        "--summary", str(tmp_path / "a.json")], capture_output=True, text=True)
    b = run("simulate", example_scenario_path, "--seed", 3, "--summary", tmp_path / "b.json")
    assert a.returncode == b.returncode == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_generate_is_seeded(tmp_path, example_scenario_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        proc = run("generate", example_scenario_path, "--out", tmp_path / f"{name}.csv",
                   "--seed", seed)
        assert proc.returncode == 0, proc.stderr
        assert "wrote" in proc.stdout
    a, b, c = ((tmp_path / f"{n}.csv").read_text() for n in "abc")
    assert a == b != c


def test_the_committed_example_trace_is_what_generate_writes(tmp_path, example_scenario_path,
                                                             example_trace_path):
    assert run("generate", example_scenario_path, "--out", tmp_path / "t.csv").returncode == 0
    assert (tmp_path / "t.csv").read_text() == example_trace_path.read_text()


def test_unknown_tenants_are_rejected_with_one_warning(tmp_path, example_scenario_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,tenant_id,prompt_tokens,output_tokens,priority_bid\n"
                     "0,premium,10,10,1\n1,mallory,1,1,1\n2,mallory,1,1,1\n3,eve,1,1,1\n")
    proc = run("simulate", example_scenario_path, "--trace", trace, "--summary",
               tmp_path / "s.json")
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.splitlines() if line]
    assert len(warnings) == 1
    assert "3 request(s) from 2 tenant(s)" in warnings[0] and "'mallory'" in warnings[0]
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["requests"]["rejected_by_reason"]["unknown_tenant"] == 3


@pytest.mark.parametrize("make_args, message", [
    (lambda d, s, t: ["simulate", d / "missing.toml", "--trace", t], "scenario file not found"),
    (lambda d, s, t: ["simulate", s, "--trace", d / "missing.csv"], "trace file not found"),
    (lambda d, s, t: ["simulate", s, "--trace", t, "--requests", t], "same file as --trace"),
    (lambda d, s, t: ["simulate", s, "--trace", t, "--summary", d / "no" / "dir.json"],
     "directory .* does not exist"),
    (lambda d, s, t: ["generate", s, "--out", s], "same file as scenario"),
    (lambda d, s, t: ["generate", s, "--out", d / "x.csv", "--seed", "-1"], "--seed must be"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, example_scenario_path,
                                               example_trace_path, make_args, message):
    trace = tmp_path / "trace.csv"
    shutil.copy(example_trace_path, trace)
    before = trace.read_bytes()
    proc = run(*make_args(tmp_path, example_scenario_path, trace))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("apslab: error: ")
    assert __import__("re").search(message, lines[0]), lines[0]
    assert trace.read_bytes() == before  # never lost data


def test_bad_trace_and_scenario_contents(tmp_path, example_scenario_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,tenant_id,prompt_tokens,output_tokens,priority_bid\n"
                     "0,premium,10,10,1\n1,premium,ten,10,1\n")
    proc = run("simulate", example_scenario_path, "--trace", trace)
    assert proc.returncode == 2
    assert (f"{trace} line 3: prompt_tokens must be a non-negative whole number of tokens, "
            "got 'ten'") in proc.stderr
    scenario = tmp_path / "s.toml"
    scenario.write_text(example_scenario_path.read_text().replace("rate_limit = 400.0",
                                                                  "rate_limt = 400.0"))
    proc = run("simulate", scenario, "--trace", trace)
    assert proc.returncode == 2 and "rate_limt is an unknown key" in proc.stderr
    assert "did you mean 'rate_limit'" in proc.stderr


def test_no_trace_and_no_workload(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text("[[tenants]]\nid='a'\nrate_limit=1\nburst_cap=1\n")
    proc = run("simulate", scenario)
    assert proc.returncode == 2 and "no [workload] section" in proc.stderr
    proc = run("generate", scenario, "--out", tmp_path / "t.csv")
    assert proc.returncode == 2 and "no [workload] section" in proc.stderr


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "x.toml", "--trcae", "t.csv"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --trcae" in capsys.readouterr().err
