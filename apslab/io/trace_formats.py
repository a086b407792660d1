"""Other trace formats: the Azure LLM inference trace, and a synthetic trace in its schema.

The Azure LLM inference traces (Patel et al., "Splitwise", ISCA 2024; CC-BY 4.0) have the header
``TIMESTAMP,ContextTokens,GeneratedTokens``: an invocation time, a prompt length and an output
length, and no tenant. :func:`read_azure_trace` turns one into an apslab :class:`Trace`:

* ``arrival_s`` = TIMESTAMP minus the earliest TIMESTAMP in the file, in seconds. A TIMESTAMP is
  ``YYYY-MM-DD HH:MM:SS[.fraction]`` (``T`` may replace the space; up to 9 fractional digits; an
  optional ``Z`` or ``+HH:MM`` offset is applied), or a plain number of seconds for every row.
* ``prompt_tokens`` = ContextTokens, ``output_tokens`` = GeneratedTokens (whole numbers >= 0).
* The tenant of a row is chosen by a seeded hash of its row number (the **tenant-assignment
  rule**): ``u = (SplitMix64(seed)'s (row+1)-th output >> 11) / 2**53`` with row the 0-based data
  row in file order, and the row goes to the first tenant whose cumulative weight share exceeds
  ``u``. So each row's tenant depends only on the seed, its row number and the weights table -
  not on the other rows, the order the rows are processed in, or a load multiplier - and tenants
  receive rows in proportion to their weights. The default table gives every scenario tenant
  weight 1. Each row's bid is its tenant's ``priority_bid`` from the scenario.

:func:`generate_azure_style` draws a synthetic trace in the same schema from a profile fitted to a
published file (:func:`fit_azure_profile`): Poisson arrivals whose rate is constant within each
minute and gamma-distributed across minutes (the published per-minute mean and dispersion), and
independent lognormal token counts clipped to the published range. ``python -m
apslab.io.trace_formats`` regenerates ``data/azure_synthetic/`` byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, reading
from .trace import Trace, atomic_writer

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")

_TIMESTAMP = re.compile(
    r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d(?:\.\d{1,9})?)(Z|[+-]\d\d:?\d\d)?")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_COUNT = re.compile(r"\d+")


# --------------------------------------------------------------------------------------------
# Tenant assignment

_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def splitmix64_uniforms(seed: int, count: int) -> np.ndarray:
    """The first ``count`` outputs of Vigna's SplitMix64 seeded with ``seed``, as floats in [0, 1).

    Output k (1-based) mixes ``seed + k * 0x9E3779B97F4A7C15 (mod 2**64)``; its top 53 bits make
    the float. Written out here (not numpy's generators) so the assignment is the same in any
    numpy version and any language.
    """
    if not 0 <= seed <= _MASK64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    k = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + k * np.uint64(_GOLDEN_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class TenantAssignment:
    """Which tenant each row of a tenant-less trace belongs to, and the bid its requests carry."""

    tenant_ids: tuple[str, ...]
    weights: tuple[float, ...]
    bids: tuple[float, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tenant_ids:
            raise InputError("tenant assignment: no tenants to assign rows to")
        if not len(self.tenant_ids) == len(self.weights) == len(self.bids):
            raise ValueError("tenant_ids, weights and bids must have the same length")
        if any(not (math.isfinite(w) and w >= 0) for w in self.weights) or not sum(self.weights):
            raise InputError(f"tenant weights must be finite numbers >= 0 with a positive sum, "
                             f"got {dict(zip(self.tenant_ids, self.weights, strict=True))}")
        if not 0 <= self.seed <= _MASK64:
            raise InputError(f"tenant seed must be in [0, 2**64), got {self.seed}")

    @classmethod
    def from_scenario(cls, scenario, weights: Mapping[str, float] | None = None, seed: int = 0
                      ) -> TenantAssignment:
        """Assign among ``scenario``'s tenants (all with weight 1 by default), bids from it."""
        bid_of = {t.id: t.priority_bid for t in scenario.tenants}
        if weights is None:
            weights = dict.fromkeys(bid_of, 1.0)
        for tenant_id in weights:
            if tenant_id not in bid_of:
                import difflib

                close = difflib.get_close_matches(tenant_id, list(bid_of), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InputError(f"tenant weights: {tenant_id!r} is not a tenant of "
                                 f"{scenario.source}{hint}; tenants: {', '.join(bid_of)}")
        ids = tuple(weights)
        return cls(ids, tuple(float(weights[i]) for i in ids), tuple(bid_of[i] for i in ids),
                   seed)

    def codes(self, count: int) -> np.ndarray:
        """The tenant index (into ``tenant_ids``) of rows 0 .. count-1."""
        weights = np.asarray(self.weights, dtype=np.float64)
        shares = np.cumsum(weights) / weights.sum()
        shares[-1] = 1.0
        return np.searchsorted(shares, splitmix64_uniforms(self.seed, count),
                               side="right").astype(np.int32)


def parse_tenant_weights(text: str) -> dict[str, float]:
    """``"premium=2,standard=1,batch=1"`` -> {id: weight}; a bad entry is an InputError."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"--tenant-weights {text!r}: expected ID=WEIGHT[,ID=WEIGHT...], "
                             f"got {part!r}")
        try:
            weight = float(value)
        except ValueError:
            raise InputError(f"--tenant-weights {text!r}: weight of {name!r} must be a number, "
                             f"got {value.strip()!r}") from None
        if not (math.isfinite(weight) and weight >= 0):
            raise InputError(f"--tenant-weights {text!r}: weight of {name!r} must be a finite "
                             f"number >= 0, got {value.strip()!r}")
        if name in weights:
            raise InputError(f"--tenant-weights {text!r}: {name!r} appears twice")
        weights[name] = weight
    return weights


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class AzureColumns:
    """An Azure-format trace as columns: seconds from the earliest row, and token counts."""

    arrival_s: np.ndarray
    context_tokens: np.ndarray
    generated_tokens: np.ndarray
    source: str = "<azure trace>"

    def __len__(self) -> int:
        return len(self.arrival_s)

    def to_trace(self, assignment: TenantAssignment) -> Trace:
        """An apslab trace, tenants and bids given by ``assignment`` (see the module docstring)."""
        codes = assignment.codes(len(self))
        bids = np.asarray(assignment.bids, dtype=np.float64)[codes]
        return Trace(self.arrival_s, codes, list(assignment.tenant_ids), self.context_tokens,
                     self.generated_tokens, bids, self.source)


def read_azure_trace(path: str | Path, assignment: TenantAssignment) -> Trace:
    """Read an Azure LLM inference trace CSV and assign its rows to tenants."""
    return read_azure_columns(path).to_trace(assignment)


TRACE_FORMATS = ("apslab", "azure")


def read_trace_file(path: str | Path, scenario, trace_format: str = "apslab",
                    tenant_weights: str | Mapping[str, float] | None = None,
                    tenant_seed: int = 0) -> Trace:
    """Read a trace in either format; Azure rows are assigned to ``scenario``'s tenants.

    ``tenant_weights`` is a table {id: weight} or its command-line text ``"a=2,b=1"``.
    """
    if trace_format == "apslab":
        if tenant_weights:
            raise InputError("--tenant-weights applies to --trace-format azure only (apslab "
                             "traces name each row's tenant)")
        from .trace import read_trace

        return read_trace(path)
    if trace_format != "azure":
        raise InputError(f"trace format must be one of {', '.join(TRACE_FORMATS)}, "
                         f"got {trace_format!r}")
    if isinstance(tenant_weights, str):
        tenant_weights = parse_tenant_weights(tenant_weights) if tenant_weights.strip() else None
    return read_azure_trace(path, TenantAssignment.from_scenario(scenario, tenant_weights,
                                                                 tenant_seed))


def read_azure_columns(path: str | Path) -> AzureColumns:
    """Read ``TIMESTAMP,ContextTokens,GeneratedTokens`` strictly; InputError names file and line."""
    path = Path(path)
    try:
        with reading(path, "Azure trace"), open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle))
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV file: {exc}") from None
    return parse_azure_rows(rows, str(path))


def parse_azure_rows(rows: list[list[str]], source: str) -> AzureColumns:
    """Check and convert the rows of an Azure-format CSV (header first)."""
    if not rows or not any(field.strip() for field in rows[0]):
        raise InputError(f"{source}: empty file, expected the header {','.join(AZURE_COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in AZURE_COLUMNS if c not in header]
    extra = [c for c in header if c not in AZURE_COLUMNS]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if missing or extra or duplicated:
        problems = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + (
            [f"unexpected column(s) {', '.join(map(repr, extra))}"] if extra else []) + (
            [f"duplicated column(s) {', '.join(duplicated)}"] if duplicated else [])
        hint = (" (an apslab trace? use --trace-format apslab)"
                if "arrival_s" in header else "")
        raise InputError(f"{source} line 1: {'; '.join(problems)} (expected the Azure header "
                         f"{','.join(AZURE_COLUMNS)}){hint}")
    col = {name: header.index(name) for name in AZURE_COLUMNS}
    data = [(number, row) for number, row in enumerate(rows[1:], start=2)
            if any(field.strip() for field in row)]
    if not data:
        raise InputError(f"{source}: no data rows after the header (the trace is empty)")
    width = len(header)
    for line, row in data:
        if len(row) != width:
            raise InputError(f"{source} line {line}: expected {width} fields "
                             f"({','.join(header)}), got {len(row)}")
    stamps = [row[col["TIMESTAMP"]].strip() for _, row in data]
    lines = [line for line, _ in data]
    arrival_s = _seconds_from_first(stamps, lines, source)
    context = _counts([row[col["ContextTokens"]] for _, row in data], "ContextTokens", lines,
                      source)
    generated = _counts([row[col["GeneratedTokens"]] for _, row in data], "GeneratedTokens",
                        lines, source)
    return AzureColumns(arrival_s, context, generated, source)


def _counts(fields: list[str], name: str, lines: list[int], source: str) -> np.ndarray:
    values = [f.strip() for f in fields]
    for value, line in zip(values, lines, strict=True):
        if not _COUNT.fullmatch(value):
            raise InputError(f"{source} line {line}: {name} must be a non-negative whole number "
                             f"of tokens, got {value!r}")
    counts = np.array(values, dtype=np.float64)
    if (counts > 2**53).any():
        line = lines[int(np.flatnonzero(counts > 2**53)[0])]
        raise InputError(f"{source} line {line}: {name} is too large (over 2**53 tokens)")
    return counts.astype(np.int64)


def _seconds_from_first(stamps: list[str], lines: list[int], source: str) -> np.ndarray:
    """TIMESTAMP column -> seconds after the earliest one (datetimes, or plain seconds)."""
    if _NUMBER.fullmatch(stamps[0]):
        for stamp, line in zip(stamps, lines, strict=True):
            if not _NUMBER.fullmatch(stamp):
                raise InputError(f"{source} line {line}: TIMESTAMP must be seconds like the first "
                                 f"row's ({stamps[0]!r}), got {stamp!r}")
        seconds = np.array(stamps, dtype=np.float64)
        if not np.isfinite(seconds).all():
            line = lines[int(np.flatnonzero(~np.isfinite(seconds))[0])]
            raise InputError(f"{source} line {line}: TIMESTAMP is not a finite number")
        return seconds - seconds.min()
    naive: list[str] = []
    offsets_min = np.zeros(len(stamps), dtype=np.int64)
    for i, (stamp, line) in enumerate(zip(stamps, lines, strict=True)):
        match = _TIMESTAMP.fullmatch(stamp)
        if match is None:
            raise InputError(f"{source} line {line}: TIMESTAMP must be a date and time like "
                             f"'2023-11-16 18:17:03.9799600' (or seconds), got {stamp!r}")
        date, clock, zone = match.groups()
        naive.append(f"{date}T{clock}")
        if zone and zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offsets_min[i] = sign * (int(digits[:2]) * 60 + int(digits[2:]))
    try:
        ns = np.array(naive, dtype="datetime64[ns]").astype(np.int64)
    except ValueError as exc:  # e.g. month 13: name the first row numpy refuses
        for stamp, value, line in zip(stamps, naive, lines, strict=True):
            try:
                np.datetime64(value, "ns")
            except ValueError:
                raise InputError(f"{source} line {line}: TIMESTAMP {stamp!r} is not a valid "
                                 "date and time") from None
        raise InputError(f"{source}: unreadable TIMESTAMP column: {exc}") from None
    ns = ns - offsets_min * 60_000_000_000  # local time minus its UTC offset = UTC
    return (ns - ns.min()) / 1e9


# --------------------------------------------------------------------------------------------
# Writing


AZURE_TICKS_PER_S = 10_000_000  # the published files give times to 100 ns (7 digits)


def format_azure_timestamps(ticks: np.ndarray, start: str) -> list[str]:
    """``start`` (whole seconds, 'YYYY-MM-DD HH:MM:SS') plus 100-ns ticks, in the Azure format."""
    base = np.datetime64(start.replace(" ", "T"), "s")
    ticks = np.asarray(ticks, dtype=np.int64)
    whole = np.datetime_as_string(base + ticks // AZURE_TICKS_PER_S, unit="s")
    fraction = (ticks % AZURE_TICKS_PER_S).tolist()
    return [f"{w.replace('T', ' ')}.{f:07d}" for w, f in zip(whole.tolist(), fraction,
                                                              strict=True)]


def write_azure_trace(path: str | Path, timestamps: Sequence[str], context: np.ndarray,
                      generated: np.ndarray) -> None:
    """Write an Azure-format CSV (atomically); the same header and layout as the published files."""
    rows = zip(timestamps, map(str, np.asarray(context).tolist()),
               map(str, np.asarray(generated).tolist()), strict=True)
    with atomic_writer(path) as handle:
        handle.write(",".join(AZURE_COLUMNS) + "\n")
        handle.write("\n".join(map(",".join, rows)) + "\n")


# --------------------------------------------------------------------------------------------
# The synthetic trace

# Token counts are drawn by inverse CDF from the published percentiles at these levels (finer in
# the tail, where the mass of long prompts and outputs sits).
QUANTILE_LEVELS: tuple[float, ...] = (*map(float, range(100)), 99.5, 99.9, 100.0)
# Arrival rates are modulated at these window lengths (seconds), coarsest first.
RATE_SCALES_S: tuple[float, ...] = (60.0, 10.0, 1.0)


@dataclass(frozen=True)
class AzureStyleProfile:
    """What :func:`generate_azure_style` draws from; :func:`fit_azure_profile` measures it.

    Arrivals: minute by minute, a minute is "off" (no requests) with probability
    ``off_fraction``; otherwise the rate is ``rate_per_s`` times independent mean-1 gamma factors,
    one per 60 s, 10 s and 1 s window, with coefficients of variation ``rate_cv`` (0 = constant),
    divided by ``1 - off_fraction`` so the long-run rate is ``rate_per_s``. Within each second
    arrivals are Poisson. Token counts: independent draws from the published percentiles
    (``*_quantiles`` at :data:`QUANTILE_LEVELS`), interpolated linearly and rounded.
    """

    name: str
    rate_per_s: float
    off_fraction: float
    rate_cv: tuple[float, ...]
    context_quantiles: tuple[float, ...]
    generated_quantiles: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"rate_per_s": self.rate_per_s, "off_fraction": self.off_fraction,
                "rate_cv": dict(zip(map(_scale_key, RATE_SCALES_S), self.rate_cv, strict=True)),
                "context_quantiles": list(self.context_quantiles),
                "generated_quantiles": list(self.generated_quantiles)}

    @classmethod
    def from_dict(cls, name: str, data: Mapping, source: str = "<profile>") -> AzureStyleProfile:
        try:
            profile = cls(name, float(data["rate_per_s"]), float(data["off_fraction"]),
                          tuple(float(data["rate_cv"][_scale_key(s)]) for s in RATE_SCALES_S),
                          tuple(map(float, data["context_quantiles"])),
                          tuple(map(float, data["generated_quantiles"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: profile {name!r} is malformed ({exc!r})") from None
        for column in (profile.context_quantiles, profile.generated_quantiles):
            if len(column) != len(QUANTILE_LEVELS) or list(column) != sorted(column):
                raise InputError(f"{source}: profile {name!r} needs {len(QUANTILE_LEVELS)} "
                                 "non-decreasing quantiles per token column")
        return profile


def _scale_key(scale_s: float) -> str:
    return f"{scale_s:g}s"


def fit_azure_profile(columns: AzureColumns, name: str) -> AzureStyleProfile:
    """Measure a profile from a published trace (method of moments, window scale by scale).

    ``off_fraction`` is the share of complete minutes with no request. At the minute scale the
    gamma variance is the on-minutes' count variance minus their mean (the Poisson part), over
    the mean squared. At each finer scale (k children per parent window, parent count N) it is
    ``k/(k-1) * sum((K - N/k)**2 - N(k-1)/k**2) / sum((N/k)**2)``: the children's spread around
    an even split of their parent beyond the multinomial spread. Negative excess means constant.
    """
    t = np.sort(columns.arrival_s)
    t = t - t[0]
    rate = len(t) / float(t[-1])
    minutes = int(t[-1] // RATE_SCALES_S[0])
    horizon = minutes * RATE_SCALES_S[0]
    t = t[t < horizon]
    counts = [np.bincount((t // scale).astype(np.int64), minlength=round(horizon / scale))
              .astype(np.float64) for scale in RATE_SCALES_S]
    top = counts[0]
    on = top[top > 0]
    off_fraction = float((top == 0).mean())
    cvs = [math.sqrt(max(0.0, float((on.var() - on.mean()) / on.mean() ** 2)))]
    for parent, child, scale, fine in zip(counts, counts[1:], RATE_SCALES_S, RATE_SCALES_S[1:],
                                          strict=False):
        k = round(scale / fine)
        share = np.repeat(parent / k, k)
        used = share > 0
        excess = ((child[used] - share[used]) ** 2 - share[used] * (k - 1) / k).sum()
        cvs.append(math.sqrt(max(0.0, float(k / (k - 1) * excess / (share[used] ** 2).sum()))))
    levels = np.array(QUANTILE_LEVELS)
    return AzureStyleProfile(
        name, rate, off_fraction, tuple(cvs),
        tuple(np.percentile(columns.context_tokens, levels).tolist()),
        tuple(np.percentile(columns.generated_tokens, levels).tolist()))


def generate_azure_style(profile: AzureStyleProfile, duration_s: float, seed: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(100-ns arrival ticks, ContextTokens, GeneratedTokens) over [0, duration_s), sorted.

    ``duration_s`` must be a whole number of seconds. See :class:`AzureStyleProfile`.
    """
    if not (duration_s > 0 and float(duration_s).is_integer()):
        raise ValueError(f"duration_s must be a positive whole number of seconds, "
                         f"got {duration_s!r}")
    rng = np.random.default_rng(seed)
    seconds = int(duration_s)
    factor = np.ones(seconds)
    for scale, cv in zip(RATE_SCALES_S, profile.rate_cv, strict=True):
        windows = math.ceil(seconds / scale)
        draws = rng.gamma(1 / cv**2, cv**2, size=windows) if cv > 0 else np.ones(windows)
        factor *= np.repeat(draws, round(scale))[:seconds]
    minutes = math.ceil(seconds / RATE_SCALES_S[0])
    on = rng.uniform(size=minutes) >= profile.off_fraction
    factor *= np.repeat(on, round(RATE_SCALES_S[0]))[:seconds] / (1 - profile.off_fraction)
    counts = rng.poisson(profile.rate_per_s * factor)
    arrival = np.repeat(np.arange(seconds, dtype=np.float64), counts) + rng.uniform(
        size=counts.sum())
    ticks = np.sort(np.floor(arrival * AZURE_TICKS_PER_S).astype(np.int64))
    levels = np.array(QUANTILE_LEVELS)

    def draw(quantiles: tuple[float, ...]) -> np.ndarray:
        u = rng.uniform(0.0, 100.0, size=len(ticks))
        return np.rint(np.interp(u, levels, quantiles)).astype(np.int64)

    return ticks, draw(profile.context_quantiles), draw(profile.generated_quantiles)


PROFILES_FILE = "profiles.json"
PROFILES_SOURCE = (
    "Fitted by apslab.io.trace_formats.fit_azure_profile to AzureLLMInferenceTrace_code.csv and "
    "AzureLLMInferenceTrace_conv.csv of github.com/Azure/AzurePublicDataset (CC-BY 4.0): "
    "Patel, Choukse, Zhang, Shah, Goiri, Maleki, Bianchini, 'Splitwise: Efficient generative "
    "LLM inference using phase splitting', ISCA 2024.")


def write_profiles(path: str | Path, profiles: Sequence[AzureStyleProfile]) -> None:
    """Write fitted profiles (and their citation) as JSON."""
    import json

    data = {"source": PROFILES_SOURCE, "quantile_levels": list(QUANTILE_LEVELS),
            "profiles": {p.name: p.to_dict() for p in profiles}}
    from .trace import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def load_profiles(path: str | Path) -> dict[str, AzureStyleProfile]:
    """Read profiles written by :func:`write_profiles`."""
    import json

    path = Path(path)
    try:
        with reading(path, "profiles"):
            data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: cannot read profiles: {exc}") from None
    if not isinstance(data, dict) or data.get("quantile_levels") != list(QUANTILE_LEVELS) or \
            not isinstance(data.get("profiles"), dict):
        raise InputError(f"{path}: not a profiles file for these quantile levels")
    return {name: AzureStyleProfile.from_dict(name, body, str(path))
            for name, body in data["profiles"].items()}


# --------------------------------------------------------------------------------------------
# Summary statistics (the table data/azure_synthetic/README.md shows)


def trace_statistics(columns: AzureColumns) -> dict[str, float]:
    """Arrival and token statistics of an Azure-format trace (complete minutes and seconds)."""
    t = np.sort(columns.arrival_s)
    t = t - t[0]
    gaps = np.diff(t)
    stats = {
        "requests": float(len(t)),
        "duration_s": float(t[-1]),
        "rate_per_s": len(t) / float(t[-1]),
        "interarrival_cv": float(gaps.std() / gaps.mean()),
    }
    for label, scale in (("per_minute", 60.0), ("per_second", 1.0)):
        whole = int(t[-1] // scale)
        counts = np.bincount((t[t < whole * scale] // scale).astype(np.int64), minlength=whole)
        stats[f"{label}_cv"] = float(counts.std() / counts.mean())
        stats[f"{label}_empty"] = float((counts == 0).mean())
    for name, values in (("context", columns.context_tokens),
                         ("generated", columns.generated_tokens)):
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        stats.update({f"{name}_mean": float(values.mean()), f"{name}_p50": float(p50),
                      f"{name}_p95": float(p95), f"{name}_p99": float(p99),
                      f"{name}_max": float(values.max())})
    return stats


STATISTICS_ROWS: tuple[tuple[str, str, str], ...] = (
    ("requests", "requests", ".0f"),
    ("duration_s", "duration (s)", ".0f"),
    ("rate_per_s", "mean arrival rate (req/s)", ".2f"),
    ("interarrival_cv", "inter-arrival time CV", ".2f"),
    ("per_minute_cv", "requests per minute, CV", ".2f"),
    ("per_minute_empty", "minutes with no request", ".1%"),
    ("per_second_cv", "requests per second, CV", ".2f"),
    ("per_second_empty", "seconds with no request", ".1%"),
    ("context_mean", "ContextTokens mean", ".0f"),
    ("context_p50", "ContextTokens p50", ".0f"),
    ("context_p95", "ContextTokens p95", ".0f"),
    ("context_p99", "ContextTokens p99", ".0f"),
    ("context_max", "ContextTokens max", ".0f"),
    ("generated_mean", "GeneratedTokens mean", ".1f"),
    ("generated_p50", "GeneratedTokens p50", ".0f"),
    ("generated_p95", "GeneratedTokens p95", ".0f"),
    ("generated_p99", "GeneratedTokens p99", ".0f"),
    ("generated_max", "GeneratedTokens max", ".0f"),
)


def statistics_table(columns_by_label: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table: one row per statistic, one column per trace."""
    labels = list(columns_by_label)
    lines = ["| statistic | " + " | ".join(labels) + " |",
             "| --- |" + " ---: |" * len(labels)]
    for key, title, spec in STATISTICS_ROWS:
        cells = [format(columns_by_label[label][key], spec) for label in labels]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Regenerating data/azure_synthetic/

SYNTHETIC_DURATION_S = 900.0
SYNTHETIC_SEEDS = {"code": 2023, "conv": 2024}
SYNTHETIC_START = "2024-01-01 00:00:00"
PUBLISHED_NAMES = ("code", "conv")


def published_file_name(name: str) -> str:
    return f"AzureLLMInferenceTrace_{name}.csv"


def synthetic_file_name(name: str) -> str:
    return f"AzureStyleTrace_{name}.csv"


def write_synthetic_traces(out_dir: str | Path) -> list[Path]:
    """Write a 15-minute synthetic trace per profile in ``out_dir``/profiles.json into it."""
    out_dir = Path(out_dir)
    profiles = load_profiles(out_dir / PROFILES_FILE)
    paths = []
    for name, profile in profiles.items():
        ticks, context, generated = generate_azure_style(profile, SYNTHETIC_DURATION_S,
                                                         SYNTHETIC_SEEDS.get(name, 0))
        path = out_dir / synthetic_file_name(name)
        write_azure_trace(path, format_azure_timestamps(ticks, SYNTHETIC_START), context,
                          generated)
        paths.append(path)
    return paths


def statistics_report(out_dir: str | Path, published_dir: str | Path | None) -> str:
    """The published-versus-synthetic statistics tables, one per trace class."""
    out_dir = Path(out_dir)
    blocks = []
    for name in load_profiles(out_dir / PROFILES_FILE):
        table = {}
        if published_dir is not None:
            path = Path(published_dir) / published_file_name(name)
            table[f"published {name}"] = trace_statistics(read_azure_columns(path))
        path = out_dir / synthetic_file_name(name)
        table[f"synthetic {name}"] = trace_statistics(read_azure_columns(path))
        blocks.append(statistics_table(table))
    return "\n\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m apslab.io.trace_formats",
        description="Regenerate the synthetic Azure-style traces from DIR/profiles.json (after "
                    "refitting it when --published is given) and print their statistics.")
    parser.add_argument("--out", default="data/azure_synthetic", metavar="DIR",
                        help="folder with profiles.json; the traces are written here")
    parser.add_argument("--published", metavar="DIR",
                        help="folder with the published AzureLLMInferenceTrace_{code,conv}.csv: "
                             "refit profiles.json from them and show their statistics too")
    args = parser.parse_args(argv)
    try:
        out_dir = Path(args.out)
        if not out_dir.is_dir():
            raise InputError(f"{out_dir}: output directory does not exist")
        if args.published:
            write_profiles(out_dir / PROFILES_FILE, [
                fit_azure_profile(read_azure_columns(
                    Path(args.published) / published_file_name(name)), name)
                for name in PUBLISHED_NAMES])
        for path in write_synthetic_traces(out_dir):
            print(f"wrote {path}")
        print()
        print(statistics_report(out_dir, args.published))
    except InputError as exc:
        print(f"apslab: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
