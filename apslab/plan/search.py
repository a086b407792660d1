"""Capacity planning: the highest load each GPU count sustains within SLOs, and what it costs.

**SLOs** are ``PATH OP BOUND`` with OP one of ``<=``, ``<``, ``>=``, ``>``, and PATH any numeric
SUMMARY.json key written with dots (``queue_wait_s.p99``, ``latency_s.p95``, ``jain_fairness``,
``tenants.premium.queue_wait_p99_s``, ``gpus.utilization_per_gpu.0``) or one of the two derived
keys ``rejected_fraction`` (rejected / submitted) and ``offered_rps``. A metric that is null (for
example a percentile when nothing completed) does not meet its SLO.

**The search** (per GPU count) looks for the highest *load multiplier* at which every SLO holds.
The multiplier scales arrival rates: a trace's timestamps are divided by it, a [workload]'s
arrival rates multiplied by it (see :func:`apslab.plan.sweep.trace_at_load`).

1. Bracket: run at ``start`` (1 = the trace or workload as given). If the SLOs hold, double the
   load until they fail or ``max_load`` is reached; if they fail, halve it until they hold or
   ``min_load`` is reached.
2. Bisect in log space (the next load is the geometric mean of the highest passing and the lowest
   failing one) until failing / passing <= 1 + ``tolerance``.

Bisection assumes the criterion is monotone: met below some load, missed above it. Queue waits
and latencies grow with load, so SLOs on them are; when a criterion is not (a fairness index, or
rate limits that cap what is admitted), the result still has a definite meaning: the reported
load passed, and a load at most ``tolerance`` higher failed. Two edge cases are reported, not
hidden: ``fails_at_min_load`` (even ``min_load`` misses an SLO: no load is reported) and
``holds_at_max_load`` (the SLOs still hold at ``max_load``, typically because rate limits reject
the excess: the reported maximum is a lower bound).

**Goodput.** With per-request targets (``SearchSettings.goodput``, :class:`GoodputTargets`)
every run also reports ``goodput_rps`` and ``slo_attainment``; :func:`slos_with_attainment`
turns ``--min-attainment F`` into the SLO ``slo_attainment >= F`` (DistServe's convention).

**The recommendation** for ``target_rps`` is the fewest GPUs (GPUs are identical, so the
cheapest) whose maximum reaches the target, confirmed by one more run at exactly the target load;
if that run misses an SLO (a non-monotone criterion) the next GPU count is tried. Across GPU
types (:func:`plan_fleet`, one scenario per type) it is the cheapest (type, count) by $/hour,
confirmed the same way (:func:`recommend_fleet`).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.catalogue import catalogue_names, lookup, suggestion
from ..core.metrics import GoodputTargets, cost_per_million_tokens
from ..io.errors import InputError
from ..io.scenario import Scenario, load_gpu_tables
from ..io.trace import Trace
from .sweep import DERIVED_METRICS, base_rps, map_ordered, run_metrics, trace_at_load

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda value, bound: value <= bound,
    "<": lambda value, bound: value < bound,
    ">=": lambda value, bound: value >= bound,
    ">": lambda value, bound: value > bound,
}
_SLO = re.compile(r"\s*([^<>=\s]+)\s*(<=|>=|<|>)\s*(\S+)\s*")

STATUS_OK = "ok"
STATUS_FAILS_AT_MIN = "fails_at_min_load"
STATUS_HOLDS_AT_MAX = "holds_at_max_load"


# --------------------------------------------------------------------------------------------
# SLOs


@dataclass(frozen=True)
class SLO:
    """One service-level objective on a metric path, e.g. ``queue_wait_s.p99 <= 2``."""

    path: str
    op: str
    bound: float

    def __str__(self) -> str:
        return f"{self.path}{self.op}{self.bound:g}"

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        return metrics.get(self.path)

    def met(self, metrics: Mapping[str, Any]) -> bool:
        value = self.value(metrics)
        return value is not None and OPERATORS[self.op](value, self.bound)


def parse_slo(text: str) -> SLO:
    """``"queue_wait_s.p99<=2"`` -> SLO; a malformed string is an InputError naming it."""
    match = _SLO.fullmatch(text)
    if match is None:
        raise InputError(f"--slo {text!r}: expected PATH OP NUMBER with OP one of <=, <, >=, >, "
                         "e.g. 'queue_wait_s.p99<=2'")
    path, op, bound_text = match.groups()
    try:
        bound = float(bound_text)
    except ValueError:
        raise InputError(f"--slo {text!r}: the bound must be a number, got {bound_text!r}"
                         ) from None
    if not math.isfinite(bound):
        raise InputError(f"--slo {text!r}: the bound must be finite, got {bound_text!r}")
    return SLO(path, op, bound)


GOODPUT_METRICS = ("goodput_rps", "slo_attainment")


def slos_with_attainment(slos: Sequence[SLO], min_attainment: float | None,
                         goodput: GoodputTargets | None) -> list[SLO]:
    """``slos`` plus ``slo_attainment >= min_attainment`` (DistServe's convention: the highest
    load at which at least that share of requests meets every per-request target)."""
    slos = list(slos)
    if min_attainment is None:
        return slos
    if not goodput:
        raise InputError("--min-attainment needs --goodput ttft=S,tpot=S[,e2e=S]: the "
                         "per-request targets whose attainment it bounds")
    if not (math.isfinite(min_attainment) and 0 < min_attainment <= 1):
        raise InputError(f"--min-attainment must be a share in (0, 1], got {min_attainment!r}")
    return [*slos, SLO("slo_attainment", ">=", min_attainment)]


def check_slo_paths(slos: Sequence[SLO], metrics: Mapping[str, Any]) -> None:
    """Every SLO path must be a numeric metric; unknown ones are an InputError naming them."""
    for slo in slos:
        if slo.path not in metrics and slo.path.split(".")[-1] in GOODPUT_METRICS:
            raise InputError(f"--slo {slo}: {slo.path!r} is reported only with per-request "
                             "targets: add --goodput ttft=S,tpot=S[,e2e=S]")
        if slo.path not in metrics:
            close = difflib.get_close_matches(slo.path, list(metrics), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise InputError(f"--slo {slo}: {slo.path!r} is not a SUMMARY.json metric{hint}; "
                             "paths are dotted keys such as queue_wait_s.p99, latency_s.p95, "
                             "jain_fairness, tenants.<id>.queue_wait_p99_s, or the derived "
                             f"{' and '.join(DERIVED_METRICS)}")
        value = metrics[slo.path]
        if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
            raise InputError(f"--slo {slo}: {slo.path!r} is not a numeric metric")


def probe_metrics(scenario: Scenario, trace: Trace | None, gpus: int, seed: int | None = None,
                  goodput: GoodputTargets | None = None) -> dict[str, Any]:
    """The metric names a run with ``gpus`` GPUs reports (from a run of a few requests)."""
    sample = trace_at_load(scenario, trace, 1.0, seed)
    sample = sample.subset(slice(0, 20)) if len(sample) > 20 else sample
    if not len(sample):
        raise InputError(f"{scenario.source}: the workload generates no requests to plan for")
    return run_metrics(scenario.with_overrides({"cluster.gpus": gpus}), sample, 1.0, seed, 1.0,
                       goodput)


# --------------------------------------------------------------------------------------------
# The search


@dataclass(frozen=True)
class SearchSettings:
    """The load interval and tolerance of the search (see the module docstring)."""

    start: float = 1.0
    min_load: float = 1 / 1024
    max_load: float = 1024.0
    tolerance: float = 0.01
    seed: int | None = None  # for a generated workload
    goodput: GoodputTargets | None = None  # per-request targets: runs report goodput

    def __post_init__(self) -> None:
        for name in ("start", "min_load", "max_load", "tolerance"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"--{name.replace('_', '-')} must be a finite number > 0, "
                                 f"got {value!r}")
        if not self.min_load <= self.start <= self.max_load:
            raise InputError(f"the search needs min load <= start <= max load, got "
                             f"{self.min_load:g} <= {self.start:g} <= {self.max_load:g}")


@dataclass
class LoadPoint:
    """One run of the search: the load, its metrics, and which SLOs it missed."""

    load: float
    metrics: dict[str, Any]
    missed: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.missed


@dataclass
class GpuSearch:
    """The search for one GPU count: its outcome and every run it made, in order."""

    gpus: int
    status: str
    best: LoadPoint | None  # the highest load that met every SLO
    first_failure: LoadPoint | None  # the lowest load above it that missed one
    points: list[LoadPoint] = field(default_factory=list)


def evaluate(scenario: Scenario, trace: Trace | None, slos: Sequence[SLO], load: float,
             seed: int | None = None, rps_at_load_1: float | None = None,
             goodput: GoodputTargets | None = None) -> LoadPoint:
    metrics = run_metrics(scenario, trace, load, seed, rps_at_load_1, goodput)
    return LoadPoint(load, metrics, tuple(str(s) for s in slos if not s.met(metrics)))


def search_max_load(scenario: Scenario, trace: Trace | None, slos: Sequence[SLO],
                    settings: SearchSettings = SearchSettings(),
                    rps_at_load_1: float | None = None) -> GpuSearch:
    """Bracket, then bisect, the highest load at which ``scenario`` meets every SLO."""
    points: list[LoadPoint] = []

    def run(load: float) -> LoadPoint:
        point = evaluate(scenario, trace, slos, load, settings.seed, rps_at_load_1,
                         settings.goodput)
        points.append(point)
        return point

    gpus = scenario.cluster.gpus
    first = run(settings.start)
    passing, failing = (first, None) if first.passed else (None, first)
    while failing is None:
        if passing.load >= settings.max_load:
            return GpuSearch(gpus, STATUS_HOLDS_AT_MAX, passing, None, points)
        point = run(min(passing.load * 2, settings.max_load))
        passing, failing = (point, None) if point.passed else (passing, point)
    while passing is None:
        if failing.load <= settings.min_load:
            return GpuSearch(gpus, STATUS_FAILS_AT_MIN, None, failing, points)
        point = run(max(failing.load / 2, settings.min_load))
        passing, failing = (point, failing) if point.passed else (None, point)
    while failing.load / passing.load > 1 + settings.tolerance:
        middle = math.sqrt(passing.load * failing.load)
        if not passing.load < middle < failing.load:  # adjacent floats: as close as it gets
            break
        point = run(middle)
        if point.passed:
            passing = point
        else:
            failing = point
    return GpuSearch(gpus, STATUS_OK, passing, failing, points)


# --------------------------------------------------------------------------------------------
# The plan


@dataclass
class Recommendation:
    """The cheapest GPU count (and, in a fleet plan, GPU type) for a target load, with the run
    that confirms it."""

    target_rps: float
    gpus: int | None
    check: LoadPoint | None  # the run at the target load on that many GPUs
    dollars_per_hour: float | None
    note: str = ""
    gpu_type: str | None = None  # fleet plans: the GPU type chosen

    def to_dict(self) -> dict[str, Any]:
        return {"target_rps": self.target_rps, "gpu_type": self.gpu_type, "gpus": self.gpus,
                "dollars_per_hour": self.dollars_per_hour, "note": self.note,
                "at_target": None if self.check is None else self.check.metrics}


class _WritesRows:
    """CSV and JSON output of a plan: ``rows()`` and ``to_dict()`` written atomically."""

    def write_csv(self, path: str | Path) -> None:
        from .sweep import write_rows_csv

        write_rows_csv(path, self.rows())

    def write_json(self, path: str | Path) -> None:
        from ..io.trace import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")


def _recommendation_text(rec: Recommendation | None, plan: Plan | None, by_type: bool) -> str:
    """A recommendation as one sentence: the fleet, what it delivers at the target, the SLOs.
    A plan across GPU types (``by_type``) names the type and gives MBU (it differs by type)
    where one type's plan gives the GPU utilisation."""
    if rec is None:
        return ""
    if rec.gpus is None:
        return f"target {rec.target_rps:g} req/s: {rec.note}"
    m = rec.check.metrics
    fleet = (f"{rec.gpus} x {rec.gpu_type}" if by_type
             else f"{rec.gpus} GPU{'s' if rec.gpus > 1 else ''}")
    goodput_text = (f"goodput {_fmt(m.get('goodput_rps'), '.3f')} req/s "
                    f"({_fmt(m.get('slo_attainment'), '.1%')} attainment), "
                    if plan.goodput else "")
    at_target = (": " if by_type else
                 f" it runs at {_fmt(m.get('gpu_utilization'), '.1%')} utilisation, ")
    mbu = f"MBU {_fmt(m.get('mbu'), '.1%')}, " if by_type else ""
    text = (f"target {rec.target_rps:g} req/s: cheapest is {fleet} "
            f"(${rec.dollars_per_hour:.2f}/hour); at the target{at_target}{goodput_text}"
            f"{_fmt(m.get('cost_per_million_tokens'), '.2f')} $ per million output tokens, {mbu}"
            + ", ".join(f"{s.path} {_fmt(s.value(m), '.4g')}" for s in plan.slos))
    return text + (f" ({rec.note})" if rec.note else "")


@dataclass
class Plan(_WritesRows):
    """Per GPU count, the highest load within the SLOs and what it delivers; a recommendation."""

    source: str
    trace_label: str
    slos: list[SLO]
    settings: SearchSettings
    rps_at_load_1: float | None
    price_per_hour: float
    searches: list[GpuSearch]
    recommendation: Recommendation | None = None
    gpu_type: str | None = None  # in a fleet plan: the GPU type this plan is for

    @property
    def goodput(self) -> GoodputTargets | None:
        return self.settings.goodput

    def rows(self, price_per_hour: float | None = None) -> list[dict[str, Any]]:
        """One dict per GPU count; ``price_per_hour`` re-prices the cost columns (per GPU)."""
        price = self.price_per_hour if price_per_hour is None else price_per_hour
        rows = []
        for search in self.searches:
            best = search.best.metrics if search.best else {}
            row: dict[str, Any] = {"gpu_type": self.gpu_type} if self.gpu_type else {}
            row.update({
                "gpus": search.gpus,
                "status": search.status,
                "max_load": search.best.load if search.best else None,
                "max_rps": best.get("offered_rps"),
                "output_tokens_per_s": best.get("throughput_tokens_per_s"),
                "gpu_utilization": best.get("gpu_utilization"),
                "cost_per_million_tokens": cost_per_million_tokens(
                    price, best.get("throughput_tokens_per_s"), search.gpus) if best else None,
                "jain_fairness": best.get("jain_fairness"),
                "rejected_fraction": best.get("rejected_fraction"),
            })
            if self.goodput:
                row["goodput_rps"] = best.get("goodput_rps")
                row["slo_attainment"] = best.get("slo_attainment")
            if "mbu" in best or self.gpu_type:
                row["mbu"] = best.get("mbu")
            row.update({slo.path: best.get(slo.path) for slo in self.slos})
            row.update({
                "dollars_per_hour": price * search.gpus,
                "failing_load": search.first_failure.load if search.first_failure else None,
                "runs": len(search.points),
            })
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        rec = self.recommendation
        out = {
            "scenario": self.source,
            "trace": self.trace_label,
            "slos": [str(s) for s in self.slos],
            "search": {"start": self.settings.start, "min_load": self.settings.min_load,
                       "max_load": self.settings.max_load,
                       "tolerance": self.settings.tolerance},
            "rps_at_load_1": self.rps_at_load_1,
            "price_per_hour": self.price_per_hour,
            "rows": self.rows(),
            "searches": self.search_runs(),
            "recommendation": None if rec is None else rec.to_dict(),
        }
        if self.gpu_type:
            out = {"gpu_type": self.gpu_type, **out}
        if self.goodput:
            out["goodput_targets"] = self.goodput.to_dict()
        return out

    def search_runs(self) -> list[dict[str, Any]]:
        """Every load each search ran, in order, and whether it met every SLO."""
        return [{"gpus": s.gpus, "status": s.status,
                 "runs": [{"load": p.load, "passed": p.passed, "missed": list(p.missed)}
                          for p in s.points]} for s in self.searches]

    def heading(self) -> list[str]:
        """The plan's first two lines: what was planned, and how."""
        targets = (f"; goodput targets {self.goodput}" if self.goodput else "")
        return [f"capacity plan: {self.source}, {self.trace_label}",
                f"SLOs: {', '.join(map(str, self.slos))}{targets}; highest load found by "
                f"bisection to {self.settings.tolerance:.0%}"
                + (f"; load 1 = {self.rps_at_load_1:.3f} req/s" if self.rps_at_load_1 else "")]

    def table(self) -> str:
        """The plan as a fixed-width text table, with the recommendation below it."""
        lines = [*self.heading(), *self.table_lines()]
        if self.recommendation is not None:
            lines.append(self.recommendation_text())
        return "\n".join(lines)

    def table_lines(self, fleet: bool = False) -> list[str]:
        """The header and one line per GPU count. ``fleet`` drops GPU utilisation and Jain's
        index (in the CSV and JSON) for $/hour and MBU, which compare GPU types."""
        shown = {"offered_rps", "throughput_tokens_per_s", "gpu_utilization",
                 "cost_per_million_tokens", "jain_fairness", "rejected_fraction"}
        if self.goodput:
            shown |= set(GOODPUT_METRICS)
        if fleet:
            shown.add("mbu")
        extra = list(dict.fromkeys(s.path for s in self.slos if s.path not in shown))
        rows = self.rows()
        has_mbu = any(r.get("mbu") is not None for r in rows)
        columns: list[tuple[str, int, Callable[[dict], str]]] = [
            ("GPUs", 4, lambda r: str(r["gpus"])),
            ("max load", 9, self._load_cell),
            ("max req/s", 9, lambda r: _fmt(r["max_rps"], ".3f")),
        ]
        if self.goodput:
            columns += [("goodput req/s", 13, lambda r: _fmt(r["goodput_rps"], ".3f")),
                        ("attainment", 10, lambda r: _fmt(r["slo_attainment"], ".1%"))]
        columns.append(("output tok/s", 12, lambda r: _fmt(r["output_tokens_per_s"], ".1f")))
        if fleet:
            columns += [("$/hour", 7, lambda r: _fmt(r["dollars_per_hour"], ".2f")),
                        ("$/M tokens", 10, lambda r: _fmt(r["cost_per_million_tokens"], ".2f")),
                        ("MBU", 6, lambda r: _fmt(r["mbu"], ".1%"))]
        else:
            columns.append(("GPU util", 8, lambda r: _fmt(r["gpu_utilization"], ".1%")))
            if has_mbu:
                columns.append(("MBU", 6, lambda r: _fmt(r["mbu"], ".1%")))
            columns += [("$/M tokens", 10, lambda r: _fmt(r["cost_per_million_tokens"], ".2f")),
                        ("Jain", 6, lambda r: _fmt(r["jain_fairness"], ".4f"))]
        columns.append(("rejected", 8, lambda r: _fmt(r["rejected_fraction"], ".1%")))
        columns += [(p, max(10, len(p)), lambda r, p=p: _fmt(r[p], ".4g")) for p in extra]
        columns.append(("runs", 4, lambda r: str(r["runs"])))
        lines = ["  ".join(f"{head:>{width}}" for head, width, _ in columns)]
        for row in rows:
            lines.append("  ".join(f"{cell(row):>{width}}" for _, width, cell in columns))
        return lines

    def _load_cell(self, row: dict[str, Any]) -> str:
        if row["status"] == STATUS_FAILS_AT_MIN:
            return f"<{self.settings.min_load:.3g}"
        if row["status"] == STATUS_HOLDS_AT_MAX:
            return f">={row['max_load']:.4g}"
        return f"{row['max_load']:.4g}"

    def recommendation_text(self) -> str:
        return _recommendation_text(self.recommendation, self, by_type=False)


@dataclass
class FleetPlan(_WritesRows):
    """One :class:`Plan` per GPU type (the same SLOs, trace and searches on each type's GPUs),
    and the cheapest (type, count) that meets the SLOs at the target, confirmed by a run."""

    plans: dict[str, Plan]
    recommendation: Recommendation | None = None
    scenarios: dict[str, Scenario] = field(default_factory=dict)  # each type's scenario

    @property
    def first(self) -> Plan:
        return next(iter(self.plans.values()))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per (GPU type, GPU count), types in the order given."""
        return [row for plan in self.plans.values() for row in plan.rows()]

    def to_dict(self) -> dict[str, Any]:
        first = self.first.to_dict()
        keep = ("scenario", "trace", "slos", "goodput_targets", "search", "rps_at_load_1")
        return {**{k: first[k] for k in keep if k in first},
                "gpu_types": {name: {"price_per_hour": plan.price_per_hour,
                                     "rows": plan.rows(), "searches": plan.search_runs()}
                              for name, plan in self.plans.items()},
                "recommendation": None if self.recommendation is None
                else self.recommendation.to_dict()}

    def table(self) -> str:
        lines = list(self.first.heading())
        for name, plan in self.plans.items():
            lines.append(f"{name} (${plan.price_per_hour:.4g} per GPU-hour)")
            lines += plan.table_lines(fleet=True)
        if self.recommendation is not None:
            lines.append(self.recommendation_text())
        return "\n".join(lines)

    def recommendation_text(self) -> str:
        rec = self.recommendation
        plan = self.plans[rec.gpu_type] if rec is not None and rec.gpus is not None else None
        return _recommendation_text(rec, plan, by_type=True)


def _fmt(value: Any, spec: str) -> str:
    """A table cell: ``value`` formatted, or "n/a" for a metric that is null."""
    return "n/a" if value is None else format(value, spec)


def parse_gpu_counts(text: str) -> list[int]:
    """``"1..8"``, ``"1,2,4,8"`` or ``"4"`` -> sorted distinct GPU counts >= 1."""
    counts: set[int] = set()
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("..")
            counts.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise InputError(f"--gpus {text!r}: expected a range like 1..8 or a list like 1,2,4"
                         ) from None
    if not counts or min(counts) < 1:
        raise InputError(f"--gpus {text!r}: GPU counts must be whole numbers >= 1")
    return sorted(counts)


def parse_gpu_types(text: str) -> dict[str, dict[str, Any]]:
    """``"A100-80GB,H100-SXM-80GB,my_gpu.toml"`` -> {label: GPU tables} for
    :meth:`Scenario.with_gpu`: a catalogue name gives ``{"gpu": {"preset": name}}``; a path
    ending in ``.toml`` is read as a GPU file (``apslab calibrate``'s output), labelled by its
    ``[gpu] name`` (or the file's stem). Unknown names are an InputError with a suggestion."""
    types: dict[str, dict[str, Any]] = {}
    for part in text.split(","):
        item = part.strip()
        if not item:
            raise InputError(f"--gpu-types {text!r}: empty GPU type")
        if item.endswith(".toml"):
            tables = load_gpu_tables(item)
            label = tables["gpu"].get("name") or Path(item).stem
        else:
            entry = lookup(item)
            if entry is None:
                raise InputError(f"--gpu-types {text!r}: {item!r} is not in the GPU catalogue"
                                 f"{suggestion(item)}; types: {', '.join(catalogue_names())}, "
                                 "or a GPU file (.toml) from apslab calibrate")
            label, tables = entry.name, {"gpu": {"preset": entry.name}}
        if label in types:
            raise InputError(f"--gpu-types {text!r}: {label!r} is given twice")
        types[label] = tables
    return types


def scenarios_on_gpu_types(scenario: Scenario, gpu_types: Mapping[str, dict[str, Any]],
                           overrides: Mapping[str, Any] | None = None) -> dict[str, Scenario]:
    """``{label: scenario on that GPU type}`` for :func:`parse_gpu_types`' tables: each
    type's tables replace the scenario's [gpu] (and [model]), then ``overrides`` (dotted
    keys, e.g. ``gpu.price_per_hour``) apply on top."""
    scenarios = {}
    for label, tables in gpu_types.items():
        typed = scenario.with_gpu(tables)
        scenarios[label] = typed.with_overrides(overrides) if overrides else typed
    return scenarios


def _check_plan_inputs(scenario: Scenario, trace: Trace | None, slos: Sequence[SLO],
                       gpu_counts: Sequence[int], target_rps: float | None,
                       settings: SearchSettings) -> float | None:
    """Validate SLO paths and the target before any search runs; the rate at load 1."""
    if not slos:
        raise InputError("give at least one --slo (e.g. --slo 'queue_wait_s.p99<=2') or "
                         "--min-attainment with --goodput")
    check_slo_paths(slos, probe_metrics(scenario, trace, max(gpu_counts), settings.seed,
                                        settings.goodput))
    rps = base_rps(scenario, trace)
    if target_rps is not None:
        if not (math.isfinite(target_rps) and target_rps > 0):
            raise InputError(f"--target-rps must be a number > 0, got {target_rps!r}")
        if rps is None:
            raise InputError("--target-rps needs a trace that spans some time (or a workload)")
    return rps


def _run_searches(scenarios: Sequence[Scenario], trace: Trace | None, slos: Sequence[SLO],
                  gpu_counts: Sequence[int], settings: SearchSettings, rps: float | None,
                  executor: Executor | None, progress: bool,
                  scatter: Callable[[Trace], Any] | None) -> list[list[GpuSearch]]:
    """Every (scenario, GPU count) search, each one task for :func:`map_ordered`, all submitted
    together (so a process pool or a Dask cluster runs them side by side; results do not depend
    on where they ran); per scenario, its searches in GPU-count order."""
    handle = scatter(trace) if (scatter is not None and trace is not None) else trace
    tasks = [(scenario.with_overrides({"cluster.gpus": g}), handle, list(slos), settings, rps)
             for scenario in scenarios for g in gpu_counts]
    searches = map_ordered(search_max_load, tasks, executor, progress, desc="plan")
    per = len(gpu_counts)
    return [searches[i:i + per] for i in range(0, len(searches), per)]


def _trace_label(trace: Trace | None, trace_label: str | None) -> str:
    if trace_label is not None:
        return trace_label
    return ("generated workload" if trace is None
            else f"trace {trace.source} ({len(trace)} requests)")


def plan_capacity(scenario: Scenario, trace: Trace | None, slos: Sequence[SLO],
                  gpu_counts: Sequence[int], *, target_rps: float | None = None,
                  settings: SearchSettings = SearchSettings(), executor: Executor | None = None,
                  progress: bool = True, scatter: Callable[[Trace], Any] | None = None,
                  trace_label: str | None = None) -> Plan:
    """Search every GPU count (in parallel on ``executor``), then recommend one for the target."""
    gpu_counts = sorted(set(gpu_counts))
    rps = _check_plan_inputs(scenario, trace, slos, gpu_counts, target_rps, settings)
    [searches] = _run_searches([scenario], trace, slos, gpu_counts, settings, rps, executor,
                               progress, scatter)
    plan = Plan(scenario.source, _trace_label(trace, trace_label), list(slos), settings, rps,
                scenario.gpu.price_per_hour, searches)
    if target_rps is not None:
        plan.recommendation = recommend(plan, scenario, trace, target_rps)
    return plan


def plan_fleet(scenarios: Mapping[str, Scenario], trace: Trace | None, slos: Sequence[SLO],
               gpu_counts: Sequence[int], *, target_rps: float | None = None,
               settings: SearchSettings = SearchSettings(), executor: Executor | None = None,
               progress: bool = True, scatter: Callable[[Trace], Any] | None = None,
               trace_label: str | None = None) -> FleetPlan:
    """:func:`plan_capacity` for several GPU types at once (``{label: scenario}``, each the
    scenario on that type's GPUs): every (type, count) search is one task, all submitted
    together; then the cheapest (type, count) for the target (:func:`recommend_fleet`)."""
    if not scenarios:
        raise InputError("--gpu-types names no GPU type")
    gpu_counts = sorted(set(gpu_counts))
    first = next(iter(scenarios.values()))
    rps = _check_plan_inputs(first, trace, slos, gpu_counts, target_rps, settings)
    searches = _run_searches(list(scenarios.values()), trace, slos, gpu_counts, settings, rps,
                             executor, progress, scatter)
    label = _trace_label(trace, trace_label)
    plans = {name: Plan(first.source, label, list(slos), settings, rps,
                        scenario.gpu.price_per_hour, type_searches, gpu_type=name)
             for (name, scenario), type_searches in zip(scenarios.items(), searches,
                                                        strict=True)}
    fleet = FleetPlan(plans, scenarios=dict(scenarios))
    if target_rps is not None:
        fleet.recommendation = recommend_fleet(fleet, trace, target_rps)
    return fleet


def _cheapest_confirmed(options: Sequence[tuple[Plan, Scenario]], trace: Trace | None,
                        target_rps: float, by_type: bool) -> Recommendation | None:
    """The cheapest (plan, GPU count) by $/hour (ties: fewer GPUs, then the order of
    ``options``) whose highest load in the search reaches ``target_rps``, confirmed by a run at
    exactly the target load; candidates whose confirming run misses an SLO are skipped, and the
    note says so. None when no candidate is confirmed."""
    candidates = []
    for order, (plan, _scenario) in enumerate(options):
        for search in plan.searches:
            if search.best is not None and search.best.metrics["offered_rps"] >= target_rps:
                candidates.append((plan.price_per_hour * search.gpus, search.gpus, order))
    skipped = []
    for dollars, gpus, order in sorted(candidates):
        plan, scenario = options[order]
        point = evaluate(scenario.with_overrides({"cluster.gpus": gpus}), trace, plan.slos,
                         target_rps / plan.rps_at_load_1, plan.settings.seed,
                         plan.rps_at_load_1, plan.settings.goodput)
        if point.passed:
            note = (f"{', '.join(skipped)}{'' if by_type else ' GPUs'} reached the target in "
                    "the search but missed an SLO at exactly the target load" if skipped else "")
            return Recommendation(target_rps, gpus, point, dollars, note,
                                  gpu_type=plan.gpu_type if by_type else None)
        skipped.append(f"{gpus} x {plan.gpu_type}" if by_type else str(gpus))
    return None


def recommend(plan: Plan, scenario: Scenario, trace: Trace | None, target_rps: float
              ) -> Recommendation:
    """The fewest GPUs whose maximum reaches ``target_rps``, confirmed at the target load."""
    confirmed = _cheapest_confirmed([(plan, scenario)], trace, target_rps, by_type=False)
    if confirmed is not None:
        return confirmed
    reached = [s for s in plan.searches if s.best is not None]
    if reached:
        top = max(reached, key=lambda s: s.best.metrics["offered_rps"])
        most = (f"the most is {top.best.metrics['offered_rps']:.3f} req/s on {top.gpus} GPU"
                f"{'s' if top.gpus > 1 else ''}")
    else:
        most = "none meets them even at the lowest load"
    counts = [s.gpus for s in plan.searches]
    return Recommendation(target_rps, None, None, None,
                          f"no GPU count in {counts[0]}..{counts[-1]} sustains it within the "
                          f"SLOs; {most}")


def recommend_fleet(fleet: FleetPlan, trace: Trace | None, target_rps: float) -> Recommendation:
    """The cheapest (type, count) by $/hour (price per GPU-hour x count; ties: fewer GPUs,
    then the order of the types) whose highest load in the search reaches ``target_rps``,
    confirmed by a run at exactly the target load on that type's scenario
    (``fleet.scenarios``)."""
    options = [(plan, fleet.scenarios[name]) for name, plan in fleet.plans.items()]
    confirmed = _cheapest_confirmed(options, trace, target_rps, by_type=True)
    if confirmed is not None:
        return confirmed
    counts = [s.gpus for s in fleet.first.searches]
    best = [(s.best.metrics["offered_rps"], s.gpus, label)
            for label, plan in fleet.plans.items() for s in plan.searches if s.best is not None]
    most = (f"the most is {max(best)[0]:.3f} req/s on {max(best)[1]} x {max(best)[2]}"
            if best else "none meets them even at the lowest load")
    return Recommendation(target_rps, None, None, None,
                          f"no GPU type and count in {counts[0]}..{counts[-1]} sustains it "
                          f"within the SLOs; {most}")


# --------------------------------------------------------------------------------------------
# The curve


def plot_plan(plan: Plan, fig=None, price_per_hour: float | None = None):
    """Max sustainable req/s and $ per million output tokens versus GPUs (a matplotlib Figure).

    ``price_per_hour`` re-prices the cost panel without re-running anything: the cost of a run
    is linear in the price.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if fig is None:
        fig = Figure(figsize=(10, 3.8), layout="constrained")
        FigureCanvasAgg(fig)
    fig.clear()
    left, right = fig.subplots(1, 2)
    rows = [r for r in plan.rows(price_per_hour) if r["max_rps"] is not None]
    gpus = [r["gpus"] for r in rows]
    left.plot(gpus, [r["max_rps"] for r in rows], "o-", color="tab:blue",
              label="highest load within the SLOs")
    capped = [r for r in rows if r["status"] == STATUS_HOLDS_AT_MAX]
    if capped:
        left.plot([r["gpus"] for r in capped], [r["max_rps"] for r in capped], "^",
                  color="tab:orange", label="lower bound (still within SLOs at max load)")
    rec = plan.recommendation
    if rec is not None:
        left.axhline(rec.target_rps, color="grey", ls="--", lw=1,
                     label=f"target {rec.target_rps:g} req/s")
        if rec.gpus is not None:
            left.plot([rec.gpus], [rec.target_rps], "*", ms=14, color="tab:red",
                      label=f"cheapest: {rec.gpus} GPUs")
    left.set_xlabel("GPUs")
    left.set_ylabel("requests/s")
    left.set_title("Highest load within " + ", ".join(map(str, plan.slos)), fontsize=9)
    left.legend(fontsize=8, loc="upper left")
    price = plan.price_per_hour if price_per_hour is None else price_per_hour
    right.plot(gpus, [r["cost_per_million_tokens"] for r in rows], "s-", color="tab:green")
    right.set_xlabel("GPUs")
    right.set_ylabel("$ per million output tokens")
    right.set_title(f"Cost at that load (${price:g} per GPU-hour)", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_xticks([s.gpus for s in plan.searches])
    if any(r["cost_per_million_tokens"] for r in rows):
        right.set_yscale("log")
    if not rows:
        left.text(0.5, 0.5, "no GPU count meets the SLOs\nat any load searched",
                  transform=left.transAxes, ha="center", va="center")
    left.set_ylim(bottom=0)
    return fig
