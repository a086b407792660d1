"""Traces: columns of requests, read from and written to CSV fast and strictly.

A trace CSV has the header ``arrival_s,tenant_id,prompt_tokens,output_tokens,priority_bid``
(columns in any order). Rows may come in any order; request ids are the 0-based data-row
numbers. Everything is held as numpy columns (tenants as integer codes into a list of names), so
a million requests cost tens of megabytes, not an object each.

Reading is strict: a missing or extra column, a non-numeric, negative, NaN or infinite value,
a fractional token count or a missing tenant id raises InputError naming the file and line.
The fast path splits the whole file at once; only when it finds a problem does a slow path walk
the rows to name the first bad line.
"""

from __future__ import annotations

import csv
import io
import math
import os
import secrets
import warnings
from collections.abc import Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:  # orjson's shortest-float formatting is ~5x faster than repr and gives the same digits
    import orjson
except ImportError:  # pragma: no cover - a declared dependency; repr gives the same text
    orjson = None

from ..core._gc import paused_gc
from .errors import InputError, reading

TRACE_COLUMNS = ("arrival_s", "tenant_id", "prompt_tokens", "output_tokens", "priority_bid")


@dataclass
class Trace:
    """A workload as columns; ``tenant_codes`` index ``tenant_names``."""

    arrival_s: np.ndarray
    tenant_codes: np.ndarray
    tenant_names: list[str]
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    priority_bid: np.ndarray
    source: str = field(default="<trace>")

    def __post_init__(self) -> None:
        self.arrival_s = np.ascontiguousarray(self.arrival_s, dtype=np.float64)
        self.tenant_codes = np.ascontiguousarray(self.tenant_codes, dtype=np.int32)
        self.prompt_tokens = np.ascontiguousarray(self.prompt_tokens, dtype=np.int64)
        self.output_tokens = np.ascontiguousarray(self.output_tokens, dtype=np.int64)
        self.priority_bid = np.ascontiguousarray(self.priority_bid, dtype=np.float64)
        n = len(self.arrival_s)
        for name in ("tenant_codes", "prompt_tokens", "output_tokens", "priority_bid"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @classmethod
    def from_columns(cls, arrival_s: Sequence[float], tenant_id: Sequence[str],
                     prompt_tokens: Sequence[int], output_tokens: Sequence[int],
                     priority_bid: Sequence[float] | float = 1.0, source: str = "<trace>"
                     ) -> Trace:
        """Build a trace from per-column sequences (tenant ids as strings)."""
        names = list(dict.fromkeys(tenant_id))
        code_of = {name: code for code, name in enumerate(names)}
        codes = np.fromiter(map(code_of.__getitem__, tenant_id), dtype=np.int32,
                            count=len(tenant_id))
        bids = np.broadcast_to(np.asarray(priority_bid, dtype=np.float64), (len(codes),))
        return cls(np.asarray(arrival_s, dtype=np.float64), codes, names,
                   np.asarray(prompt_tokens, dtype=np.int64),
                   np.asarray(output_tokens, dtype=np.int64), bids, source)

    @property
    def tenant_ids(self) -> list[str]:
        names = self.tenant_names
        return [names[c] for c in self.tenant_codes.tolist()]

    @property
    def kv_tokens(self) -> np.ndarray:
        """prompt + output tokens of each request: what it occupies in the KV cache."""
        return self.prompt_tokens + self.output_tokens

    def compressed(self, load_multiplier: float) -> Trace:
        """The same requests arriving ``load_multiplier`` times as fast (timestamps divided)."""
        if not load_multiplier > 0:
            raise ValueError(f"load_multiplier must be > 0, got {load_multiplier!r}")
        return Trace(self.arrival_s / load_multiplier, self.tenant_codes, self.tenant_names,
                     self.prompt_tokens, self.output_tokens, self.priority_bid, self.source)

    def subset(self, rows: np.ndarray) -> Trace:
        """The rows selected by a boolean mask or an index array, renumbered from 0."""
        return Trace(self.arrival_s[rows], self.tenant_codes[rows], self.tenant_names,
                     self.prompt_tokens[rows], self.output_tokens[rows], self.priority_bid[rows],
                     self.source)


# --------------------------------------------------------------------------------------------
# Reading

# Largest token count accepted: float64 holds every integer up to here exactly.
MAX_TOKENS = 2**53
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class _Layout:
    """Where each column sits in a header."""

    header: tuple[str, ...]
    tenant: int
    numeric: tuple[int, ...]  # arrival_s, prompt_tokens, output_tokens, priority_bid

    @property
    def width(self) -> int:
        return len(self.header)

    def dtype(self, text_width: int) -> list[tuple[str, str]]:
        """The structured dtype numpy reads a chunk into, in the file's column order."""
        kinds = {"arrival_s": "f8", "prompt_tokens": "i8", "output_tokens": "i8",
                 "priority_bid": "f8", "tenant_id": f"U{text_width}"}
        return [(name, kinds[name]) for name in self.header]


_NUMERIC = ("arrival_s", "prompt_tokens", "output_tokens", "priority_bid")
_COUNT_COLUMNS = (1, 2)  # positions within _NUMERIC that hold token counts
# Lines longer than this are read without numpy's fixed-width text column (memory bound).
_MAX_FAST_LINE = 256


def read_trace(path: str | Path) -> Trace:
    """Read a trace CSV strictly; InputError names the file, line and problem.

    The file is read in chunks of about a megabyte, each parsed by numpy's C tokenizer, so a
    million rows take about a second and little more memory than the columns themselves.
    """
    path = Path(path)
    with reading(path, "trace"), open(path, encoding="utf-8-sig") as handle, paused_gc():
        return _read_trace_handle(handle, str(path), lambda: _reopen_csv(path))


def _reopen_csv(path: Path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def parse_trace_text(text: str, source: str = "<trace>") -> Trace:
    """Parse the text of a trace CSV (see :func:`read_trace`)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    return _read_trace_handle(io.StringIO(text), source,
                              lambda: list(csv.reader(io.StringIO(text, newline=""))))


class _QuotedFields(Exception):
    """The file uses CSV quoting: read it with the csv module instead."""


def _read_trace_handle(handle, source: str, csv_rows) -> Trace:
    header_line = handle.readline()
    if not header_line.strip():
        raise InputError(f"{source}: empty file, expected the header {','.join(TRACE_COLUMNS)}")
    if '"' in header_line:
        return _trace_from_csv_rows(csv_rows(), source)
    layout = _layout([h.strip() for h in header_line.split(",")], source)
    names: list[str] = []
    code_of: dict[str, int] = {}
    parts = []
    next_line = 2
    try:
        while True:
            lines = handle.readlines(_CHUNK_BYTES)
            if not lines:
                break
            columns, tenant_fields, line_numbers = _parse_chunk(lines, next_line, layout, source)
            if len(tenant_fields):
                parts.append((*columns, _tenant_codes(tenant_fields, line_numbers, source, names,
                                                      code_of)))
            next_line += len(lines)
    except _QuotedFields:
        return _trace_from_csv_rows(csv_rows(), source)
    return _assemble(parts, names, source)


def _layout(header: list[str], source: str) -> _Layout:
    _check_header(header, source, TRACE_COLUMNS)
    return _Layout(tuple(header), header.index("tenant_id"),
                   tuple(header.index(name) for name in _NUMERIC))


def _parse_chunk(lines: list[str], first_line: int, layout: _Layout, source: str):
    """One chunk of lines -> ((arrival, prompt, output, bid) columns, tenant fields, lines).

    Fast path: numpy's C tokenizer reads the chunk into a structured array, numbers and tenant
    column in one pass, checking that every row has the header's number of fields. If anything
    is off (a parse error, a blank line, a value out of range, a quote) the chunk is read again
    field by field in Python, which names the first bad line or, for inputs the fast path is
    merely stricter about (a token count written "12.0"), returns the values.
    """
    line_numbers = range(first_line, first_line + len(lines))
    longest = max(map(len, lines))
    table = None
    if longest <= _MAX_FAST_LINE:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                table = np.loadtxt(lines, delimiter=",", dtype=layout.dtype(longest),
                                   comments=None, ndmin=1)
        except ValueError:
            table = None
    if table is not None and len(table) == len(lines):
        arrival, prompt = table["arrival_s"], table["prompt_tokens"]
        output, bid = table["output_tokens"], table["priority_bid"]
        if (np.isfinite(arrival).all() and np.isfinite(bid).all() and (arrival >= 0).all()
                and (bid >= 0).all() and (prompt >= 0).all() and (output >= 0).all()
                and (prompt <= MAX_TOKENS).all() and (output <= MAX_TOKENS).all()):
            tenant_fields = table["tenant_id"].tolist()
            if not any('"' in name for name in set(tenant_fields)):
                # Copies, so the chunk's wide text column is freed with the table.
                return ((arrival.copy(), prompt.copy(), output.copy(), bid.copy()),
                        tenant_fields, line_numbers)
    if any('"' in line for line in lines):
        raise _QuotedFields
    kept = [i for i, line in enumerate(lines) if line.strip()]
    if len(kept) < len(lines):
        line_numbers = [first_line + i for i in kept]
        lines = [lines[i] for i in kept]
    numbers, tenant_fields = _parse_rows([line.rstrip("\r\n").split(",") for line in lines],
                                         line_numbers, layout, source)
    return _split_numbers(numbers), tenant_fields, line_numbers


def _split_numbers(numbers: np.ndarray):
    return (numbers[:, 0], numbers[:, 1].astype(np.int64), numbers[:, 2].astype(np.int64),
            numbers[:, 3])


def _parse_rows(rows: list[list[str]], line_numbers, layout: _Layout, source: str):
    """Check and convert rows field by field (slow, exact messages). Returns (numbers, tenants)."""
    numbers = np.empty((len(rows), 4), dtype=np.float64)
    tenants = []
    for r, (row, line) in enumerate(zip(rows, line_numbers, strict=True)):
        if len(row) != layout.width:
            raise InputError(f"{source} line {line}: expected {layout.width} fields "
                             f"({','.join(TRACE_COLUMNS)}), got {len(row)}")
        for c, (name, column) in enumerate(zip(_NUMERIC, layout.numeric, strict=True)):
            numbers[r, c] = _parse_field(row[column], name, c in _COUNT_COLUMNS, source, line)
        tenants.append(row[layout.tenant])
    return numbers, tenants


def _parse_field(text: str, name: str, is_count: bool, source: str, line: int) -> float:
    value = text.strip()
    what = "a non-negative whole number of tokens" if is_count else "a non-negative number"
    try:
        if "_" in value:
            raise ValueError(value)
        number = float(value)
    except ValueError:
        raise InputError(f"{source} line {line}: {name} must be {what}, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{source} line {line}: {name} must be finite, got {value!r}")
    if number < 0:
        raise InputError(f"{source} line {line}: {name} must be {what}, got {value!r}")
    if is_count and (not number.is_integer() or number > MAX_TOKENS):
        raise InputError(f"{source} line {line}: {name} must be {what}"
                         + (" below 2**53" if number > MAX_TOKENS else "") + f", got {value!r}")
    return number


def _tenant_codes(fields: list[str], line_numbers, source: str, names: list[str],
                  code_of: dict[str, int]) -> np.ndarray:
    """Map raw tenant fields to integer codes, adding new names; surrounding spaces ignored."""
    for raw in dict.fromkeys(fields):
        if raw in code_of:
            continue
        name = raw.strip()
        if not name:
            row = fields.index(raw)
            raise InputError(f"{source} line {line_numbers[row]}: tenant_id is missing")
        code = code_of.get(name)
        if code is None:
            code = len(names)
            names.append(name)
            code_of[name] = code
        code_of[raw] = code
    return np.fromiter(map(code_of.__getitem__, fields), dtype=np.int32, count=len(fields))


def _assemble(parts: list[tuple], names: list[str], source: str) -> Trace:
    if not parts:
        raise InputError(f"{source}: no data rows after the header (the trace is empty)")
    arrival, prompt, output, bid, codes = (np.concatenate(column) for column in zip(*parts,
                                                                                    strict=True))
    return Trace(arrival, codes, names, prompt, output, bid, source)


def _trace_from_csv_rows(rows: list[list[str]], source: str) -> Trace:
    """The slow, fully general path for files with quoted fields."""
    if not rows:
        raise InputError(f"{source}: empty file, expected the header {','.join(TRACE_COLUMNS)}")
    layout = _layout([h.strip() for h in rows[0]], source)
    kept = [(i + 1, row) for i, row in enumerate(rows) if i and any(f.strip() for f in row)]
    if not kept:
        raise InputError(f"{source}: no data rows after the header (the trace is empty)")
    line_numbers = [i for i, _ in kept]
    numbers, tenant_fields = _parse_rows([row for _, row in kept], line_numbers, layout, source)
    names: list[str] = []
    codes = _tenant_codes(tenant_fields, line_numbers, source, names, {})
    return _assemble([(*_split_numbers(numbers), codes)], names, source)


def _check_header(header: list[str], source: str, expected: Sequence[str]) -> None:
    if header == list(expected):
        return
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    problems = []
    if missing:
        problems.append("missing column(s) " + ", ".join(missing))
    if extra:
        problems.append("unexpected column(s) " + ", ".join(repr(c) for c in extra))
    if duplicated:
        problems.append("duplicated column(s) " + ", ".join(duplicated))
    if problems:
        raise InputError(f"{source} line 1: {'; '.join(problems)} "
                         f"(expected header {','.join(expected)})")


# --------------------------------------------------------------------------------------------
# Writing


def format_floats(values: np.ndarray) -> list[str]:
    """Each float as Python's repr: the shortest text that reads back to the same double.

    Float-to-text is most of the time spent writing REQUESTS.csv. orjson writes the same
    shortest, closest digits (Ryu) several times faster; the two spell the number the same way
    for 1e-4 <= |x| < 1e16 and for zero, and the rest (exponent notation, NaN, infinities) are
    passed to repr. tests/test_float_text.py checks the equality.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    if orjson is None or not len(values):
        return list(map(repr, values.tolist()))
    texts = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode().split(",")
    magnitude = np.abs(values)
    elsewhere = ~((magnitude >= 1e-4) & (magnitude < 1e16)) & (values != 0)
    for i in np.flatnonzero(elsewhere).tolist():
        texts[i] = repr(float(values[i]))
    return texts


def csv_field(text: str) -> str:
    """Quote a field for CSV if it needs it (names are quoted once, not once per row)."""
    if any(ch in text for ch in ',"\r\n') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


@contextmanager
def atomic_writer(path: str | Path):
    """A text handle on a temporary file beside ``path``, renamed into place on success.

    A failed or interrupted write leaves the old file (or none) behind, never a partial one.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        # Mode 0o666 minus the umask, as for any new file (mkstemp would make it 0o600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileNotFoundError:
        raise InputError(f"{path}: cannot write: directory {directory} does not exist") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(f"{path}: cannot write: {exc.strerror}") from None
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_writer(path) as handle:
        handle.write(text)


def write_trace(path: str | Path, trace: Trace, chunk_rows: int = 1 << 16) -> None:
    """Write a trace CSV that :func:`read_trace` reads back to identical columns."""
    names = [csv_field(name) for name in trace.tenant_names]
    with atomic_writer(path) as handle:
        handle.write(",".join(TRACE_COLUMNS) + "\n")
        for lo in range(0, len(trace), chunk_rows):
            hi = lo + chunk_rows
            rows = zip(
                format_floats(trace.arrival_s[lo:hi]),
                map(names.__getitem__, trace.tenant_codes[lo:hi].tolist()),
                map(str, trace.prompt_tokens[lo:hi].tolist()),
                map(str, trace.output_tokens[lo:hi].tolist()),
                format_floats(trace.priority_bid[lo:hi]),
                strict=True,
            )
            handle.write("\n".join(map(",".join, rows)) + "\n")
