"""The capacity-planning study behind notebook 06 and ``apslab report``, and its widget app.

The notebook is a thin sequence of calls into this module: load a scenario and a trace, describe
the traffic, plan on each GPU type (:func:`apslab.plan.search.plan_fleet`), draw the capacity and
cost curves (:func:`fleet_figure`) and the attainment curves (:func:`attainment_figure`), set the
seed's static answer beside the continuous engine's (:func:`seed_comparison`), and measure how
per-tenant rate limits move fairness (:mod:`apslab.plan.sweep`). :class:`GpuPriceApp` re-prices
the GPU types and shows which is cheapest; :class:`PlanExplorer` moves one plan's SLO bound and
price. Tests drive both by setting ``app.controls[name].value``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from ..io.errors import InputError
from ..io.scenario import Scenario, load_scenario
from ..io.trace import Trace
from .search import SLO, Plan, SearchSettings, _fmt, plan_capacity
from .sweep import SerialExecutor, base_rps, run_sweep, trace_at_load


def load_inputs(scenario_path: str | Path, trace_path: str | Path | None = None,
                trace_format: str = "apslab", tenant_weights: str = "", tenant_seed: int = 0,
                trace_span: float | None = None) -> tuple[Scenario, Trace | None]:
    """The scenario, and the trace to replay (None: the scenario's [workload] is generated);
    ``trace_span`` keeps the requests of the trace's first so many seconds."""
    from ..io.arguments import trace_head
    from ..io.trace_formats import read_trace_file

    if trace_span is not None and not trace_path:
        raise InputError("a trace span needs a trace path")
    scenario = load_scenario(scenario_path)
    if not trace_path:
        if trace_format != "apslab" or tenant_weights:
            raise InputError("an azure trace format and tenant weights need a trace path")
        if scenario.workload is None:
            raise InputError(f"{scenario.source}: no trace given and the scenario has no "
                             "[workload] section to generate one from")
        return scenario, None
    return scenario, trace_head(read_trace_file(trace_path, scenario, trace_format,
                                                tenant_weights, tenant_seed), trace_span)


def describe_inputs(scenario: Scenario, trace: Trace | None, seed: int | None = None) -> str:
    """Requests, span and rate at load 1, and each tenant's share, bid and rate limit."""
    sample = trace_at_load(scenario, trace, 1.0, seed)
    rps = base_rps(scenario, trace)
    span = float(sample.arrival_s.max() - sample.arrival_s.min()) if len(sample) else 0.0
    label = "generated workload" if trace is None else f"trace {Path(trace.source).name}"
    lines = [f"{label}: {len(sample)} requests over {span:.1f} s; load 1 = {rps:.3f} req/s",
             f"{'tenant':<10} {'share':>6} {'req/s':>7} {'tokens/s':>9} {'bid':>5} "
             f"{'rate limit':>10} {'burst cap':>10}"]
    names = sample.tenant_names
    for tenant in scenario.tenants:
        mask = (sample.tenant_codes == names.index(tenant.id)) if tenant.id in names else \
            np.zeros(len(sample), dtype=bool)
        count = int(mask.sum())
        tokens = float(sample.kv_tokens[mask].sum())
        bids = sample.priority_bid[mask]
        bid = f"{bids[0]:g}" if count and (bids == bids[0]).all() else ("mixed" if count else "-")
        lines.append(f"{tenant.id:<10} {count / max(len(sample), 1):>6.1%} "
                     f"{count / span if span else 0:>7.3f} {tokens / span if span else 0:>9.0f} "
                     f"{bid:>5} {tenant.rate_limit:>10g} {tenant.burst_cap:>10g}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Load curves


def load_curves(scenario: Scenario, trace: Trace | None, plan: Plan,
                gpu_counts: Sequence[int] | None = None,
                fractions: Sequence[float] = (0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5), *,
                executor: Executor | None = None, progress: bool = False,
                seed: int | None = None) -> list[dict[str, Any]]:
    """Runs at fractions of each GPU count's highest load within the SLOs (one sweep).

    By default three GPU counts that have a highest load: a quarter and half way up the list,
    and the largest (so the curves share a readable scale).
    """
    found = {s.gpus: s.best.load for s in plan.searches if s.best is not None}
    if gpu_counts is None:
        counts = sorted(found)
        gpu_counts = sorted({counts[len(counts) // 4], counts[len(counts) // 2], counts[-1]}
                            ) if counts else []
    rows: list[dict[str, Any]] = []
    for gpus in gpu_counts:
        if gpus not in found:
            raise InputError(f"{gpus} GPUs have no load within the SLOs to draw a curve around")
        grid = {"cluster.gpus": [gpus], "load": [found[gpus] * f for f in fractions]}
        rows += run_sweep(scenario, grid, trace, seed=seed,
                          executor=executor or SerialExecutor(), progress=progress)
    return rows


def load_curves_figure(rows: Sequence[dict[str, Any]], slo: SLO):
    """The SLO's metric versus offered req/s, one line per GPU count, with the bound."""
    fig = _figure(1, 1, width=7.0)
    ax = fig.axes[0]
    for gpus in sorted({r["cluster.gpus"] for r in rows}):
        mine = [r for r in rows if r["cluster.gpus"] == gpus]
        ax.plot([r["offered_rps"] for r in mine], [r[slo.path] for r in mine], "o-",
                label=f"{gpus} GPU{'s' if gpus > 1 else ''}")
    ax.axhline(slo.bound, color="grey", ls="--", lw=1, label=f"SLO {slo}")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel(slo.path)
    if rows and all(r[slo.path] and r[slo.path] > 0 for r in rows):
        ax.set_yscale("log")
    if not rows:
        ax.text(0.5, 0.5, "no GPU count meets the SLOs at any load searched",
                transform=ax.transAxes, ha="center")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Load curves around each GPU count's highest load within the SLOs", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# Rate limits and fairness


def operating_point(plan: Plan) -> tuple[int, float] | None:
    """(GPUs, load) to study: the recommendation at its target, else the largest GPU count at
    its highest load within the SLOs; None when no GPU count meets them at any load searched."""
    rec = plan.recommendation
    if rec is not None and rec.gpus is not None:
        return rec.gpus, rec.target_rps / plan.rps_at_load_1
    found = [s for s in plan.searches if s.best is not None]
    if not found:
        return None
    return found[-1].gpus, found[-1].best.load


def rate_limit_study(scenario: Scenario, trace: Trace | None, gpus: int, load: float,
                     fractions: Sequence[float] = (1.0, 0.75, 0.5, 0.35, 0.25), *,
                     executor: Executor | None = None, progress: bool = False,
                     seed: int | None = None) -> list[dict[str, Any]]:
    """The scenario's own limits, then one rate limit for every tenant at fractions of the
    largest tenant's offered tokens/s: fairness, rejections, waits and tokens per tenant."""
    sample = trace_at_load(scenario, trace, load, seed)
    span = float(sample.arrival_s.max() - sample.arrival_s.min())
    demand = np.bincount(sample.tenant_codes, weights=sample.kv_tokens,
                         minlength=len(sample.tenant_names)) / span
    caps = [round(float(demand.max()) * f, 1) for f in fractions]
    run = scenario.with_overrides({"cluster.gpus": gpus})
    rows = run_sweep(run, {"load": [load]}, trace, seed=seed,
                     executor=executor or SerialExecutor(), progress=False)
    rows += run_sweep(run, {"load": [load], "tenants.rate_limit": caps}, trace, seed=seed,
                      executor=executor or SerialExecutor(), progress=progress)
    rows[0]["tenants.rate_limit"] = None  # the scenario's own limits
    return rows


def fairness_study(plan: Plan, scenario: Scenario, trace: Trace | None,
                   fractions: Sequence[float] = (1.0, 0.75, 0.5, 0.35, 0.25), *,
                   executor: Executor | None = None, progress: bool = False,
                   seed: int | None = None) -> dict[str, Any] | None:
    """:func:`rate_limit_study` at the plan's :func:`operating_point` (None if it has none)."""
    point = operating_point(plan)
    if point is None:
        return None
    gpus, load = point
    rows = rate_limit_study(scenario, trace, gpus, load, fractions, executor=executor,
                            progress=progress, seed=seed)
    return {"gpus": gpus, "load": load, "tenants": scenario.tenant_ids(), "rows": rows}


def fairness_text(study: dict[str, Any] | None) -> str:
    if study is None:
        return "No GPU count meets the SLOs at any load searched: no operating point to study."
    return (f"{study['gpus']} GPUs at load {study['load']:.4f}\n"
            + rate_limit_table(study["rows"], study["tenants"]))


def fairness_figure(study: dict[str, Any] | None):
    if study is None:
        fig = _figure(1, 1, width=6.0, height=1.5)
        fig.axes[0].set_axis_off()
        fig.axes[0].text(0.5, 0.5, "no operating point within the SLOs", ha="center")
        return fig
    return rate_limit_figure(study["rows"], study["tenants"])


def rate_limit_table(rows: Sequence[dict[str, Any]], tenant_ids: Sequence[str]) -> str:
    """One line per run: the cap, Jain's index, rejections, p99 wait, tokens/s per tenant."""
    head = (f"{'rate limit':>12} {'Jain':>7} {'rejected':>9} {'p99 wait':>9}  "
            + " ".join(f"{t:>9}" for t in tenant_ids))
    lines = ["tokens/s completed per tenant (prompt + output) under each limit", head]
    for row in rows:
        cap = row["tenants.rate_limit"]
        elapsed = row["elapsed_s"]
        lines.append(
            f"{'scenario' if cap is None else format(cap, '.0f'):>12} "
            f"{_fmt(row['jain_fairness'], '.4f'):>7} {_fmt(row['rejected_fraction'], '.1%'):>9} "
            f"{_fmt(row['queue_wait_s.p99'], '.2f'):>9}  "
            + " ".join(f"{row[f'tenants.{t}.tokens_completed'] / elapsed:>9.0f}"
                       for t in tenant_ids))
    return "\n".join(lines)


def rate_limit_figure(rows: Sequence[dict[str, Any]], tenant_ids: Sequence[str]):
    """Jain's index and the rejected share, and tokens/s per tenant, against the rate limit."""
    fig = _figure(1, 2)
    left, right = fig.axes
    capped = [r for r in rows if r["tenants.rate_limit"] is not None]
    caps = [r["tenants.rate_limit"] for r in capped]
    left.plot(caps, [r["jain_fairness"] for r in capped], "o-", label="Jain's index")
    left.plot(caps, [r["rejected_fraction"] for r in capped], "s-", label="share rejected")
    if rows and rows[0]["tenants.rate_limit"] is None:
        left.axhline(rows[0]["jain_fairness"], color="tab:blue", ls=":", lw=1,
                     label="Jain, scenario's own limits")
    left.set_xlabel("rate limit for every tenant (tokens/s)")
    left.set_ylim(0, 1.05)
    left.legend(fontsize=8)
    left.set_title("A common cap evens out service and turns traffic away", fontsize=9)
    for tenant in tenant_ids:
        right.plot(caps, [r[f"tenants.{tenant}.tokens_completed"] / r["elapsed_s"]
                          for r in capped], "o-", label=tenant)
    right.set_xlabel("rate limit for every tenant (tokens/s)")
    right.set_ylabel("tokens/s completed")
    right.legend(fontsize=8)
    right.set_title("Tokens served per tenant", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return fig


def _figure(nrows: int, ncols: int, width: float = 10.0, height: float = 3.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    fig.subplots(nrows, ncols, squeeze=False)
    return fig


def png(fig, dpi: int = 90) -> bytes:
    """A figure as PNG bytes (for ``IPython.display.Image`` or an ``ipywidgets.Image``)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def show(fig, dpi: int = 90):
    """Display a figure in a notebook as a PNG image (no pyplot state involved)."""
    from IPython.display import Image

    return Image(data=png(fig, dpi), format="png")


# --------------------------------------------------------------------------------------------
# The widget app


class PlanExplorer:
    """Sliders for the first SLO's bound and the GPU price over a live plan and its curve.

    Moving the SLO bound re-runs the plan (in this process); moving the price re-prices the cost
    curve and the recommendation without re-running anything, because cost is linear in price.
    """

    def __init__(self, scenario: Scenario, trace: Trace | None, slos: Sequence[SLO],
                 gpu_counts: Sequence[int], target_rps: float | None = None,
                 settings: SearchSettings | None = None, plan: Plan | None = None) -> None:
        import ipywidgets as widgets

        from .search import plot_plan

        self._plot_plan = plot_plan
        self.scenario, self.trace = scenario, trace
        self.slos = list(slos)
        self.gpu_counts = list(gpu_counts)
        self.target_rps = target_rps
        self.settings = settings or SearchSettings()
        first = self.slos[0]
        bound = first.bound if first.bound > 0 else 1.0
        style, layout = {"description_width": "initial"}, {"width": "360px"}
        self.controls = {
            "slo_bound": widgets.FloatSlider(
                value=first.bound, min=round(bound / 4, 6), max=round(bound * 4, 6),
                step=round(bound / 8, 6), description=f"SLO: {first.path} {first.op}",
                continuous_update=False, style=style, layout=layout),
            "price_per_hour": widgets.FloatSlider(
                value=scenario.gpu.price_per_hour, min=0.5, max=10.0, step=0.1,
                description="GPU price ($/hour)", continuous_update=False, style=style,
                layout=layout),
        }
        self.figure = _figure(1, 2)
        self.image = widgets.Image(format="png", layout={"max_width": "100%"})
        self.status = widgets.HTML()
        self.plan = plan
        self._planned_bound = first.bound if plan is not None else None
        self.replans = 0
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox(list(self.controls.values())), self.image,
                                    self.status])
        self.update()

    def current_slos(self) -> list[SLO]:
        first = self.slos[0]
        return [SLO(first.path, first.op, float(self.controls["slo_bound"].value)),
                *self.slos[1:]]

    def _on_change(self, change: dict) -> None:
        self.update()

    def update(self) -> None:
        bound = float(self.controls["slo_bound"].value)
        if self.plan is None or bound != self._planned_bound:
            self.plan = plan_capacity(self.scenario, self.trace, self.current_slos(),
                                      self.gpu_counts, target_rps=self.target_rps,
                                      settings=self.settings, executor=SerialExecutor(),
                                      progress=False)
            self._planned_bound = bound
            self.replans += 1
        price = float(self.controls["price_per_hour"].value)
        self.rows = self.plan.rows(price)
        self._plot_plan(self.plan, self.figure, price)
        self.image.value = png(self.figure, dpi=80)
        self.status.value = f"<pre style='margin:0'>{self.status_text(price)}</pre>"

    def status_text(self, price: float) -> str:
        rec = self.plan.recommendation
        if rec is None:
            return ""
        if rec.gpus is None:
            return f"target {rec.target_rps:g} req/s: {rec.note}"
        cost = next(r["cost_per_million_tokens"] for r in self.rows if r["gpus"] == rec.gpus)
        return (f"target {rec.target_rps:g} req/s: {rec.gpus} GPUs, ${rec.gpus * price:.2f}/hour "
                f"at ${price:g} per GPU-hour; {cost:.2f} $ per million output tokens at its "
                "highest load within the SLOs")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)



# --------------------------------------------------------------------------------------------
# GPU types: the fleet plan's figures, its price widget, and the seed's answer beside it


def gpu_type_scenarios(scenario: Scenario, gpu_types: str = "") -> dict[str, Scenario]:
    """``{label: scenario on that GPU type}`` for ``"A100-80GB,L4,..."`` (catalogue names or GPU
    files, :func:`apslab.plan.search.parse_gpu_types`); empty: the scenario's own GPU."""
    from .search import parse_gpu_types, scenarios_on_gpu_types

    if not gpu_types:
        return {scenario.gpu.name: scenario}
    return scenarios_on_gpu_types(scenario, parse_gpu_types(gpu_types))


_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def fleet_figure(fleet, prices: dict[str, float] | None = None, fig=None):
    """Left: the highest load within the SLOs per GPU count, one line per GPU type. Right: the
    cost curve, $/hour against the req/s it sustains (the cheapest fleet of each type for a
    target is the lowest step at or right of it). ``prices`` re-prices per GPU type."""
    if fig is None:
        fig = _figure(1, 2)
    fig.clear()
    left, right = fig.subplots(1, 2)
    rec = fleet.recommendation
    for (label, plan), colour in zip(fleet.plans.items(), _COLOURS * 4, strict=False):
        price = (prices or {}).get(label, plan.price_per_hour)
        rows = [r for r in plan.rows(price) if r["max_rps"] is not None]
        if not rows:
            left.plot([], [], "o-", color=colour, label=f"{label}: none within the SLOs")
            continue
        left.plot([r["gpus"] for r in rows], [r["max_rps"] for r in rows], "o-", color=colour,
                  label=label)
        right.step([0.0] + [r["max_rps"] for r in rows],
                   [rows[0]["dollars_per_hour"]] + [r["dollars_per_hour"] for r in rows],
                   where="pre", color=colour, label=label)
        right.plot([r["max_rps"] for r in rows], [r["dollars_per_hour"] for r in rows], "o",
                   color=colour)
    if rec is not None:
        for ax in (left, right):
            (ax.axhline if ax is left else ax.axvline)(rec.target_rps, color="grey", ls="--",
                                                       lw=1, label=f"target {rec.target_rps:g} "
                                                       "req/s")
        if rec.gpus is not None:
            price = (prices or {}).get(rec.gpu_type, fleet.plans[rec.gpu_type].price_per_hour)
            right.plot([rec.target_rps], [rec.gpus * price], "*", ms=14, color="tab:red",
                       label=f"cheapest: {rec.gpus} x {rec.gpu_type}")
    left.set_xticks(sorted({s.gpus for plan in fleet.plans.values() for s in plan.searches}))
    left.set_xlabel("GPUs")
    left.set_ylabel("highest req/s within the SLOs")
    left.set_title("Capacity per GPU count", fontsize=9)
    right.set_xlabel("requests/s sustained within the SLOs")
    right.set_ylabel("$ per hour")
    right.set_title("Cost curve: what each GPU type's fleet costs for a load", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_ylim(bottom=0)
    right.set_xlim(left=0)
    return fig


def attainment_points(fleet, metric: str = "slo_attainment") -> list[dict[str, Any]]:
    """Every run the searches made: GPU type, GPUs, load, offered req/s, ``metric`` (SLO
    attainment by default), goodput req/s and whether it met every SLO (sorted by type, count,
    load)."""
    out = []
    for label, plan in fleet.plans.items():
        for search in plan.searches:
            for point in sorted(search.points, key=lambda p: p.load):
                m = point.metrics
                out.append({"gpu_type": label, "gpus": search.gpus, "load": point.load,
                            "offered_rps": m.get("offered_rps"), metric: m.get(metric),
                            "goodput_rps": m.get("goodput_rps"), "passed": point.passed})
    return out


def attainment_figure(fleet, min_attainment: float | None = None):
    """SLO attainment against offered req/s for each (GPU type, count), from the runs the search
    made (no extra runs): each curve falls through the attainment bound at that count's highest
    load. Curves whose every point is below 1% are left out (a type that never meets them).
    Without goodput targets the plan's first SLO metric is drawn instead, with its bound."""
    fig = _figure(1, 1, width=7.5, height=4.0)
    ax = fig.axes[0]
    goodput = bool(fleet.first.goodput)
    slo = fleet.first.slos[0]
    metric = "slo_attainment" if goodput else slo.path
    points = attainment_points(fleet, metric)
    colours = dict(zip(fleet.plans, _COLOURS * 4, strict=False))
    styles = ("-", "--", ":", "-.")
    absent = []
    for label in fleet.plans:
        for search in fleet.plans[label].searches:
            mine = [p for p in points if p["gpu_type"] == label and p["gpus"] == search.gpus
                    and p[metric] is not None and p["offered_rps"] is not None]
            if not mine or (goodput and max(p[metric] for p in mine) < 0.01):
                absent.append(f"{search.gpus} x {label}")
                continue
            ax.plot([p["offered_rps"] for p in mine], [p[metric] for p in mine],
                    "o" + styles[(search.gpus - 1) % len(styles)], ms=3,
                    color=colours[label], label=f"{search.gpus} x {label}")
    if goodput and min_attainment is not None:
        ax.axhline(min_attainment, color="grey", ls="--", lw=1,
                   label=f"min attainment {min_attainment:g}")
    elif not goodput:
        ax.axhline(slo.bound, color="grey", ls="--", lw=1, label=f"SLO {slo}")
    if any(p["offered_rps"] for p in points):
        ax.set_xscale("log")
    ax.set_xlabel("offered load (requests/s, log scale)")
    if goodput:
        ax.set_ylabel("SLO attainment (share of requests good)")
        ax.set_ylim(-0.02, 1.02)
        title = "Attainment falls off a cliff past each fleet's capacity"
    else:
        ax.set_ylabel(metric)
        title = f"{metric} around each fleet's highest load, from the search's runs"
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if absent:
        title += f" (no point: {', '.join(absent)})" if not goodput else \
            f" (never above 1%: {', '.join(absent)})"
    ax.set_title(title, fontsize=9)
    return fig


def seed_scenario(scenario: Scenario) -> Scenario:
    """The scenario as the seed planned it: static micro-batches (max_batch_size 16, the same
    window and aging) on the seed's sqrt A100 ($3/hour); tenants and workload unchanged."""
    from ..io.scenario import parse_scenario

    data = scenario.to_dict()
    data.pop("model", None)
    sched = scenario.scheduler
    data["gpu"] = {"name": "A100 (the seed's static model)", "model": "sqrt"}
    data["scheduler"] = {"batch_window_ms": sched.batch_window_ms, "max_batch_size": 16,
                         "aging_per_s": sched.aging_per_s if sched.policy == "priority" else 0.0}
    for tenant in data["tenants"]:
        tenant.pop("share", None)
    return parse_scenario(data, source=scenario.source)


SEED_SLOS = ("queue_wait_s.p99<=2", "rejected_fraction<=0.01")


def seed_comparison(scenario: Scenario, trace: Trace | None, fleet, target_rps: float | None,
                    gpu_counts: Sequence[int] = range(1, 9), *,
                    settings: SearchSettings | None = None) -> dict[str, Any]:
    """What the seed's planner would have answered for this traffic: its static A100 model
    under its own SLO (p99 queue wait <= 2 s, <= 1% rejected) over ``gpu_counts`` GPUs, and,
    at its recommended count and the target load, its attainment of the fleet plan's
    per-request targets (a static batch returns a response whole: TTFT = its latency)."""
    from .search import evaluate, parse_slo

    settings = settings or SearchSettings()
    seed = seed_scenario(scenario)
    slos = [parse_slo(text) for text in SEED_SLOS]
    plan = plan_capacity(seed, trace, slos, gpu_counts, target_rps=target_rps,
                         settings=SearchSettings(settings.start, settings.min_load,
                                                 settings.max_load, settings.tolerance,
                                                 settings.seed, fleet.first.goodput),
                         executor=SerialExecutor(), progress=False)
    goodput_at_target = None
    rec = plan.recommendation
    if rec is not None and rec.gpus is not None and fleet.first.goodput:
        goodput_at_target = rec.check.metrics
    continuous = None
    if target_rps is not None:
        # the fleet plan's first GPU type, under the seed's SLO, on as many GPUs as it needs
        label, typed = next(iter(fleet.plans)), None
        for search in fleet.plans[label].searches:
            typed = evaluate(fleet_scenario(fleet, label, search.gpus), trace, slos,
                             target_rps / plan.rps_at_load_1, settings.seed, plan.rps_at_load_1,
                             fleet.first.goodput)
            if typed.passed:
                continuous = (label, search.gpus, typed.metrics)
                break
    return {"plan": plan, "at_target": goodput_at_target, "continuous": continuous,
            "service": service_times(seed, scenario, trace)}


def fleet_scenario(fleet, label: str, gpus: int) -> Scenario:
    """The fleet plan's scenario for GPU type ``label`` on ``gpus`` GPUs."""
    return fleet.scenarios[label].with_overrides({"cluster.gpus": gpus})


def service_times(seed: Scenario, scenario: Scenario, trace: Trace | None) -> dict[str, float]:
    """Why the seed's answer differs, in numbers for the trace's mean request (P, O): one
    request alone, and the decode rate of a batch of 16, on the seed's model and on the
    scenario's roofline GPU (the first iteration prefills, later ones decode at context
    P + O/2)."""
    from ..core.gpu import RooflineGPU

    sample = trace if trace is not None else trace_at_load(scenario, None)
    prompt = int(round(float(sample.prompt_tokens.mean())))
    output = int(round(float(sample.output_tokens.mean())))
    old = seed.gpu
    out = {"prompt": prompt, "output": output,
           "seed_alone_s": float(old.service_time_s(prompt, output, 1)),
           "seed_decode_16": float(old.decode_tokens_per_s_at(16))}
    gpu = scenario.gpu
    if isinstance(gpu, RooflineGPU):
        cost = gpu.iteration_cost()
        context = prompt + output // 2
        out["roofline_alone_s"] = cost.static_batch_seconds([prompt], output)
        for batch in (16, 64):
            seconds = cost.seconds(*cost.work(batch * (context + 1), batch, batch * context
                                              + batch))
            out[f"roofline_decode_{batch}"] = batch / seconds
    return out


def seed_comparison_text(comparison: dict[str, Any], target_rps: float | None) -> str:
    """The seed's plan, its answer at the target and the continuous engine's, and the
    per-request numbers that explain the difference."""
    plan = comparison["plan"]
    lines = [plan.table()]
    at = comparison["at_target"]
    if at is not None:
        lines.append(f"at the target on the seed's answer: slo_attainment "
                     f"{_fmt(at.get('slo_attainment'), '.1%')} of {plan.goodput} (a static "
                     "batch returns each response whole: TTFT = latency, "
                     f"p99 {_fmt(at.get('latency_s.p99'), '.2f')} s)")
    cont = comparison["continuous"]
    if cont is not None:
        label, gpus, m = cont
        lines.append(f"the same SLO on the continuous engine: {gpus} x {label} at {target_rps:g} "
                     f"req/s, queue_wait_s.p99 {_fmt(m.get('queue_wait_s.p99'), '.3f')} s, "
                     f"slo_attainment {_fmt(m.get('slo_attainment'), '.1%')}")
    sv = comparison["service"]
    lines.append(f"mean request {sv['prompt']} prompt + {sv['output']} output tokens: alone it "
                 f"takes {sv['seed_alone_s']:.2f} s on the seed's model"
                 + (f", {sv['roofline_alone_s']:.2f} s on the roofline" if
                    "roofline_alone_s" in sv else "")
                 + f"; a batch of 16 decodes {sv['seed_decode_16']:.0f} tokens/s on the seed's "
                 "model" + (f", {sv['roofline_decode_16']:.0f} on the roofline (64 running: "
                            f"{sv['roofline_decode_64']:.0f})" if "roofline_decode_16" in sv
                            else ""))
    return "\n".join(lines)


class GpuPriceApp:
    """One price slider per GPU type over the fleet plan's cost curve: moving a price re-prices
    that type's fleets (cost is linear in the price; nothing is re-run) and names the cheapest
    (type, count) whose highest load in the search reaches the target at those prices."""

    def __init__(self, fleet, target_rps: float | None = None) -> None:
        import ipywidgets as widgets

        self.fleet = fleet
        self.target_rps = target_rps
        style, layout = {"description_width": "initial"}, {"width": "320px"}
        self.controls = {
            label: widgets.FloatSlider(value=plan.price_per_hour, min=0.1,
                                       max=round(max(10.0, plan.price_per_hour * 3), 1),
                                       step=0.05, description=f"{label} $/GPU-hour",
                                       continuous_update=False, style=style, layout=layout)
            for label, plan in fleet.plans.items()}
        self.figure = _figure(1, 2)
        self.image = widgets.Image(format="png", layout={"max_width": "100%"})
        self.status = widgets.HTML()
        for control in self.controls.values():
            control.observe(lambda change: self.update(), names="value")
        self.widget = widgets.VBox([widgets.VBox(list(self.controls.values())), self.image,
                                    self.status])
        self.update()

    def prices(self) -> dict[str, float]:
        return {label: float(c.value) for label, c in self.controls.items()}

    def cheapest(self) -> tuple[str, int, float] | None:
        """(type, GPUs, $/hour) of the cheapest fleet reaching the target in the search."""
        if self.target_rps is None:
            return None
        prices = self.prices()
        options = [(prices[label] * s.gpus, s.gpus, label)
                   for label, plan in self.fleet.plans.items() for s in plan.searches
                   if s.best is not None and s.best.metrics["offered_rps"] >= self.target_rps]
        if not options:
            return None
        dollars, gpus, label = min(options)
        return label, gpus, dollars

    def update(self) -> None:
        fleet_figure(self.fleet, self.prices(), self.figure)
        self.image.value = png(self.figure, dpi=80)
        best = self.cheapest()
        if self.target_rps is None:
            text = "no target: the curves show what each fleet sustains"
        elif best is None:
            text = f"target {self.target_rps:g} req/s: no GPU type and count reaches it"
        else:
            label, gpus, dollars = best
            text = (f"target {self.target_rps:g} req/s at these prices: {gpus} x {label}, "
                    f"${dollars:.2f}/hour (by the search's highest loads)")
        self.status.value = f"<pre style='margin:0'>{text}</pre>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def tpot_floor_text(fleet, context: int = 1000, tpot_target: float | None = None) -> str:
    """Per GPU type: the shortest decode iteration there is, one request at ``context`` tokens
    (the weights read once, its KV cache, the fixed overhead). No number of GPUs makes a token
    come faster, so a TPOT target below it cannot be met on that type at any load."""
    from ..core.gpu import RooflineGPU

    lines = [f"one request decoding at a context of {context:,} tokens",
             f"{'GPU type':<24} {'read weights':>12} {'+ KV, overhead':>14} {'TPOT floor':>10}"]
    for label, scenario in fleet.scenarios.items():
        gpu = scenario.gpu
        if not isinstance(gpu, RooflineGPU):
            continue
        cost = gpu.iteration_cost()
        floor = cost.seconds(*cost.work(context + 1, 1, context + 1))
        weights = cost.weight_bytes / cost.bandwidth
        verdict = ""
        if tpot_target is not None:
            verdict = "  meets" if floor <= tpot_target else f"  > {tpot_target:g} s target"
        lines.append(f"{label:<24} {weights * 1000:>9.1f} ms {(floor - weights) * 1000:>11.1f} ms "
                     f"{floor * 1000:>7.1f} ms{verdict}")
    return "\n".join(lines)
