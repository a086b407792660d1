"""``apslab simulate`` and ``apslab generate``: the contract outside tools call.

Registered by :mod:`apslab.cli`. ``simulate`` runs a scenario on a trace (or its generated
workload) and writes SUMMARY.json and REQUESTS.csv; ``generate`` writes the trace a scenario's
``[workload]`` section generates.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..core.limiter import UNKNOWN_TENANT
from ..io.arguments import (
    add_goodput_argument,
    add_gpu_file_argument,
    add_trace_arguments,
    apply_gpu_file,
    check_distinct_paths,
    check_seed,
    load_trace_for,
    parse_goodput,
)
from ..io.errors import InputError
from ..io.scenario import load_scenario
from ..io.trace import write_trace
from .result import SimulationResult
from .run import simulate
from .summary import format_summary
from .writers import write_iterations, write_requests, write_summary


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` and ``generate`` subcommands."""
    sim = sub.add_parser("simulate", help="run a scenario on a trace (or its generated workload)",
                         description="Run SCENARIO through the scheduler in virtual time.")
    sim.add_argument("scenario", metavar="SCENARIO.toml")
    add_trace_arguments(sim)
    sim.add_argument("--summary", metavar="SUMMARY.json", help="write the summary metrics here")
    sim.add_argument("--requests", metavar="REQUESTS.csv", help="write one row per request here")
    sim.add_argument("--iterations", metavar="ITER.csv",
                     help="continuous batching: write one row per model iteration here")
    sim.add_argument("--seed", type=int, default=None,
                     help="seed for the generated workload (default: the [workload] seed, else 0; "
                          "a --trace has no randomness, so it ignores this)")
    add_goodput_argument(sim)
    add_gpu_file_argument(sim)
    sim.add_argument("--quiet", action="store_true", help="do not print the summary table")
    sim.set_defaults(func=run_simulate)

    gen = sub.add_parser("generate", help="write the trace a scenario's [workload] generates",
                         description="Write the seeded trace of SCENARIO's [workload] section.")
    gen.add_argument("scenario", metavar="SCENARIO.toml")
    gen.add_argument("--out", required=True, metavar="TRACE.csv")
    gen.add_argument("--seed", type=int, default=None,
                     help="seed (default: the [workload] seed, else 0)")
    gen.set_defaults(func=run_generate)


def warn_unknown_tenants(result: SimulationResult, stderr=None) -> None:
    """One stderr line counting requests from tenants that are not in the scenario."""
    unknown = result.reason == UNKNOWN_TENANT
    count = int(unknown.sum())
    if not count:
        return
    codes = np.unique(result.trace.tenant_codes[unknown])
    names = [result.trace.tenant_names[c] for c in codes.tolist()]
    shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more"
                                                    if len(names) > 5 else "")
    print(f"apslab: warning: {count} request(s) from {len(names)} tenant(s) not in "
          f"{result.scenario.source} ({shown}) were rejected as unknown_tenant",
          file=stderr or sys.stderr)


def run_simulate(args: argparse.Namespace) -> int:
    check_distinct_paths({"scenario": args.scenario, "--trace": args.trace,
                          "--gpu": args.gpu_file},
                         {"--summary": args.summary, "--requests": args.requests,
                          "--iterations": args.iterations})
    goodput = parse_goodput(args.goodput)
    scenario = apply_gpu_file(load_scenario(args.scenario), args.gpu_file)
    if args.iterations and not scenario.scheduler.continuous:
        raise InputError(f"--iterations needs [scheduler] batching = \"continuous\" "
                         f"({scenario.source} runs static batches; --requests lists them)")
    trace = load_trace_for(scenario, args)
    result = simulate(scenario, trace, keep_iterations=bool(args.iterations))
    warn_unknown_tenants(result)
    summary = result.summary(goodput)
    if args.requests:
        write_requests(args.requests, result)
    if args.summary:
        write_summary(args.summary, summary)
    if args.iterations:
        write_iterations(args.iterations, result.iteration_log)
    if not args.quiet:
        source = f"--trace {args.trace}" if args.trace else "(generated workload)"
        print(format_summary(summary, title=f"apslab simulate {args.scenario} {source}"))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    check_distinct_paths({"scenario": args.scenario}, {"--out": args.out})
    scenario = load_scenario(args.scenario)
    if scenario.workload is None:
        raise InputError(f"{scenario.source}: no [workload] section to generate a trace from")
    from ..io.workload import generate_trace

    trace = generate_trace(scenario.workload, check_seed(args.seed))
    write_trace(args.out, trace)
    print(f"wrote {len(trace)} requests from {len(scenario.workload.tenants)} tenant(s) over "
          f"{scenario.workload.duration_s:g} s to {args.out}")
    return 0
