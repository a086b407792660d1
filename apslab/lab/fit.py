"""Fitting the GPU model to published A100 measurements.

Three models of aggregate decode throughput for a batch of B sequences:

* the seed's ``128 * (a + b*sqrt(B))`` (scale fixed at the seed's 128 tokens/s);
* the same shape with a free scale, ``s * (a + b*sqrt(B))`` with ``a + b = 1`` so that ``s`` is
  the fitted single-request rate (the form the simulator's ``[gpu]`` table takes:
  ``decode_tokens_per_s = s``, ``batch_speedup = [a, b]``);
* the roofline of :mod:`apslab.core.roofline`, whose fitted parameters are the achieved fractions of
  the A100's HBM bandwidth and peak FLOP/s, and which takes the context length into account.

Every fit goes through ``scipy.optimize.curve_fit`` and reports 95% confidence intervals from its
covariance (Student t with n - k degrees of freedom), R^2 and the residuals.

A fit's last digits are not reproducible: least squares runs through BLAS and LAPACK, whose
kernels differ from one CPU (and thread count, and scipy version) to the next, and curve_fit
stops iterating within a tolerance, so the same data give parameters that differ around the
tenth significant digit on another machine. Everything here that is printed or written out
therefore shows a fit to a few significant digits: the tables to 3, and the parameters put into
a scenario (:func:`scenario_gpu_overrides`, :func:`prefill_tokens_per_s`) are rounded to
:data:`FITTED_DIGITS` (``tests/test_reproducible.py`` checks that the printed results do not change
with the number of BLAS threads or with last-digit noise in the data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import curve_fit

from ..core.roofline import (
    A100_40GB,
    A100_80GB_SXM,
    ACCELERATORS,
    LLAMA2_7B,
    Accelerator,
    Roofline,
)
from .datasets import DecodeMeasurements

SEED_SCALE = 128.0
SEED_SPEEDUP = (0.4, 0.6)
FORM_SEED_SCALE = "128*(a+b*sqrt(B))"
FORM_FREE_SCALE = "s*(a+b*sqrt(B)), a+b=1"
FORM_ROOFLINE = "roofline"
FITTED_DIGITS = 4  # significant digits of a fitted value that goes into a scenario


def significant(value: float, digits: int = FITTED_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits (a fit's stable part)."""
    return float(f"{float(value):.{digits}g}")


def sqrt_curve(batch_size, a: float, b: float, scale: float = SEED_SCALE):
    """``scale * (a + b*sqrt(B))``: the seed's decode throughput of a batch of B (tokens/s)."""
    return scale * (a + b * np.sqrt(np.asarray(batch_size, dtype=np.float64)))


def r_squared(measured, predicted) -> float:
    """1 - SS_res / SS_tot: the share of the variance the model explains (can be < 0)."""
    measured = np.asarray(measured, dtype=np.float64)
    residual = measured - np.asarray(predicted, dtype=np.float64)
    total = ((measured - measured.mean()) ** 2).sum()
    return float(1.0 - (residual ** 2).sum() / total) if total > 0 else float("nan")


@dataclass(frozen=True)
class FitResult:
    """One least-squares fit: parameters, 95% intervals, R^2 and what was fitted.

    ``parameters`` maps a name to its value, including derived ones (``a`` of the free-scale
    form) whose interval follows from the fitted one's.
    """

    label: str
    form: str
    parameters: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    r_squared: float
    dof: int
    batch_size: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray
    predict: Callable[..., np.ndarray]
    unidentified: tuple[str, ...] = ()  # parameters the data cannot pin down (see ci95)

    @property
    def residuals(self) -> np.ndarray:
        """measured - predicted, per row."""
        return self.measured - self.predicted

    @property
    def relative_residuals(self) -> np.ndarray:
        return self.residuals / self.measured

    def subset(self, mask: np.ndarray, label: str) -> FitResult:
        """The same fitted model, its residuals and R^2 restricted to some rows."""
        mask = np.asarray(mask, dtype=bool)
        return FitResult(label=label, form=self.form, parameters=self.parameters, ci95=self.ci95,
                         r_squared=r_squared(self.measured[mask], self.predicted[mask]),
                         dof=self.dof, batch_size=self.batch_size[mask],
                         measured=self.measured[mask], predicted=self.predicted[mask],
                         predict=self.predict, unidentified=self.unidentified)

    def __getitem__(self, name: str) -> float:
        return self.parameters[name]

    def contains(self, name: str, value: float) -> bool:
        """Whether ``value`` lies inside the parameter's 95% confidence interval."""
        low, high = self.ci95[name]
        return bool(low <= value <= high)

    def describe(self, names: tuple[str, ...] | None = None, digits: int = 3) -> str:
        """"a = -2.28 [-3.1, -1.5], b = ... (R^2 0.998, n 4)" for tables and widgets."""
        parts = []
        for name in names or tuple(self.parameters):
            low, high = self.ci95[name]
            if name in self.unidentified:
                parts.append(f"{name} >= {low:.{digits}g} (not identified)")
                continue
            interval = ("" if not np.isfinite(low) or not np.isfinite(high)
                        else f" [{low:.{digits}g}, {high:.{digits}g}]")
            parts.append(f"{name} = {self.parameters[name]:.{digits}g}{interval}")
        return f"{', '.join(parts)} (R^2 {self.r_squared:.3f}, n {len(self.measured)})"


def _intervals(values: np.ndarray, covariance: np.ndarray, dof: int) -> np.ndarray:
    """Half-widths of 95% intervals: t(0.975, dof) x standard error (inf if not estimable)."""
    with np.errstate(invalid="ignore"):
        stderr = np.sqrt(np.diag(covariance))
    if dof <= 0:
        return np.full(len(values), np.inf)
    half = stats.t.ppf(0.975, dof) * stderr
    return np.where(np.isfinite(half), half, np.inf)


def fit_sqrt(batch_size, throughput, scale: float = SEED_SCALE, label: str = "") -> FitResult:
    """Fit ``scale * (a + b*sqrt(B))`` with the scale fixed (the seed's 128 tokens/s)."""
    x = np.asarray(batch_size, dtype=np.float64)
    y = np.asarray(throughput, dtype=np.float64)
    _require_sweep(x, label)

    def model(b_size, a, b):
        return sqrt_curve(b_size, a, b, scale)

    start = np.polyfit(np.sqrt(x), y / scale, 1)[::-1]  # exact for a linear model: a good start
    values, covariance = curve_fit(model, x, y, p0=start)
    dof = len(x) - 2
    half = _intervals(values, covariance, dof)
    a, b = (float(v) for v in values)
    return FitResult(
        label=label, form=FORM_SEED_SCALE, parameters={"a": a, "b": b},
        ci95={"a": (a - half[0], a + half[0]), "b": (b - half[1], b + half[1])},
        r_squared=r_squared(y, model(x, a, b)), dof=dof, batch_size=x, measured=y,
        predicted=model(x, a, b), predict=lambda bs: model(bs, a, b),
    )


def fit_sqrt_free_scale(batch_size, throughput, label: str = "") -> FitResult:
    """Fit ``s * ((1 - b) + b*sqrt(B))``: the seed's shape with the scale set by the data.

    ``s`` is the curve's value at B = 1 and ``a = 1 - b``. Where the measurements grow faster
    than sqrt(B) the best such curve crosses zero before B = 1 and ``s`` comes out small or
    negative: the fit is then saying that the shape, not the scale, is wrong.
    """
    x = np.asarray(batch_size, dtype=np.float64)
    y = np.asarray(throughput, dtype=np.float64)
    _require_sweep(x, label)

    def model(b_size, s, b):
        return s * ((1.0 - b) + b * np.sqrt(np.asarray(b_size, dtype=np.float64)))

    slope, intercept = np.polyfit(np.sqrt(x), y, 1)
    s0 = intercept + slope
    start = (s0, slope / s0) if abs(s0) > 1e-9 else (1.0, 1.0)
    values, covariance = curve_fit(model, x, y, p0=start)
    dof = len(x) - 2
    half = _intervals(values, covariance, dof)
    s, b = (float(v) for v in values)
    return FitResult(
        label=label, form=FORM_FREE_SCALE, parameters={"s": s, "a": 1.0 - b, "b": b},
        ci95={"s": (s - half[0], s + half[0]), "b": (b - half[1], b + half[1]),
              "a": (1.0 - b - half[1], 1.0 - b + half[1])},
        r_squared=r_squared(y, model(x, s, b)), dof=dof, batch_size=x, measured=y,
        predicted=model(x, s, b), predict=lambda bs: model(bs, s, b),
    )


def fit_roofline(rows: DecodeMeasurements, accelerator: Accelerator = A100_80GB_SXM,
                 label: str = "") -> FitResult:
    """Fit the roofline's achieved bandwidth and FLOP fractions to rows of any context length.

    ``predict(batch_size, input_len, output_len, decode_only)`` evaluates the fitted roofline.
    An ``eta_flops`` at its bound of 1 with an unbounded interval means no row was compute-bound
    enough to pin it down.
    """
    y = rows.decode_tokens_per_s.astype(np.float64)
    if len(y) < 3:
        raise ValueError(f"{label or rows.path}: the roofline has 2 parameters; "
                         f"{len(y)} rows leave nothing to test the fit with")

    def model(_unused, eta_bandwidth, eta_flops):
        roof = Roofline(accelerator, LLAMA2_7B, eta_bandwidth, eta_flops)
        return roof.throughput(rows.batch_size, rows.input_len, rows.output_len,
                               rows.decode_only)

    values, covariance = curve_fit(model, None, y, p0=(0.5, 0.5),
                                   bounds=((1e-3, 1e-3), (1.0, 1.0)))
    dof = len(y) - 2
    half = _intervals(values, covariance, dof)
    eta_bw, eta_fl = (float(v) for v in values)
    fitted = Roofline(accelerator, LLAMA2_7B, eta_bw, eta_fl)
    # Fractions of a roof lie in (0, 1]: clip the intervals there.
    ci95 = {"eta_bandwidth": (max(0.0, eta_bw - half[0]), min(1.0, eta_bw + half[0])),
            "eta_flops": (max(0.0, eta_fl - half[1]), min(1.0, eta_fl + half[1]))}
    unidentified: tuple[str, ...] = ()
    floor = fitted.eta_flops_floor(rows.batch_size, rows.input_len, rows.output_len,
                                   rows.decode_only)
    if eta_fl >= floor:
        # No step is compute-bound: any eta_flops above the floor fits exactly as well.
        ci95["eta_flops"] = (floor, 1.0)
        unidentified = ("eta_flops",)
    predicted = fitted.throughput(rows.batch_size, rows.input_len, rows.output_len,
                                  rows.decode_only)
    return FitResult(
        label=label, form=FORM_ROOFLINE,
        parameters={"eta_bandwidth": eta_bw, "eta_flops": eta_fl}, ci95=ci95,
        r_squared=r_squared(y, predicted), dof=dof,
        batch_size=rows.batch_size.astype(np.float64), measured=y, predicted=predicted,
        predict=fitted.throughput, unidentified=unidentified,
    )


def _require_sweep(batch_size: np.ndarray, label: str) -> None:
    if len(np.unique(batch_size)) < 3:
        raise ValueError(f"{label or 'series'}: a two-parameter curve needs at least three "
                         f"batch sizes, got {sorted(set(batch_size.tolist()))}")


# --------------------------------------------------------------------------------------------
# Per-source analysis


def llama_rows(data: DecodeMeasurements) -> DecodeMeasurements:
    """The Llama-2-7B (and LLaMA 7B) rows: the model of the seed and the roofline constants."""
    return data.select(model_contains="llama")


def reference_series(data: DecodeMeasurements, source: str) -> DecodeMeasurements | None:
    """A source's shortest sequences (smallest input + output) that form a batch sweep.

    Short sequences are closest to the pure-decode regime the seed's curve describes. Rows of
    every variant the source published for that configuration are fitted together. None when the
    source has no configuration with three or more batch sizes.
    """
    rows = llama_rows(data).select(source=source) if source in data.sources() else None
    if rows is None or not len(rows):
        return None
    configs = sorted({(i + o, i, o) for i, o in zip(rows.input_len.tolist(),
                                                     rows.output_len.tolist(), strict=True)})
    for _total, input_len, output_len in configs:
        series = rows.select(input_len=input_len, output_len=output_len)
        if len(np.unique(series.batch_size)) >= 3:
            return series
    return None


def accelerators_for(gpu_names: list[str]) -> tuple[Accelerator, ...]:
    """Which A100 variants a source's rows may have run on, from its ``gpu`` column."""
    names = " ".join(gpu_names)
    if "80G" in names:
        return (A100_80GB_SXM,)
    if "40G" in names:
        return (A100_40GB,)
    return (A100_80GB_SXM, A100_40GB)


@dataclass(frozen=True)
class SourceFits:
    """Everything notebook 04 reports about one source."""

    source: str
    reference: DecodeMeasurements | None
    seed_scale: FitResult | None
    free_scale: FitResult | None
    seed_r_squared: float | None  # the seed's own (0.4, 0.6) curve on the reference series
    all_rows: DecodeMeasurements
    sqrt_all_rows: FitResult | None  # 128*(a+b*sqrt(B)) across every context length
    roofline: FitResult
    roofline_by_accelerator: dict[str, FitResult]

    @property
    def accelerator(self) -> str:
        """The A100 variant the roofline fits best (the only one when the data names it)."""
        return max(self.roofline_by_accelerator.items(), key=lambda kv: kv[1].r_squared)[0]

    @property
    def roofline_model(self) -> Roofline:
        """The best-fitting roofline with its fitted efficiencies."""
        return Roofline(ACCELERATORS[self.accelerator], LLAMA2_7B,
                        self.roofline["eta_bandwidth"], self.roofline["eta_flops"])


def fit_source(data: DecodeMeasurements, source: str) -> SourceFits:
    """Fit all three models to one source's Llama rows (see :class:`SourceFits`)."""
    rows = llama_rows(data).select(source=source)
    reference = reference_series(data, source)
    seed_fit = free_fit = None
    seed_r2 = None
    if reference is not None:
        label = f"{source} {reference.input_len[0]}/{reference.output_len[0]}"
        seed_fit = fit_sqrt(reference.batch_size, reference.decode_tokens_per_s, label=label)
        free_fit = fit_sqrt_free_scale(reference.batch_size, reference.decode_tokens_per_s,
                                       label=label)
        seed_r2 = r_squared(reference.decode_tokens_per_s,
                            sqrt_curve(reference.batch_size, *SEED_SPEEDUP))
    sqrt_all = (fit_sqrt(rows.batch_size, rows.decode_tokens_per_s, label=source)
                if reference is not None else None)
    by_accelerator = {acc.name: fit_roofline(rows, acc, label=source)
                      for acc in accelerators_for(sorted(set(rows.gpu.tolist())))}
    best = max(by_accelerator.values(), key=lambda f: f.r_squared)
    return SourceFits(source, reference, seed_fit, free_fit, seed_r2, rows, sqrt_all, best,
                      by_accelerator)


def fit_all_sources(data: DecodeMeasurements) -> dict[str, SourceFits]:
    """:func:`fit_source` for every source with Llama rows, in file order."""
    return {source: fit_source(data, source) for source in llama_rows(data).sources()}


def speedup(throughput_at: Callable[[float], float], batch_size: float) -> float:
    """Throughput at ``batch_size`` over throughput at 1."""
    return float(throughput_at(batch_size) / throughput_at(1.0))


def scenario_gpu_overrides(fit: FitResult) -> dict[str, object]:
    """``Scenario.with_overrides`` keys that put a sqrt fit into the simulator's GPU model.

    The fitted values are rounded to :data:`FITTED_DIGITS` significant digits, so the scenario
    (and every simulation run with it) is the same on any machine.
    """
    if fit.form in (FORM_SEED_SCALE, FORM_FREE_SCALE):
        speedup = [significant(fit["a"]), significant(fit["b"])]
    if fit.form == FORM_SEED_SCALE:
        return {"gpu.decode_tokens_per_s": SEED_SCALE, "gpu.batch_speedup": speedup}
    if fit.form == FORM_FREE_SCALE:
        if not fit["s"] > 0:
            raise ValueError(f"{fit.label}: the fitted single-request rate s = {fit['s']:.3g} is "
                             "not positive, so it cannot be a GPU's decode rate")
        return {"gpu.decode_tokens_per_s": significant(fit["s"]), "gpu.batch_speedup": speedup}
    raise ValueError(f"a {fit.form} fit has no (a, b) for the simulator's GPU model")


# --------------------------------------------------------------------------------------------
# Tables for notebook 04


def short_source(source: str) -> str:
    """Source names short enough for a table column."""
    return source.replace("argonne-llm-inference-bench-", "argonne-")


def sqrt_fit_table(fits: dict[str, SourceFits]) -> str:
    """Per source: the reference series and both sqrt fits with 95% intervals and R^2."""
    from .experiments import table

    rows = []
    for source, f in fits.items():
        if f.seed_scale is None:
            continue
        ref = f.reference
        fixed, free = f.seed_scale, f.free_scale
        rows.append((
            short_source(source), f"{ref.input_len[0]}/{ref.output_len[0]}", len(ref),
            _with_interval(fixed, "a"), _with_interval(fixed, "b"), fixed.r_squared,
            _with_interval(free, "s"), _with_interval(free, "b"), free.r_squared,
            f.seed_r_squared,
        ))
    return table(
        ("source", "in/out", "n", "a (128 scale)", "b (128 scale)", "R^2", "s (free)",
         "b (free, a=1-b)", "R^2", "seed R^2"),
        rows, ("", "", "d", "", "", ".3f", "", "", ".3f", ".2f"))


def _with_interval(fit: FitResult, name: str) -> str:
    low, high = fit.ci95[name]
    if name in fit.unidentified:
        return f">= {low:.3g} (not identified)"
    return f"{fit[name]:.3g} [{low:.3g}, {high:.3g}]"


def seed_comparison(fits: dict[str, SourceFits]) -> list[dict]:
    """What each source's reference series says about the seed's 128 and (0.4, 0.6).

    For each source: the measured single-request rate (B = 1), the measured speedup at the
    largest batch <= 16 it published against the seed's ``0.4 + 0.6*sqrt(B)``, and whether the
    seed's a and b lie inside the fitted 95% intervals.
    """
    out = []
    for source, f in fits.items():
        if f.seed_scale is None:
            continue
        ref = f.reference
        sizes = ref.batch_size
        single = float(ref.decode_tokens_per_s[sizes == 1].mean())
        at = int(sizes[sizes <= 16].max())
        measured = float(ref.decode_tokens_per_s[sizes == at].mean()) / single
        out.append({
            "source": source,
            "single_request_tokens_per_s": single,
            "batch": at,
            "measured_speedup": measured,
            "seed_speedup": SEED_SPEEDUP[0] + SEED_SPEEDUP[1] * float(np.sqrt(at)),
            "seed_a_in_ci": f.seed_scale.contains("a", SEED_SPEEDUP[0]),
            "seed_b_in_ci": f.seed_scale.contains("b", SEED_SPEEDUP[1]),
        })
    return out


def roofline_table(fits: dict[str, SourceFits]) -> str:
    """Per source, every context length together: the sqrt curve's R^2 against the roofline's."""
    from .experiments import table

    rows = []
    for source, f in fits.items():
        roof = f.roofline
        rows.append((
            short_source(source), len(f.all_rows), f.accelerator,
            f.sqrt_all_rows.r_squared if f.sqrt_all_rows is not None else None,
            _with_interval(roof, "eta_bandwidth"), _with_interval(roof, "eta_flops"),
            roof.r_squared, roof.dof,
        ))
    return table(("source", "rows", "A100 (best fit)", "sqrt R^2", "bandwidth fraction",
                  "FLOP fraction", "roofline R^2", "dof"),
                 rows, ("", "d", "", ".3f", "", "", ".3f", "d"))


def regime_errors(fits: dict[str, SourceFits]) -> list[dict]:
    """Median |relative error| of each model per regime, over every source's Llama rows.

    The regime of a row is what limits it in that source's fitted roofline
    (:meth:`apslab.core.roofline.Roofline.regime`). Sources without a batch sweep are left out (the
    sqrt curve has nothing to be fitted to there).
    """
    regimes, sqrt_err, roof_err = [], [], []
    for f in fits.values():
        if f.sqrt_all_rows is None:
            continue
        rows = f.all_rows
        regimes.extend(f.roofline_model.regime(rows.batch_size, rows.input_len, rows.output_len,
                                   rows.decode_only).tolist())
        sqrt_err.extend(np.abs(f.sqrt_all_rows.relative_residuals).tolist())
        roof_err.extend(np.abs(f.roofline.relative_residuals).tolist())
    regimes_arr = np.array(regimes)
    sqrt_arr, roof_arr = np.array(sqrt_err), np.array(roof_err)
    out = []
    for regime in ("weight bandwidth", "kv bandwidth", "kv capacity", "prefill"):
        mask = regimes_arr == regime
        if mask.any():
            out.append({"regime": regime, "rows": int(mask.sum()),
                        "sqrt_median_error": float(np.median(sqrt_arr[mask])),
                        "roofline_median_error": float(np.median(roof_arr[mask]))})
    return out


def prefill_tokens_per_s(source_fits: SourceFits) -> float:
    """The prompt-token rate a source's fitted roofline implies for long prefills.

    Prefill is compute-bound for prompts of more than a few hundred tokens: 2 FLOPs per weight
    per token at the fitted fraction of the A100's peak (attention ignored, as in the seed's
    linear prefill model), rounded to :data:`FITTED_DIGITS` significant digits. Raises
    ValueError when the fit did not identify the FLOP fraction.
    """
    roof = source_fits.roofline
    if "eta_flops" in roof.unidentified:
        raise ValueError(f"{source_fits.source}: the FLOP fraction is not identified, so the "
                         "roofline says nothing about prefill speed")
    model = source_fits.roofline_model
    return significant(model.eta_flops * model.accelerator.peak_flops
                       / (2.0 * model.model.matmul_params))


def markdown_table(fits: dict[str, SourceFits]) -> str:
    """The per-source fits as a Markdown table (docs/lab.md shows it; a test keeps it current)."""
    lines = ["| source | series (in/out) | a [95% CI] | b [95% CI] | R^2 | sqrt R^2, all "
             "lengths | roofline bandwidth fraction | roofline R^2, all lengths |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for source, f in fits.items():
        roof = f"{_with_interval(f.roofline, 'eta_bandwidth')} ({f.accelerator})"
        if f.seed_scale is None:
            lines.append(f"| {short_source(source)} | no batch sweep | | | | | {roof} | "
                         f"{f.roofline.r_squared:.3f} |")
            continue
        ref = f.reference
        lines.append(
            f"| {short_source(source)} | {ref.input_len[0]}/{ref.output_len[0]} | "
            f"{_with_interval(f.seed_scale, 'a')} | {_with_interval(f.seed_scale, 'b')} | "
            f"{f.seed_scale.r_squared:.3f} | {f.sqrt_all_rows.r_squared:.3f} | {roof} | "
            f"{f.roofline.r_squared:.3f} |")
    return "\n".join(lines)
