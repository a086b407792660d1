"""The Azure LLM trace format, the tenant-assignment rule, and the synthetic Azure-style trace."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA, ROOT, SHARED_DATA, doc_text
from helpers import make_scenario

from apslab.io.errors import InputError
from apslab.io.scenario import load_scenario
from apslab.io.trace_formats import (
    PROFILES_FILE,
    QUANTILE_LEVELS,
    TenantAssignment,
    fit_azure_profile,
    format_azure_timestamps,
    generate_azure_style,
    load_profiles,
    parse_azure_rows,
    parse_tenant_weights,
    published_file_name,
    read_azure_columns,
    read_azure_trace,
    read_trace_file,
    splitmix64_uniforms,
    statistics_report,
    synthetic_file_name,
    trace_statistics,
    write_synthetic_traces,
)
from apslab.sim.run import simulate

SYNTHETIC = DATA / "azure_synthetic"
PUBLISHED = DATA / "azure-llm-2023"
SHARED_PUBLISHED = SHARED_DATA / "azure-llm-2023"


def rows_of(text: str) -> list[list[str]]:
    import csv
    import io

    return list(csv.reader(io.StringIO(text)))


# --------------------------------------------------------------------------------------------
# The tenant-assignment rule


def splitmix64_reference(seed: int, count: int) -> list[int]:
    """Vigna's SplitMix64 in plain Python integers."""
    mask, state, out = (1 << 64) - 1, seed, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def test_splitmix64_matches_the_published_sequence():
    # Vigna's splitmix64.c seeded with 1234567 starts with these outputs
    assert splitmix64_reference(1234567, 3) == [6457827717110365317, 3203168211198807973,
                                                9817491932198370423]
    for seed in (0, 1234567, 2**64 - 1):
        expected = [(z >> 11) * 2.0**-53 for z in splitmix64_reference(seed, 500)]
        assert splitmix64_uniforms(seed, 500).tolist() == expected


def test_assignment_follows_the_weights_and_depends_only_on_the_row():
    assignment = TenantAssignment(("a", "b", "c", "never"), (5.0, 3.0, 2.0, 0.0),
                                  (3.0, 2.0, 1.0, 9.0), seed=7)
    codes = assignment.codes(200_000)
    shares = np.bincount(codes, minlength=4) / len(codes)
    assert shares[:3] == pytest.approx([0.5, 0.3, 0.2], abs=0.005)
    assert shares[3] == 0
    # row i's tenant does not depend on how many rows there are
    assert np.array_equal(assignment.codes(1000), codes[:1000])
    # a different seed is a different assignment
    other = TenantAssignment(assignment.tenant_ids, assignment.weights, assignment.bids, seed=8)
    assert (other.codes(1000) != codes[:1000]).mean() > 0.4


def test_assignment_from_a_scenario_uses_its_tenants_and_bids(tmp_path):
    scenario = load_scenario(SYNTHETIC / "planning.toml")
    equal = TenantAssignment.from_scenario(scenario)
    assert equal.tenant_ids == ("chat", "assist", "batch") and equal.weights == (1.0, 1.0, 1.0)
    assert equal.bids == (3.0, 2.0, 1.0)
    only_two = TenantAssignment.from_scenario(scenario, {"batch": 1, "chat": 3})
    assert only_two.tenant_ids == ("batch", "chat") and only_two.bids == (1.0, 3.0)
    with pytest.raises(InputError, match=r"'chta' is not a tenant of .*did you mean 'chat'"):
        TenantAssignment.from_scenario(scenario, {"chta": 1})
    with pytest.raises(InputError, match="positive sum"):
        TenantAssignment.from_scenario(scenario, {"chat": 0})


@pytest.mark.parametrize("text, message", [
    ("chat", "expected ID=WEIGHT"),
    ("chat=x", "weight of 'chat' must be a number"),
    ("chat=-1", "finite number >= 0"),
    ("chat=inf", "finite number >= 0"),
    ("chat=1,chat=2", "appears twice"),
    ("=1", "expected ID=WEIGHT"),
])
def test_bad_weight_tables(text, message):
    with pytest.raises(InputError, match=message):
        parse_tenant_weights(text)


def test_weight_table_parses():
    assert parse_tenant_weights(" chat=5, assist = 3,batch=2.5") == {
        "chat": 5.0, "assist": 3.0, "batch": 2.5}


# --------------------------------------------------------------------------------------------
# Reading


def test_reads_the_azure_schema_into_an_apslab_trace(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:17:04.0319600,3180,8\n"
                    "2023-11-16 18:17:03.9799600,4808,10\n"
                    "\n"
                    "2023-11-16 18:17:05,110,27\n")
    scenario = make_scenario([("a", 1e6, 1e6), ("b", 1e6, 1e6)])
    trace = read_azure_trace(path, TenantAssignment(("a", "b"), (1.0, 1.0), (2.0, 1.0)))
    assert trace.arrival_s.tolist() == pytest.approx([0.052, 0.0, 1.02004], abs=1e-9)
    assert trace.arrival_s[1] == 0.0
    assert trace.prompt_tokens.tolist() == [3180, 4808, 110]
    assert trace.output_tokens.tolist() == [8, 10, 27]
    codes = TenantAssignment(("a", "b"), (1.0, 1.0), (2.0, 1.0)).codes(3)
    assert trace.tenant_ids == [("a", "b")[c] for c in codes]
    assert trace.priority_bid.tolist() == [(2.0, 1.0)[c] for c in codes]
    assert simulate(scenario, trace).completed.all()


def test_timestamps_with_offsets_t_separator_and_plain_seconds():
    columns = parse_azure_rows(rows_of(
        "GeneratedTokens,TIMESTAMP,ContextTokens\n"
        "1,2024-05-10T01:00:00.5+01:00,1\n"
        "1,2024-05-10 00:00:01Z,1\n"
        "1,2024-05-09 23:00:02.123456789-01:00,1\n"), "<t>")
    assert columns.arrival_s.tolist() == pytest.approx([0.0, 0.5, 1.623456789], abs=1e-9)
    seconds = parse_azure_rows(rows_of("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                       "10.5,1,2\n12,3,4\n"), "<t>")
    assert seconds.arrival_s.tolist() == [0.0, 1.5]


@pytest.mark.parametrize("text, message", [
    ("", "empty file, expected the header TIMESTAMP,ContextTokens,GeneratedTokens"),
    ("TIMESTAMP,ContextTokens\n", r"line 1: missing column\(s\) GeneratedTokens"),
    ("arrival_s,tenant_id,prompt_tokens,output_tokens,priority_bid\n0,a,1,1,1\n",
     r"missing column.*an apslab trace\? use --trace-format apslab"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens,Extra\n", r"unexpected column\(s\) 'Extra'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no data rows"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,1,2\n2023-11-16,1,2\n",
     r"<t> line 3: TIMESTAMP must be a date and time"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-16 18:00:00,1,2\n",
     r"<t> line 2: TIMESTAMP '2023-13-16 18:00:00' is not a valid date"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n1.5,1,2\n2023-11-16 18:00:00,1,2\n",
     r"line 3: TIMESTAMP must be seconds like the first row's"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,-1,2\n",
     r"line 2: ContextTokens must be a non-negative whole number of tokens, got '-1'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,1,2.5\n",
     r"line 2: GeneratedTokens must be a non-negative whole number"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,1\n",
     r"line 2: expected 3 fields"),
])
def test_bad_azure_files_name_the_line_and_the_problem(text, message):
    with pytest.raises(InputError, match=message):
        parse_azure_rows(rows_of(text), "<t>")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="trace file not found"):
        read_azure_columns(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a directory"):
        read_azure_columns(tmp_path)


def test_read_trace_file_dispatches_on_the_format(tmp_path):
    scenario = load_scenario(SYNTHETIC / "planning.toml")
    azure = read_trace_file(SYNTHETIC / synthetic_file_name("conv"), scenario, "azure",
                            "chat=1,batch=1", 3)
    assert set(azure.tenant_names) == {"chat", "batch"}
    with pytest.raises(InputError, match="applies to --trace-format azure only"):
        read_trace_file(DATA / "scenarios" / "example_trace.csv", scenario, "apslab", "chat=1")
    with pytest.raises(InputError, match="trace format must be one of apslab, azure"):
        read_trace_file(SYNTHETIC / synthetic_file_name("conv"), scenario, "parquet")
    # an apslab reader given an Azure file says which columns it expected
    with pytest.raises(InputError, match="missing column"):
        read_trace_file(SYNTHETIC / synthetic_file_name("conv"), scenario, "apslab")


# --------------------------------------------------------------------------------------------
# The published trace (committed, unchanged, in data/azure-llm-2023/)


@pytest.mark.parametrize("name", ["code", "conv"])
def test_the_committed_files_are_the_published_ones(name):
    """data/azure-llm-2023/SOURCES.md gives each file's sha256; the copies are unchanged (and,
    when the project's shared copy is next to the checkout, byte-for-byte equal to it)."""
    import hashlib

    sources = (PUBLISHED / "SOURCES.md").read_text(encoding="utf-8")
    data = (PUBLISHED / published_file_name(name)).read_bytes()
    assert hashlib.sha256(data).hexdigest() in sources
    assert "CC-BY 4.0" in sources and "Splitwise" in sources
    if (SHARED_PUBLISHED / published_file_name(name)).is_file():
        assert data == (SHARED_PUBLISHED / published_file_name(name)).read_bytes()


@pytest.mark.parametrize("name, rows", [("code", 8819), ("conv", 19366)])
def test_the_published_files_read_completely(name, rows):
    columns = read_azure_columns(PUBLISHED / published_file_name(name))
    assert len(columns) == rows  # SOURCES.md: rows excluding the header
    assert columns.arrival_s.min() == 0.0
    assert (np.diff(columns.arrival_s) >= 0).all()  # the files are in time order
    assert 3400 < columns.arrival_s.max() < 3600  # about an hour each
    assert (columns.context_tokens > 0).all() and (columns.generated_tokens > 0).all()


def test_the_stored_profiles_are_what_the_published_files_give():
    stored = load_profiles(SYNTHETIC / PROFILES_FILE)
    for name in ("code", "conv"):
        fitted = fit_azure_profile(read_azure_columns(PUBLISHED / published_file_name(name)),
                                   name)
        mine = stored[name]
        assert mine.rate_per_s == pytest.approx(fitted.rate_per_s, rel=1e-12)
        assert mine.off_fraction == pytest.approx(fitted.off_fraction, rel=1e-12)
        assert mine.rate_cv == pytest.approx(fitted.rate_cv, rel=1e-9)
        assert mine.context_quantiles == pytest.approx(fitted.context_quantiles, rel=1e-12)
        assert mine.generated_quantiles == pytest.approx(fitted.generated_quantiles, rel=1e-12)


def test_the_published_trace_replays_through_the_simulator():
    scenario = load_scenario(SYNTHETIC / "planning.toml").with_overrides({"cluster.gpus": 8})
    trace = read_azure_trace(PUBLISHED / published_file_name("code"),
                             TenantAssignment.from_scenario(scenario, seed=1))
    summary = simulate(scenario, trace).summary()
    assert summary["requests"]["submitted"] == 8819
    assert sum(t["submitted"] for t in summary["tenants"].values()) == 8819


# --------------------------------------------------------------------------------------------
# The synthetic trace in data/azure_synthetic/


def test_synthetic_traces_regenerate_byte_for_byte(tmp_path):
    shutil.copy(SYNTHETIC / PROFILES_FILE, tmp_path / PROFILES_FILE)
    paths = write_synthetic_traces(tmp_path)
    assert [p.name for p in paths] == [synthetic_file_name("code"), synthetic_file_name("conv")]
    for path in paths:
        assert path.read_bytes() == (SYNTHETIC / path.name).read_bytes()


def test_profiles_file_cites_its_source_and_is_checked():
    data = json.loads((SYNTHETIC / PROFILES_FILE).read_text())
    assert "Splitwise" in data["source"] and "CC-BY 4.0" in data["source"]
    assert data["quantile_levels"] == list(QUANTILE_LEVELS)


def test_bad_profiles_files(tmp_path):
    path = tmp_path / PROFILES_FILE
    with pytest.raises(InputError, match="profiles file not found"):
        load_profiles(path)
    path.write_text("{}")
    with pytest.raises(InputError, match="not a profiles file"):
        load_profiles(path)
    data = json.loads((SYNTHETIC / PROFILES_FILE).read_text())
    data["profiles"]["conv"]["context_quantiles"].reverse()
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="non-decreasing quantiles"):
        load_profiles(path)


def test_generator_reproduces_the_profile_on_a_long_sample():
    profile = load_profiles(SYNTHETIC / PROFILES_FILE)["conv"]
    ticks, context, generated = generate_azure_style(profile, 20_000.0, seed=5)
    assert (np.diff(ticks) >= 0).all()
    assert len(ticks) / 20_000 == pytest.approx(profile.rate_per_s, rel=0.03)
    levels = [50.0, 90.0, 99.0]
    index = [QUANTILE_LEVELS.index(q) for q in levels]
    assert np.percentile(context, levels) == pytest.approx(
        [profile.context_quantiles[i] for i in index], rel=0.03)
    assert np.percentile(generated, levels) == pytest.approx(
        [profile.generated_quantiles[i] for i in index], rel=0.03)
    assert context.min() >= profile.context_quantiles[0]
    assert generated.max() <= profile.generated_quantiles[-1]


def test_timestamps_are_written_like_the_published_ones():
    assert format_azure_timestamps(np.array([0, 12_345_678, 864_000_000_001]),
                                   "2024-01-01 00:00:00") == [
        "2024-01-01 00:00:00.0000000", "2024-01-01 00:00:01.2345678",
        "2024-01-02 00:00:00.0000001"]


def test_data_readme_shows_the_statistics_the_code_computes():
    readme = (SYNTHETIC / "README.md").read_text()
    published = PUBLISHED if (PUBLISHED / published_file_name("conv")).is_file() else None
    report = statistics_report(SYNTHETIC, published)
    if published is None:  # only the synthetic column can be recomputed here
        for name in ("code", "conv"):
            stats = trace_statistics(read_azure_columns(SYNTHETIC / synthetic_file_name(name)))
            assert f"{stats['requests']:.0f}" in readme
        return
    for line in report.splitlines():
        assert line in readme, f"data/azure_synthetic/README.md lacks {line!r}"


def test_regeneration_command_writes_the_traces(tmp_path):
    shutil.copy(SYNTHETIC / PROFILES_FILE, tmp_path / PROFILES_FILE)
    proc = subprocess.run([sys.executable, "-m", "apslab.io.trace_formats", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "| requests |" in proc.stdout
    assert (tmp_path / synthetic_file_name("conv")).read_bytes() == \
        (SYNTHETIC / synthetic_file_name("conv")).read_bytes()
    proc = subprocess.run([sys.executable, "-m", "apslab.io.trace_formats", "--out",
                           str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


# --------------------------------------------------------------------------------------------
# The command line


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "apslab", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_simulate_replays_an_azure_trace(tmp_path):
    summary_path = tmp_path / "s.json"
    proc = run_cli("simulate", SYNTHETIC / "planning.toml", "--trace",
                   SYNTHETIC / synthetic_file_name("conv"), "--trace-format", "azure",
                   "--tenant-weights", "chat=5,assist=3,batch=2", "--summary", summary_path,
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(summary_path.read_text())
    submitted = {t: row["submitted"] for t, row in summary["tenants"].items()}
    total = sum(submitted.values())
    assert total == summary["requests"]["submitted"]
    assert submitted["chat"] / total == pytest.approx(0.5, abs=0.03)
    assert submitted["batch"] / total == pytest.approx(0.2, abs=0.03)


@pytest.mark.parametrize("extra, message", [
    (["--trace-format", "azure", "--tenant-weights", "chta=1"],
     "'chta' is not a tenant of .*did you mean 'chat'"),
    (["--trace-format", "azure", "--tenant-seed", "-1"], "tenant seed must be in"),
    (["--tenant-weights", "chat=1"], "applies to --trace-format azure only"),
])
def test_bad_azure_options_exit_2_with_one_line(extra, message):
    import re

    proc = run_cli("simulate", SYNTHETIC / "planning.toml", "--trace",
                   SYNTHETIC / synthetic_file_name("conv"), *extra)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and re.search(message, proc.stderr), proc.stderr


def test_azure_format_needs_a_trace():
    proc = run_cli("simulate", DATA / "scenarios" / "example.toml", "--trace-format", "azure")
    assert proc.returncode == 2 and "need a --trace" in proc.stderr


def test_data_doc_shows_published_next_to_synthetic_statistics():
    from apslab.io.trace_formats import statistics_table

    table = {}
    for name in ("code", "conv"):
        table[f"published {name}"] = trace_statistics(
            read_azure_columns(PUBLISHED / published_file_name(name)))
        table[f"synthetic {name}"] = trace_statistics(
            read_azure_columns(SYNTHETIC / synthetic_file_name(name)))
    assert statistics_table(table) in doc_text("docs/data.md")
