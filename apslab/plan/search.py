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

**The recommendation** for ``target_rps`` is the fewest GPUs (GPUs are identical, so the
cheapest) whose maximum reaches the target, confirmed by one more run at exactly the target load;
if that run misses an SLO (a non-monotone criterion) the next GPU count is tried.
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

from ..core.metrics import cost_per_million_tokens
from ..io.errors import InputError
from ..io.scenario import Scenario
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


def check_slo_paths(slos: Sequence[SLO], metrics: Mapping[str, Any]) -> None:
    """Every SLO path must be a numeric metric; unknown ones are an InputError naming them."""
    for slo in slos:
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


def probe_metrics(scenario: Scenario, trace: Trace | None, gpus: int, seed: int | None = None
                  ) -> dict[str, Any]:
    """The metric names a run with ``gpus`` GPUs reports (from a run of a few requests)."""
    sample = trace_at_load(scenario, trace, 1.0, seed)
    sample = sample.subset(slice(0, 20)) if len(sample) > 20 else sample
    if not len(sample):
        raise InputError(f"{scenario.source}: the workload generates no requests to plan for")
    return run_metrics(scenario.with_overrides({"cluster.gpus": gpus}), sample, 1.0, seed, 1.0)


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
             seed: int | None = None, rps_at_load_1: float | None = None) -> LoadPoint:
    metrics = run_metrics(scenario, trace, load, seed, rps_at_load_1)
    return LoadPoint(load, metrics, tuple(str(s) for s in slos if not s.met(metrics)))


def search_max_load(scenario: Scenario, trace: Trace | None, slos: Sequence[SLO],
                    settings: SearchSettings = SearchSettings(),
                    rps_at_load_1: float | None = None) -> GpuSearch:
    """Bracket, then bisect, the highest load at which ``scenario`` meets every SLO."""
    points: list[LoadPoint] = []

    def run(load: float) -> LoadPoint:
        point = evaluate(scenario, trace, slos, load, settings.seed, rps_at_load_1)
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
    """The cheapest GPU count for a target load, with the run that confirms it."""

    target_rps: float
    gpus: int | None
    check: LoadPoint | None  # the run at the target load on that many GPUs
    dollars_per_hour: float | None
    note: str = ""


@dataclass
class Plan:
    """Per GPU count, the highest load within the SLOs and what it delivers; a recommendation."""

    source: str
    trace_label: str
    slos: list[SLO]
    settings: SearchSettings
    rps_at_load_1: float | None
    price_per_hour: float
    searches: list[GpuSearch]
    recommendation: Recommendation | None = None

    def rows(self, price_per_hour: float | None = None) -> list[dict[str, Any]]:
        """One dict per GPU count; ``price_per_hour`` re-prices the cost column (per GPU)."""
        price = self.price_per_hour if price_per_hour is None else price_per_hour
        rows = []
        for search in self.searches:
            best = search.best.metrics if search.best else {}
            rows.append({
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
                **{slo.path: best.get(slo.path) for slo in self.slos},
                "failing_load": search.first_failure.load if search.first_failure else None,
                "runs": len(search.points),
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        rec = self.recommendation
        return {
            "scenario": self.source,
            "trace": self.trace_label,
            "slos": [str(s) for s in self.slos],
            "search": {"start": self.settings.start, "min_load": self.settings.min_load,
                       "max_load": self.settings.max_load,
                       "tolerance": self.settings.tolerance},
            "rps_at_load_1": self.rps_at_load_1,
            "price_per_hour": self.price_per_hour,
            "rows": self.rows(),
            "recommendation": None if rec is None else {
                "target_rps": rec.target_rps, "gpus": rec.gpus,
                "dollars_per_hour": rec.dollars_per_hour, "note": rec.note,
                "at_target": None if rec.check is None else rec.check.metrics,
            },
        }

    def table(self) -> str:
        """The plan as a fixed-width text table, with the recommendation below it."""
        extra = [s.path for s in self.slos if s.path not in _TABLE_PATHS]
        extra = list(dict.fromkeys(extra))
        head = (f"{'GPUs':>4}  {'max load':>9}  {'max req/s':>9}  {'output tok/s':>12}  "
                f"{'GPU util':>8}  {'$/M tokens':>10}  {'Jain':>6}  {'rejected':>8}"
                + "".join(f"  {p:>{max(10, len(p))}}" for p in extra) + f"  {'runs':>4}")
        lines = [f"capacity plan: {self.source}, {self.trace_label}",
                 f"SLOs: {', '.join(map(str, self.slos))}; highest load found by bisection to "
                 f"{self.settings.tolerance:.0%}"
                 + (f"; load 1 = {self.rps_at_load_1:.3f} req/s" if self.rps_at_load_1 else ""),
                 head]
        for row in self.rows():
            if row["status"] == STATUS_FAILS_AT_MIN:
                load = f"<{self.settings.min_load:.3g}"
            elif row["status"] == STATUS_HOLDS_AT_MAX:
                load = f">={row['max_load']:.4g}"
            else:
                load = f"{row['max_load']:.4g}"
            lines.append(
                f"{row['gpus']:>4}  {load:>9}  {_fmt(row['max_rps'], '.3f'):>9}  "
                f"{_fmt(row['output_tokens_per_s'], '.1f'):>12}  "
                f"{_fmt(row['gpu_utilization'], '.1%'):>8}  "
                f"{_fmt(row['cost_per_million_tokens'], '.2f'):>10}  "
                f"{_fmt(row['jain_fairness'], '.4f'):>6}  "
                f"{_fmt(row['rejected_fraction'], '.1%'):>8}"
                + "".join(f"  {_fmt(row[p], '.4g'):>{max(10, len(p))}}" for p in extra)
                + f"  {row['runs']:>4}")
        if self.recommendation is not None:
            lines.append(self.recommendation_text())
        return "\n".join(lines)

    def recommendation_text(self) -> str:
        rec = self.recommendation
        if rec is None:
            return ""
        if rec.gpus is None:
            return f"target {rec.target_rps:g} req/s: {rec.note}"
        m = rec.check.metrics
        text = (f"target {rec.target_rps:g} req/s: cheapest is {rec.gpus} GPU"
                f"{'s' if rec.gpus > 1 else ''} (${rec.dollars_per_hour:.2f}/hour); at the target "
                f"it runs at {_fmt(m.get('gpu_utilization'), '.1%')} utilisation, "
                f"{_fmt(m.get('cost_per_million_tokens'), '.2f')} $ per million output tokens, "
                + ", ".join(f"{s.path} {_fmt(s.value(m), '.4g')}" for s in self.slos))
        return text + (f" ({rec.note})" if rec.note else "")

    def write_csv(self, path: str | Path) -> None:
        from .sweep import write_rows_csv

        write_rows_csv(path, self.rows())

    def write_json(self, path: str | Path) -> None:
        from ..io.trace import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")


_TABLE_PATHS = ("offered_rps", "throughput_tokens_per_s", "gpu_utilization",
                "cost_per_million_tokens", "jain_fairness", "rejected_fraction")


def _fmt(value: Any, spec: str) -> str:
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


def _search_task(scenario: Scenario, trace: Trace | None, slos: Sequence[SLO],
                 settings: SearchSettings, rps_at_load_1: float | None) -> GpuSearch:
    return search_max_load(scenario, trace, slos, settings, rps_at_load_1)


def plan_capacity(scenario: Scenario, trace: Trace | None, slos: Sequence[SLO],
                  gpu_counts: Sequence[int], *, target_rps: float | None = None,
                  settings: SearchSettings = SearchSettings(), executor: Executor | None = None,
                  progress: bool = True, scatter: Callable[[Trace], Any] | None = None,
                  trace_label: str | None = None) -> Plan:
    """Search every GPU count (in parallel on ``executor``), then recommend one for the target.

    Each GPU count's search is one task for :func:`apslab.plan.sweep.map_ordered`, so a process pool
    or a Dask cluster runs them side by side; results do not depend on where they ran.
    """
    if not slos:
        raise InputError("give at least one --slo, e.g. --slo 'queue_wait_s.p99<=2'")
    gpu_counts = sorted(set(gpu_counts))
    check_slo_paths(slos, probe_metrics(scenario, trace, max(gpu_counts), settings.seed))
    rps = base_rps(scenario, trace)
    if target_rps is not None:
        if not (math.isfinite(target_rps) and target_rps > 0):
            raise InputError(f"--target-rps must be a number > 0, got {target_rps!r}")
        if rps is None:
            raise InputError("--target-rps needs a trace that spans some time (or a workload)")
    handle = scatter(trace) if (scatter is not None and trace is not None) else trace
    tasks = [(scenario.with_overrides({"cluster.gpus": g}), handle, list(slos), settings, rps)
             for g in gpu_counts]
    searches = map_ordered(_search_task, tasks, executor, progress, desc="plan")
    if trace_label is None:
        trace_label = ("generated workload" if trace is None
                       else f"trace {trace.source} ({len(trace)} requests)")
    plan = Plan(scenario.source, trace_label, list(slos), settings, rps,
                scenario.gpu.price_per_hour, searches)
    if target_rps is not None:
        plan.recommendation = recommend(plan, scenario, trace, target_rps)
    return plan


def recommend(plan: Plan, scenario: Scenario, trace: Trace | None, target_rps: float
              ) -> Recommendation:
    """The fewest GPUs whose maximum reaches ``target_rps``, confirmed at the target load."""
    load = target_rps / plan.rps_at_load_1
    skipped = []
    for search in plan.searches:
        if search.best is None or search.best.metrics["offered_rps"] < target_rps:
            continue
        point = evaluate(scenario.with_overrides({"cluster.gpus": search.gpus}), trace,
                         plan.slos, load, plan.settings.seed, plan.rps_at_load_1)
        if point.passed:
            note = (f"{', '.join(map(str, skipped))} GPUs reached the target in the search but "
                    "missed an SLO at exactly the target load" if skipped else "")
            return Recommendation(target_rps, search.gpus, point,
                                  search.gpus * plan.price_per_hour, note)
        skipped.append(search.gpus)
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
