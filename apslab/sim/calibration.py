"""Calibrating the roofline GPU: fit eta_bandwidth, eta_flops and overhead_s to measurements.

A measurement is what a benchmark publishes for a static batch of ``B`` requests of ``P`` prompt
and ``O`` output tokens on one GPU: its output throughput (including prefill, or of the decode
phase alone) or its first-token latency. The engine's cost model predicts each one exactly as it
would run that batch (:meth:`apslab.core.roofline.IterationCost.static_batch_seconds`: one
prefill iteration of every prompt, then ``O - 1`` decode iterations of the whole batch), so the
fitted parameters are the ones the continuous engine then uses, iteration by iteration.

The fit is least squares on log(predicted / measured) (every measurement counts by its relative
error, whatever its scale) with each eta in (0, 1] and overhead_s >= 0. Intervals are 95%
(Student t with n - 3 degrees of freedom) from the Jacobian at the optimum; a parameter that ends
on a bound has no interval (``at_bound``). Measurements whose KV cache (B x (P + O) tokens) does
not fit beside the weights are left out by the caller: the engine would not run them as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats
from scipy.optimize import least_squares

from ..core.gpu import RooflineGPU
from ..io.measurements import FIRST_TOKEN, THROUGHPUT, Measurements

PARAMETERS = ("eta_bandwidth", "eta_flops", "overhead_s")
_LOWER = np.array([1e-3, 1e-3, 0.0])
_UPPER = np.array([1.0, 1.0, 1.0])
_START = np.array([0.7, 0.6, 0.002])


def predict(gpu: RooflineGPU, rows: Measurements) -> np.ndarray:
    """What ``gpu`` predicts for every measurement (tokens/s or seconds, by kind)."""
    cost = gpu.iteration_cost()
    out = np.empty(len(rows))
    cache: dict[tuple[int, int, int], tuple[float, float]] = {}
    for i, (kind, p, o, b) in enumerate(zip(rows.kind.tolist(), rows.input_len.tolist(),
                                            rows.output_len.tolist(),
                                            rows.batch_size.tolist(), strict=True)):
        key = (p, o if kind != FIRST_TOKEN else 1, b)
        if key not in cache:
            prefill = cost.static_batch_seconds([p] * b, 1)
            total = cost.static_batch_seconds([p] * b, key[1]) if key[1] > 1 else prefill
            cache[key] = (prefill, total)
        prefill, total = cache[key]
        if kind == FIRST_TOKEN:
            out[i] = prefill
        elif kind == THROUGHPUT:
            out[i] = b * o / total
        else:
            out[i] = b * (o - 1) / (total - prefill)
    return out


def fits_in_memory(gpu: RooflineGPU, rows: Measurements, hbm_bytes: float) -> np.ndarray:
    """Rows whose whole batch's KV cache fits in ``hbm_bytes`` beside the model's weights."""
    free_tokens = (hbm_bytes - gpu.model.weight_bytes) // gpu.kv_bytes_per_token
    return rows.batch_size * (rows.input_len + rows.output_len) <= free_tokens


@dataclass(frozen=True)
class Calibration:
    """A fitted roofline GPU and how well it explains the measurements."""

    gpu: RooflineGPU
    parameters: dict[str, float]
    ci95: dict[str, tuple[float, float] | None]  # None where the parameter sits on a bound
    rows: Measurements
    predicted: np.ndarray
    dof: int
    at_bound: tuple[str, ...] = field(default=())

    @property
    def relative_residuals(self) -> np.ndarray:
        """(predicted - measured) / measured, per row."""
        return self.predicted / self.rows.value - 1.0

    @property
    def r_squared(self) -> float:
        """R^2 of log(predicted) against log(measured), the scale the fit minimises."""
        measured = np.log(self.rows.value)
        residual = np.log(self.predicted) - measured
        total = ((measured - measured.mean()) ** 2).sum()
        return float(1.0 - (residual ** 2).sum() / total) if total > 0 else float("nan")


def calibrate(gpu: RooflineGPU, rows: Measurements) -> Calibration:
    """Fit ``gpu``'s eta_bandwidth, eta_flops and overhead_s to ``rows`` (see the module)."""
    if len(rows) < len(PARAMETERS):
        raise ValueError(f"need at least {len(PARAMETERS)} measurements to fit "
                         f"{len(PARAMETERS)} parameters, got {len(rows)}")
    log_measured = np.log(rows.value)

    def residuals(x: np.ndarray) -> np.ndarray:
        candidate = replace(gpu, eta_bandwidth=float(x[0]), eta_flops=float(x[1]),
                            overhead_s=float(x[2]))
        return np.log(predict(candidate, rows)) - log_measured

    result = least_squares(residuals, _START, bounds=(_LOWER, _UPPER), x_scale=[1.0, 1.0, 1e-3],
                           xtol=1e-12, ftol=1e-12, gtol=1e-12)
    values = result.x
    fitted = replace(gpu, eta_bandwidth=float(values[0]), eta_flops=float(values[1]),
                     overhead_s=float(values[2]))
    dof = len(rows) - len(PARAMETERS)
    # A parameter on a bound (active constraint) has no interval; the others get theirs from the
    # Jacobian of the free parameters.
    on_bound = (np.isclose(values, _LOWER, rtol=0, atol=1e-9)
                | np.isclose(values, _UPPER, rtol=0, atol=1e-9))
    ci: dict[str, tuple[float, float] | None] = {}
    free = ~on_bound
    half = np.full(len(values), np.nan)
    if dof > 0 and free.any():
        jac = result.jac[:, free]
        s2 = float((result.fun ** 2).sum()) / dof
        try:
            covariance = np.linalg.inv(jac.T @ jac) * s2
            half[free] = stats.t.ppf(0.975, dof) * np.sqrt(np.diag(covariance))
        except np.linalg.LinAlgError:
            pass
    for name, value, width, bound in zip(PARAMETERS, values, half, on_bound, strict=True):
        ci[name] = None if bound or not np.isfinite(width) else (value - width, value + width)
    return Calibration(
        gpu=fitted,
        parameters=dict(zip(PARAMETERS, map(float, values), strict=True)),
        ci95=ci,
        rows=rows,
        predicted=predict(fitted, rows),
        dof=dof,
        at_bound=tuple(name for name, bound in zip(PARAMETERS, on_bound, strict=True) if bound),
    )


# ----------------------------------------------------------------------------------------------
# Checking a GPU against published figures by replaying the benchmark in the continuous engine


@dataclass(frozen=True)
class BenchmarkReplay:
    """What the continuous engine measures for a benchmark's batch: B requests of P prompt and
    O output tokens, all arriving at once, with room for all of them (max_num_seqs = B, KV cache
    as large as the GPU's memory beside the weights allows)."""

    input_len: int
    output_len: int
    batch_size: int
    ttft_s: float  # mean first-token latency
    throughput_tokens_per_s: float  # B * O / (last finish - arrival), prefill included
    decode_tokens_per_s: float  # one request's (O - 1) / (finish - first token)


def replay_benchmark(gpu: RooflineGPU, input_len: int, output_len: int, batch_size: int,
                     hbm_bytes: float = 80e9) -> BenchmarkReplay:
    """Run the benchmark's batch through the continuous engine (default token budget 2048)."""
    from ..io.scenario import Scenario, SchedulerConfig, TenantConfig
    from ..io.trace import Trace
    from .continuous import simulate_continuous

    kv_gib = (hbm_bytes - gpu.model.weight_bytes) / 2**30
    scenario = Scenario(
        gpu=replace(gpu, kv_cache_gib=kv_gib),
        scheduler=SchedulerConfig(batching="continuous", batch_window_ms=0.0,
                                  max_num_seqs=max(batch_size, 1)),
        tenants=(TenantConfig("bench", 1e30, 1e30),),
        source="<benchmark>")
    trace = Trace.from_columns([0.0] * batch_size, ["bench"] * batch_size,
                               [input_len] * batch_size, [output_len] * batch_size)
    result = simulate_continuous(scenario, trace)
    if not result.completed.all():
        raise ValueError(f"a batch of {batch_size} x ({input_len} + {output_len}) tokens does "
                         f"not fit in {hbm_bytes / 1e9:g} GB beside the weights")
    decode = ((output_len - 1) / (result.finish_s - result.first_token_s)).mean() \
        if output_len > 1 else float("nan")
    return BenchmarkReplay(input_len, output_len, batch_size,
                           float(result.first_token_s.mean()),
                           float(batch_size * output_len / result.finish_s.max()),
                           float(decode))


# ----------------------------------------------------------------------------------------------
# Measurement files (apslab calibrate) and a benchmark result written by the engine itself


def bench_serve_result(gpu: RooflineGPU, input_lens: list[int], output_lens: list[int], *,
                       detailed: bool = True, label: str = "apslab") -> dict:
    """What ``vllm bench serve --max-concurrency 1 --save-result [--save-detailed]`` would write
    for these requests on ``gpu``, measured on the continuous engine: the requests are sent one
    at a time (each arrives after the previous one finished, so it runs alone on the GPU), and
    every time is the engine's: ``ttfts`` (first token - arrival), ``itls`` (gaps between
    consecutive tokens, from the iteration log), ``latencies`` (finish - arrival) and vLLM's
    aggregate fields (ms). ``detailed=False`` leaves out the per-request arrays, as vLLM does
    without ``--save-detailed``. Prompts must fit the default token budget (2,048 tokens) so
    that each prefill is one iteration, as the calibration's cost model assumes.
    """
    from ..io.scenario import Scenario, SchedulerConfig, TenantConfig
    from ..io.trace import Trace
    from .continuous import simulate_continuous

    if len(input_lens) != len(output_lens) or not input_lens:
        raise ValueError("give one output length per prompt length, at least one request")
    sched = SchedulerConfig(batching="continuous", batch_window_ms=0.0, max_num_seqs=1)
    if max(input_lens) > sched.max_num_batched_tokens:
        raise ValueError(f"prompts longer than {sched.max_num_batched_tokens} tokens are "
                         "prefilled in chunks, which the calibration's cost model does not")
    cost = gpu.iteration_cost()
    arrivals, t = [], 0.0
    for p, o in zip(input_lens, output_lens, strict=True):
        arrivals.append(t)  # the next arrives a second after this one can possibly finish
        t += cost.static_batch_seconds([p], o) + 1.0
    scenario = Scenario(gpu=gpu, scheduler=sched, tenants=(TenantConfig("bench", 1e30, 1e30),),
                        source="<bench>")
    trace = Trace.from_columns(arrivals, ["bench"] * len(arrivals), list(input_lens),
                               list(output_lens))
    result = simulate_continuous(scenario, trace, keep_iterations=True)
    log = result.iteration_log
    ends = log.start_s + log.duration_s
    ttfts = (result.first_token_s - trace.arrival_s).tolist()
    latencies = (result.finish_s - trace.arrival_s).tolist()
    itls = []
    for i in range(len(arrivals)):
        mine = ends[(log.start_s >= result.first_token_s[i]) & (ends <= result.finish_s[i])]
        token_times = np.concatenate(([result.first_token_s[i]], mine))
        itls.append(np.diff(token_times).tolist())
    tpots = [(lat - ttft) / (o - 1) for lat, ttft, o in zip(latencies, ttfts, output_lens,
                                                              strict=True) if o > 1]
    flat_itls = [x for gaps in itls for x in gaps]
    duration = float(sum(latencies))
    out: dict = {
        "date": "apslab", "backend": "apslab", "label": label, "model_id": gpu.model.name,
        "num_prompts": len(arrivals), "request_rate": "inf", "burstiness": 1.0,
        "max_concurrency": 1, "duration": duration, "completed": len(arrivals), "failed": 0,
        "total_input_tokens": int(sum(input_lens)), "total_output_tokens": int(sum(output_lens)),
        "request_throughput": len(arrivals) / duration,
        "output_throughput": sum(output_lens) / duration,
        "total_token_throughput": (sum(input_lens) + sum(output_lens)) / duration,
    }
    if detailed:
        out.update({"input_lens": list(map(int, input_lens)),
                    "output_lens": list(map(int, output_lens)), "ttfts": ttfts, "itls": itls,
                    "latencies": latencies, "errors": [""] * len(arrivals)})
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", flat_itls),
                         ("e2el", latencies)):
        ms = np.asarray(values or [0.0]) * 1000
        out.update({f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms)),
                    f"std_{name}_ms": float(ms.std()),
                    f"p99_{name}_ms": float(np.percentile(ms, 99))})
    return out
