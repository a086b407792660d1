"""The capacity-planning study behind notebook 06 and ``apslab report``, and its widget app.

The notebook is a thin sequence of calls into this module: load a scenario and a trace, describe
the traffic, plan (:mod:`apslab.plan.search`), draw load curves and the cost curve, and measure
how per-tenant rate limits move fairness (:mod:`apslab.plan.sweep`). :class:`PlanExplorer` lets a
planner move the SLO bound and the GPU price and watch the plan change; tests drive it by setting
``app.controls[name].value``.
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
from .search import SLO, Plan, SearchSettings, plan_capacity
from .sweep import SerialExecutor, base_rps, run_sweep, trace_at_load


def load_inputs(scenario_path: str | Path, trace_path: str | Path | None = None,
                trace_format: str = "apslab", tenant_weights: str = "", tenant_seed: int = 0
                ) -> tuple[Scenario, Trace | None]:
    """The scenario, and the trace to replay (None: the scenario's [workload] is generated)."""
    from ..io.trace_formats import read_trace_file

    scenario = load_scenario(scenario_path)
    if not trace_path:
        if trace_format != "apslab" or tenant_weights:
            raise InputError("an azure trace format and tenant weights need a trace path")
        if scenario.workload is None:
            raise InputError(f"{scenario.source}: no trace given and the scenario has no "
                             "[workload] section to generate one from")
        return scenario, None
    return scenario, read_trace_file(trace_path, scenario, trace_format, tenant_weights,
                                     tenant_seed)


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


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


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
