"""What every command that reads a scenario and a trace shares: its arguments and their checks.

``simulate``, ``plan``, ``sweep``, ``report`` and ``serve`` all take a scenario and (most of them)
a trace in one of the supported formats; the options, the way the trace is loaded and the
refusal to overwrite an input live here once, below the commands that use them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..core.metrics import GoodputTargets
from .errors import InputError
from .scenario import Scenario, load_gpu_tables, suggest
from .trace import Trace, read_trace

GOODPUT_KEYS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s"}


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
    parser.add_argument("--trace-span", type=float, metavar="S",
                        help="replay only the requests that arrive within S seconds of the "
                             "trace's first (default: the whole trace)")


def load_trace_for(scenario: Scenario, args: argparse.Namespace) -> Trace:
    """The trace named by --trace (its first --trace-span seconds), or the scenario's generated
    workload."""
    span = getattr(args, "trace_span", None)
    if span is not None and not getattr(args, "trace", None):
        raise InputError("--trace-span needs a --trace to cut")
    return trace_head(_load_trace(scenario, args), span)


def trace_head(trace: Trace, span: float | None) -> Trace:
    """The requests that arrive less than ``span`` seconds after the trace's first (all of them
    for None), in their original order."""
    if span is None:
        return trace
    if not (math.isfinite(span) and span > 0):
        raise InputError(f"--trace-span must be a number of seconds > 0, got {span!r}")
    if not len(trace):
        return trace
    return trace.subset(trace.arrival_s - trace.arrival_s.min() < span)


def _load_trace(scenario: Scenario, args: argparse.Namespace) -> Trace:
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


def add_goodput_argument(parser: argparse.ArgumentParser) -> None:
    """--goodput ttft=S,tpot=S[,e2e=S]: per-request targets that add goodput to SUMMARY."""
    parser.add_argument("--goodput", metavar="ttft=S,tpot=S[,e2e=S]",
                        help="per-request latency targets in seconds; adds goodput_rps (good "
                             "requests/s) and slo_attainment (their share of submitted "
                             "requests) to SUMMARY.json, e.g. --goodput ttft=0.5,tpot=0.05")


def parse_goodput(text: str | None) -> GoodputTargets | None:
    """``"ttft=0.5,tpot=0.05"`` -> GoodputTargets (seconds); None for None. Malformed text is
    an InputError naming the option and the bad part."""
    if text is None:
        return None
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise InputError(f"--goodput {text!r}: expected ttft=S,tpot=S[,e2e=S] (seconds), "
                             f"got {part.strip()!r}")
        if key not in GOODPUT_KEYS:
            raise InputError(f"--goodput {text!r}: unknown target {key!r}"
                             f"{suggest(key, GOODPUT_KEYS)}; targets: "
                             f"{', '.join(GOODPUT_KEYS)}")
        if GOODPUT_KEYS[key] in values:
            raise InputError(f"--goodput {text!r}: {key} is given twice")
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"--goodput {text!r}: {key} must be a number of seconds, got "
                             f"{value.strip()!r}") from None
        if not (math.isfinite(number) and number > 0):
            raise InputError(f"--goodput {text!r}: {key} must be a finite number > 0, got "
                             f"{value.strip()!r}")
        values[GOODPUT_KEYS[key]] = number
    return GoodputTargets(**values)


def add_gpu_file_argument(parser: argparse.ArgumentParser) -> None:
    """--gpu GPU.toml: a [gpu] table (and optional [model]) replacing the scenario's."""
    parser.add_argument("--gpu", metavar="GPU.toml", dest="gpu_file",
                        help="replace the scenario's [gpu] table (and [model], if the file has "
                             "one) with this file's, e.g. the one apslab calibrate writes")


def apply_gpu_file(scenario: Scenario, path: str | None) -> Scenario:
    """The scenario with ``--gpu``'s tables, or unchanged without one."""
    if not path:
        return scenario
    return scenario.with_gpu(load_gpu_tables(path))
