"""Printed fits are the same on every machine.

A least-squares fit runs through BLAS and LAPACK, whose kernels differ from one CPU and thread
count to the next, and ``curve_fit`` stops within a tolerance (about 1e-8 relative), so a fitted
parameter's last digits are not reproducible: notebook 04 once stored
``batch_speedup = [-2.28310275256705, ...]`` where an AMD EPYC computed ``-2.2831027520431966``.
Everything printed from a fit is therefore rounded (apslab.lab.fit's module docstring); these
tests re-run every fit that reaches a compared output and check the printed text does not move:

* with BLAS limited to one thread and with all of them (threadpoolctl), the same process;
* when the solvers stop elsewhere within their tolerance: each fitted parameter and covariance
  nudged by 1e-8 of itself (the calibration's least squares, run to 1e-12, by 1e-10), as another
  CPU's rounding would.

What is printed: every compared output of the notebooks that fit (their code cells run here as
nbval runs them, except widgets and exercises), the fit table in docs/lab.md and the calibration
figures docs/continuous.md quotes.
"""

from __future__ import annotations

import contextlib
import io
import os
import re

import numpy as np
import pytest
from notebook_conventions import IGNORE, load, notebook_paths, tags

from apslab.lab import fit
from apslab.lab.datasets import load_a100_decode_throughput
from apslab.lab.release import is_check_cell, is_solution_cell
from apslab.lab.validation import default_calibration

threadpoolctl = pytest.importorskip("threadpoolctl")

NUDGE = 1e-8  # relative: curve_fit's default tolerances (ftol, xtol) are 1.49e-8
CALIBRATION_NUDGE = 1e-10  # 100 times the calibration's own xtol and ftol (1e-12)


def fitting_notebooks():
    """Notebooks whose code (outside the exercises) fits something."""
    found = []
    for path in notebook_paths():
        notebook = load(path)
        if any(re.search(r"\bfit\.\w+\(|curve_fit|least_squares|calibrat", cell.source)
               for cell in notebook.cells if cell.cell_type == "code"
               and not is_solution_cell(cell) and not is_check_cell(cell)):
            found.append(path)
    return found


def notebook_printouts(path) -> list[str]:
    """What each compared code cell of a notebook prints, run in one namespace as nbval does
    (from the notebook's folder; magics, widget cells and exercises left out)."""
    notebook = load(path)
    namespace: dict = {"__name__": "__main__"}
    printed = []
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        for cell in notebook.cells:
            if (cell.cell_type != "code" or IGNORE in tags(cell) or is_solution_cell(cell)
                    or is_check_cell(cell)):
                continue
            source = "\n".join(line for line in cell.source.splitlines()
                               if not line.lstrip().startswith("%"))
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(source, f"{path.name}", "exec"), namespace)
            printed.append(out.getvalue())
    finally:
        os.chdir(cwd)
    return printed


def calibration_text() -> str:
    """The calibration figures as docs/continuous.md and the defaults quote them."""
    cal = default_calibration()
    p, ci = cal.parameters, cal.ci95
    lines = [f"{name} {p[name]:.3g}" for name in ("eta_bandwidth", "eta_flops", "overhead_s")]
    lines.append(f"eta_flops interval {ci['eta_flops'][0]:.3f} to {ci['eta_flops'][1]:.3f}")
    lines.append(f"overhead_s interval {ci['overhead_s'][0] * 1000:.3g} to "
                 f"{ci['overhead_s'][1] * 1000:.3g} ms")
    lines.append(f"explains {cal.r_squared:.1%}; at bound {cal.at_bound}")
    return "\n".join(lines)


def everything_printed() -> dict[str, object]:
    printed: dict[str, object] = {path.name: notebook_printouts(path)
                                  for path in fitting_notebooks()}
    printed["docs/lab.md fit table"] = fit.markdown_table(
        fit.fit_all_sources(load_a100_decode_throughput()))
    printed["docs/continuous.md calibration"] = calibration_text()
    return printed


def test_the_fitting_notebooks_are_found():
    assert "04_a100_model_and_sqrt_fit.ipynb" in [p.name for p in fitting_notebooks()]


def test_printed_fits_are_the_same_with_one_blas_thread_and_with_all():
    blas = [pool for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    assert blas, "numpy and scipy use a BLAS that threadpoolctl can limit"
    everyone = max(os.cpu_count() or 1, max(pool["num_threads"] for pool in blas))
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert all(pool["num_threads"] == 1 for pool in threadpoolctl.threadpool_info()
                   if pool["user_api"] == "blas")
        one_thread = everything_printed()
    with threadpoolctl.threadpool_limits(limits=everyone, user_api="blas"):
        all_threads = everything_printed()
    assert one_thread == all_threads
    assert any("batch_speedup" in text for texts in one_thread.values()
               for text in (texts if isinstance(texts, list) else [texts]))


def _nudged(solver, relative: float):
    """``solver`` whose fitted values (and covariance) come out ``relative`` of themselves away,
    in alternating directions and within the bounds, as if it had stopped a little elsewhere."""
    def run(*args, **kwargs):
        result = solver(*args, **kwargs)
        if isinstance(result, tuple):  # curve_fit: (values, covariance, ...)
            values, covariance, *rest = result
            signs = np.where(np.arange(len(values)) % 2 == 0, 1.0, -1.0)
            values = values * (1 + relative * signs)
            if "bounds" in kwargs:
                values = np.clip(values, *kwargs["bounds"])
            return (values, covariance * (1 + 2 * relative), *rest)
        signs = np.where(np.arange(len(result.x)) % 2 == 0, 1.0, -1.0)  # least_squares
        result.x = np.clip(result.x * (1 + relative * signs), *kwargs["bounds"])
        return result
    return run


def test_printed_fits_survive_solvers_that_stop_elsewhere(monkeypatch):
    from apslab.sim import calibration

    before = everything_printed()
    monkeypatch.setattr(fit, "curve_fit", _nudged(fit.curve_fit, NUDGE))
    # the calibration asks least_squares for xtol = ftol = 1e-12: its noise is that small
    monkeypatch.setattr(calibration, "least_squares",
                        _nudged(calibration.least_squares, CALIBRATION_NUDGE))
    after = everything_printed()
    assert after == before


def test_a_fitted_scenario_stores_rounded_values():
    fits = fit.fit_all_sources(load_a100_decode_throughput())
    vllm = fits["argonne-llm-inference-bench-vllm"]
    overrides = fit.scenario_gpu_overrides(vllm.seed_scale)
    values = [*overrides["gpu.batch_speedup"], fit.prefill_tokens_per_s(vllm)]
    assert all(value == float(f"{value:.{fit.FITTED_DIGITS}g}") for value in values)
    # ... and notebook 04 prints and simulates those, not the fit's last digits
    stored = "".join(o.get("text", "") for cell in
                     load(notebook_paths()[0].parent / "04_a100_model_and_sqrt_fit.ipynb").cells
                     if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert f"batch_speedup = [{values[0]!r}, {values[1]!r}]" in stored
    assert f"prefill_tokens_per_s = {values[2]!r}" in stored
