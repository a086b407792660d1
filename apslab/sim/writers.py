"""Writing a run's results: REQUESTS.csv (one row per request), SUMMARY.json and ITER.csv.

REQUESTS.csv has one row per trace row, in request-id order; floats are Python's repr (full
precision); reason is empty for completed rows and the fields after it are empty for rejected
ones. Its header depends on the engine:

* static: request_id,tenant_id,arrival_s,status,reason,start_s,finish_s,batch_id,batch_size,gpu
* continuous: request_id,tenant_id,arrival_s,status,reason,start_s,first_token_s,finish_s,
  preemptions,max_tbt_s,gpu (max_tbt_s is empty when the request has one output token; gpu is
  where it finished)

ITER.csv (continuous runs): gpu,start_s,duration_s,requests,prefill_tokens,decode_tokens,
blocks_used,preempted, one row per iteration in the order they started.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core._gc import paused_gc
from ..core.limiter import REASON_NAMES
from ..io.trace import atomic_writer, csv_field, format_floats, write_text_atomic
from .result import ContinuousResult, IterationLog, SimulationResult

REQUESTS_COLUMNS = ("request_id", "tenant_id", "arrival_s", "status", "reason", "start_s",
                    "finish_s", "batch_id", "batch_size", "gpu")
CONTINUOUS_REQUESTS_COLUMNS = ("request_id", "tenant_id", "arrival_s", "status", "reason",
                               "start_s", "first_token_s", "finish_s", "preemptions", "max_tbt_s",
                               "gpu")
ITERATION_COLUMNS = ("gpu", "start_s", "duration_s", "requests", "prefill_tokens",
                     "decode_tokens", "blocks_used", "preempted")


def _row_tails(result: SimulationResult) -> tuple[list[str], np.ndarray]:
    """Everything after arrival_s, as text shared by many rows, and each row's index into it.

    A completed row's tail, "completed,,start_s,finish_s,batch_id,batch_size,gpu", is the same
    for every member of its batch, and a rejected row's, "rejected,reason,,,,,", the same for
    every rejection with that reason: formatting them once per batch and per reason, not once per
    request, saves most of the float-to-text work.
    """
    columns = zip(format_floats(result.batch_start_s), format_floats(result.batch_finish_s),
                  result.batch_size.tolist(), result.batch_gpu.tolist(), strict=True)
    tails = [f"completed,,{start},{finish},{batch},{size},{gpu}"
             for batch, (start, finish, size, gpu) in enumerate(columns)]
    first_reason_tail = len(tails)
    tails.extend(f"rejected,{name},,,,," for name in REASON_NAMES[1:])
    index = np.where(result.batch_id >= 0, result.batch_id,
                     first_reason_tail - 1 + result.reason.astype(np.int64))
    return tails, index


def _continuous_tails(result: ContinuousResult, lo: int, hi: int) -> list[str]:
    """The text after arrival_s of rows lo..hi of a continuous run."""
    rejected = [f"rejected,{name},,,,,," for name in REASON_NAMES]
    done = result.completed[lo:hi].tolist()
    reasons = result.reason[lo:hi].tolist()
    tbt = result.max_tbt_s[lo:hi]
    starts, firsts, finishes, tbts = (format_floats(column[lo:hi]) for column in (
        result.start_s, result.first_token_s, result.finish_s, result.max_tbt_s))
    blank = np.isnan(tbt).tolist()
    columns = zip(done, reasons, starts, firsts, finishes, result.preemptions[lo:hi].tolist(),
                  tbts, blank, result.finish_gpu[lo:hi].tolist(), strict=True)
    return [f"completed,,{start},{first},{finish},{pre},{'' if nan else tbt},{gpu}" if ok
            else rejected[reason]
            for ok, reason, start, first, finish, pre, tbt, nan, gpu in columns]


def write_requests(path: str | Path, result: SimulationResult | ContinuousResult,
                   chunk_rows: int = 1 << 16) -> None:
    """Write REQUESTS.csv atomically, streaming ``chunk_rows`` rows at a time."""
    trace = result.trace
    names = [csv_field(name) for name in trace.tenant_names]
    continuous = isinstance(result, ContinuousResult)
    if continuous:
        header = CONTINUOUS_REQUESTS_COLUMNS
    else:
        header = REQUESTS_COLUMNS
        tails, tail_index = _row_tails(result)
    with atomic_writer(path) as handle, paused_gc():
        handle.write(",".join(header) + "\n")
        for lo in range(0, len(trace), chunk_rows):
            hi = min(lo + chunk_rows, len(trace))
            rows = zip(
                map(str, range(lo, hi)),
                map(names.__getitem__, trace.tenant_codes[lo:hi].tolist()),
                format_floats(trace.arrival_s[lo:hi]),
                _continuous_tails(result, lo, hi) if continuous
                else map(tails.__getitem__, tail_index[lo:hi].tolist()),
                strict=True,
            )
            handle.write("\n".join(map(",".join, rows)) + "\n")


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


def write_summary(path: str | Path, summary: dict) -> None:
    """Write SUMMARY.json atomically."""
    write_text_atomic(path, summary_json(summary))


def write_iterations(path: str | Path, log: IterationLog, chunk_rows: int = 1 << 16) -> None:
    """Write ITER.csv atomically: one row per iteration (see the module docstring), streaming
    ``chunk_rows`` rows at a time."""
    with atomic_writer(path) as handle, paused_gc():
        handle.write(",".join(ITERATION_COLUMNS) + "\n")
        for lo in range(0, len(log), chunk_rows):
            part = slice(lo, lo + chunk_rows)
            rows = zip(map(str, log.gpu[part].tolist()), format_floats(log.start_s[part]),
                       format_floats(log.duration_s[part]), map(str, log.requests[part].tolist()),
                       map(str, log.prefill_tokens[part].tolist()),
                       map(str, log.decode_tokens[part].tolist()),
                       map(str, log.blocks_used[part].tolist()),
                       map(str, log.preempted[part].tolist()), strict=True)
            handle.write("\n".join(map(",".join, rows)) + "\n")
