"""The metrics: plain functions the engines, the notebooks and the live service all call.

They take numbers and numpy columns, never a run: :mod:`apslab.sim.summary` assembles
SUMMARY.json from a run's columns with them. Definitions (the SUMMARY.json contract):

* elapsed_s = last finish - first arrival (the earliest arrival in the trace, rejected included)
* throughput_tokens_per_s = output tokens of completed requests / elapsed_s
* gpu_utilization = busy GPU-seconds / (elapsed_s * GPUs)
* cost_per_million_tokens = price_per_hour * GPUs / 3600 / throughput * 1e6
* Jain's fairness = (sum x)^2 / (N * sum x^2) over the scenario's tenants that submitted at least
  one request, x = prompt + output tokens completed
* percentiles: numpy's default (linear interpolation)
* goodput (when per-request targets are given, DistServe's definition): a request is *good* when it
  completed, its TTFT <= the TTFT target, its TPOT <= the TPOT target (a request with one output
  token has no TPOT and meets it) and its end-to-end latency (finish - arrival) <= the E2E target;
  goodput_rps = good requests / elapsed_s; slo_attainment = good requests / submitted requests

Quantities with nothing to measure (no completed request, zero elapsed time) are None (JSON
null) rather than a made-up 0 or a NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES = (50, 95, 99)


def _per_second(count: float, elapsed_s: float) -> float | None:
    """``count / elapsed_s`` as a float; None when no time elapsed."""
    return float(count / elapsed_s) if elapsed_s > 0 else None


def throughput_tokens_per_s(output_tokens: float, elapsed_s: float) -> float | None:
    """Output tokens per second of wall (or virtual) time."""
    return _per_second(output_tokens, elapsed_s)


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


# --------------------------------------------------------------------------------------------
# Goodput: requests that met every per-request latency target


@dataclass(frozen=True)
class GoodputTargets:
    """Per-request latency targets in seconds; None leaves that latency unconstrained."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.e2e_s))

    def to_dict(self) -> dict[str, float | None]:
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s}

    def __str__(self) -> str:
        parts = [f"{name}<={value:g}s" for name, value in
                 (("ttft", self.ttft_s), ("tpot", self.tpot_s), ("e2e", self.e2e_s))
                 if value is not None]
        return ", ".join(parts) or "no targets"


def meets_targets(completed: np.ndarray, ttft_s: np.ndarray, tpot_s: np.ndarray,
                  e2e_s: np.ndarray, targets: GoodputTargets) -> np.ndarray:
    """Per request: True when it completed and met every target in ``targets``.

    ``tpot_s`` is NaN for requests without a time per output token (one output token): they meet
    the TPOT target. Rejected requests (``completed`` False) never count, whatever their times.
    """
    good = np.array(completed, dtype=bool, copy=True)
    if targets.ttft_s is not None:
        good &= np.asarray(ttft_s) <= targets.ttft_s
    if targets.tpot_s is not None:
        good &= ~(np.asarray(tpot_s) > targets.tpot_s)  # NaN (no TPOT) meets it
    if targets.e2e_s is not None:
        good &= np.asarray(e2e_s) <= targets.e2e_s
    return good


def goodput_rps(good_requests: int, elapsed_s: float) -> float | None:
    """Good requests per second of elapsed time."""
    return _per_second(good_requests, elapsed_s)


def slo_attainment(good_requests: int, submitted: int) -> float | None:
    """The share of submitted requests (rejected ones included) that were good."""
    return float(good_requests / submitted) if submitted else None
