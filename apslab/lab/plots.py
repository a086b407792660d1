"""Plots for the lab notebooks and their widget apps.

Every ``draw_*`` function draws onto axes it is given (clearing them first) and returns the
artists it made, keyed by name, so a widget app can redraw the same figure when a control moves
and a test can read back exactly what was plotted. ``*_figure`` functions make a new figure for
a notebook cell. Figures are plain :class:`matplotlib.figure.Figure` objects with an Agg canvas:
no pyplot state, so nothing is drawn twice or leaks between cells, and they render the same
inside and outside Jupyter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..sim.result import IterationLog, SimulationResult
from .appkit import ADMITTED_COLOR, COLORS, REJECTED_COLOR, color, new_figure
from .continuous_lab import EngineRun
from .datasets import DecodeMeasurements
from .experiments import BatchingPoint, BidClassWaits, BucketRun, ClaimRange, LoadPoint
from .fairness_lab import FairRun, idle_gaps, service_curves
from .fit import SEED_SPEEDUP, FitResult, SourceFits, sqrt_curve

# --------------------------------------------------------------------------------------------
# 00: the whole path


def draw_waits_by_tenant(ax: Axes, result: SimulationResult) -> dict:
    """Queue wait of every completed request against its arrival time, one colour per tenant."""
    ax.clear()
    trace = result.trace
    done = result.completed
    wait = result.start_s - trace.arrival_s
    artists = {}
    for index, tenant in enumerate(result.scenario.tenant_ids()):
        mask = done & (result.tenant_index == index)
        artists[tenant] = ax.scatter(trace.arrival_s[mask], wait[mask], s=10, color=color(index),
                                     label=tenant)
    ax.set_xlabel("arrival time (s)")
    ax.set_ylabel("queue wait (s)")
    ax.set_title("queue wait per request")
    ax.legend(loc="upper left", fontsize="small")
    return artists


def draw_tenant_outcomes(ax: Axes, summary: dict) -> dict:
    """Completed and rejected requests per tenant (stacked bars)."""
    ax.clear()
    tenants = list(summary["tenants"])
    completed = np.array([summary["tenants"][t]["completed"] for t in tenants])
    rejected = np.array([summary["tenants"][t]["rejected"] for t in tenants])
    x = np.arange(len(tenants))
    done_bars = ax.bar(x, completed, color=ADMITTED_COLOR, label="completed")
    rejected_bars = ax.bar(x, rejected, bottom=completed, color=REJECTED_COLOR, label="rejected")
    ax.set_xticks(x, tenants)
    ax.set_ylabel("requests")
    ax.set_title("what happened to each tenant's requests")
    ax.legend(fontsize="small")
    return {"completed": done_bars, "rejected": rejected_bars}


def overview_figure(result: SimulationResult) -> Figure:
    figure = new_figure(1, 2)
    draw_waits_by_tenant(figure.axes[0], result)
    draw_tenant_outcomes(figure.axes[1], result.summary())
    return figure


# --------------------------------------------------------------------------------------------
# 01: the token bucket


def draw_bucket(ax_level: Axes, ax_tokens: Axes, run: BucketRun) -> dict:
    """Top: the bucket level, with admitted and rejected arrivals. Bottom: tokens over time.

    The bottom panel draws the bound ``burst_cap + rate_limit x t`` that admitted tokens can
    never cross, next to the tokens offered and admitted.
    """
    ax_level.clear()
    ax_tokens.clear()
    level = ax_level.plot(run.curve_t, run.curve_level, color="#555555", lw=1,
                          label="tokens in bucket")[0]
    admitted = ax_level.scatter(run.times_s[run.admitted], run.level_before[run.admitted],
                                s=14, color=ADMITTED_COLOR, label="admitted", zorder=3)
    rejected = ax_level.scatter(run.times_s[~run.admitted], run.level_before[~run.admitted],
                                s=18, marker="x", color=REJECTED_COLOR, label="rejected",
                                zorder=3)
    ax_level.axhline(run.burst_cap, color="#999999", ls=":", lw=1)
    ax_level.set_ylim(0, run.burst_cap * 1.1)
    ax_level.set_ylabel("tokens")
    ax_level.set_title(f"rate limit {run.rate_limit:g} tokens/s, burst cap {run.burst_cap:g} "
                       f"tokens: {run.admitted.sum()} of {len(run.admitted)} admitted")
    ax_level.legend(loc="lower left", fontsize="small", ncols=3)

    t = run.times_s
    offered = ax_tokens.step(t, run.offered_tokens, where="post", color="#999999",
                             label="offered")[0]
    admitted_line = ax_tokens.step(t, run.admitted_tokens, where="post", color=ADMITTED_COLOR,
                                   label="admitted")[0]
    span = np.array([t[0], t[-1]]) if len(t) else np.array([0.0, 1.0])
    bound = ax_tokens.plot(span, run.bound(span), color=REJECTED_COLOR, ls="--",
                           label="burst + rate x t")[0]
    ax_tokens.set_xlabel("time (s)")
    ax_tokens.set_ylabel("cumulative tokens")
    ax_tokens.legend(loc="upper left", fontsize="small")
    return {"level": level, "admitted": admitted, "rejected": rejected, "offered": offered,
            "admitted_tokens": admitted_line, "bound": bound}


def bucket_figure(run: BucketRun) -> Figure:
    figure = new_figure(2, 1, height=5.5)
    draw_bucket(figure.axes[0], figure.axes[1], run)
    return figure


# --------------------------------------------------------------------------------------------
# 02: bids and aging


def draw_waits_by_bid(ax: Axes, waits: BidClassWaits) -> dict:
    """Queue wait against arrival time for each bid class."""
    ax.clear()
    artists = {}
    for index, bid in enumerate(waits.bids):
        artists[bid] = ax.scatter(waits.arrival_s[bid], waits.wait_s[bid], s=8,
                                  color=color(index), label=f"bid {bid:g}")
    ax.set_xlabel("arrival time (s)")
    ax.set_ylabel("queue wait (s)")
    ax.set_title(f"aging {waits.aging_per_s:g} per s")
    ax.legend(loc="upper left", fontsize="small")
    return artists


def draw_aging_sweep(ax: Axes, sweep: Sequence[BidClassWaits], current: float | None = None
                     ) -> dict:
    """p99 queue wait of each bid class against the aging rate (log x; 0 drawn at the left)."""
    ax.clear()
    agings = np.array([w.aging_per_s for w in sweep])
    positive = agings[agings > 0]
    zero_at = positive.min() / 3 if len(positive) else 1e-3
    x = np.where(agings > 0, agings, zero_at)
    artists = {}
    for index, bid in enumerate(sweep[0].bids):
        artists[bid] = ax.plot(x, [w.p99(bid) for w in sweep], marker="o", ms=3,
                               color=color(index), label=f"bid {bid:g} p99")[0]
    if current is not None:
        artists["current"] = ax.axvline(current if current > 0 else zero_at, color="#555555",
                                        ls=":")
    ax.set_xscale("log")
    ax.set_xlabel(f"aging_per_s (leftmost point: 0, drawn at {zero_at:.2g})")
    ax.set_ylabel("p99 queue wait (s)")
    ax.set_title("aging trades the high bid's wait for the low bid's")
    ax.legend(fontsize="small")
    return artists


def draw_pop_cost(ax: Axes, queue_lengths: Sequence[int], seconds: dict[str, np.ndarray]
                  ) -> dict:
    """Measured seconds per pop against queue length, log-log, lazy and eager."""
    ax.clear()
    artists = {}
    for index, (name, values) in enumerate(seconds.items()):
        artists[name] = ax.loglog(queue_lengths, np.asarray(values) * 1e6, marker="o",
                                  color=color(index), label=f"{name} queue")[0]
    ax.set_xlabel("queue length n")
    ax.set_ylabel("time per pop (microseconds)")
    ax.set_title("measured pop cost")
    ax.legend(fontsize="small")
    return artists


def draw_pop_work(ax: Axes, queue_lengths: Sequence[int], eager_work: Sequence[int],
                  lazy_depth: Sequence[int]) -> dict:
    """Entries touched per pop: n for the eager queue, at most the heap depth for the lazy one."""
    ax.clear()
    eager = ax.loglog(queue_lengths, eager_work, marker="o", color=color(1),
                      label="eager: entries re-prioritised per pop")[0]
    lazy = ax.loglog(queue_lengths, lazy_depth, marker="o", color=color(0),
                     label="lazy: heap levels a pop sifts through")[0]
    ax.set_xlabel("queue length n")
    ax.set_ylabel("work per pop")
    ax.set_title("O(n) versus O(log n)")
    ax.legend(fontsize="small")
    return {"eager": eager, "lazy": lazy}


# --------------------------------------------------------------------------------------------
# 03: micro-batching and the KV cache


def draw_batching_sweep(ax: Axes, twin: Axes, points: Sequence[BatchingPoint], x_name: str,
                        current: float | None = None) -> dict:
    """Served throughput and GPU capacity (``ax``) and latency (``twin``, e.g. ``ax.twinx()``)
    against a knob.

    ``x_name`` is the :class:`~apslab.lab.BatchingPoint` field that varies: ``max_batch_size``
    or ``batch_window_ms``.
    """
    ax.clear()
    twin.clear()
    x = np.array([getattr(p, x_name) for p in points], dtype=np.float64)
    served = ax.plot(x, [p.throughput_tokens_per_s for p in points], marker="o", ms=3,
                     color=color(0), label="served tokens/s")[0]
    capacity = ax.plot(x, [p.tokens_per_busy_s for p in points], marker="s", ms=3, ls="--",
                       color=color(0), alpha=0.6, label="tokens per GPU-busy s")[0]
    ax.set_xlabel(x_name)
    ax.set_ylabel("output tokens/s", color=color(0))
    p50 = twin.plot(x, [p.latency_p50_s for p in points], marker="o", ms=3, color=color(3),
                    label="latency p50")[0]
    p99 = twin.plot(x, [p.latency_p99_s for p in points], marker="^", ms=3, ls="--",
                    color=color(3), alpha=0.6, label="latency p99")[0]
    twin.set_ylabel("latency (s)", color=color(3))
    twin.yaxis.set_label_position("right")
    twin.yaxis.tick_right()
    artists = {"served": served, "capacity": capacity, "latency_p50": p50, "latency_p99": p99}
    if current is not None:
        artists["current"] = ax.axvline(current, color="#555555", ls=":")
    if x_name == "max_batch_size":
        ax.set_xscale("log", base=2)
    else:
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, x.max() * 1.3)
    lines = [served, capacity, p50, p99]
    ax.legend(lines, [line.get_label() for line in lines], fontsize="x-small", loc="center right")
    return artists


def draw_kv_per_batch(ax: Axes, result: SimulationResult) -> dict:
    """Each batch's KV tokens as a share of the KV capacity, coloured by batch size."""
    ax.clear()
    capacity = result.scenario.gpu.kv_capacity_tokens
    share = result.batch_kv_tokens / capacity if capacity else np.zeros(len(result.batch_size))
    largest = max(2, result.scenario.scheduler.max_batch_size)
    points = ax.scatter(result.batch_start_s, share * 100, c=result.batch_size, s=10,
                        cmap="viridis", vmin=1, vmax=largest)
    limit = ax.axhline(100, color=REJECTED_COLOR, ls="--", lw=1)
    ax.set_ylim(0, 110)
    ax.set_xlabel("batch start (s)")
    ax.set_ylabel("KV cache used (%); colour = batch size")
    ax.set_title(f"KV cache per batch (capacity {capacity:,} tokens)", fontsize="small")
    return {"kv": points, "capacity": limit}


# --------------------------------------------------------------------------------------------
# 04: the A100 model and the fits


def draw_measurements(ax: Axes, rows: DecodeMeasurements, by: str = "source") -> dict:
    """Measured throughput against batch size (log-log), one colour per ``by`` value."""
    ax.clear()
    artists = {}
    keys = getattr(rows, by)
    for index, key in enumerate(dict.fromkeys(keys.tolist())):
        mask = keys == key
        artists[key] = ax.scatter(rows.batch_size[mask], rows.decode_tokens_per_s[mask], s=12,
                                  color=color(index), label=str(key))
    grid = np.geomspace(1, max(2, rows.batch_size.max()), 100)
    artists["seed"] = ax.plot(grid, sqrt_curve(grid, *SEED_SPEEDUP), color="black", ls="--",
                              label="seed 128*(0.4+0.6*sqrt(B))")[0]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("output tokens/s")
    ax.legend(fontsize="x-small", loc="upper left")
    return artists


def draw_fit(ax: Axes, fit: FitResult, curve_b: np.ndarray, curve_y: np.ndarray,
             title: str = "") -> dict:
    """Measured points, a fitted curve and the seed's curve, against batch size."""
    ax.clear()
    measured = ax.scatter(fit.batch_size, fit.measured, s=16, color=color(0), label="measured",
                          zorder=3)
    curve = ax.plot(curve_b, curve_y, color=color(1), label=f"fit: {fit.form}")[0]
    seed = ax.plot(curve_b, sqrt_curve(curve_b, *SEED_SPEEDUP), color="black", ls="--",
                   label="seed (0.4, 0.6)")[0]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("output tokens/s")
    ax.set_title(title or fit.label, fontsize="small")
    ax.legend(fontsize="x-small", loc="upper left")
    return {"measured": measured, "curve": curve, "seed": seed}


def draw_residuals(ax: Axes, fit: FitResult, title: str = "") -> dict:
    """Relative residuals (measured - fitted) / measured against batch size."""
    ax.clear()
    points = ax.scatter(fit.batch_size, fit.relative_residuals * 100, s=16, color=color(0))
    zero = ax.axhline(0, color="#999999", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("residual (% of measured)")
    ax.set_title(title or f"residuals, R^2 {fit.r_squared:.3f}", fontsize="small")
    return {"residuals": points, "zero": zero}


def residuals_figure(fits: dict[str, SourceFits]) -> Figure:
    """Per source: relative residuals of the sqrt fit (reference series) and of the roofline."""
    sources = [s for s, f in fits.items() if f.seed_scale is not None]
    figure = new_figure(2, len(sources), width=2.3 * len(sources), height=4.6)
    for column, source in enumerate(sources):
        f = fits[source]
        short = source.replace("argonne-llm-inference-bench-", "argonne-")
        for row, (fit, name) in enumerate(((f.seed_scale, "sqrt"), (f.roofline, "roofline"))):
            ax = figure.axes[row * len(sources) + column]
            ax.scatter(fit.batch_size, fit.relative_residuals * 100, s=10, color=color(row))
            ax.axhline(0, color="#999999", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{short}\n{name}, R^2 {fit.r_squared:.3f}", fontsize="x-small")
            ax.tick_params(labelsize="x-small")
            if column == 0:
                ax.set_ylabel("residual (%)", fontsize="small")
    return figure


def draw_predicted_vs_measured(ax: Axes, fits: dict[str, SourceFits], model: str) -> dict:
    """Predicted against measured throughput for every Llama row, ``model`` "sqrt" or "roofline".

    "sqrt" is each source's 128*(a+b*sqrt(B)) fitted across all its context lengths.
    """
    ax.clear()
    artists = {}
    for index, (source, f) in enumerate(fits.items()):
        fit = f.sqrt_all_rows if model == "sqrt" else f.roofline
        if fit is None:
            continue
        artists[source] = ax.scatter(fit.measured, fit.predicted, s=10, color=color(index),
                                     label=source.replace("argonne-llm-inference-bench-",
                                                          "argonne-"))
    low, high = 20, 8000
    ax.plot([low, high], [low, high], color="#999999", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured output tokens/s")
    ax.set_ylabel("predicted output tokens/s")
    ax.set_title("sqrt curve, all context lengths" if model == "sqrt" else "roofline",
                 fontsize="small")
    ax.legend(fontsize="xx-small", loc="upper left")
    return artists


def predicted_vs_measured_figure(fits: dict[str, SourceFits]) -> Figure:
    figure = new_figure(1, 2, height=4.0)
    draw_predicted_vs_measured(figure.axes[0], fits, "sqrt")
    draw_predicted_vs_measured(figure.axes[1], fits, "roofline")
    return figure


# --------------------------------------------------------------------------------------------
# 05: latency, fairness and the seed's claims


def draw_load_sweep(ax: Axes, points: Sequence[LoadPoint], field: str, ylabel: str) -> dict:
    """One line per tenant (or bid) of ``field`` (a dict-valued LoadPoint field) against load."""
    ax.clear()
    loads = [p.load for p in points]
    artists = {}
    for index, key in enumerate(getattr(points[0], field)):
        label = f"bid {key:g}" if isinstance(key, float) else str(key)
        artists[key] = ax.plot(loads, [getattr(p, field)[key] for p in points], marker="o",
                               ms=3, color=color(index), label=label)[0]
    ax.set_xlabel("load (x the scenario's arrival rates)")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    return artists


def draw_claims(ax: Axes, points: Sequence[LoadPoint], claims: Sequence[ClaimRange]) -> dict:
    """A strip per claim: where it holds (green) and fails (red) along the load axis."""
    ax.clear()
    loads = np.array([p.load for p in points])
    artists = {}
    for row, claim in enumerate(claims):
        colors = [ADMITTED_COLOR if ok else REJECTED_COLOR for ok in claim.holds]
        artists[claim.claim] = ax.scatter(loads, np.full(len(loads), row), c=colors, s=18,
                                          marker="s")
    ax.set_yticks(range(len(claims)), [c.claim for c in claims], fontsize="small")
    ax.set_xscale("log")
    ax.set_ylim(-0.5, len(claims) - 0.5)
    ax.set_xlabel("load (x the example's arrival rates); green = claim holds")
    return artists


def draw_tenant_bars(ax: Axes, values: dict[str, float], ylabel: str, title: str = "",
                     highlight: str | None = None) -> dict:
    """One bar per tenant; ``highlight`` draws one tenant in the rejected colour."""
    ax.clear()
    tenants = list(values)
    colors = [REJECTED_COLOR if t == highlight else color(0) for t in tenants]
    bars = ax.bar(range(len(tenants)), [values[t] for t in tenants], color=colors)
    ax.set_xticks(range(len(tenants)), tenants, fontsize="small")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize="small")
    return {"bars": bars}


# --------------------------------------------------------------------------------------------
# Figures for notebook cells


def measurements_figure(rows: DecodeMeasurements) -> Figure:
    """Every measurement, by source, with the seed's curve."""
    figure = new_figure(1, 1, width=7.5, height=4.2)
    draw_measurements(figure.axes[0], rows)
    figure.axes[0].set_title("published A100 throughput (Llama-2-7B / LLaMA 7B and Mistral-7B)",
                             fontsize="small")
    return figure


def waits_by_bid_figure(waits: Sequence[BidClassWaits]) -> Figure:
    """One panel per aging rate: queue wait against arrival time for each bid class."""
    figure = new_figure(1, len(waits), width=4.5 * len(waits))
    for ax, w in zip(figure.axes, waits, strict=True):
        draw_waits_by_bid(ax, w)
    return figure


def pop_cost_figure(queue_lengths: Sequence[int], seconds: dict[str, np.ndarray]) -> Figure:
    figure = new_figure(1, 1, width=5.5, height=3.6)
    draw_pop_cost(figure.axes[0], queue_lengths, seconds)
    return figure


def pop_work_figure(queue_lengths: Sequence[int], eager_work: Sequence[int],
                    lazy_depth: Sequence[int]) -> Figure:
    figure = new_figure(1, 1, width=5.5, height=3.6)
    draw_pop_work(figure.axes[0], queue_lengths, eager_work, lazy_depth)
    return figure


def batching_figure(size_points: Sequence[BatchingPoint],
                    window_points: Sequence[BatchingPoint]) -> Figure:
    """Left: against the batch-size cap. Right: against the batch window."""
    figure = new_figure(1, 2, width=11.0, height=3.8)
    left, right = figure.axes
    draw_batching_sweep(left, left.twinx(), size_points, "max_batch_size")
    draw_batching_sweep(right, right.twinx(), window_points, "batch_window_ms")
    return figure


def kv_figure(result: SimulationResult) -> Figure:
    """Each batch's share of the KV cache in one run."""
    figure = new_figure(1, 1, width=7.0, height=3.2)
    draw_kv_per_batch(figure.axes[0], result)
    return figure


def load_sweep_figure(points: Sequence[LoadPoint]) -> Figure:
    """p99 queue wait against load: per tenant (left) and per bid class (right)."""
    figure = new_figure(1, 2)
    draw_load_sweep(figure.axes[0], points, "wait_p99_by_tenant", "p99 queue wait (s)")
    figure.axes[0].set_title("per tenant", fontsize="small")
    draw_load_sweep(figure.axes[1], points, "wait_p99_by_bid", "p99 queue wait (s)")
    figure.axes[1].set_title("per bid class", fontsize="small")
    return figure


def claims_figure(points: Sequence[LoadPoint], claims: Sequence[ClaimRange]) -> Figure:
    figure = new_figure(1, 1, width=9.0, height=2.8)
    draw_claims(figure.axes[0], points, claims)
    return figure


# --------------------------------------------------------------------------------------------
# 08: continuous batching

DECODE_COLOR = COLORS[0]
PREFILL_COLOR = COLORS[1]
_SHARE_CMAP = LinearSegmentedColormap.from_list("prefill_share", [DECODE_COLOR, PREFILL_COLOR])


def prefill_share(log: IterationLog) -> np.ndarray:
    """Each iteration's prompt (and recomputation) tokens over all its tokens."""
    tokens = log.prefill_tokens + log.decode_tokens
    return np.divide(log.prefill_tokens, tokens, out=np.zeros(len(log)), where=tokens > 0)


def _window(log: IterationLog, start_s: float | None, end_s: float | None) -> np.ndarray:
    """Rows of iterations that overlap [start_s, end_s]."""
    start = -np.inf if start_s is None else start_s
    end = np.inf if end_s is None else end_s
    return np.flatnonzero((log.start_s + log.duration_s > start) & (log.start_s < end))


def rectangles(ax: Axes, left, width, bottom, height, colors, **kwargs) -> PolyCollection:
    """Axis-aligned rectangles as one collection (thousands draw fast, unlike one patch each);
    ``collection.get_paths()[i].vertices`` are rectangle i's corners."""
    left, width, bottom, height = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (left, width, bottom, height)))
    right, top = left + width, bottom + height
    corners = np.stack([np.column_stack(pair) for pair in
                        ((left, bottom), (right, bottom), (right, top), (left, top))], axis=1)
    collection = PolyCollection(corners.reshape(-1, 4, 2), facecolors=colors, **kwargs)
    ax.add_collection(collection)
    ax.autoscale_view()
    return collection


def draw_iteration_timeline(ax: Axes, log: IterationLog, start_s: float | None = None,
                            end_s: float | None = None, title: str = "") -> dict:
    """One lane per GPU, one bar per iteration (from its start, as long as it lasts), coloured
    from blue (decodes only) to orange (prompt tokens only) by its share of prompt tokens; a red
    x above an iteration whose round preempted requests.

    Artists: ``"gpu 0"``, ``"gpu 1"``... (collections of one rectangle per iteration shown) and
    ``"preemptions"`` (one point per preempting iteration).
    """
    ax.clear()
    rows = _window(log, start_s, end_s)
    share = prefill_share(log)
    gpus = int(log.gpu.max()) + 1 if len(log) else 1
    artists = {}
    for gpu in range(gpus):
        mine = rows[log.gpu[rows] == gpu]
        artists[f"gpu {gpu}"] = rectangles(ax, log.start_s[mine], log.duration_s[mine],
                                           gpu - 0.3, 0.6, _SHARE_CMAP(share[mine]),
                                           edgecolors="white", linewidths=0.3)
    hit = rows[log.preempted[rows] > 0]
    artists["preemptions"] = ax.scatter(log.start_s[hit] + log.duration_s[hit] / 2,
                                        log.gpu[hit] - 0.4, marker="x", s=30,
                                        color=REJECTED_COLOR, label="round preempted", zorder=3)
    ax.set_yticks(range(gpus), [f"GPU {g}" for g in range(gpus)])
    ax.set_ylim(gpus + 0.15, -0.6)
    if start_s is not None and end_s is not None:
        ax.set_xlim(start_s, end_s)
    ax.set_xlabel("time (s)")
    handles = [Patch(color=DECODE_COLOR, label="decodes only"),
               Patch(color=PREFILL_COLOR, label="prompt tokens only"), artists["preemptions"]]
    ax.legend(handles=handles, fontsize="x-small", loc="lower right", ncols=3)
    ax.set_title(title or f"{len(rows)} iterations, coloured by their share of prompt tokens",
                 fontsize="small")
    return artists


def draw_iteration_tokens(ax: Axes, log: IterationLog, start_s: float | None = None,
                          end_s: float | None = None, gpu: int = 0) -> dict:
    """Tokens computed in each iteration of one GPU: decodes (blue) with prompt tokens stacked
    on top (orange), each bar as wide as the iteration lasted (collections of rectangles)."""
    ax.clear()
    rows = _window(log, start_s, end_s)
    rows = rows[log.gpu[rows] == gpu]
    left, width = log.start_s[rows], log.duration_s[rows]
    decode = rectangles(ax, left, width, 0.0, log.decode_tokens[rows], DECODE_COLOR,
                        label="decode tokens")
    prefill = rectangles(ax, left, width, log.decode_tokens[rows], log.prefill_tokens[rows],
                         PREFILL_COLOR, label="prompt (and recomputed) tokens")
    ax.set_yscale("symlog", linthresh=10)
    top = float((log.decode_tokens[rows] + log.prefill_tokens[rows]).max()) if len(rows) else 1
    ax.set_ylim(0, max(10.0, top) * 12)  # room above the bars for the legend
    if start_s is not None and end_s is not None:
        ax.set_xlim(start_s, end_s)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"tokens per iteration\n(GPU {gpu})")
    ax.legend(handles=[Patch(color=DECODE_COLOR, label="decode tokens"),
                       Patch(color=PREFILL_COLOR, label="prompt (and recomputed) tokens")],
              fontsize="x-small", loc="upper right")
    return {"decode": decode, "prefill": prefill}


def iteration_timeline_figure(log: IterationLog, start_s: float | None = None,
                              end_s: float | None = None, title: str = "") -> Figure:
    """Top: the timeline per GPU. Bottom: GPU 0's tokens per iteration, on the same time axis."""
    figure = new_figure(2, 1, width=9.0, height=4.6)
    top, bottom = figure.axes
    bottom.sharex(top)
    draw_iteration_timeline(top, log, start_s, end_s, title)
    draw_iteration_tokens(bottom, log, start_s, end_s)
    return figure


LATENCY_METRICS = (("TTFT\np50", "ttft_p50_s"), ("TTFT\np99", "ttft_p99_s"),
                   ("TPOT\np50", "tpot_p50_s"), ("TPOT\np99", "tpot_p99_s"),
                   ("latency\np50", "latency_p50_s"), ("latency\np99", "latency_p99_s"))
HARDWARE_METRICS = (("GPU busy", "gpu_busy"), ("MBU", "mbu"), ("MFU", "mfu"))


ENGINE_COLORS = {"static": COLORS[7], "continuous": COLORS[2]}


def _grouped_bars(ax: Axes, groups: Sequence[str],
                  series: Sequence[tuple[str, Sequence[float], str]]) -> dict:
    """One group of bars per name in ``groups``, one bar in each per (label, values, colour)
    of ``series``, side by side; artists: each series' bar container, by its label."""
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    artists = {}
    for index, (label, values, colour) in enumerate(series):
        artists[label] = ax.bar(x + (index - (len(series) - 1) / 2) * width, values,
                                width=width, color=colour, label=label)
    ax.set_xticks(x, groups, fontsize="small")
    return artists


def _engine_bars(ax: Axes, runs: Sequence[EngineRun], metrics, scale: float = 1.0) -> dict:
    """Grouped bars of ``metrics`` ((name, EngineRun field) pairs), one bar per run."""
    artists = _grouped_bars(
        ax, [name for name, _ in metrics],
        [(run.label, [getattr(run, field) * scale for _, field in metrics],
          ENGINE_COLORS.get(run.label, color(index))) for index, run in enumerate(runs)])
    ax.legend(fontsize="small")
    return artists


def draw_engine_latencies(ax: Axes, runs: Sequence[EngineRun]) -> dict:
    """TTFT, TPOT and latency percentiles of each run (grouped bars, log scale)."""
    ax.clear()
    artists = _engine_bars(ax, runs, LATENCY_METRICS)
    ax.set_yscale("log")
    ax.set_ylabel("seconds (log scale)")
    ax.set_title("what each request sees", fontsize="small")
    return artists


def draw_hardware_use(ax: Axes, runs: Sequence[EngineRun]) -> dict:
    """GPU busy, MBU and MFU of each run, in percent (grouped bars)."""
    ax.clear()
    artists = _engine_bars(ax, runs, HARDWARE_METRICS, scale=100.0)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of elapsed time / of the roof")
    ax.set_title("what the GPU reports", fontsize="small")
    return artists


def engine_comparison_figure(runs: Sequence[EngineRun]) -> Figure:
    """Left: latency percentiles per engine. Right: GPU busy, MBU and MFU per engine."""
    figure = new_figure(1, 2, width=11.0, height=3.6)
    figure.axes[0].get_gridspec().set_width_ratios([2, 1])
    draw_engine_latencies(figure.axes[0], runs)
    draw_hardware_use(figure.axes[1], runs)
    return figure


def draw_budget_tradeoff(ax: Axes, runs: Sequence[EngineRun], current: int | None = None
                         ) -> dict:
    """TTFT against TPOT and the longest gap between tokens, as the token budget changes."""
    ax.clear()
    budget = [run.max_num_batched_tokens for run in runs]
    lines = {
        "ttft_p50": ("TTFT p50", "ttft_p50_s", color(3), "-"),
        "ttft_p99": ("TTFT p99", "ttft_p99_s", color(3), "--"),
        "tpot_p99": ("TPOT p99", "tpot_p99_s", color(0), "-"),
        "max_tbt_p99": ("longest gap between tokens, p99", "max_tbt_p99_s", color(0), "--"),
    }
    artists = {}
    for key, (label, field, line_color, style) in lines.items():
        artists[key] = ax.plot(budget, [getattr(run, field) for run in runs], marker="o", ms=3,
                               ls=style, color=line_color, label=label)[0]
    if current is not None:
        artists["current"] = ax.axvline(current, color="#555555", ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xticks(budget, [str(b) for b in budget])
    ax.set_yscale("log")
    ax.set_xlabel("token budget per iteration (max_num_batched_tokens)")
    ax.set_ylabel("seconds (log scale)")
    ax.set_title("a smaller budget chunks prompts: shorter stalls, later first tokens",
                 fontsize="small")
    ax.legend(fontsize="x-small")
    return artists


def budget_figure(runs: Sequence[EngineRun]) -> Figure:
    figure = new_figure(1, 1, width=7.5, height=3.8)
    draw_budget_tradeoff(figure.axes[0], runs)
    return figure


def draw_kv_pressure(ax: Axes, twin: Axes, runs: Sequence[EngineRun]) -> dict:
    """Preemptions (``ax``) and p99 TTFT and throughput (``twin``, e.g. ``ax.twinx()``) against
    the KV cache size."""
    ax.clear()
    twin.clear()
    gib = [run.kv_cache_gib for run in runs]
    preemptions = ax.bar(range(len(runs)), [run.preemptions for run in runs],
                         color=REJECTED_COLOR, alpha=0.6, label="preemptions")
    ax.set_xticks(range(len(runs)), [f"{g:g}" for g in gib])
    ax.set_xlabel("KV cache per GPU (GiB)")
    ax.set_ylabel("preemptions", color=REJECTED_COLOR)
    ttft = twin.plot(range(len(runs)), [run.ttft_p99_s for run in runs], marker="o", ms=3,
                     color=color(3), label="TTFT p99 (s)")[0]
    twin.set_yscale("log")
    twin.set_ylabel("TTFT p99 (s, log scale)", color=color(3))
    twin.yaxis.set_label_position("right")
    twin.yaxis.tick_right()
    ax.set_title("a smaller KV cache: preemptions, recomputation, waiting", fontsize="small")
    ax.legend([preemptions, ttft], ["preemptions", "TTFT p99"], fontsize="x-small",
              loc="upper right")
    return {"preemptions": preemptions, "ttft_p99": ttft}


def kv_pressure_figure(runs: Sequence[EngineRun]) -> Figure:
    figure = new_figure(1, 1, width=7.5, height=3.6)
    ax = figure.axes[0]
    draw_kv_pressure(ax, ax.twinx(), runs)
    return figure


def draw_busy_against_load(ax: Axes, twin: Axes, runs: Sequence[EngineRun]) -> dict:
    """GPU busy, MBU and MFU (``ax``, %) and served tokens/s (``twin``) against the load."""
    ax.clear()
    twin.clear()
    loads = [run.load for run in runs]
    artists = {}
    for (label, field), line_color in zip(HARDWARE_METRICS, (color(3), color(0), color(2)),
                                          strict=True):
        artists[field] = ax.plot(loads, [100 * getattr(run, field) for run in runs],
                                 marker="o", ms=3, color=line_color, label=label)[0]
    ax.set_ylim(0, 105)
    ax.set_xscale("log", base=2)
    ax.set_xticks(loads, [f"{load:g}" for load in loads])
    ax.set_xlabel("load (x the scenario's arrival rates)")
    ax.set_ylabel("% of elapsed time / of the roof")
    served = twin.plot(loads, [run.throughput_tokens_per_s for run in runs], ls="--",
                       marker="s", ms=3, color="#555555", label="served tokens/s")[0]
    twin.set_ylabel("served output tokens/s")
    twin.yaxis.set_label_position("right")
    twin.yaxis.tick_right()
    artists["throughput"] = served
    lines = [*artists.values()]
    ax.legend(lines, [line.get_label() for line in lines], fontsize="x-small", loc="center left")
    ax.set_title("busy stops moving; MFU and tokens/s keep growing", fontsize="small")
    return artists


def busy_figure(runs: Sequence[EngineRun]) -> Figure:
    figure = new_figure(1, 1, width=7.5, height=3.6)
    ax = figure.axes[0]
    draw_busy_against_load(ax, ax.twinx(), runs)
    return figure


# --------------------------------------------------------------------------------------------
# 09: fair sharing

MECHANISM_COLORS = {"fcfs": COLORS[7], "rpm": COLORS[4], "token_bucket": COLORS[5],
                    "priority": COLORS[1], "vtc": COLORS[2]}
BOUND_COLOR = "#333333"


def draw_service_over_time(ax: Axes, run: FairRun, points: int = 240) -> dict:
    """Each tenant's cumulative weighted service over the run (:func:`apslab.lab.fairness_lab
    .service_curves`), with a dotted line where arrivals end.

    Artists: one line per tenant (by name) and ``"arrivals_end"``.
    """
    ax.clear()
    result = run.result
    finished = result.finish_s[result.completed]
    end = float(finished.max()) if len(finished) else run.arrivals_end_s
    times = np.linspace(0.0, max(end, run.arrivals_end_s), points)
    curves = service_curves(result, times)
    artists = {}
    for index, (tenant, service) in enumerate(curves.items()):
        artists[tenant] = ax.plot(times, service, color=color(index), label=tenant)[0]
    artists["arrivals_end"] = ax.axvline(run.arrivals_end_s, color="#555555", ls=":", lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("service received (weighted tokens)")
    ax.set_title(f"{run.label}: service over time", fontsize="small")
    ax.legend(fontsize="x-small", loc="upper left")
    return artists


def service_figure(runs: Sequence[FairRun]) -> Figure:
    """One panel per run: each tenant's cumulative service (same axes)."""
    figure = new_figure(1, len(runs), width=3.0 * len(runs) + 0.6, height=3.4)
    for ax, run in zip(figure.axes, runs, strict=True):
        draw_service_over_time(ax, run)
        if ax is not figure.axes[0]:
            ax.sharex(figure.axes[0])
            ax.sharey(figure.axes[0])
            ax.set_ylabel("")
            ax.get_legend().remove()
    figure.axes[0].autoscale()
    return figure


def draw_service_difference(ax: Axes, runs: Sequence[FairRun], bound: float | None = None
                            ) -> dict:
    """The engine's service-difference curve of each run (runs kept with ``keep_curve``): at
    every instant, the largest difference between two tenants backlogged together since the
    later of them became backlogged; a dashed line at VTC's bound. The y axis stops at 2.5
    times the bound: a curve that leaves the top goes on to the maximum its legend entry shows.

    Artists: one step line per run (by its label) and ``"bound"``.
    """
    ax.clear()
    artists = {}
    for run in runs:
        curve = run.result.service_curve
        if curve is None:
            raise ValueError(f"{run.label}: run it with keep_curve=True to draw its curve")
        artists[run.label] = ax.step(curve[:, 0], curve[:, 1], where="post", lw=1.2,
                                     color=MECHANISM_COLORS.get(run.mechanism, color(0)),
                                     label=f"{run.label} (max {run.service_difference:,.0f})")[0]
    bound = runs[0].bound if bound is None and runs else bound
    if bound is not None:
        artists["bound"] = ax.axhline(bound, color=BOUND_COLOR, ls="--", lw=1,
                                      label=f"VTC's bound {bound:,.0f}")
    top = max([run.service_difference for run in runs] + [0.0])
    ax.set_ylim(0, min(top, 2.5 * bound) * 1.05 if bound else top * 1.05 or 1.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("service difference (weighted tokens)")
    ax.set_title("service difference between tenants backlogged together", fontsize="small")
    ax.legend(fontsize="x-small", loc="upper left")
    return artists


def service_difference_figure(runs: Sequence[FairRun]) -> Figure:
    figure = new_figure(1, 1, width=8.0, height=3.8)
    draw_service_difference(figure.axes[0], runs)
    return figure


TENANT_METRICS = (("service_in_span", "service while arrivals lasted (log scale)"),
                  ("rejected", "rejected requests"), ("ttft_p99_s", "TTFT p99 (s, log scale)"))


def draw_tenant_metric(ax: Axes, runs: Sequence[FairRun], field: str, ylabel: str) -> dict:
    """One group of bars per tenant, one bar per run: a :class:`TenantOutcome` field.

    Artists: one bar container per run (by its label)."""
    ax.clear()
    tenants = list(runs[0].tenants) if runs else []
    artists = _grouped_bars(
        ax, tenants,
        [(run.label, [getattr(run.tenants[t], field) for t in tenants],
          MECHANISM_COLORS.get(run.mechanism, color(index))) for index, run in enumerate(runs)])
    ax.set_ylabel(ylabel, fontsize="small")
    return artists


def tenant_bars_figure(runs: Sequence[FairRun]) -> Figure:
    """Per tenant and run: service while arrivals lasted, rejected requests, TTFT p99."""
    figure = new_figure(1, len(TENANT_METRICS), width=12.0, height=3.4)
    for ax, (field, label) in zip(figure.axes, TENANT_METRICS, strict=True):
        draw_tenant_metric(ax, runs, field, label)
    figure.axes[0].set_yscale("log")
    figure.axes[-1].set_yscale("log")
    figure.axes[0].legend(fontsize="x-small", loc="upper left")
    return figure


def draw_idle_timeline(ax: Axes, run: FairRun, start_s: float | None = None,
                       end_s: float | None = None) -> dict:
    """GPU 0's busy stretches (blue) and idle ones (grey) while arrivals lasted, with a red tick
    at every rejected request's arrival.

    Artists: ``"busy"`` and ``"idle"`` (rectangle collections), ``"rejected"`` (points)."""
    ax.clear()
    result = run.result
    trace = result.trace
    first = float(trace.arrival_s.min()) if len(trace) else 0.0
    start = first if start_s is None else start_s
    end = run.arrivals_end_s if end_s is None else end_s
    gaps = [(a, b) for gpu, a, b in idle_gaps(result.iteration_log, start, end) if gpu == 0]
    edges = [start, *[edge for gap in gaps for edge in gap], end]
    busy = [(a, b) for a, b in zip(edges[0::2], edges[1::2], strict=True) if b > a]
    artists = {
        "busy": rectangles(ax, [a for a, _ in busy], [b - a for a, b in busy], 0.0, 1.0,
                           DECODE_COLOR),
        "idle": rectangles(ax, [a for a, _ in gaps], [b - a for a, b in gaps], 0.0, 1.0,
                           "#bbbbbb"),
    }
    rejected = trace.arrival_s[~result.completed]
    rejected = rejected[(rejected >= start) & (rejected <= end)]
    artists["rejected"] = ax.scatter(rejected, np.full(len(rejected), 1.25), marker="|", s=60,
                                     color=REJECTED_COLOR, label="rejected request")
    ax.set_xlim(start, end)
    ax.set_ylim(-0.2, 1.6)
    ax.set_yticks([])
    ax.set_xlabel("time (s)")
    idle = run.idle
    ax.set_title(f"{run.label}: {idle.rejected} rejected ({idle.rejected_while_idle} at an idle "
                 f"GPU), GPU idle {idle.idle_s:.1f} s", fontsize="small")
    ax.legend(handles=[Patch(color=DECODE_COLOR, label="an iteration runs"),
                       Patch(color="#bbbbbb", label="GPU idle"), artists["rejected"]],
              fontsize="x-small", loc="upper right", ncols=3)
    return artists


def idle_figure(runs: Sequence[FairRun], start_s: float | None = None,
                end_s: float | None = None) -> Figure:
    """One timeline per run (see :func:`draw_idle_timeline`), on the same time axis."""
    figure = new_figure(len(runs), 1, width=9.0, height=1.5 * len(runs) + 0.6)
    for ax, run in zip(figure.axes, runs, strict=True):
        draw_idle_timeline(ax, run, start_s, end_s)
        if ax is not figure.axes[0]:
            ax.sharex(figure.axes[0])
    return figure
