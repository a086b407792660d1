"""SUMMARY.json: a run's metrics, assembled from its columns, and the printed summary table.

The definitions are those of :mod:`apslab.core.metrics`; this module applies them to a
:class:`~apslab.sim.result.SimulationResult`, so the simulator, the planner and the live service
(which builds a result from the requests it has settled) report the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.fairness import MAX_TRACKED_TENANTS, ServiceDifference
from ..core.limiter import REASON_NAMES
from ..core.metrics import (
    GoodputTargets,
    cost_per_million_tokens,
    goodput_rps,
    gpu_utilization,
    grouped_percentile,
    jain_fairness,
    latency_stats,
    meets_targets,
    slo_attainment,
    tenant_table,
    throughput_tokens_per_s,
)
from ._compiled import pointer, service_difference_replay

if TYPE_CHECKING:  # the result type calls summarize(); only its annotation is needed here
    from .result import RunResult

CONTRACT_REASONS = ("rate_limited", "exceeds_burst", "exceeds_kv_capacity", "unknown_tenant")


def limit_reasons(scenario) -> list[str]:
    """The rejection reasons only some limiters give, for the scenario's tenants: a requests
    limit, split input and output buckets (SUMMARY.json lists them only when they can occur)."""
    names = []
    if any(t.requests_per_minute is not None for t in scenario.tenants):
        names.append("rate_limited_requests")
    if any(t.limiter == "split_buckets" for t in scenario.tenants):
        names += ["rate_limited_input", "rate_limited_output"]
    return names


def summarize(result: RunResult, goodput: GoodputTargets | None = None) -> dict:
    """SUMMARY.json of a run, computed from its columns.

    Every engine reports requests, elapsed time, throughput, GPU utilisation, cost, Jain's
    index, queue wait and latency, GPUs and tenants. The static engine adds ``batches``; the
    continuous engine adds ``ttft_s``, ``tpot_s``, ``max_tbt_s``, ``preemptions``,
    ``iterations``, ``kv_block_utilization``, ``mbu`` and ``mfu``. With ``goodput`` targets
    (any engine) it adds ``goodput_rps``, ``slo_attainment`` and ``goodput_targets``, and
    ``goodput_rps`` and ``slo_attainment`` to every tenant's row (see :func:`goodput_keys`).
    """
    scenario, trace = result.scenario, result.trace
    gpus = scenario.cluster.gpus
    done = result.completed
    n = len(trace)
    reason_counts = np.bincount(result.reason, minlength=len(REASON_NAMES))
    by_reason = {name: int(reason_counts[REASON_NAMES.index(name)]) for name in CONTRACT_REASONS}
    if scenario.scheduler.max_queue_length is not None:
        by_reason["queue_full"] = int(reason_counts[REASON_NAMES.index("queue_full")])
    for name in limit_reasons(scenario):
        by_reason[name] = int(reason_counts[REASON_NAMES.index(name)])

    first_arrival = float(trace.arrival_s.min()) if n else 0.0
    continuous = hasattr(result, "iterations")
    if continuous:
        last_end = result.iterations.last_end_s
        elapsed = float(last_end - first_arrival) if result.iterations.count else 0.0
        busy_per_gpu = list(result.iterations.busy_s_per_gpu)
        busy = float(sum(busy_per_gpu))
    else:
        elapsed = float(result.batch_finish_s.max() - first_arrival) \
            if len(result.batch_finish_s) else 0.0
        service = result.batch_service_s
        busy_per_gpu = [float(service[result.batch_gpu == g].sum()) for g in range(gpus)]
        busy = float(service.sum())
    output_done = int(trace.output_tokens[done].sum())
    throughput = throughput_tokens_per_s(output_done, elapsed)
    utilization = gpu_utilization(busy, elapsed, gpus)

    wait = result.start_s - trace.arrival_s
    latency = result.finish_s - trace.arrival_s
    tenant_ids = [t.id for t in scenario.tenants]
    per_tenant = tenant_table(result.tenant_index, done, trace.kv_tokens, wait, tenant_ids)
    jain_inputs = [row["tokens_completed"] for row in per_tenant.values() if row["submitted"]]

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
    }
    if continuous or goodput:
        ttft, tpot = token_times(result)
    if continuous:
        summary.update(_continuous_keys(result, elapsed, per_tenant, tenant_ids, ttft, tpot))
    else:
        batches = len(result.batch_size)
        kv_capacity = scenario.gpu.kv_capacity_tokens
        summary["batches"] = {
            "count": batches,
            "mean_size": float(result.batch_size.mean()) if batches else None,
            "kv_utilization_mean": float((result.batch_kv_tokens / kv_capacity).mean())
            if batches and kv_capacity else None,
        }
    summary["gpus"] = {
        "count": gpus,
        "utilization_per_gpu": [gpu_utilization(float(b), elapsed) for b in busy_per_gpu],
    }
    summary["service_difference"] = (result.iterations.service_difference if continuous
                                     else static_service_difference(result))
    for tenant_id, service in zip(tenant_ids, weighted_service(result), strict=True):
        per_tenant[tenant_id]["weighted_service"] = service
    summary["tenants"] = per_tenant
    if goodput:
        good = meets_targets(result.completed, ttft, tpot, latency, goodput)
        summary.update(goodput_keys(result, good, goodput, elapsed, per_tenant, tenant_ids))
    return summary


def weighted_service(result: RunResult) -> list[float]:
    """Per scenario tenant: (input_weight x prompt + output_weight x output) / share of its
    completed requests (the VTC paper's service, with the scheduler's VTC weights)."""
    scenario, trace = result.scenario, result.trace
    sched = scenario.scheduler
    done = result.completed
    count = len(scenario.tenants)
    prompt = np.bincount(result.tenant_index[done], weights=trace.prompt_tokens[done],
                         minlength=count)
    output = np.bincount(result.tenant_index[done], weights=trace.output_tokens[done],
                         minlength=count)
    shares = np.array([t.share for t in scenario.tenants], dtype=np.float64)
    service = (sched.vtc_input_weight * prompt + sched.vtc_output_weight * output) / shares
    return [float(x) for x in service]


def static_service_difference(result: RunResult, use_compiled: bool = True) -> float | None:
    """The service difference between backlogged tenants in a static run, replayed from its
    columns: a request waits from its arrival to its batch's formation, and its whole service
    (prompt and output) comes at formation. Events at one instant in the engine's order:
    arrivals, then batches in formation order, each member in pop order. None with more than
    :data:`apslab.core.fairness.MAX_TRACKED_TENANTS` tenants.

    The events are ordered with numpy and walked by the compiled replay when it is built (a
    million-request run replays in milliseconds), else by :class:`ServiceDifference` in Python;
    both give the same value (tests/test_policies.py)."""
    scenario, trace = result.scenario, result.trace
    if len(scenario.tenants) > MAX_TRACKED_TENANTS:
        return None
    done = np.flatnonzero(result.completed)
    if not len(done):
        return 0.0
    sched = scenario.scheduler
    shares = np.array([t.share for t in scenario.tenants], dtype=np.float64)
    tenant = np.asarray(result.tenant_index, dtype=np.int64)
    # Arrivals (kind 0) in (arrival, row) order, then formations (kind 1) in (start, batch,
    # member) order, merged by time with arrivals first at a tie. Each run is sorted with a
    # stable sort and then merged with one more (timsort: near linear on sorted runs).
    arrivals = done[np.argsort(trace.arrival_s[done], kind="stable")]
    formations = done[np.argsort(result.batch_id[done], kind="stable")]  # (batch, row)
    formations = formations[np.argsort(result.start_s[formations], kind="stable")]
    times = np.concatenate((trace.arrival_s[arrivals], result.start_s[formations]))
    order = np.argsort(times, kind="stable")
    times = times[order]
    kinds = (order >= len(done)).astype(np.uint8)
    rows = np.concatenate((arrivals, formations))[order]
    tenants = tenant[rows]
    # A formation's service: (input_weight * P + output_weight * O) / share, in that order.
    increments = (float(sched.vtc_input_weight) * trace.prompt_tokens[rows].astype(np.float64)
                  + float(sched.vtc_output_weight) * trace.output_tokens[rows].astype(np.float64)
                  ) / shares[tenants]
    replay = service_difference_replay() if use_compiled else None
    if replay is not None:
        columns = [np.ascontiguousarray(c) for c in (times, kinds, tenants, increments)]
        value = replay(len(times), *map(pointer, columns), len(shares))
        if value < 0:
            raise MemoryError("the compiled service-difference replay ran out of memory")
        return value
    return _replay_in_python(shares, sched, times, kinds, tenants, increments)


def _replay_in_python(shares, sched, times, kinds, tenants, increments) -> float:
    tracker = ServiceDifference(shares.tolist(), sched.vtc_input_weight, sched.vtc_output_weight)
    waiting = [0] * len(shares)
    previous = None
    for now, kind, u, increment in zip(times.tolist(), kinds.tolist(), tenants.tolist(),
                                       increments.tolist(), strict=True):
        if previous is not None and now != previous:
            tracker.settle(previous)
        previous = now
        if kind == 0:
            waiting[u] += 1
            if waiting[u] == 1:
                tracker.backlog(u, True)
        else:
            waiting[u] -= 1
            if not waiting[u]:
                tracker.backlog(u, False)
            tracker.service[u] += increment
            tracker.changed.add(u)
    tracker.settle(previous)
    return tracker.max_difference


def token_times(result: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """(TTFT, TPOT) of every request, in trace-row order (NaN where undefined).

    The continuous engine records each request's first token: TTFT = first token - arrival,
    TPOT = (finish - first token) / (O - 1), NaN when O = 1. The static engine returns a
    request's whole response when its batch finishes, so its first token *is* its last:
    TTFT = finish - arrival (the latency) and TPOT = 0 (every token arrives at once; NaN when
    O = 1). Rejected requests have NaN for both.
    """
    trace = result.trace
    multi = trace.output_tokens >= 2
    first = getattr(result, "first_token_s", None)
    if first is None:
        ttft = result.finish_s - trace.arrival_s
        tpot = np.where(multi & ~np.isnan(result.finish_s), 0.0, np.nan)
        return ttft, tpot
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(multi, (result.finish_s - first)
                        / np.maximum(trace.output_tokens - 1, 1), np.nan)
    return first - trace.arrival_s, tpot


def goodput_keys(result: RunResult, good: np.ndarray, targets: GoodputTargets, elapsed: float,
                 per_tenant: dict, tenant_ids: list[str]) -> dict:
    """``goodput_rps``, ``slo_attainment`` and ``goodput_targets`` of a run (and the first two in
    every tenant's row); ``good`` marks the requests that met every target
    (:func:`apslab.core.metrics.meets_targets` on :func:`token_times`)."""
    trace = result.trace
    count = int(good.sum())
    known = result.tenant_index >= 0
    good_per_tenant = np.bincount(result.tenant_index[good & known],
                                  minlength=len(tenant_ids))
    for i, tenant_id in enumerate(tenant_ids):
        row = per_tenant[tenant_id]
        row["goodput_rps"] = goodput_rps(int(good_per_tenant[i]), elapsed)
        row["slo_attainment"] = slo_attainment(int(good_per_tenant[i]), row["submitted"])
    return {
        "goodput_rps": goodput_rps(count, elapsed),
        "slo_attainment": slo_attainment(count, len(trace)),
        "goodput_targets": targets.to_dict(),
    }


def _continuous_keys(result, elapsed: float, per_tenant: dict, tenant_ids: list[str],
                     ttft: np.ndarray, tpot: np.ndarray) -> dict:
    """The continuous engine's own SUMMARY keys (and ttft_p99_s in every tenant's row), from
    :func:`token_times`' columns."""
    scenario, trace = result.scenario, result.trace
    gpus = scenario.cluster.gpus
    gpu = scenario.gpu
    done = result.completed
    totals = result.iterations
    multi = done & (trace.output_tokens >= 2)
    ttft_p99 = grouped_percentile(ttft[done], result.tenant_index[done], len(tenant_ids), 99)
    for tenant_id, value in zip(tenant_ids, ttft_p99, strict=True):
        per_tenant[tenant_id]["ttft_p99_s"] = value
    seconds = elapsed * gpus if elapsed > 0 else 0.0
    return {
        "ttft_s": latency_stats(ttft[done]),
        "tpot_s": latency_stats(tpot[multi]),
        "max_tbt_s": latency_stats(result.max_tbt_s[multi]),
        "preemptions": {
            "count": int(result.preemptions.sum()),
            "requests_preempted": int((result.preemptions[done] > 0).sum()),
        },
        "iterations": {
            "count": totals.count,
            "mean_requests": totals.requests / totals.count if totals.count else None,
            "mean_tokens": totals.tokens / totals.count if totals.count else None,
        },
        "kv_block_utilization": float(totals.block_seconds / (result.total_blocks * seconds))
        if seconds and result.total_blocks else None,
        "mbu": float(totals.bytes_moved / (seconds * gpu.hbm_bytes_per_s)) if seconds else None,
        "mfu": float(totals.flops / (seconds * gpu.peak_flops)) if seconds else None,
    }


def _fmt(value, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def format_summary(summary: dict, title: str = "apslab") -> str:
    """A short readable table of a SUMMARY dict, for terminals and notebooks.

    Percentile columns are as wide as their widest value (at least 10 characters), so a large
    value never runs into the next one.
    """
    req = summary["requests"]
    reasons = ", ".join(f"{k} {v}" for k, v in req["rejected_by_reason"].items() if v)
    gpus = summary["gpus"]
    lines = [
        title,
        f"  requests        {req['submitted']} submitted, {req['completed']} completed, "
        f"{req['rejected']} rejected" + (f" ({reasons})" if reasons else ""),
        f"  elapsed         {_fmt(summary['elapsed_s'], '.3f', ' s')}",
        f"  throughput      {_fmt(summary['throughput_tokens_per_s'], '.1f', ' output tokens/s')}",
        f"  GPU utilisation {_fmt(summary['gpu_utilization'], '.1%')}"
        + (f" over {gpus['count']} GPUs" if gpus["count"] > 1 else ""),
    ]
    if "mbu" in summary:
        lines.append(f"  MBU / MFU       {_fmt(summary['mbu'], '.1%')} of HBM bandwidth, "
                     f"{_fmt(summary['mfu'], '.1%')} of peak FLOP/s")
    lines += [
        f"  cost            {_fmt(summary['cost_per_million_tokens'], '.2f')} $ per million "
        "output tokens",
        f"  Jain fairness   {_fmt(summary['jain_fairness'], '.4f')}",
    ]
    rows = [("queue wait (s)", summary["queue_wait_s"]), ("latency (s)", summary["latency_s"])]
    if "ttft_s" in summary:
        rows += [("TTFT (s)", summary["ttft_s"]), ("TPOT (s)", summary["tpot_s"])]
    keys = ("mean", "p50", "p95", "p99", "max")
    cells = [[_fmt(stats[k], ".4f") for k in keys] for _, stats in rows]
    widths = [max(10, *(len(row[i]) + 1 for row in cells)) for i in range(len(keys))]
    lines.append(" " * 18 + "".join(f"{k:<{w}}" for k, w in zip(keys, widths, strict=True))
                 .rstrip())
    for (label, _), row in zip(rows, cells, strict=True):
        text = "".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True))
        lines.append(f"  {label:<16}{text}".rstrip())
    if "goodput_rps" in summary:
        targets = GoodputTargets(**summary["goodput_targets"])
        lines.append(f"  goodput         {_fmt(summary['goodput_rps'], '.3f', ' req/s')} met "
                     f"{targets} ({_fmt(summary['slo_attainment'], '.1%')} of submitted)")
    if "batches" in summary:
        batches = summary["batches"]
        lines.append(f"  batches         {batches['count']}, mean size "
                     f"{_fmt(batches['mean_size'], '.2f')}, mean KV utilisation "
                     f"{_fmt(batches['kv_utilization_mean'], '.1%')}")
    if "iterations" in summary:
        it, pre = summary["iterations"], summary["preemptions"]
        lines.append(f"  iterations      {it['count']}, mean {_fmt(it['mean_requests'], '.1f')} "
                     f"requests and {_fmt(it['mean_tokens'], '.1f')} tokens; KV blocks "
                     f"{_fmt(summary['kv_block_utilization'], '.1%')} used; "
                     f"{pre['count']} preemptions")
    tenants = summary["tenants"]
    if tenants:
        width = max(8, *(len(t) for t in list(tenants)[:20]))
        ttft = "ttft_p99_s" in next(iter(tenants.values()))
        lines.append(f"  {'tenant':<{width}}  submitted  completed  rejected  tokens_done  "
                     "p99 wait (s)" + ("  p99 TTFT (s)" if ttft else ""))
        for tenant_id, row in list(tenants.items())[:20]:
            line = (f"  {tenant_id:<{width}}  {row['submitted']:>9}  {row['completed']:>9}  "
                    f"{row['rejected']:>8}  {row['tokens_completed']:>11}  "
                    f"{_fmt(row['queue_wait_p99_s'], '.4f')}")
            if ttft:
                line = f"{line:<{width + 60}}  {_fmt(row['ttft_p99_s'], '.4f')}"
            lines.append(line)
        if len(tenants) > 20:
            lines.append(f"  ... and {len(tenants) - 20} more tenants (see the summary JSON)")
    return "\n".join(lines)
