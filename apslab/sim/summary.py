"""SUMMARY.json: a run's metrics, assembled from its columns, and the printed summary table.

The definitions are those of :mod:`apslab.core.metrics`; this module applies them to a
:class:`~apslab.sim.result.SimulationResult`, so the simulator, the planner and the live service
(which builds a result from the requests it has settled) report the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.limiter import REASON_NAMES
from ..core.metrics import (
    cost_per_million_tokens,
    gpu_utilization,
    jain_fairness,
    latency_stats,
    tenant_table,
    throughput_tokens_per_s,
)

if TYPE_CHECKING:  # the result type calls summarize(); only its annotation is needed here
    from .result import SimulationResult

CONTRACT_REASONS = ("rate_limited", "exceeds_burst", "exceeds_kv_capacity", "unknown_tenant")


def summarize(result: SimulationResult) -> dict:
    """SUMMARY.json of a run, computed from its columns."""
    scenario, trace = result.scenario, result.trace
    gpus = scenario.cluster.gpus
    done = result.completed
    n = len(trace)
    reason_counts = np.bincount(result.reason, minlength=len(REASON_NAMES))
    by_reason = {name: int(reason_counts[REASON_NAMES.index(name)]) for name in CONTRACT_REASONS}
    if scenario.scheduler.max_queue_length is not None:
        by_reason["queue_full"] = int(reason_counts[REASON_NAMES.index("queue_full")])

    first_arrival = float(trace.arrival_s.min()) if n else 0.0
    elapsed = float(result.batch_finish_s.max() - first_arrival) if len(result.batch_finish_s) \
        else 0.0
    output_done = int(trace.output_tokens[done].sum())
    throughput = throughput_tokens_per_s(output_done, elapsed)
    service = result.batch_service_s
    busy_per_gpu = [float(service[result.batch_gpu == g].sum()) for g in range(gpus)]
    utilization = gpu_utilization(float(service.sum()), elapsed, gpus)

    wait = result.start_s - trace.arrival_s
    latency = result.finish_s - trace.arrival_s
    per_tenant = tenant_table(result.tenant_index, done, trace.kv_tokens, wait,
                              [t.id for t in scenario.tenants])
    jain_inputs = [row["tokens_completed"] for row in per_tenant.values() if row["submitted"]]

    batches = len(result.batch_size)
    kv_capacity = scenario.gpu.kv_capacity_tokens
    summary = {
        "requests": {
            "submitted": n,
            "completed": int(done.sum()),
            "rejected": int(n - done.sum()),
            "rejected_by_reason": by_reason,
        },
        "elapsed_s": elapsed,
        "throughput_tokens_per_s": throughput,
        "gpu_utilization": utilization,
        "cost_per_million_tokens": cost_per_million_tokens(
            scenario.gpu.price_per_hour, throughput, gpus),
        "jain_fairness": jain_fairness(jain_inputs),
        "queue_wait_s": latency_stats(wait[done]),
        "latency_s": latency_stats(latency[done]),
        "batches": {
            "count": batches,
            "mean_size": float(result.batch_size.mean()) if batches else None,
            "kv_utilization_mean": float((result.batch_kv_tokens / kv_capacity).mean())
            if batches and kv_capacity else None,
        },
        "gpus": {
            "count": gpus,
            "utilization_per_gpu": [gpu_utilization(float(b), elapsed) for b in busy_per_gpu],
        },
        "tenants": per_tenant,
    }
    return summary


def _fmt(value, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def format_summary(summary: dict, title: str = "apslab") -> str:
    """A short readable table of a SUMMARY dict, for terminals and notebooks."""
    req = summary["requests"]
    reasons = ", ".join(f"{k} {v}" for k, v in req["rejected_by_reason"].items() if v)
    wait, lat, batches = summary["queue_wait_s"], summary["latency_s"], summary["batches"]
    gpus = summary["gpus"]
    lines = [
        title,
        f"  requests        {req['submitted']} submitted, {req['completed']} completed, "
        f"{req['rejected']} rejected" + (f" ({reasons})" if reasons else ""),
        f"  elapsed         {_fmt(summary['elapsed_s'], '.3f', ' s')}",
        f"  throughput      {_fmt(summary['throughput_tokens_per_s'], '.1f', ' output tokens/s')}",
        f"  GPU utilisation {_fmt(summary['gpu_utilization'], '.1%')}"
        + (f" over {gpus['count']} GPUs" if gpus["count"] > 1 else ""),
        f"  cost            {_fmt(summary['cost_per_million_tokens'], '.2f')} $ per million "
        "output tokens",
        f"  Jain fairness   {_fmt(summary['jain_fairness'], '.4f')}",
        "                  mean      p50       p95       p99       max",
    ]
    for label, stats in (("queue wait (s)", wait), ("latency (s)", lat)):
        cells = "".join(f"{_fmt(stats[k], '<10.4f')}" for k in ("mean", "p50", "p95", "p99", "max"))
        lines.append(f"  {label:<16}{cells}".rstrip())
    lines.append(f"  batches         {batches['count']}, mean size "
                 f"{_fmt(batches['mean_size'], '.2f')}, mean KV utilisation "
                 f"{_fmt(batches['kv_utilization_mean'], '.1%')}")
    tenants = summary["tenants"]
    if tenants:
        width = max(8, *(len(t) for t in list(tenants)[:20]))
        lines.append(f"  {'tenant':<{width}}  submitted  completed  rejected  tokens_done  "
                     "p99 wait (s)")
        for tenant_id, row in list(tenants.items())[:20]:
            lines.append(f"  {tenant_id:<{width}}  {row['submitted']:>9}  {row['completed']:>9}  "
                         f"{row['rejected']:>8}  {row['tokens_completed']:>11}  "
                         f"{_fmt(row['queue_wait_p99_s'], '.4f')}")
        if len(tenants) > 20:
            lines.append(f"  ... and {len(tenants) - 20} more tenants (see the summary JSON)")
    return "\n".join(lines)
