"""Measurement files for calibrating a GPU: strict readers of the formats ``apslab calibrate``
takes, returning plain columns (the fitting is :mod:`apslab.sim.calibration`'s).

* **Throughput CSV**, the columns of ``data/a100_decode_throughput.csv``:
  ``source,model,gpu,precision,input_len,output_len,batch_size,decode_tokens_per_s,notes``:
  output tokens/s of a static batch of ``batch_size`` requests of ``input_len`` prompt and
  ``output_len`` output tokens; a row whose notes say "prefill excluded" timed the decode phase
  alone (kind ``decode_throughput``), any other includes the prefill (kind ``throughput``).
* **First-token CSV**, the columns of ``data/a100_first_token_latency.csv``, with
  ``first_token_s`` in place of ``decode_tokens_per_s``: seconds to the first token (kind
  ``first_token``).
* **vLLM benchmark JSON**, what ``vllm bench serve --save-result`` writes
  (vllm/benchmarks/serve.py), for a run made with ``--max-concurrency 1``: every request then has
  the GPU to itself, so its TTFT is one prefill of its prompt and its decode rate is one
  request's decode iterations: exactly what the roofline predicts for a batch of one. With
  ``--save-detailed`` the file holds per-request ``input_lens``, ``output_lens``, ``ttfts``
  (seconds) and ``itls`` (seconds between tokens): each successful request gives a
  ``first_token`` row (its prompt, its TTFT) and, with two or more output tokens, a
  ``decode_throughput`` row ((O - 1) / sum of its ITLs). Without them, the run's means give one
  row of each: the mean prompt (total_input_tokens / completed) with ``mean_ttft_ms``, and
  1000 / ``mean_tpot_ms`` tokens/s at the mean lengths (exact when every request has the same
  lengths, as with ``--dataset-name random``; an approximation otherwise). Runs at higher
  concurrency are refused: their requests share iterations, so a TTFT or TPOT is no longer one
  request's cost, and fitting them would need a replay of the whole run.

Any problem is an :class:`~apslab.io.errors.InputError` naming the file and the line (CSV, or
JSON syntax) or the key and request (JSON content).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, reading

THROUGHPUT = "throughput"
DECODE_THROUGHPUT = "decode_throughput"
FIRST_TOKEN = "first_token"

THROUGHPUT_COLUMNS = ("source", "model", "gpu", "precision", "input_len", "output_len",
                      "batch_size", "decode_tokens_per_s", "notes")
FIRST_TOKEN_COLUMNS = ("source", "model", "gpu", "precision", "input_len", "output_len",
                       "batch_size", "first_token_s", "notes")
INTEGER_COLUMNS = ("input_len", "output_len", "batch_size")
VALUE_COLUMNS = ("decode_tokens_per_s", "first_token_s")


# --------------------------------------------------------------------------------------------
# Strict CSV reading (shared with apslab.lab.datasets)


def parse_field(path: str | Path, line: int, name: str, text: str, require_text: bool = True):
    """One CSV field: whole numbers >= 1 for lengths and batch sizes, finite numbers > 0 for
    values, non-empty text (when ``require_text``) for the rest; else an InputError naming the
    file, line and column."""
    if name in INTEGER_COLUMNS:
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"{path} line {line}: {name} must be a whole number, "
                             f"got {text!r}") from None
        if value < 1:
            raise InputError(f"{path} line {line}: {name} must be >= 1, got {value}")
        return value
    if name in VALUE_COLUMNS:
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{path} line {line}: {name} must be a number, got {text!r}") \
                from None
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{path} line {line}: {name} must be finite and > 0, got {text!r}")
        return value
    if require_text and not text.strip():
        raise InputError(f"{path} line {line}: {name} is empty (every row keeps its citation)")
    return text


def read_csv_columns(path: str | Path, columns: tuple[str, ...], require_text: bool = True
                     ) -> tuple[dict[str, list], list[int]]:
    """The file's rows as ``{column: values}`` and each row's line number. The header must be
    exactly ``columns``; every field is checked with :func:`parse_field`."""
    path = Path(path)
    out: dict[str, list] = {name: [] for name in columns}
    lines: list[int] = []
    with reading(path, "measurements"), path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file, expected the header {','.join(columns)}")
        if tuple(header) != columns:
            raise InputError(f"{path} line 1: header must be {','.join(columns)}, "
                             f"got {','.join(header)}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(columns):
                raise InputError(f"{path} line {line}: expected {len(columns)} fields, "
                                 f"got {len(row)}")
            for name, text in zip(columns, row, strict=True):
                out[name].append(parse_field(path, line, name, text, require_text))
            lines.append(line)
    if not lines:
        raise InputError(f"{path}: no data rows")
    return out, lines


def column_arrays(columns: dict[str, list]) -> dict[str, np.ndarray]:
    """:func:`read_csv_columns`' lists as numpy columns: int64 lengths and batch sizes,
    float64 measured values, object arrays of text."""
    return {name: np.array(values, dtype=np.int64 if name in INTEGER_COLUMNS
                           else np.float64 if name in VALUE_COLUMNS else object)
            for name, values in columns.items()}


# --------------------------------------------------------------------------------------------
# Measurement rows


KINDS = (THROUGHPUT, DECODE_THROUGHPUT, FIRST_TOKEN)
_COLUMNS = ("kind", "input_len", "output_len", "batch_size", "value", "label", "where")


@dataclass(frozen=True)
class Measurements:
    """Columns of measurements, one row each: what ``apslab calibrate`` fits.

    ``kind`` is "throughput" (output tokens/s including prefill: B*O / batch time),
    "decode_throughput" (B*(O-1) / decode time, prefill excluded) or "first_token" (seconds to
    the first token: the prefill iteration); then the batch's shape, the measured ``value``
    (tokens/s or seconds), a ``label`` (the source, for reports) and ``where`` each row was
    read (file and line, or file and request; empty for rows made in code).
    """

    kind: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    batch_size: np.ndarray
    value: np.ndarray
    label: np.ndarray
    where: np.ndarray

    def __len__(self) -> int:
        return len(self.value)

    @staticmethod
    def from_lists(kind, input_len, output_len, batch_size, value, label, where
                   ) -> Measurements:
        return Measurements(np.array(kind, dtype=object), np.array(input_len, dtype=np.int64),
                            np.array(output_len, dtype=np.int64),
                            np.array(batch_size, dtype=np.int64),
                            np.array(value, dtype=np.float64), np.array(label, dtype=object),
                            np.array(where, dtype=object))

    @staticmethod
    def concatenate(parts: list[Measurements]) -> Measurements:
        return Measurements(*(np.concatenate([getattr(p, name) for p in parts])
                              for name in _COLUMNS))

    def select(self, mask) -> Measurements:
        """The rows where ``mask`` is true."""
        mask = np.asarray(mask, dtype=bool)
        return Measurements(*(getattr(self, name)[mask] for name in _COLUMNS))


def measurements(kind, input_len, output_len, batch_size, value, label="") -> Measurements:
    """Measurements from columns (scalars broadcast); ``kind`` one of :data:`KINDS`."""
    columns = np.broadcast_arrays(np.asarray(kind, dtype=object),
                                  np.asarray(input_len, dtype=np.int64),
                                  np.asarray(output_len, dtype=np.int64),
                                  np.asarray(batch_size, dtype=np.int64),
                                  np.asarray(value, dtype=np.float64),
                                  np.asarray(label, dtype=object))
    kinds, inputs, outputs, batches, values, labels = (np.atleast_1d(np.array(c)) for c in columns)
    unknown = sorted(set(kinds.tolist()) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown measurement kind(s) {unknown}; expected one of {KINDS}")
    return Measurements(kinds, inputs, outputs, batches, values, labels,
                        np.full(len(values), "", dtype=object))


def read_measurement_file(path: str | Path, sources: list[str] | None = None
                          ) -> Measurements:
    """A measurement file in any supported format (see the module docstring): ``.json`` is a
    vLLM benchmark result, ``.csv`` a throughput or first-token table (told apart by its
    header). ``sources`` keeps only CSV rows of those sources."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_vllm_bench_json(path)
    if path.suffix.lower() != ".csv":
        raise InputError(f"{path}: expected a .csv measurement table or a .json vLLM benchmark "
                         "result")
    with reading(path, "measurements"), path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    if header is not None and tuple(header) == FIRST_TOKEN_COLUMNS:
        rows = read_first_token_csv(path)
    else:
        rows = read_throughput_csv(path)
    if sources:
        rows = rows.select(np.isin(rows.label, sources))
    return rows


def read_throughput_csv(path: str | Path) -> Measurements:
    """A table in the columns of data/a100_decode_throughput.csv (text fields may be empty)."""
    columns, lines = read_csv_columns(path, THROUGHPUT_COLUMNS, require_text=False)
    kinds = [DECODE_THROUGHPUT if "prefill excluded" in notes else THROUGHPUT
             for notes in columns["notes"]]
    return Measurements.from_lists(kinds, columns["input_len"], columns["output_len"],
                                   columns["batch_size"], columns["decode_tokens_per_s"],
                                   _labels(columns["source"], path),
                                   [f"{path} line {line}" for line in lines])


def read_first_token_csv(path: str | Path) -> Measurements:
    """A table in the columns of data/a100_first_token_latency.csv (text fields may be empty).
    Only the first token is timed, so every row is a prefill of ``batch_size`` prompts."""
    columns, lines = read_csv_columns(path, FIRST_TOKEN_COLUMNS, require_text=False)
    return Measurements.from_lists([FIRST_TOKEN] * len(lines), columns["input_len"],
                                   [1] * len(lines), columns["batch_size"],
                                   columns["first_token_s"], _labels(columns["source"], path),
                                   [f"{path} line {line}" for line in lines])


def _labels(sources: list[str], path: Path | str) -> list[str]:
    return [source or Path(path).name for source in sources]


# --------------------------------------------------------------------------------------------
# vLLM's benchmark result


def read_vllm_bench_json(path: str | Path) -> Measurements:
    """The measurements in a ``vllm bench serve --save-result`` file made with
    ``--max-concurrency 1`` (see the module docstring)."""
    path = Path(path)
    with reading(path, "vLLM benchmark"):
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} line {exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected the JSON object vllm bench serve --save-result "
                         "writes")
    concurrency = data.get("max_concurrency", "missing")
    if concurrency != 1:
        raise InputError(f"{path}: max_concurrency is {concurrency!r}; apslab calibrate reads "
                         "runs made with --max-concurrency 1, where each request has the GPU "
                         "to itself (its TTFT is one prefill, its TPOT one request's decode)")
    label = str(data.get("label") or data.get("model_id") or path.stem)
    if all(key in data for key in ("input_lens", "output_lens", "ttfts", "itls")):
        return _detailed_rows(path, data, label)
    return _mean_rows(path, data, label)


def _number(path: Path, data: dict, key: str, positive: bool = True) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{path}: {key} must be a number, got {value!r}")
    if positive and value <= 0:
        raise InputError(f"{path}: {key} must be > 0, got {value!r}")
    return float(value)


def _detailed_rows(path: Path, data: dict, label: str) -> Measurements:
    arrays = {key: data[key] for key in ("input_lens", "output_lens", "ttfts", "itls")}
    for key, values in arrays.items():
        if not isinstance(values, list):
            raise InputError(f"{path}: {key} must be a list, got {type(values).__name__}")
    count = len(arrays["input_lens"])
    if any(len(values) != count for values in arrays.values()):
        raise InputError(f"{path}: input_lens, output_lens, ttfts and itls must have one entry "
                         f"per request, got {', '.join(str(len(v)) for v in arrays.values())}")
    errors = data.get("errors") or [""] * count
    rows: dict[str, list[Any]] = {k: [] for k in ("kind", "p", "o", "b", "value", "where")}
    for i in range(count):
        if errors[i] if i < len(errors) else False:
            continue  # a failed request: vLLM keeps it in the arrays with its error text
        p, o, ttft, itl = (arrays[k][i] for k in ("input_lens", "output_lens", "ttfts", "itls"))
        where = f"{path} request {i}"
        if not _whole(p) or not _whole(o) or not (isinstance(ttft, (int, float))
                                                  and math.isfinite(ttft) and ttft > 0):
            raise InputError(f"{where}: needs whole input_lens and output_lens >= 1 and a "
                             f"ttft > 0 (seconds), got {p!r}, {o!r}, {ttft!r}")
        rows["kind"].append(FIRST_TOKEN)
        rows["p"].append(int(p))
        rows["o"].append(1)
        rows["b"].append(1)
        rows["value"].append(float(ttft))
        rows["where"].append(where)
        if int(o) >= 2:
            if not isinstance(itl, list) or not itl or not all(
                    isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in itl):
                raise InputError(f"{where}: itls must be a non-empty list of seconds between "
                                 f"tokens for a request of {int(o)} output tokens")
            decode_s = float(sum(itl))
            if decode_s <= 0:
                raise InputError(f"{where}: its itls add up to {decode_s!r} s")
            rows["kind"].append(DECODE_THROUGHPUT)
            rows["p"].append(int(p))
            rows["o"].append(int(o))
            rows["b"].append(1)
            rows["value"].append((int(o) - 1) / decode_s)
            rows["where"].append(where)
    if not rows["kind"]:
        raise InputError(f"{path}: no successful request to fit")
    return Measurements.from_lists(rows["kind"], rows["p"], rows["o"], rows["b"],
                                   rows["value"], [label] * len(rows["kind"]), rows["where"])


def _mean_rows(path: Path, data: dict, label: str) -> Measurements:
    completed = _number(path, data, "completed")
    if not float(completed).is_integer():
        raise InputError(f"{path}: completed must be a whole number, got {completed!r}")
    prompt = round(_number(path, data, "total_input_tokens") / completed)
    output = round(_number(path, data, "total_output_tokens") / completed)
    if prompt < 1 or output < 1:
        raise InputError(f"{path}: the mean prompt and output lengths must be >= 1 token")
    ttft = _number(path, data, "mean_ttft_ms") / 1000
    kinds, values = [FIRST_TOKEN], [ttft]
    outputs = [1]
    if output >= 2:
        kinds.append(DECODE_THROUGHPUT)
        values.append(1000 / _number(path, data, "mean_tpot_ms"))
        outputs.append(output)
    where = f"{path} (means over {int(completed)} requests)"
    return Measurements.from_lists(kinds, [prompt] * len(kinds), outputs, [1] * len(kinds),
                                   values, [label] * len(kinds), [where] * len(kinds))


def _whole(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 1) or (
        isinstance(value, float) and value.is_integer() and value >= 1)
