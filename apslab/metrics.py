"""The metrics: plain functions the simulator, the notebooks and the live service all call.

Definitions (the SUMMARY.json contract):

* elapsed_s = last finish - first arrival (the earliest arrival in the trace, rejected included)
* throughput_tokens_per_s = output tokens of completed requests / elapsed_s
* gpu_utilization = busy GPU-seconds / (elapsed_s * GPUs)
* cost_per_million_tokens = price_per_hour * GPUs / 3600 / throughput * 1e6
* Jain's fairness = (sum x)^2 / (N * sum x^2) over the scenario's tenants that submitted at least
  one request, x = prompt + output tokens completed
* percentiles: numpy's default (linear interpolation)

Quantities with nothing to measure (no completed request, zero elapsed time) are None (JSON
null) rather than a made-up 0 or a NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .limiter import REASON_NAMES

if TYPE_CHECKING:
    from .simulator import SimulationResult

PERCENTILES = (50, 95, 99)
CONTRACT_REASONS = ("rate_limited", "exceeds_burst", "exceeds_kv_capacity", "unknown_tenant")


def throughput_tokens_per_s(output_tokens: float, elapsed_s: float) -> float | None:
    """Output tokens per second of wall (or virtual) time."""
    return float(output_tokens / elapsed_s) if elapsed_s > 0 else None


def gpu_utilization(busy_s: float, elapsed_s: float, gpus: int = 1) -> float | None:
    """Fraction of the GPUs' time spent serving batches."""
    return float(busy_s / (elapsed_s * gpus)) if elapsed_s > 0 else None


def cost_per_million_tokens(price_per_hour: float, throughput: float | None, gpus: int = 1
                            ) -> float | None:
    """Dollars per million output tokens at ``throughput`` tokens/s: price/3600/throughput*1e6."""
    if not throughput:
        return None
    return float(price_per_hour * gpus / 3600 / throughput * 1e6)


def jain_fairness(allocations: Sequence[float]) -> float | None:
    """Jain's index (sum x)^2 / (N * sum x^2): 1 when all equal, 1/N when one takes all.

    Integer allocations are summed exactly (Python ints) so the result is correctly rounded.
    """
    values = [int(x) if float(x).is_integer() else float(x) for x in allocations]
    total_sq = sum(x * x for x in values)
    if not values or total_sq == 0:
        return None
    total = sum(values)
    return float(total * total / (len(values) * total_sq))


def latency_stats(values: np.ndarray) -> dict[str, float | None]:
    """{mean, p50, p95, p99, max} of ``values`` (all None when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    keys = ["mean", *(f"p{p}" for p in PERCENTILES), "max"]
    if not len(values):
        return dict.fromkeys(keys)
    pct = np.percentile(values, PERCENTILES)
    return {"mean": float(values.mean()),
            **{f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
            "max": float(values.max())}


def percentile_or_none(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


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


def tenant_table(tenant_index: np.ndarray, completed: np.ndarray, kv_tokens: np.ndarray,
                 queue_wait_s: np.ndarray, tenant_ids: Sequence[str]) -> dict[str, dict]:
    """Per tenant: submitted, completed, rejected, tokens_completed, queue_wait_p99_s.

    Grouped with one sort, so ten thousand tenants cost one pass, not ten thousand.
    """
    count = len(tenant_ids)
    known = tenant_index >= 0
    submitted = np.bincount(tenant_index[known], minlength=count)
    done_tenant = tenant_index[completed]
    completed_counts = np.bincount(done_tenant, minlength=count)
    tokens = np.bincount(done_tenant, weights=kv_tokens[completed], minlength=count)
    p99 = grouped_percentile(queue_wait_s[completed], done_tenant, count, 99)
    return {
        tenant_id: {
            "submitted": int(submitted[i]),
            "completed": int(completed_counts[i]),
            "rejected": int(submitted[i] - completed_counts[i]),
            "tokens_completed": int(tokens[i]),
            "queue_wait_p99_s": p99[i],
        }
        for i, tenant_id in enumerate(tenant_ids)
    }


def grouped_percentile(values: np.ndarray, groups: np.ndarray, group_count: int, q: float
                       ) -> list[float | None]:
    """``np.percentile(values[groups == g], q)`` for every group g at once (None if empty).

    One sort instead of a call per group. It reproduces numpy's default "linear" method
    operation for operation (virtual index (n - 1) * q/100, then numpy's two-sided lerp), so the
    floats are identical; tests/test_metrics.py checks that against np.percentile.
    """
    values = np.asarray(values, dtype=np.float64)
    counts = np.bincount(groups, minlength=group_count)
    result: list[float | None] = [None] * group_count
    present = np.flatnonzero(counts)
    if not len(present):
        return result
    # Sorted by value, then stably by group (a radix sort for 16-bit group numbers): each group's
    # values end up contiguous and in order, faster than a two-key lexsort.
    by_value = np.argsort(values)
    groups_by_value = np.asarray(groups)[by_value]
    if group_count <= np.iinfo(np.int16).max:
        groups_by_value = groups_by_value.astype(np.int16)
    ordered = values[by_value][np.argsort(groups_by_value, kind="stable")]
    offsets = np.concatenate(([0], np.cumsum(counts)))[present]
    sizes = counts[present]
    virtual = (sizes - 1) * np.true_divide(q, 100)
    previous = np.floor(virtual).astype(np.intp)
    following = previous + 1
    at_end = virtual >= sizes - 1
    previous[at_end] = sizes[at_end] - 1
    following[at_end] = sizes[at_end] - 1
    gamma = virtual - np.where(at_end, -1, previous)  # as numpy: its index is -1 at the end
    low, high = ordered[offsets + previous], ordered[offsets + following]
    difference = high - low
    value = low + difference * gamma
    upper = gamma >= 0.5
    value[upper] = high[upper] - difference[upper] * (1 - gamma[upper])
    for group, number in zip(present.tolist(), value.tolist(), strict=True):
        result[group] = number
    return result


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
