"""``apslab plan``, ``apslab sweep`` and ``apslab report``: capacity planning from the shell.

Registered by :mod:`apslab.cli`; heavy imports (dask, papermill, matplotlib) happen only inside
the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..io.errors import InputError

if TYPE_CHECKING:
    from ..io.scenario import Scenario
    from ..io.trace import Trace


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..io.arguments import add_goodput_argument, add_gpu_file_argument, add_trace_arguments

    plan = subparsers.add_parser(
        "plan", help="find the highest load each GPU count sustains within SLOs",
        description="For each GPU count, bisect the highest load multiplier (arrival rates "
                    "scaled; trace timestamps compressed) that meets every --slo; report "
                    "req/s, output tokens/s, utilisation, $ per million tokens and Jain's index "
                    "there, and the cheapest GPU count for --target-rps.")
    plan.add_argument("scenario", metavar="SCENARIO.toml")
    add_trace_arguments(plan)
    plan.add_argument("--slo", action="append", default=[], metavar="'PATH<=BOUND'",
                      help="an SLO on a SUMMARY.json path (repeatable), e.g. "
                           "'queue_wait_s.p99<=2', 'ttft_s.p99<=0.5', 'tpot_s.p99<=0.05', "
                           "'jain_fairness>=0.9', 'rejected_fraction<=0.01'")
    add_goodput_argument(plan)
    plan.add_argument("--min-attainment", type=float, metavar="F",
                      help="with --goodput: find the highest load whose slo_attainment (share "
                           "of submitted requests meeting every target) stays >= F, e.g. 0.9")
    plan.add_argument("--gpus", default="1..8", metavar="1..8",
                      help="GPU counts to plan for: a range 1..8 or a list 1,2,4 (default 1..8)")
    plan.add_argument("--gpu-types", metavar="TYPE,...",
                      help="plan on each of these GPU types (catalogue names, see apslab gpus, "
                           "or GPU files from apslab calibrate) and recommend the cheapest "
                           "type and count for --target-rps")
    add_gpu_file_argument(plan)
    plan.add_argument("--target-rps", type=float, metavar="REQ/S",
                      help="recommend the cheapest GPU count (and type) for this many "
                           "requests/s")
    plan.add_argument("--start-load", type=float, default=1.0, metavar="X",
                      help="load multiplier the search starts from (default 1)")
    plan.add_argument("--min-load", type=float, default=1 / 1024, metavar="X",
                      help="lowest load multiplier tried (default 1/1024)")
    plan.add_argument("--max-load", type=float, default=1024.0, metavar="X",
                      help="highest load multiplier tried (default 1024)")
    plan.add_argument("--tolerance", type=float, default=0.01, metavar="R",
                      help="stop bisecting when failing/passing load <= 1 + R (default 0.01)")
    plan.add_argument("--csv", metavar="PLAN.csv", help="write one row per GPU count here")
    plan.add_argument("--json", metavar="PLAN.json", help="write the plan (rows, recommendation)")
    plan.add_argument("--plot", metavar="PLAN.png",
                      help="draw max load and cost versus GPUs (any matplotlib format)")
    _add_run_arguments(plan)
    plan.set_defaults(func=run_plan)

    gpus = subparsers.add_parser(
        "gpus", help="list the GPU catalogue ([gpu] preset, plan --gpu-types)",
        description="The GPU types apslab knows: datasheet bandwidth, dense fp16 peak, memory, "
                    "hourly price and the roofline's achieved fractions (fitted or assumed), "
                    "with the KV cache each leaves for Llama-2-7B.")
    gpus.add_argument("--sources", action="store_true",
                      help="also print where each figure comes from")
    gpus.set_defaults(func=run_gpus)

    calibrate = subparsers.add_parser(
        "calibrate", help="fit the roofline GPU to your own measurements",
        description="Fit eta_bandwidth, eta_flops and overhead_s of the roofline to measured "
                    "throughputs and first-token latencies (CSV in the columns of "
                    "data/a100_decode_throughput.csv or data/a100_first_token_latency.csv, or "
                    "the JSON of vllm bench serve --save-result), print the fit and write a "
                    "[gpu] table that simulate --gpu and plan --gpu read.")
    calibrate.add_argument("measurements", nargs="+", metavar="MEASUREMENTS",
                           help="CSV or vLLM bench JSON files (several are fitted together)")
    calibrate.add_argument("--gpu-preset", required=True, metavar="NAME",
                           help="the catalogue GPU the measurements were made on (its datasheet "
                                "roofs, memory and price), e.g. A100-80GB")
    calibrate.add_argument("--out", metavar="GPU.toml", help="write the fitted [gpu] table here")
    calibrate.add_argument("--source", action="append", default=[], metavar="NAME",
                           help="CSV files: keep only rows of this source (repeatable)")
    calibrate.add_argument("--model-file", metavar="MODEL.toml",
                           help="a TOML file with the measured model's [model] table (default "
                                "Llama-2-7B)")
    calibrate.set_defaults(func=run_calibrate)

    sweep = subparsers.add_parser(
        "sweep", help="run every combination of a parameter grid, one row per run",
        description="Run SCENARIO for every combination of the --grid values (dotted scenario "
                    "keys, or load for the arrival-rate multiplier) and write one row per run: "
                    "the parameters, then the SUMMARY metrics flattened to dotted keys.")
    sweep.add_argument("scenario", metavar="SCENARIO.toml")
    add_trace_arguments(sweep)
    sweep.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                       help="a parameter and its values (repeatable), e.g. "
                            "scheduler.max_batch_size=8,16,32 cluster.gpus=1,2,4 "
                            "tenants.rate_limit=200,400 load=0.5,1,2")
    add_goodput_argument(sweep)
    sweep.add_argument("--out", metavar="SWEEP.csv", help="write the rows as CSV")
    sweep.add_argument("--json", metavar="SWEEP.json", help="write the rows as JSON")
    _add_run_arguments(sweep)
    sweep.set_defaults(func=run_sweep_command)

    report = subparsers.add_parser(
        "report", help="run the capacity-planning notebook for a scenario and render HTML",
        description="Execute notebooks/06_capacity_planning.ipynb with papermill for SCENARIO "
                    "and render it with nbconvert to one self-contained HTML file.")
    report.add_argument("scenario", metavar="SCENARIO.toml")
    add_trace_arguments(report)
    report.add_argument("--out", required=True, metavar="report.html")
    report.add_argument("--slo", action="append", metavar="'PATH<=BOUND'",
                        help="SLOs for the plan in the report (default: the notebook's)")
    report.add_argument("--gpus", metavar="1..8", help="GPU counts (default: the notebook's)")
    report.add_argument("--target-rps", type=float, metavar="REQ/S",
                        help="target load for the recommendation (default: the notebook's)")
    report.add_argument("--gpu-types", metavar="TYPE,...",
                        help="GPU types to compare (default: the notebook's)")
    report.add_argument("--goodput", metavar="ttft=S,tpot=S[,e2e=S]",
                        help="per-request targets for goodput (default: the notebook's)")
    report.add_argument("--min-attainment", type=float, metavar="F",
                        help="lowest slo_attainment within the SLOs (default: the notebook's)")
    report.add_argument("--notebook", metavar="NOTEBOOK.ipynb",
                        help="the parameterised notebook to run (default: "
                             "notebooks/06_capacity_planning.ipynb of this checkout)")
    report.add_argument("--keep-notebook", metavar="EXECUTED.ipynb",
                        help="also keep the executed notebook here")
    report.add_argument("--timeout", type=int, default=600, metavar="S",
                        help="seconds allowed per notebook cell (default 600)")
    report.set_defaults(func=run_report)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a scenario key for every run (repeatable), e.g. "
                             "--set tenants.rate_limit=1000 --set gpu.price_per_hour=2.2")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the generated workload (without --trace)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="local worker processes (default: one per core; 1 = run in this "
                             "process), or Dask LocalCluster workers with --dask local")
    parser.add_argument("--dask", metavar="tcp://HOST:PORT|local",
                        help="run on a Dask distributed scheduler at this address, or on a "
                             "LocalCluster started for this command")
    parser.add_argument("--dask-timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for the Dask scheduler to answer (default 10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------------------------
# Shared set-up


def _scenario_and_trace(args: argparse.Namespace
                        ) -> tuple[Scenario, Trace | None, dict[str, Any]]:
    """The scenario (with --gpu and --set applied), the trace to replay (None: each run
    generates its workload) and the --set overrides."""
    from ..io.arguments import apply_gpu_file, check_seed, load_trace_for
    from ..io.scenario import load_scenario

    check_seed(args.seed)
    scenario = apply_gpu_file(load_scenario(args.scenario), getattr(args, "gpu_file", None))
    overrides = _overrides(args)
    if overrides:
        scenario = scenario.with_overrides(overrides)
    # Without --trace the runs generate their own workload at each load, so none is loaded here.
    if args.trace:
        trace = load_trace_for(scenario, args)
        warn_unknown_tenants(scenario, trace)
    elif args.trace_format == "azure" or args.tenant_weights:
        raise InputError("--trace-format azure and --tenant-weights need a --trace to read")
    else:
        trace = None
    return scenario, trace, overrides


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set KEY=VALUE options as a dict of dotted scenario keys."""
    from .sweep import parse_grid_spec

    overrides: dict[str, Any] = {}
    for text in args.set:
        key, values = parse_grid_spec(text, "--set")
        if key == "load":
            raise InputError(f"--set {text!r}: load is not a scenario key (plan searches it; "
                             "sweep it with --grid load=...)")
        if len(values) != 1:
            raise InputError(f"--set {text!r}: expected one value")
        overrides[key] = values[0]
    return overrides


def warn_unknown_tenants(scenario, trace) -> None:
    """One stderr line when trace rows name tenants the scenario lacks (rejected in every run)."""
    import numpy as np

    known = set(scenario.tenant_ids())
    missing = [code for code, name in enumerate(trace.tenant_names) if name not in known]
    if not missing:
        return
    count = int(np.isin(trace.tenant_codes, missing).sum())
    if not count:
        return
    names = [trace.tenant_names[c] for c in missing]
    shown = ", ".join(map(repr, names[:5])) + (f" and {len(names) - 5} more"
                                               if len(names) > 5 else "")
    print(f"apslab: warning: {count} request(s) from {len(names)} tenant(s) not in "
          f"{scenario.source} ({shown}) will be rejected as unknown_tenant in every run",
          file=sys.stderr)


@contextmanager
def executor_for(args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    """(executor, scatter or None) for --dask / --workers; shut down afterwards."""
    from .sweep import SerialExecutor, default_workers, process_pool

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if not args.dask_timeout > 0:
        raise InputError(f"--dask-timeout must be > 0, got {args.dask_timeout}")
    if not args.dask:
        if args.workers == 1:
            yield SerialExecutor(), None
            return
        pool = process_pool(args.workers or default_workers())
        try:
            yield pool, None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    from dask.distributed import Client, LocalCluster

    cluster = None
    try:
        if args.dask == "local":
            cluster = LocalCluster(n_workers=args.workers or default_workers(),
                                   threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            if args.workers is not None:
                raise InputError("--workers applies to local runs and --dask local; a remote "
                                 "scheduler has its own workers")
            client = Client(args.dask, timeout=f"{args.dask_timeout}s")
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise InputError(f"--dask {args.dask}: cannot connect to a Dask scheduler: {exc}"
                         ) from None
    try:
        yield client.get_executor(), (lambda obj: client.scatter(obj, broadcast=True))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------------------------
# plan


def run_plan(args: argparse.Namespace) -> int:
    from ..io.arguments import check_distinct_paths, parse_goodput
    from .search import (
        SearchSettings,
        parse_gpu_counts,
        parse_gpu_types,
        parse_slo,
        plan_capacity,
        plan_fleet,
        plot_plan,
        scenarios_on_gpu_types,
        slos_with_attainment,
    )

    check_distinct_paths({"scenario": args.scenario, "--trace": args.trace,
                          "--gpu": args.gpu_file},
                         {"--csv": args.csv, "--json": args.json, "--plot": args.plot})
    goodput = parse_goodput(args.goodput)
    slos = slos_with_attainment([parse_slo(text) for text in args.slo], args.min_attainment,
                                goodput)
    gpu_counts = parse_gpu_counts(args.gpus)
    settings = SearchSettings(args.start_load, args.min_load, args.max_load, args.tolerance,
                              args.seed, goodput)
    if args.gpu_types and args.gpu_file:
        raise InputError("--gpu replaces the scenario's one GPU; with --gpu-types list the GPU "
                         "file among the types instead")
    gpu_types = parse_gpu_types(args.gpu_types) if args.gpu_types else None
    if gpu_types is not None and args.plot:
        raise InputError("--plot draws one GPU type's plan; with --gpu-types use --json or "
                         "--csv (notebook 06 draws the comparison)")
    scenario, trace, overrides = _scenario_and_trace(args)
    label = ("generated workload" if trace is None else
             f"--trace {args.trace} ({len(trace)} requests)")
    if gpu_types is not None:
        # Each type's [gpu] table replaces the scenario's; --set gpu.*/model.* apply on top.
        scenarios = scenarios_on_gpu_types(scenario, gpu_types, {
            k: v for k, v in overrides.items() if k.startswith(("gpu.", "model."))})
    with executor_for(args) as (executor, scatter):
        options = {"target_rps": args.target_rps, "settings": settings, "executor": executor,
                   "progress": not args.no_progress, "scatter": scatter, "trace_label": label}
        plan = (plan_fleet(scenarios, trace, slos, gpu_counts, **options)
                if gpu_types is not None
                else plan_capacity(scenario, trace, slos, gpu_counts, **options))
    print(plan.table())
    if args.csv:
        plan.write_csv(args.csv)
    if args.json:
        plan.write_json(args.json)
    if args.plot:
        fig = plot_plan(plan)
        try:
            fig.savefig(args.plot, dpi=120)
        except (OSError, ValueError) as exc:
            raise InputError(f"--plot {args.plot}: cannot write the figure: {exc}") from None
    return 0


# --------------------------------------------------------------------------------------------
# gpus and calibrate


def run_gpus(args: argparse.Namespace) -> int:
    from .hardware import catalogue_table

    print(catalogue_table(sources=args.sources))
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from ..io.arguments import check_distinct_paths
    from ..io.trace import write_text_atomic
    from .hardware import calibrate_files, calibration_report, gpu_file_text

    check_distinct_paths({f"measurements {i + 1}": path
                          for i, path in enumerate(args.measurements)}
                         | {"--model-file": args.model_file}, {"--out": args.out})
    run = calibrate_files(args.measurements, args.gpu_preset, sources=args.source,
                          model_file=args.model_file)
    print(calibration_report(run))
    if args.out:
        write_text_atomic(args.out, gpu_file_text(run))
        print(f"wrote {args.out}")
    return 0


# --------------------------------------------------------------------------------------------
# sweep

SWEEP_TABLE_COLUMNS = ("offered_rps", "queue_wait_s.p99", "latency_s.p99",
                       "throughput_tokens_per_s", "gpu_utilization", "cost_per_million_tokens",
                       "jain_fairness", "rejected_fraction")


def run_sweep_command(args: argparse.Namespace) -> int:
    from ..io.arguments import check_distinct_paths, parse_goodput
    from .sweep import parse_grid, run_sweep, write_rows_csv, write_rows_json

    check_distinct_paths({"scenario": args.scenario, "--trace": args.trace},
                         {"--out": args.out, "--json": args.json})
    grid = parse_grid(args.grid)
    goodput = parse_goodput(args.goodput)
    scenario, trace, _ = _scenario_and_trace(args)
    with executor_for(args) as (executor, scatter):
        rows = run_sweep(scenario, grid, trace, seed=args.seed, executor=executor,
                         progress=not args.no_progress, scatter=scatter, goodput=goodput)
    if args.out:
        write_rows_csv(args.out, rows)
    if args.json:
        write_rows_json(args.json, rows)
    print(format_rows(rows, list(grid) + (["goodput_rps", "slo_attainment"] if goodput else [])))
    return 0


def format_rows(rows: list[dict], parameters: list[str]) -> str:
    """A text table of sweep rows: the parameters, then the headline metrics."""
    columns = parameters + [c for c in SWEEP_TABLE_COLUMNS if c not in parameters]
    widths = [max(len(c), 8) for c in columns]

    def cell(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    for row in rows:
        lines.append("  ".join(f"{cell(row.get(c)):>{w}}"
                               for c, w in zip(columns, widths, strict=True)))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# report


def run_report(args: argparse.Namespace) -> int:
    from ..io.arguments import check_distinct_paths
    from .report import ReportFailed, render_report, report_parameters

    check_distinct_paths({"scenario": args.scenario, "--trace": args.trace},
                         {"--out": args.out, "--keep-notebook": args.keep_notebook})
    parameters = report_parameters(
        args.scenario, trace=args.trace, trace_format=args.trace_format,
        tenant_weights=args.tenant_weights, tenant_seed=args.tenant_seed, slos=args.slo,
        gpus=args.gpus, target_rps=args.target_rps, trace_span=args.trace_span,
        gpu_types=args.gpu_types, goodput=args.goodput, min_attainment=args.min_attainment)
    try:
        out = render_report(parameters, args.out, notebook=args.notebook,
                            keep_notebook=args.keep_notebook, timeout_s=args.timeout)
    except ReportFailed as exc:
        print(f"apslab: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0
