"""Widget apps for the lab notebooks: controls whose observers re-run the model and redraw.

Each app owns one matplotlib figure for its whole life. Moving a control calls :meth:`update`,
which re-runs the model through :mod:`apslab.lab` (so through the package's own components;
a run the app already has, for the inputs it depends on, comes from :meth:`FigureApp.cached`),
redraws the same figure with :mod:`apslab.lab.plots` and puts the rendered PNG into an
``ipywidgets.Image``. Nothing needs a running kernel-side matplotlib backend, so the apps work
in JupyterLab, in VS Code, and in tests, which set ``app.controls[name].value`` and read the
plotted data back from ``app.artists``.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np

from ..io.scenario import Scenario, load_scenario
from ..io.trace import Trace
from ..io.workload import generate_trace
from ..sim.result import RunResult
from ..sim.summary import format_summary
from . import experiments as lab
from . import fairness_lab, plots
from . import fit as fitting
from .appkit import CONTROL_STYLE, FigureApp
from .appkit import slider as _slider
from .continuous_lab import (
    ENGINE_COLUMNS,
    ENGINES,
    EngineRun,
    StaticBatches,
    engine_table,
    iteration_log,
    lab_scenario,
    measure,
    run_engine,
    static_batches,
    with_continuous,
)
from .datasets import DecodeMeasurements, load_a100_decode_throughput


def _rounded(value: float) -> float:
    """A float control's value as a cache key (a slider's steps need not be exact binary)."""
    return round(float(value), 6)


class _LoadTraceApp(FigureApp):
    """An app whose ``self.base`` scenario's workload, scaled by a load slider, is the trace."""

    base: Scenario

    def trace_for(self, load: float) -> Trace:
        """The trace ``self.base``'s workload generates at ``load`` (made once per load)."""
        load = _rounded(load)
        return self.cached(("trace", load),
                           lambda: generate_trace(self.base.scaled_load(load).workload))


# --------------------------------------------------------------------------------------------
# 00


class OverviewApp(FigureApp):
    """The example scenario end to end: load, aging and rate limits against the headline metrics.

    At load 1, aging 0.05 and rate-limit scale 1 the generated trace is the README's example.
    """

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.base = scenario or lab.example()[0]
        controls = {
            "load": _slider(widgets.FloatSlider, "load (x arrival rates)", value=1.0, min=0.25,
                            max=3.0, step=0.25),
            "aging_per_s": _slider(widgets.FloatSlider, "aging per s", value=0.05, min=0.0,
                                   max=0.5, step=0.01),
            "rate_limit_scale": _slider(widgets.FloatSlider, "rate limits x", value=1.0,
                                        min=0.25, max=4.0, step=0.25),
        }
        super().__init__(controls, plots.new_figure(1, 2))

    def scenario(self) -> Scenario:
        v = self.values()
        overrides: dict[str, object] = {"scheduler.aging_per_s": v["aging_per_s"]}
        for tenant in self.base.tenants:
            overrides[f"tenants.{tenant.id}.rate_limit"] = tenant.rate_limit * v["rate_limit_scale"]
        return self.base.with_overrides(overrides).scaled_load(v["load"])

    def draw(self) -> str:
        scenario = self.scenario()
        self.result = lab.run_generated(scenario)
        self.summary = self.result.summary()
        self.artists = {"waits": plots.draw_waits_by_tenant(self.figure.axes[0], self.result),
                        "outcomes": plots.draw_tenant_outcomes(self.figure.axes[1],
                                                               self.summary)}
        return format_summary(self.summary, title="this run")


# --------------------------------------------------------------------------------------------
# 01


class TokenBucketApp(FigureApp):
    """One token bucket against a bursty client: rate limit and burst cap sliders."""

    def __init__(self, times_s: np.ndarray | None = None, costs: np.ndarray | None = None
                 ) -> None:
        if times_s is None or costs is None:
            times_s, costs = lab.bursty_stream()
        self.times_s, self.costs = times_s, costs
        controls = {
            "rate_limit": _slider(widgets.IntSlider, "rate limit (tokens/s)", value=150, min=25,
                                  max=1000, step=25),
            "burst_cap": _slider(widgets.IntSlider, "burst cap (tokens)", value=1500, min=400,
                                 max=6000, step=100),
        }
        super().__init__(controls, plots.new_figure(2, 1, height=5.5))

    def draw(self) -> str:
        v = self.values()
        self.run = lab.run_token_bucket(self.times_s, self.costs, v["rate_limit"], v["burst_cap"])
        self.artists = plots.draw_bucket(self.figure.axes[0], self.figure.axes[1], self.run)
        offered = int(self.costs.sum())
        admitted = int(self.run.admitted_tokens[-1]) if len(self.costs) else 0
        return (f"admitted {self.run.admitted.sum()} of {len(self.costs)} requests, {admitted} of "
                f"{offered} tokens; worst-window slack under the bound: "
                f"{self.run.worst_window_slack():.0f} tokens (never negative)")


# --------------------------------------------------------------------------------------------
# 02


AGING_SWEEP = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class AgingApp(FigureApp):
    """Two bid classes on an overloaded GPU: an aging slider against starvation."""

    def __init__(self, scenario: Scenario | None = None, trace: Trace | None = None) -> None:
        self.base = scenario or load_scenario(lab.scenario_path("lab_two_bids"))
        self.trace = trace if trace is not None else generate_trace(self.base.workload)
        self.arrivals_end_s = self.base.workload.duration_s
        self.sweep = [lab.waits_by_bid(lab.simulate(self._with_aging(a), self.trace),
                                       self.arrivals_end_s) for a in AGING_SWEEP]
        controls = {"aging_per_s": _slider(widgets.FloatSlider, "aging per s", value=0.0,
                                           min=0.0, max=1.0, step=0.01)}
        super().__init__(controls, plots.new_figure(1, 2))

    def _with_aging(self, aging: float) -> Scenario:
        return self.base.with_overrides({"scheduler.aging_per_s": float(aging)})

    def draw(self) -> str:
        aging = self.values()["aging_per_s"]
        self.waits = lab.waits_by_bid(lab.simulate(self._with_aging(aging), self.trace),
                                      self.arrivals_end_s)
        self.artists = {
            "waits": plots.draw_waits_by_bid(self.figure.axes[0], self.waits),
            "sweep": plots.draw_aging_sweep(self.figure.axes[1], self.sweep, aging),
        }
        lines = [f"bid {bid:g}: p99 wait {self.waits.p99(bid):6.1f} s, "
                 f"max {self.waits.max(bid):6.1f} s, served only after arrivals stopped: "
                 f"{self.waits.served_after_arrivals_end[bid]:.0%}" for bid in self.waits.bids]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# 03


BATCH_SIZES = (1, 2, 4, 8, 16, 32)
WINDOWS_MS = (0, 10, 50, 100, 250, 500, 1000, 2000)
KV_CACHE_GIB = (0.25, 0.5, 1, 2, 4, 8, 16, 32)


class BatchingApp(_LoadTraceApp):
    """Window, batch-size cap and KV capacity against throughput, latency and KV use."""

    def __init__(self, scenario: Scenario | None = None, duration_s: float = 600.0) -> None:
        base = scenario or lab.example()[0]
        self.base = lab.without_rate_limits(base).with_overrides(
            {"workload.duration_s": float(duration_s)})
        controls = {
            "load": _slider(widgets.FloatSlider, "load (x arrival rates)", value=1.2, min=0.2,
                            max=2.0, step=0.1),
            "batch_window_ms": _slider(widgets.SelectionSlider, "batch window (ms)",
                                       options=WINDOWS_MS, value=10),
            "max_batch_size": _slider(widgets.SelectionSlider, "max batch size",
                                      options=BATCH_SIZES, value=16),
            "kv_cache_gib": _slider(widgets.SelectionSlider, "KV cache (GiB)",
                                    options=KV_CACHE_GIB, value=32),
        }
        figure = plots.new_figure(1, 3, width=13.0, height=3.8)
        self.twins = [figure.axes[0].twinx(), figure.axes[1].twinx()]
        super().__init__(controls, figure)

    def scenario(self) -> Scenario:
        v = self.values()
        return lab.with_batching(self.base.scaled_load(v["load"]), v["batch_window_ms"],
                                 v["max_batch_size"], v["kv_cache_gib"])

    def _point(self, window_ms: float, size: int) -> tuple[lab.BatchingPoint, RunResult]:
        """:func:`~apslab.lab.experiments.batching_point` at the current load and KV cache, made
        once per configuration: both sweeps and the current point share their runs."""
        v = self.values()
        return self.cached(
            ("point", _rounded(v["load"]), window_ms, size, v["kv_cache_gib"]),
            lambda: lab.batching_point(lab.with_batching(self.scenario(), window_ms, size),
                                       self.trace_for(v["load"])))

    def draw(self) -> str:
        v = self.values()
        trace = self.trace_for(v["load"])
        window, size = v["batch_window_ms"], v["max_batch_size"]
        self.point, self.result = self._point(window, size)
        self.size_sweep = [self._point(window, s)[0] for s in BATCH_SIZES]
        self.window_sweep = [self._point(w, size)[0] for w in WINDOWS_MS]
        axes = self.figure.axes
        self.artists = {
            "sizes": plots.draw_batching_sweep(axes[0], self.twins[0], self.size_sweep,
                                               "max_batch_size", v["max_batch_size"]),
            "windows": plots.draw_batching_sweep(axes[1], self.twins[1], self.window_sweep,
                                                 "batch_window_ms", v["batch_window_ms"]),
            "kv": plots.draw_kv_per_batch(axes[2], self.result),
        }
        p = self.point
        return (f"{len(trace)} requests: served {p.throughput_tokens_per_s:.1f} tokens/s, "
                f"GPU busy {p.gpu_utilization:.1%}, {p.tokens_per_busy_s:.1f} tokens per busy s, "
                f"latency p50 {p.latency_p50_s:.2f} s p99 {p.latency_p99_s:.2f} s\n"
                f"mean batch {p.mean_batch_size:.2f}, mean KV use "
                f"{p.kv_utilization_mean:.1%}, batches cut short by the KV cache "
                f"{p.kv_bound_share:.0%}, rejected as larger than the KV cache {p.rejected_kv}")


# --------------------------------------------------------------------------------------------
# 04


FORMS = (fitting.FORM_SEED_SCALE, fitting.FORM_FREE_SCALE, fitting.FORM_ROOFLINE)


class FitApp(FigureApp):
    """Pick a source, a request shape and a model; see the fit and its residuals."""

    def __init__(self, data: DecodeMeasurements | None = None,
                 source_fits: dict[str, fitting.SourceFits] | None = None) -> None:
        self.data = data if data is not None else load_a100_decode_throughput()
        self.fits = source_fits if source_fits is not None else fitting.fit_all_sources(self.data)
        sources = [s for s, f in self.fits.items() if f.reference is not None]
        source = widgets.Dropdown(description="source", options=sources, value=sources[0],
                                  style=CONTROL_STYLE, layout={"width": "420px"})
        series = widgets.Dropdown(description="input/output tokens",
                                  options=self._series_options(sources[0]),
                                  style=CONTROL_STYLE, layout={"width": "260px"})
        form = widgets.ToggleButtons(options=FORMS, value=FORMS[0], description="model",
                                     style={"button_width": "170px"})
        source.observe(self._on_source, names="value")
        super().__init__({"source": source, "series": series, "form": form},
                         plots.new_figure(1, 2))

    def _series_options(self, source: str) -> list[tuple[str, tuple[int, int]]]:
        rows = self.fits[source].all_rows
        shapes = sorted({(i, o) for i, o in zip(rows.input_len.tolist(), rows.output_len.tolist(),
                                                strict=True)
                         if len(np.unique(rows.select(input_len=i, output_len=o).batch_size))
                         >= 3}, key=lambda s: (s[0] + s[1], s))
        return [(f"{i}/{o}", (i, o)) for i, o in shapes]

    def _on_source(self, change: dict) -> None:
        # Registered before the app's own observer, so it runs first: swap the series options
        # without redrawing; the app's observer then redraws once for the new source.
        self._suspended = True
        try:
            options = self._series_options(change["new"])
            self.controls["series"].options = options
            self.controls["series"].value = options[0][1]
        finally:
            self._suspended = False

    def current_fit(self) -> tuple[fitting.FitResult, DecodeMeasurements]:
        """The fit the controls select, restricted to the selected series' rows."""
        v = self.values()
        source_fits = self.fits[v["source"]]
        input_len, output_len = v["series"]
        rows = source_fits.all_rows.select(input_len=input_len, output_len=output_len)
        label = f"{v['source']} {input_len}/{output_len}"
        if v["form"] == fitting.FORM_SEED_SCALE:
            return fitting.fit_sqrt(rows.batch_size, rows.decode_tokens_per_s, label=label), rows
        if v["form"] == fitting.FORM_FREE_SCALE:
            return fitting.fit_sqrt_free_scale(rows.batch_size, rows.decode_tokens_per_s,
                                               label=label), rows
        mask = ((source_fits.all_rows.input_len == input_len)
                & (source_fits.all_rows.output_len == output_len))
        return source_fits.roofline.subset(mask, label), rows

    def draw(self) -> str:
        fit, rows = self.current_fit()
        grid = np.geomspace(1, max(64, rows.batch_size.max()), 60)
        if fit.form == fitting.FORM_ROOFLINE:
            curve = fit.predict(grid, rows.input_len[0], rows.output_len[0], rows.decode_only[0])
        else:
            curve = fit.predict(grid)
        self.fit = fit
        self.artists = {"fit": plots.draw_fit(self.figure.axes[0], fit, grid, curve),
                        "residuals": plots.draw_residuals(self.figure.axes[1], fit)}
        note = ""
        if fit.form == fitting.FORM_ROOFLINE:
            rows_fitted = len(self.fits[self.values()["source"]].all_rows)
            note = (f"\n(one roofline per source, fitted to all {rows_fitted} of its rows; "
                    "R^2 here is for this series alone)")
        return f"{fit.label}: {fit.describe()}{note}"


# --------------------------------------------------------------------------------------------
# 05


class FairnessApp(FigureApp):
    """Three well-behaved tenants and a flooder that outbids them: who pays, and what helps."""

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.base = scenario or load_scenario(lab.scenario_path("lab_flood"))
        flood = next(t for t in self.base.workload.tenants if t.tenant_id == "flood")
        self.base_flood_rate = flood.arrival_rate_per_s
        controls = {
            "flood_multiplier": _slider(widgets.FloatSlider, "flooder's arrival rate x",
                                        value=10.0, min=1.0, max=20.0, step=1.0),
            "flood_rate_limit": _slider(widgets.FloatLogSlider, "flooder's rate limit (tokens/s)",
                                        value=1e5, base=10, min=2, max=5, step=0.25),
            "aging_per_s": _slider(widgets.FloatSlider, "aging per s", value=0.0, min=0.0,
                                   max=0.5, step=0.01),
        }
        super().__init__(controls, plots.new_figure(1, 2))

    def scenario(self) -> Scenario:
        v = self.values()
        mixed = lab.tenant_mix(self.base, {"flood": self.base_flood_rate * v["flood_multiplier"]})
        return mixed.with_overrides({"tenants.flood.rate_limit": float(v["flood_rate_limit"]),
                                     "scheduler.aging_per_s": float(v["aging_per_s"])})

    def draw(self) -> str:
        scenario = self.scenario()
        self.result = lab.run_generated(scenario)
        self.point = lab.measure_load(self.result, 1.0)
        self.fairness = lab.fairness_table(self.result)
        served = {t: row["tokens_completed"] for t, row in
                  self.result.summary()["tenants"].items()}
        self.artists = {
            "p99": plots.draw_tenant_bars(self.figure.axes[0], self.point.wait_p99_by_tenant,
                                          "p99 queue wait (s)", "p99 queue wait", "flood"),
            "served": plots.draw_tenant_bars(self.figure.axes[1], served, "tokens served",
                                             "tokens served (prompt + output)", "flood"),
        }
        return (f"Jain (tokens served) {self.fairness['jain_served']:.3f}, Jain (served / "
                f"demanded) {self.fairness['jain_per_demand']:.3f}; GPU busy "
                f"{self.point.gpu_utilization:.1%}; requests rejected "
                f"{self.point.rejected_share:.1%}")


# --------------------------------------------------------------------------------------------
# 08


TOKEN_BUDGETS = (32, 64, 128, 256, 512, 1024, 2048)
KV_CACHE_GIB_08 = (1, 2, 3, 4, 8, 32)


class ContinuousApp(_LoadTraceApp):
    """Static against continuous batching on the same trace and roofline A100.

    Controls: the load, which engine the timeline shows, and the continuous engine's token
    budget and KV cache (the KV cache also bounds the static engine's batches). Each engine
    runs once per the controls it depends on (the static one ignores the token budget, and
    neither depends on which timeline is shown); the left panel is the chosen engine's
    iterations over ``window_s``, the right one both engines' latency percentiles.
    """

    def __init__(self, scenario: Scenario | None = None,
                 window_s: tuple[float, float] = (30.0, 32.0)) -> None:
        self.base = scenario or lab_scenario()
        self.window_s = window_s
        controls = {
            "load": _slider(widgets.FloatSlider, "load (x arrival rates)", value=1.0, min=0.5,
                            max=8.0, step=0.5),
            "batching": widgets.ToggleButtons(options=("continuous", "static"),
                                              value="continuous", description="timeline of",
                                              style={"button_width": "90px"}),
            "max_num_batched_tokens": _slider(widgets.SelectionSlider, "token budget",
                                              options=TOKEN_BUDGETS, value=2048),
            "kv_cache_gib": _slider(widgets.SelectionSlider, "KV cache (GiB)",
                                    options=KV_CACHE_GIB_08, value=32),
        }
        figure = plots.new_figure(1, 2, width=12.0, height=3.8)
        figure.axes[0].get_gridspec().set_width_ratios([3, 2])
        super().__init__(controls, figure)

    def scenario(self) -> Scenario:
        v = self.values()
        return with_continuous(
            self.base, max_num_batched_tokens=v["max_num_batched_tokens"],
            kv_cache_gib=v["kv_cache_gib"])

    def _key(self, batching: str) -> tuple:
        """The controls one engine's run depends on."""
        v = self.values()
        key = (batching, _rounded(v["load"]), v["kv_cache_gib"])
        return key + (v["max_num_batched_tokens"],) if batching == "continuous" else key

    def _engine(self, batching: str) -> tuple[RunResult, EngineRun, StaticBatches | None]:
        """One engine's run, its :func:`measure` and (static) its batches, made once per key."""
        def run():
            load = self.values()["load"]
            result = run_engine(self.scenario(), self.trace_for(load), batching,
                                keep_iterations=True)
            batches = static_batches(result) if batching == "static" else None
            return result, measure(result, batching, load, batches), batches

        return self.cached(self._key(batching), run)

    def draw(self) -> str:
        v = self.values()
        trace = self.trace_for(v["load"])
        engines = {batching: self._engine(batching) for batching in ENGINES}
        self.results = {batching: result for batching, (result, _, _) in engines.items()}
        self.runs = {batching: run for batching, (_, run, _) in engines.items()}
        shown, _, batches = engines[v["batching"]]
        self.log = self.cached(("log", *self._key(v["batching"])),
                               lambda: iteration_log(shown, batches))
        start, end = self.window_s
        self.artists = {
            "timeline": plots.draw_iteration_timeline(
                self.figure.axes[0], self.log, start, end,
                f"{v['batching']} batching: iterations from {start:g} s to {end:g} s"),
            "latencies": plots.draw_engine_latencies(self.figure.axes[1],
                                                     list(self.runs.values())),
        }
        columns = (*ENGINE_COLUMNS, ("preemptions", "preemptions", "d"),
                   ("wasted tokens", "wasted_tokens", ",d"))
        return (f"{len(trace)} requests at load {v['load']:g}\n"
                + engine_table(list(self.runs.values()), columns))


# --------------------------------------------------------------------------------------------
# 09


class FairSharingApp(FigureApp):
    """One shape of notebook 09 under one mechanism: service over time and the service
    difference against VTC's bound.

    Controls: the shape, the mechanism, the heaviest tenant's load (a multiple of its load in
    the shape) and alpha's share (it weighs service under VTC only). Every change runs the
    shape's trace through the engine's Python loop, which records the service-difference curve.
    """

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.base = scenario or fairness_lab.lab_scenario()
        self.capacity = fairness_lab.capacity(self.base)
        controls = {
            "shape": widgets.Dropdown(
                description="shape", options=[(s.title, name) for name, s in
                                              fairness_lab.SHAPES.items()],
                value="flood", style=CONTROL_STYLE, layout={"width": "560px"}),
            "mechanism": widgets.ToggleButtons(
                options=[(label, name) for name, label in
                         fairness_lab.MECHANISM_LABELS.items()],
                value="vtc", description="mechanism", style={"button_width": "105px"}),
            "heavy_load": _slider(widgets.FloatSlider, "heaviest tenant's load x", value=1.0,
                                  min=0.25, max=3.0, step=0.25),
            "alpha_share": _slider(widgets.FloatSlider, "alpha's share (VTC)", value=1.0,
                                   min=0.25, max=4.0, step=0.25),
        }
        figure = plots.new_figure(1, 2, width=12.0, height=3.8)
        super().__init__(controls, figure)

    def rates(self) -> dict[str, float]:
        v = self.values()
        shape = fairness_lab.SHAPES[v["shape"]]
        return shape.rates(self.capacity, shape.loads[shape.heavy] * v["heavy_load"])

    def trace_for(self, rates: dict[str, float]) -> Trace:
        """The shape's trace at these ``rates`` (:meth:`rates`), made once per shape and load."""
        v = self.values()
        return self.cached(
            ("trace", v["shape"], _rounded(v["heavy_load"])),
            lambda: fairness_lab.shape_trace(fairness_lab.shape_scenario(self.base, rates,
                                                                         "fcfs")))

    def scenario(self) -> Scenario:
        v = self.values()
        shares = {"alpha": float(v["alpha_share"])} if v["mechanism"] == "vtc" else None
        return fairness_lab.shape_scenario(self.base, self.rates(), v["mechanism"],
                                           cap=self.capacity, shares=shares)

    def draw(self) -> str:
        v = self.values()
        # alpha's share changes nothing under the other mechanisms: the same run
        share = _rounded(v["alpha_share"]) if v["mechanism"] == "vtc" else None
        self.run = self.cached(
            ("run", v["shape"], _rounded(v["heavy_load"]), v["mechanism"], share),
            lambda: fairness_lab.run_mechanism(self.scenario(), self.trace_for(self.rates()),
                                               v["shape"], v["mechanism"], keep_curve=True))
        self.artists = {
            "service": plots.draw_service_over_time(self.figure.axes[0], self.run),
            "difference": plots.draw_service_difference(self.figure.axes[1], [self.run]),
        }
        run, idle = self.run, self.run.idle
        note = "" if v["mechanism"] == "vtc" else " (shares weigh service under VTC only)"
        return (f"{len(run.result.trace)} requests; service difference "
                f"{run.service_difference:,.0f} against VTC's bound {run.bound:,.0f}{note}\n"
                f"rejected {idle.rejected} ({idle.rejected_with_room} while the GPU had room "
                f"for them), GPU idle {idle.idle_s:.1f} s of {idle.span_s:.0f} s, "
                f"{idle.idle_while_rejecting_s:.1f} s of it while rejecting\n"
                + fairness_lab.tenant_table([run]))
