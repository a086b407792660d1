"""What every command that reads a scenario and a trace shares: its arguments and their checks.

``simulate``, ``plan``, ``sweep``, ``report`` and ``serve`` all take a scenario and (most of them)
a trace in one of the supported formats; the options, the way the trace is loaded and the
refusal to overwrite an input live here once, below the commands that use them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import InputError
from .scenario import Scenario
from .trace import Trace, read_trace


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
    """A --seed value, refused when negative."""
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
