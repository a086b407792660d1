"""The ``apslab`` command line.

``apslab simulate`` and ``apslab generate`` are a contract that outside tools call; other
commands (plan, sweep, report, serve) live in their own modules and register here. Any bad
input ends with one ``apslab: error: ...`` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputError
from .limiter import UNKNOWN_TENANT
from .metrics import format_summary
from .scenario import Scenario, load_scenario
from .simulator import SimulationResult, simulate
from .trace import Trace, read_trace, write_text_atomic, write_trace

EXIT_INPUT_ERROR = 2

# Subcommands defined in other modules: each has ``register(subparsers)``, which adds a parser
# whose ``func(args) -> int`` runs it. Heavy imports stay inside those functions.
EXTRA_COMMAND_MODULES: tuple[str, ...] = ("apslab.service_cli", "apslab.planning_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apslab",
        description="Simulate and plan multi-tenant LLM inference scheduling "
                    "(token buckets, lazy-aging priority queue, KV-bounded micro-batching).",
    )
    parser.add_argument("--version", action="version", version=f"apslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sim = sub.add_parser("simulate", help="run a scenario on a trace (or its generated workload)",
                         description="Run SCENARIO through the scheduler in virtual time.")
    sim.add_argument("scenario", metavar="SCENARIO.toml")
    add_trace_arguments(sim)
    sim.add_argument("--summary", metavar="SUMMARY.json", help="write the summary metrics here")
    sim.add_argument("--requests", metavar="REQUESTS.csv", help="write one row per request here")
    sim.add_argument("--seed", type=int, default=None,
                     help="seed for the generated workload (default: the [workload] seed, else 0; "
                          "a --trace has no randomness, so it ignores this)")
    sim.add_argument("--quiet", action="store_true", help="do not print the summary table")
    sim.set_defaults(func=run_simulate)

    gen = sub.add_parser("generate", help="write the trace a scenario's [workload] generates",
                         description="Write the seeded trace of SCENARIO's [workload] section.")
    gen.add_argument("scenario", metavar="SCENARIO.toml")
    gen.add_argument("--out", required=True, metavar="TRACE.csv")
    gen.add_argument("--seed", type=int, default=None,
                     help="seed (default: the [workload] seed, else 0)")
    gen.set_defaults(func=run_generate)

    for module_name in EXTRA_COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """--trace (and, where trace formats are supported, its options)."""
    parser.add_argument("--trace", metavar="TRACE.csv",
                        help="requests to replay (default: generate them from [workload])")
    parser.add_argument("--trace-format", choices=("apslab", "azure"), default="apslab",
                        help="apslab: arrival_s,tenant_id,prompt_tokens,output_tokens,"
                             "priority_bid; azure: TIMESTAMP,ContextTokens,GeneratedTokens, "
                             "rows assigned to tenants by --tenant-weights/--tenant-seed")
    parser.add_argument("--tenant-weights", metavar="ID=W,...",
                        help="azure traces: tenants and their shares of the rows "
                             "(default: every scenario tenant, weight 1)")
    parser.add_argument("--tenant-seed", type=int, default=0, metavar="N",
                        help="azure traces: seed of the row-to-tenant hash (default 0)")


def load_trace_for(scenario: Scenario, args: argparse.Namespace) -> Trace:
    """The trace named by --trace, or the scenario's generated workload."""
    if getattr(args, "trace", None):
        if getattr(args, "trace_format", "apslab") != "apslab":
            from .trace_formats import read_trace_file

            return read_trace_file(args.trace, scenario, args.trace_format, args.tenant_weights,
                                   args.tenant_seed)
        if getattr(args, "tenant_weights", None):
            raise InputError("--tenant-weights applies to --trace-format azure only (apslab "
                             "traces name each row's tenant)")
        return read_trace(args.trace)
    if getattr(args, "trace_format", "apslab") == "azure" or getattr(args, "tenant_weights", None):
        raise InputError("--trace-format azure and --tenant-weights need a --trace to read")
    if scenario.workload is None:
        raise InputError(f"{scenario.source}: no --trace given and the scenario has no "
                         "[workload] section to generate one from")
    from .workload import generate_trace

    return generate_trace(scenario.workload, check_seed(getattr(args, "seed", None)))


def check_seed(seed: int | None) -> int | None:
    if seed is not None and seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    return seed


def check_distinct_paths(inputs: dict[str, str | None], outputs: dict[str, str | None]) -> None:
    """Refuse to overwrite an input with an output, or to write two outputs to one file."""
    seen: dict[Path, str] = {}
    for role, path in inputs.items():
        if path:
            seen[Path(path).resolve()] = role
    for role, path in outputs.items():
        if not path:
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            raise InputError(f"{role} {path} is the same file as {seen[resolved]}; "
                             "refusing to overwrite it")
        seen[resolved] = role


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


def summary_json(summary: dict) -> str:
    """SUMMARY.json text: indented, with one line per tenant.

    json's indenting encoder is pure Python; writing each tenant's row with the C encoder keeps
    a ten-thousand-tenant summary fast and still readable.
    """
    rest = {key: value for key, value in summary.items() if key != "tenants"}
    text = json.dumps(rest, indent=2, allow_nan=False)
    tenants = summary.get("tenants", {})
    rows = ",\n".join(f"    {json.dumps(tenant_id)}: {json.dumps(row, allow_nan=False)}"
                       for tenant_id, row in tenants.items())
    return text[:-2] + ',\n  "tenants": {' + (f"\n{rows}\n  " if rows else "") + "}\n}\n"


def write_summary(path: str, summary: dict) -> None:
    write_text_atomic(path, summary_json(summary))


def run_simulate(args: argparse.Namespace) -> int:
    check_distinct_paths({"scenario": args.scenario, "--trace": args.trace},
                         {"--summary": args.summary, "--requests": args.requests})
    scenario = load_scenario(args.scenario)
    trace = load_trace_for(scenario, args)
    result = simulate(scenario, trace)
    warn_unknown_tenants(result)
    summary = result.summary()
    if args.requests:
        from .results import write_requests

        write_requests(args.requests, result)
    if args.summary:
        write_summary(args.summary, summary)
    if not args.quiet:
        source = f"--trace {args.trace}" if args.trace else "(generated workload)"
        print(format_summary(summary, title=f"apslab simulate {args.scenario} {source}"))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    check_distinct_paths({"scenario": args.scenario}, {"--out": args.out})
    scenario = load_scenario(args.scenario)
    if scenario.workload is None:
        raise InputError(f"{scenario.source}: no [workload] section to generate a trace from")
    from .workload import generate_trace

    trace = generate_trace(scenario.workload, check_seed(args.seed))
    write_trace(args.out, trace)
    print(f"wrote {len(trace)} requests from {len(scenario.workload.tenants)} tenant(s) over "
          f"{scenario.workload.duration_s:g} s to {args.out}")
    return 0


def release_freed_memory_promptly() -> None:
    """Ask glibc to give large freed buffers back to the OS at once (Linux only).

    By default glibc raises its mmap threshold each time a large buffer is freed, so later
    column-sized numpy buffers come from the heap and stay resident after use: a million-row
    run then peaks about 40 MB higher. A fixed 128 KiB threshold (glibc's initial value) keeps
    them mmap'd and returned when freed. Elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    release_freed_memory_promptly()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"apslab: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("apslab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
