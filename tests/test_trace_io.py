import numpy as np
import pytest

from apslab.io.errors import InputError
from apslab.io.trace import Trace, parse_trace_text, read_trace, write_trace

HEADER = "arrival_s,tenant_id,prompt_tokens,output_tokens,priority_bid\n"


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    n = 5000
    trace = Trace.from_columns(
        rng.uniform(0, 1e4, n), [f"tenant-{i % 7}" for i in range(n)],
        rng.integers(0, 4000, n), rng.integers(0, 4000, n), rng.choice([0.5, 1.0, 2.75], n))
    path = tmp_path / "t.csv"
    write_trace(path, trace)
    back = read_trace(path)
    for name in ("arrival_s", "prompt_tokens", "output_tokens", "priority_bid"):
        assert np.array_equal(getattr(back, name), getattr(trace, name))
    assert back.tenant_ids == trace.tenant_ids


def test_reads_many_chunks_and_reports_lines_across_them(tmp_path, monkeypatch):
    import apslab.io.trace as trace_module

    monkeypatch.setattr(trace_module, "_CHUNK_BYTES", 64)
    rows = "".join(f"{i}.5,t{i % 3},{i},{2 * i},1\n" for i in range(300))
    path = tmp_path / "t.csv"
    path.write_text(HEADER + rows)
    trace = read_trace(path)
    assert len(trace) == 300 and trace.prompt_tokens[-1] == 299
    path.write_text(HEADER + rows + "7,t1,x,1,1\n")
    with pytest.raises(InputError, match=r"t\.csv line 302: prompt_tokens must be"):
        read_trace(path)


def test_columns_in_any_order_blank_lines_bom_crlf_and_spaces():
    text = ("\ufefftenant_id, priority_bid,arrival_s,output_tokens,prompt_tokens\r\n"
            " alice ,2,0.5,10,20\r\n\r\nbob,1, 1.25 ,30,40\r\n")
    trace = parse_trace_text(text, "x.csv")
    assert trace.tenant_ids == ["alice", "bob"]
    assert trace.arrival_s.tolist() == [0.5, 1.25]
    assert trace.prompt_tokens.tolist() == [20, 40]
    assert trace.priority_bid.tolist() == [2.0, 1.0]


def test_quoted_tenant_names_use_the_general_csv_path(tmp_path):
    trace = Trace.from_columns([0.0, 1.0], ['a,b', 'say "hi"'], [1, 2], [3, 4], [1.0, 1.0])
    path = tmp_path / "q.csv"
    write_trace(path, trace)
    assert read_trace(path).tenant_ids == ['a,b', 'say "hi"']


def test_whole_number_token_counts_are_accepted():
    trace = parse_trace_text(HEADER + "0,a,12.0,1e3,1\n")
    assert trace.prompt_tokens.tolist() == [12] and trace.output_tokens.tolist() == [1000]


@pytest.mark.parametrize("body, message", [
    ("", "no data rows"),
    ("\n\n", "no data rows"),
    ("0,a,1,1\n", "line 2: expected 5 fields"),
    ("0,a,1,1,1\n0,a,1,1,1,9\n", "line 3: expected 5 fields"),
    ("zero,a,1,1,1\n", "line 2: arrival_s must be a non-negative number, got 'zero'"),
    ("-1,a,1,1,1\n", "line 2: arrival_s must be a non-negative number, got '-1'"),
    ("nan,a,1,1,1\n", "line 2: arrival_s must be finite"),
    ("0,a,1,1,inf\n", "line 2: priority_bid must be finite"),
    ("0,a,1.5,1,1\n", "line 2: prompt_tokens must be a non-negative whole number"),
    ("0,a,1,-3,1\n", "line 2: output_tokens must be a non-negative whole number"),
    ("0,a,1,1,-2\n", "line 2: priority_bid must be a non-negative number"),
    ("0,a,1,1_0,1\n", "line 2: output_tokens must be"),
    ("0,a,1,1,1\n1, ,1,1,1\n", "line 3: tenant_id is missing"),
    ("0,a,1,1,1\n\n1,a,,1,1\n", "line 4: prompt_tokens must be"),
])
def test_bad_rows_name_the_line_and_the_problem(body, message):
    with pytest.raises(InputError, match=message):
        parse_trace_text(HEADER + body, "bad.csv")


@pytest.mark.parametrize("header, message", [
    ("arrival_s,tenant_id,prompt_tokens,output_tokens\n", "missing column.*priority_bid"),
    ("arrival_s,tenant,prompt_tokens,output_tokens,priority_bid\n",
     "missing column.*tenant_id.*unexpected column.*'tenant'"),
    (HEADER.strip() + ",extra\n", "unexpected column.*'extra'"),
    ("arrival_s,arrival_s,tenant_id,prompt_tokens,output_tokens,priority_bid\n", "duplicated"),
])
def test_bad_headers(header, message):
    with pytest.raises(InputError, match="bad.csv line 1: " + message):
        parse_trace_text(header + "0,a,1,1,1\n", "bad.csv")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty file"):
        read_trace(tmp_path / "empty.csv")
    with pytest.raises(InputError, match="not found"):
        read_trace(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a directory"):
        read_trace(tmp_path)
    (tmp_path / "latin1.csv").write_bytes(HEADER.encode() + b"0,caf\xe9,1,1,1\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_trace(tmp_path / "latin1.csv")


def test_compressed_and_subset():
    trace = Trace.from_columns([0.0, 2.0, 4.0], ["a", "b", "a"], [1, 2, 3], [4, 5, 6], 1.0)
    assert trace.compressed(2.0).arrival_s.tolist() == [0.0, 1.0, 2.0]
    assert trace.subset(np.array([True, False, True])).prompt_tokens.tolist() == [1, 3]
    with pytest.raises(ValueError):
        trace.compressed(0.0)


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    trace = Trace.from_columns([0.0], ["a"], [1], [1], 1.0)
    old = os.umask(0o022)
    try:
        write_trace(tmp_path / "t.csv", trace)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.csv").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary left behind
