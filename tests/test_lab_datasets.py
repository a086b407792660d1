"""The published A100 measurements: copied faithfully, loaded strictly, every row cited."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import DATA, SHARED_DATA

from apslab.io.errors import InputError
from apslab.lab.datasets import A100_DECODE_COLUMNS, load_a100_decode_throughput


@pytest.fixture(scope="module")
def data():
    return load_a100_decode_throughput()


def test_the_table_loads_with_every_row_and_source(data):
    assert len(data) == 168
    assert data.sources() == [
        "optimum-benchmark", "lmdeploy-turbomind", "nemo-framework-llama2",
        "argonne-llm-inference-bench-deepspeed-mii", "argonne-llm-inference-bench-tensorrt-llm",
        "argonne-llm-inference-bench-vllm", "tensorrt-llm-perf-v0.6.1"]
    assert (data.decode_tokens_per_s > 0).all()
    assert all(note.strip() for note in data.notes.tolist())


def test_only_optimum_benchmark_timed_decode_alone(data):
    assert set(data.source[data.decode_only].tolist()) == {"optimum-benchmark"}
    assert sorted(set(data.select(source="optimum-benchmark").variant.tolist())) == [
        "fp16", "fp16+bt", "fp16+fa2"]


@pytest.mark.skipif(not (SHARED_DATA / "a100_decode_throughput.csv").exists(),
                    reason="the shared published-data folder is not next to this checkout")
def test_the_copy_is_byte_for_byte_the_published_table():
    ours = (DATA / "a100_decode_throughput.csv").read_bytes()
    assert ours == (SHARED_DATA / "a100_decode_throughput.csv").read_bytes()


def test_every_source_is_cited_in_sources_md(data):
    sources_md = (DATA / "SOURCES.md").read_text()
    argonne = "argonne-llm-inference-bench-"
    for source in data.sources():
        if source.startswith(argonne):  # cited once as argonne-llm-inference-bench-{a,b,c}
            framework = source.removeprefix(argonne)
            assert f"`{argonne}{{" in sources_md and framework in sources_md, source
        else:
            assert f"`{source}`" in sources_md, source
    assert "https://" in sources_md and "commit" in sources_md


def test_select_and_series(data):
    vllm = data.select(source="argonne-llm-inference-bench-vllm", model_contains="LLAMA")
    assert len(vllm) == 20
    keys = vllm.series_keys()
    assert len(keys) == 5
    series = vllm.series(keys[0])
    assert series.batch_size.tolist() == [1, 16, 32, 64]
    with pytest.raises(KeyError, match="no source 'vllm'"):
        data.select(source="vllm")


def _write(tmp_path, rows, header=A100_DECODE_COLUMNS):
    path = tmp_path / "measurements.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD = ["src", "Llama-2-7b", "A100", "fp16", "128", "128", "16", "1017.62", "published"]


@pytest.mark.parametrize(("field", "value", "message"), [
    (6, "16.5", "line 3: batch_size must be a whole number, got '16.5'"),
    (4, "0", "line 3: input_len must be >= 1, got 0"),
    (7, "fast", "line 3: decode_tokens_per_s must be a number, got 'fast'"),
    (7, "-3", "line 3: decode_tokens_per_s must be finite and > 0"),
    (7, "nan", "line 3: decode_tokens_per_s must be finite and > 0"),
    (8, "  ", "line 3: notes is empty (every row keeps its citation)"),
    (0, "", "line 3: source is empty"),
])
def test_bad_rows_are_named_by_line(tmp_path, field, value, message):
    bad = list(GOOD)
    bad[field] = value
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_a100_decode_throughput(path)


def test_a_wrong_header_short_row_or_empty_file_is_an_error(tmp_path):
    renamed = ("source", "model", "gpu", "precision", "input_len", "output_len", "batch",
               "decode_tokens_per_s", "notes")
    with pytest.raises(InputError, match="line 1: header must be"):
        load_a100_decode_throughput(_write(tmp_path, [GOOD], header=renamed))
    with pytest.raises(InputError, match="line 2: expected 9 fields, got 8"):
        load_a100_decode_throughput(_write(tmp_path, [GOOD[:-1]]))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty file"):
        load_a100_decode_throughput(empty)
    with pytest.raises(InputError, match="no data rows"):
        load_a100_decode_throughput(_write(tmp_path, []))
    with pytest.raises(InputError, match="not found"):
        load_a100_decode_throughput(tmp_path / "missing.csv")


def test_a_good_file_round_trips(tmp_path):
    data = load_a100_decode_throughput(_write(tmp_path, [GOOD]))
    assert data.batch_size.tolist() == [16]
    assert np.isclose(data.decode_tokens_per_s[0], 1017.62)
    assert not data.decode_only[0]
