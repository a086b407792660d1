"""The GPUs a plan compares: the catalogue's table (``apslab gpus``) and calibration of a
catalogue GPU to one's own measurements (``apslab calibrate``).

Calibration reads measurement files (:mod:`apslab.io.measurements`), fits the roofline's
``eta_bandwidth``, ``eta_flops`` and ``overhead_s`` with :func:`apslab.sim.calibration.calibrate`
on the preset's datasheet roofs and the measured model, reports the fit (parameters with 95%
intervals, R², every row's residual) and writes a GPU file: ``[gpu] preset = ...`` plus the three
fitted keys (and the ``[model]`` table when it is not Llama-2-7B), which ``apslab simulate --gpu``,
``apslab plan --gpu`` and ``apslab plan --gpu-types`` read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.catalogue import (
    ACTIVATION_RESERVE,
    CATALOGUE,
    catalogue_names,
    kv_cache_gib,
    lookup,
    suggestion,
)
from ..core.gpu import RooflineGPU
from ..core.roofline import LLAMA2_7B
from ..io.errors import InputError
from ..io.measurements import Measurements, read_measurement_file
from ..io.scenario import dump_toml, model_to_dict, parse_gpu_tables, read_toml
from ..sim.calibration import PARAMETERS, Calibration, calibrate, fits_in_memory


def catalogue_table(sources: bool = False) -> str:
    """The catalogue as a text table (``apslab gpus``); ``sources`` adds the citations."""
    head = (f"{'GPU':<14} {'memory':>7} {'HBM GB/s':>8} {'fp16 TFLOP/s':>12} {'$/hour':>7} "
            f"{'eta_bw':>6} {'eta_flops':>9} {'overhead':>8} {'fractions':>9} "
            f"{'KV GiB (Llama-2-7B)':>19}")
    lines = [head]
    for gpu in CATALOGUE.values():
        lines.append(
            f"{gpu.name:<14} {gpu.memory_gb:>5g} GB {gpu.hbm_bytes_per_s / 1e9:>8,.0f} "
            f"{gpu.peak_flops / 1e12:>12.1f} {gpu.price_per_hour:>7.4f} {gpu.eta_bandwidth:>6.3g} "
            f"{gpu.eta_flops:>9.3g} {gpu.overhead_s * 1000:>5.2f} ms {gpu.fractions:>9} "
            f"{kv_cache_gib(gpu.memory_gb, LLAMA2_7B.weight_bytes):>19.1f}")
    lines.append(f"memory and roofs from the datasheets (dense fp16/bf16 peak); prices are "
                 f"on-demand US$ per GPU-hour; KV cache = memory x {1 - ACTIVATION_RESERVE:g} - "
                 "weights; 'assumed' fractions are the A100 fit's (apslab calibrate fits yours)")
    if sources:
        for gpu in CATALOGUE.values():
            lines += [f"{gpu.name}:", f"  datasheet: {gpu.datasheet}",
                      f"  price: {gpu.price_source} ({gpu.price_date})",
                      f"  fractions: {gpu.fractions}; {gpu.note}"]
    return "\n".join(lines)


@dataclass(frozen=True)
class CalibrationRun:
    """A fit to measurement files, and what was left out."""

    preset: str
    gpu: RooflineGPU  # the preset with the measured model, before the fit
    calibration: Calibration
    rows: Measurements  # the rows fitted, in file order
    dropped: int  # rows whose batch's KV cache does not fit in the GPU's memory
    files: tuple[str, ...]


def preset_gpu(preset: str, model_file: str | None = None) -> RooflineGPU:
    """The catalogue GPU ``preset`` serving the model of ``model_file`` (a TOML file with a
    ``[model]`` table; default Llama-2-7B), checked as a scenario's [gpu] would be."""
    entry = lookup(preset)
    if entry is None:
        raise InputError(f"--gpu-preset {preset!r} is not in the GPU catalogue"
                         f"{suggestion(preset)}; presets: {', '.join(catalogue_names())}")
    model: dict[str, Any] = {}
    source = "--gpu-preset"
    if model_file:
        path = Path(model_file)
        data, _text = read_toml(path, "model")
        if set(data) != {"model"} or not isinstance(data["model"], dict):
            raise InputError(f"{path}: expected one [model] table (hidden, layers, heads, "
                             "kv_heads, intermediate, vocab, bytes_per_param)")
        model, source = data["model"], str(path)
    return parse_gpu_tables({"gpu": {"preset": entry.name}, "model": model}, source)


def calibrate_files(files: Sequence[str], preset: str, *, sources: Sequence[str] = (),
                    model_file: str | None = None) -> CalibrationRun:
    """Read ``files``, drop batches whose KV cache does not fit in the preset's memory beside
    the weights (the engine would not run them as one batch), and fit."""
    gpu = preset_gpu(preset, model_file)
    parts = [read_measurement_file(path, list(sources) or None) for path in files]
    rows = Measurements.concatenate(parts)
    if sources and not len(rows):
        raise InputError(f"--source {', '.join(sources)}: no measurement row has that source")
    fits = fits_in_memory(gpu, rows, gpu.memory_gb * 1e9)
    kept = rows.select(fits)
    if len(kept) < len(PARAMETERS):
        raise InputError(f"{', '.join(files)}: {len(kept)} usable measurement(s); fitting "
                         f"{len(PARAMETERS)} parameters needs at least {len(PARAMETERS)}"
                         + (f" ({int((~fits).sum())} left out: their KV cache does not fit "
                            f"on {gpu.name})" if (~fits).any() else ""))
    fit = calibrate(gpu, kept)
    # The GPU is named by the preset alone: its name is the catalogue's spelling of it.
    return CalibrationRun(gpu.name, gpu, fit, kept, int((~fits).sum()),
                          tuple(map(str, files)))


def _interval(name: str, fit: Calibration) -> str:
    scale, unit = (1000.0, " ms") if name == "overhead_s" else (1.0, "")
    value = fit.parameters[name] * scale
    ci = fit.ci95[name]
    if ci is None:
        return f"{value:.4g}{unit} (on its bound: no interval)" if name in fit.at_bound \
            else f"{value:.4g}{unit} (no interval)"
    return f"{value:.4g}{unit} (95% interval {ci[0] * scale:.4g} to {ci[1] * scale:.4g}{unit})"


def calibration_report(run: CalibrationRun, max_rows: int = 40) -> str:
    """The fit as text: parameters with intervals, R², residual summary and per-row table."""
    fit = run.calibration
    residual = fit.relative_residuals
    lines = [f"calibrated {run.preset} serving {run.gpu.model.name} to {len(run.rows)} "
             f"measurement(s) from {', '.join(run.files)}"
             + (f" ({run.dropped} left out: their batch's KV cache does not fit in "
                f"{run.gpu.memory_gb:g} GB beside the weights)" if run.dropped else "")]
    lines += [f"  {name:<14}{_interval(name, fit)}" for name in PARAMETERS]
    size = np.abs(residual)
    lines.append(f"  R^2 {fit.r_squared:.4f} (log predicted vs log measured); residuals: "
                 f"median |{np.median(size):.1%}|, max |{np.max(size):.1%}|")
    lines.append(f"  {'where':<44} {'kind':<17} {'P/O, batch':>14} {'measured':>12} "
                 f"{'fitted':>12} {'diff':>7}")
    rows = run.rows
    for i in range(min(len(rows), max_rows)):
        unit_scale = 1000.0 if rows.kind[i] == "first_token" else 1.0
        unit = "ms" if rows.kind[i] == "first_token" else "tok/s"
        shape = f"{rows.input_len[i]}/{rows.output_len[i]}, {rows.batch_size[i]}"
        where = str(rows.where[i])
        where = where if len(where) <= 44 else "..." + where[-41:]
        measured = f"{rows.value[i] * unit_scale:.4g} {unit}"
        fitted = f"{fit.predicted[i] * unit_scale:.4g} {unit}"
        diff = residual[i] if abs(residual[i]) >= 5e-4 else 0.0  # no "-0.0%"
        lines.append(f"  {where:<44} {rows.kind[i]:<17} {shape:>14} {measured:>12} "
                     f"{fitted:>12} {diff:>+7.1%}")
    if len(rows) > max_rows:
        lines.append(f"  ... and {len(rows) - max_rows} more rows")
    return "\n".join(lines)


def gpu_file_text(run: CalibrationRun) -> str:
    """The GPU file: the preset and the three fitted keys (full precision), with the fit
    summarised in comments; a non-default model is written as its [model] table."""
    fit = run.calibration
    header = [f"# apslab calibrate: {run.preset} fitted to {len(run.rows)} measurement(s) from "
              f"{', '.join(Path(f).name for f in run.files)}",
              *(f"#   {name} {_interval(name, fit)}" for name in PARAMETERS),
              f"#   R^2 {fit.r_squared:.4f}; use with apslab simulate --gpu FILE, apslab plan "
              "--gpu FILE or --gpu-types FILE,..."]
    data: dict[str, Any] = {"gpu": {"preset": run.preset, "name": f"{run.preset} (calibrated)",
                                    **{name: fit.parameters[name] for name in PARAMETERS}}}
    if run.gpu.model != LLAMA2_7B:
        data["model"] = model_to_dict(run.gpu.model)
    return "\n".join(header) + "\n" + dump_toml(data)
