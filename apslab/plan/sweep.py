"""Grid sweeps: every combination of scenario overrides and load multipliers, on any Executor.

A sweep is ``{dotted scenario key: [values]}`` (``scheduler.max_batch_size``, ``cluster.gpus``,
``tenants.rate_limit``, ``tenants.<id>.burst_cap``, ... as :meth:`Scenario.with_overrides` reads
them) plus the pseudo-key ``load``, the arrival-rate multiplier. Every combination is one run and
one row: its parameters, then the run's SUMMARY flattened to dotted keys
(``queue_wait_s.p99``, ``tenants.premium.completed``, ``gpus.utilization_per_gpu.0``), plus
``offered_rps`` and ``rejected_fraction``.

Runs are submitted to a ``concurrent.futures.Executor``: a local process pool by default, a
:class:`SerialExecutor` for in-process runs, or a Dask ``Client.get_executor()``. Each run is a
pure function of its scenario, trace, load and seed, so rows come back identical (and in grid
order) whichever executor ran them. ``apslab plan`` uses the same :func:`map_ordered`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ..core.metrics import GoodputTargets
from ..io.errors import InputError
from ..io.scenario import Scenario
from ..io.trace import Trace, atomic_writer, csv_field
from ..io.workload import generate_trace
from ..sim.run import simulate

LOAD_KEY = "load"
DERIVED_METRICS = ("offered_rps", "rejected_fraction")


# --------------------------------------------------------------------------------------------
# One run


def trace_at_load(scenario: Scenario, trace: Trace | None, load: float = 1.0,
                  seed: int | None = None) -> Trace:
    """The requests of a run at ``load`` times the base arrival rate.

    A given trace has its timestamps divided by ``load`` (the same requests, closer together);
    without one, the scenario's [workload] arrival rates are multiplied and a trace generated
    (``seed`` overrides the workload's seed).
    """
    if not (load > 0 and math.isfinite(load)):
        raise InputError(f"load multiplier must be a finite number > 0, got {load!r}")
    if trace is not None:
        return trace if load == 1.0 else trace.compressed(load)
    if scenario.workload is None:
        raise InputError(f"{scenario.source}: no trace given and the scenario has no "
                         "[workload] section to generate one from")
    return generate_trace(scenario.scaled_load(load).workload, seed)


def base_rps(scenario: Scenario, trace: Trace | None) -> float | None:
    """Offered requests per second at load 1.

    For a trace: its requests / (last arrival - first arrival); for a [workload]: the sum of
    the tenants' arrival rates. None when a trace spans no time.
    """
    if trace is not None:
        span = float(trace.arrival_s.max() - trace.arrival_s.min()) if len(trace) else 0.0
        return len(trace) / span if span > 0 else None
    if scenario.workload is None:
        raise InputError(f"{scenario.source}: no trace given and the scenario has no "
                         "[workload] section to generate one from")
    return float(sum(t.arrival_rate_per_s for t in scenario.workload.tenants))


def run_metrics(scenario: Scenario, trace: Trace | None, load: float = 1.0,
                seed: int | None = None, rps_at_load_1: float | None = None,
                goodput: GoodputTargets | None = None) -> dict[str, Any]:
    """Simulate one run and return its flattened metrics (see :func:`metrics_of`); ``goodput``
    targets add goodput_rps and slo_attainment."""
    summary = simulate(scenario, trace_at_load(scenario, trace, load, seed)).summary(goodput)
    offered = None if rps_at_load_1 is None else rps_at_load_1 * load
    return metrics_of(summary, offered)


def metrics_of(summary: Mapping[str, Any], offered_rps: float | None = None) -> dict[str, Any]:
    """A SUMMARY flattened to dotted keys, plus ``offered_rps`` and ``rejected_fraction``."""
    requests = summary["requests"]
    rejected = requests["rejected"] / requests["submitted"] if requests["submitted"] else None
    return {"offered_rps": offered_rps, "rejected_fraction": rejected, **flatten(summary)}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists -> {dotted.key: leaf}; list items are keyed by index."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out.update(flatten({str(i): v for i, v in enumerate(value)}, name + "."))
        else:
            out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# Grids


def parse_grid_spec(text: str, option: str = "--grid") -> tuple[str, list[Any]]:
    """``"scheduler.max_batch_size=8,16,32"`` -> (key, [8, 16, 32]).

    Values are read as TOML values (``8`` an integer, ``0.5`` a float, ``true`` a boolean,
    ``"A100"`` a string); anything else is kept as a string for the scenario check to judge.
    """
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise InputError(f"{option} {text!r}: expected KEY=VALUE[,VALUE...], e.g. "
                         "scheduler.max_batch_size=8,16,32")
    parsed = []
    for raw in values.split(","):
        raw = raw.strip()
        if not raw:
            raise InputError(f"{option} {text!r}: empty value")
        try:
            parsed.append(tomllib.loads(f"v = {raw}")["v"])
        except tomllib.TOMLDecodeError:
            parsed.append(raw)
    if key == LOAD_KEY:
        for value in parsed:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    value > 0 and math.isfinite(value)):
                raise InputError(f"{option} {text!r}: load multipliers must be numbers > 0, "
                                 f"got {value!r}")
    return key, parsed


def parse_grid(specs: Iterable[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, values = parse_grid_spec(spec)
        if key in grid:
            raise InputError(f"--grid {spec!r}: {key} is given twice")
        grid[key] = values
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def scenario_for(scenario: Scenario, point: Mapping[str, Any]) -> Scenario:
    """The scenario with a grid point's overrides (the load is not an override)."""
    overrides = {k: v for k, v in point.items() if k != LOAD_KEY}
    if not overrides:
        return scenario
    try:
        return scenario.with_overrides(overrides)
    except InputError as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise InputError(f"grid point {shown}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Executors and progress


class SerialExecutor(Executor):
    """Runs each task in the calling process when it is submitted (no pickling, no processes)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def process_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A local process pool (forkserver: safe to start from a threaded Jupyter kernel)."""
    import multiprocessing

    return ProcessPoolExecutor(max_workers=workers or default_workers(),
                               mp_context=multiprocessing.get_context("forkserver"))


def map_ordered(fn: Callable, arg_tuples: Sequence[tuple], executor: Executor | None = None,
                progress: bool = True, desc: str = "runs") -> list:
    """``[fn(*args) for args in arg_tuples]`` on ``executor``, with a tqdm progress bar.

    Without an executor a local process pool is started for the call (and shut down after);
    with a single task it runs in-process. Results come back in input order; the first failure
    cancels what has not started and is raised.
    """
    from tqdm.auto import tqdm

    if not arg_tuples:
        return []
    owned = None
    if executor is None:
        executor = owned = (SerialExecutor() if len(arg_tuples) == 1
                            else process_pool(min(len(arg_tuples), default_workers())))
    results: list = [None] * len(arg_tuples)
    futures: dict[Future, int] = {}
    try:
        for i, args in enumerate(arg_tuples):
            futures[executor.submit(fn, *args)] = i
        with tqdm(total=len(futures), desc=desc, unit="run", disable=not progress,
                  leave=True) as bar:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        if owned is not None:
            owned.shutdown(wait=True, cancel_futures=True)
    return results


# --------------------------------------------------------------------------------------------
# Sweeps


def run_sweep(scenario: Scenario, grid: Mapping[str, Sequence[Any]], trace: Trace | None = None,
              *, seed: int | None = None, executor: Executor | None = None,
              progress: bool = True, scatter: Callable[[Trace], Any] | None = None,
              goodput: GoodputTargets | None = None) -> list[dict[str, Any]]:
    """One row per grid point (in grid order): the point's parameters, then its metrics.

    Every point's scenario is built and validated before anything runs, so a typo in a key or a
    bad value fails at once. ``scatter`` (e.g. a Dask client's ``scatter``) turns the trace into
    a handle the executor resolves on the workers, so a large trace is shipped once.
    """
    points = grid_points(grid)
    scenarios = [scenario_for(scenario, point) for point in points]
    handle = scatter(trace) if (scatter is not None and trace is not None) else trace
    tasks = []
    for point, point_scenario in zip(points, scenarios, strict=True):
        load = float(point.get(LOAD_KEY, 1.0))
        tasks.append((point_scenario, handle, load, seed, base_rps(point_scenario, trace),
                      goodput))
    results = map_ordered(run_metrics, tasks, executor, progress, desc="sweep")
    return [{**point, **metrics} for point, metrics in zip(points, results, strict=True)]


# --------------------------------------------------------------------------------------------
# Writing rows


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of every row, in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return csv_field(str(value))


def write_rows_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as CSV (atomically): a header of every key, empty cells for missing or null values."""
    columns = columns_of(rows)
    with atomic_writer(path) as handle:
        handle.write(",".join(map(csv_field, columns)) + "\n")
        for row in rows:
            handle.write(",".join(_cell(row.get(c)) for c in columns) + "\n")


def write_rows_json(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    from ..io.trace import write_text_atomic

    write_text_atomic(path, json.dumps(list(rows), indent=1, allow_nan=False) + "\n")
