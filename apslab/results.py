"""Writing a run's per-request results (REQUESTS.csv).

Header: request_id,tenant_id,arrival_s,status,reason,start_s,finish_s,batch_id,batch_size,gpu
One row per trace row, in request-id order; floats are Python's repr (full precision); reason is
empty for completed rows and the start/finish/batch/gpu fields are empty for rejected ones.
"""

from __future__ import annotations

from pathlib import Path

from .limiter import REASON_NAMES
from .simulator import SimulationResult
from .trace import atomic_writer, csv_field

REQUESTS_COLUMNS = ("request_id", "tenant_id", "arrival_s", "status", "reason", "start_s",
                    "finish_s", "batch_id", "batch_size", "gpu")


def _batch_fields(result: SimulationResult) -> list[str]:
    """"start_s,finish_s,batch_id,batch_size,gpu" once per batch, plus ",,,," for rejected rows.

    Members of a batch share these fields, so formatting them per batch instead of per request
    saves most of the float-to-text work, and a batch that starts the instant the previous one
    on its GPU finished reuses that finish time's text. Index -1 (rejected) picks ",,,,".
    """
    starts = result.batch_start_s.tolist()
    finish_values = result.batch_finish_s.tolist()
    finishes = list(map(repr, finish_values))
    last_finish: dict[int, int] = {}  # gpu -> its latest batch
    fields = []
    for batch, (start, size, gpu) in enumerate(zip(
            starts, result.batch_size.tolist(), result.batch_gpu.tolist(), strict=True)):
        previous = last_finish.get(gpu)
        start_text = (finishes[previous] if previous is not None
                      and finish_values[previous] == start else repr(start))
        fields.append(f"{start_text},{finishes[batch]},{batch},{size},{gpu}")
        last_finish[gpu] = batch
    fields.append(",,,,")
    return fields


def write_requests(path: str | Path, result: SimulationResult, chunk_rows: int = 1 << 16) -> None:
    """Write REQUESTS.csv atomically, streaming ``chunk_rows`` rows at a time."""
    trace = result.trace
    names = [csv_field(name) for name in trace.tenant_names]
    status_reason = ["completed,"] + [f"rejected,{name}" for name in REASON_NAMES[1:]]
    batch_fields = _batch_fields(result)
    with atomic_writer(path) as handle:
        handle.write(",".join(REQUESTS_COLUMNS) + "\n")
        for lo in range(0, len(trace), chunk_rows):
            hi = min(lo + chunk_rows, len(trace))
            rows = zip(
                map(str, range(lo, hi)),
                map(names.__getitem__, trace.tenant_codes[lo:hi].tolist()),
                map(repr, trace.arrival_s[lo:hi].tolist()),
                map(status_reason.__getitem__, result.reason[lo:hi].tolist()),
                map(batch_fields.__getitem__, result.batch_id[lo:hi].tolist()),
                strict=True,
            )
            handle.write("\n".join(map(",".join, rows)) + "\n")
