"""The ``apslab`` command line: one entry point that only dispatches.

Each room of the package registers its own subcommands (``register(subparsers)`` adds parsers
whose ``func(args) -> int`` runs them): :mod:`apslab.sim.commands` (simulate, generate),
:mod:`apslab.plan.commands` (plan, sweep, report), :mod:`apslab.serve.commands` (serve, keys). Heavy
imports stay inside the commands. Any bad input ends with one ``apslab: error: ...`` line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ._version import __version__
from .io.errors import InputError

EXIT_INPUT_ERROR = 2

COMMAND_MODULES: tuple[str, ...] = ("apslab.sim.commands", "apslab.plan.commands",
                                    "apslab.serve.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apslab",
        description="Simulate and plan multi-tenant LLM inference scheduling "
                    "(token buckets, lazy-aging priority queue, KV-bounded micro-batching).",
    )
    parser.add_argument("--version", action="version", version=f"apslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


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
