"""Notebook 08's experiments: continuous against static batching, the token budget, KV pressure.

Everything runs the package's own engines (:func:`apslab.sim.run.simulate`) and reads their
results; nothing here re-implements a scheduling rule. Two things are computed here because the
static engine does not record them: the time of a static request's first token and the bytes and
FLOPs of a static batch. Both follow the rule the static engine costs a batch with on the
roofline GPU (:meth:`apslab.core.roofline.IterationCost.static_batch_durations`): one prefill
iteration of every prompt, then max(O) - 1 decode iterations of the whole batch.

* :func:`lab_scenario` and :func:`lab_trace`: ``data/scenarios/lab_continuous.toml`` (a chat
  tenant and a tenant sending long documents, on one roofline A100) and its generated trace;
  :func:`readme_example`: the README's continuous example and its stored trace.
* :func:`as_static` / :func:`with_continuous`: the same scenario on the static engine (same
  roofline GPU), or with the continuous engine's knobs changed.
* :func:`measure` turns a run of either engine into an :class:`EngineRun` (throughput, TTFT,
  TPOT, latency, GPU busy, MBU, MFU, preemptions, wasted tokens);
  :func:`compare_engines`, :func:`budget_sweep`, :func:`kv_sweep` and :func:`load_sweep` are
  the notebook's experiments.
* :func:`static_iteration_log` writes a static run as iterations, in the columns of ITER.csv, so
  both engines can be drawn on one timeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.roofline import attention_term
from ..io.scenario import CONTINUOUS_ONLY_KEYS, Scenario, SchedulerConfig, load_scenario
from ..io.trace import Trace, read_trace
from ..io.workload import generate_trace
from ..sim.result import ContinuousResult, IterationLog, RunResult, SimulationResult
from ..sim.run import simulate
from .experiments import SCENARIOS_DIR, percentile_or_nan, scenario_path, table

LAB_SCENARIO = "lab_continuous"


def lab_scenario() -> Scenario:
    """``data/scenarios/lab_continuous.toml``: chat and long-document tenants, continuous batching
    on one roofline A100."""
    return load_scenario(scenario_path(LAB_SCENARIO))


def lab_trace(scenario: Scenario, load: float = 1.0, seed: int | None = None) -> Trace:
    """The trace the scenario's ``[workload]`` generates at ``load`` times its arrival rates."""
    return generate_trace(scenario.scaled_load(load).workload, seed)


def readme_example() -> tuple[Scenario, Trace]:
    """The README's continuous example: ``example_continuous.toml`` on ``example_trace.csv``."""
    return (load_scenario(scenario_path("example_continuous")),
            read_trace(SCENARIOS_DIR / "example_trace.csv"))


def as_static(scenario: Scenario, max_batch_size: int | None = None) -> Scenario:
    """The scenario on the static engine, on the same roofline GPU (and the same tenants).

    The continuous engine's own keys (token budget, sequence cap, block size) go back to their
    defaults, which the static engine ignores; ``max_batch_size`` is the static engine's cap
    (default: SchedulerConfig's 16).
    """
    defaults = SchedulerConfig()
    overrides: dict[str, object] = {"scheduler.batching": "static", "gpu.model": "roofline"}
    overrides.update({f"scheduler.{key}": getattr(defaults, key) for key in CONTINUOUS_ONLY_KEYS})
    if max_batch_size is not None:
        overrides["scheduler.max_batch_size"] = int(max_batch_size)
    return scenario.with_overrides(overrides)


def with_continuous(scenario: Scenario, *, max_num_batched_tokens: int | None = None,
                    kv_cache_gib: float | None = None, max_num_seqs: int | None = None
                    ) -> Scenario:
    """The (continuous) scenario with any of its token budget, KV cache or sequence cap changed."""
    overrides: dict[str, object] = {}
    if max_num_batched_tokens is not None:
        overrides["scheduler.max_num_batched_tokens"] = int(max_num_batched_tokens)
    if max_num_seqs is not None:
        overrides["scheduler.max_num_seqs"] = int(max_num_seqs)
    if kv_cache_gib is not None:
        overrides["gpu.kv_cache_gib"] = float(kv_cache_gib)
    return scenario.with_overrides(overrides) if overrides else scenario


# --------------------------------------------------------------------------------------------
# A static run, read as iterations


@dataclass(frozen=True)
class StaticBatches:
    """Per batch of a static run on the roofline: its prefill iteration and its totals."""

    size: np.ndarray  # B
    prompt_tokens: np.ndarray  # sum(P) over the batch
    max_output_tokens: np.ndarray  # max(O): the batch runs max(O) - 1 decode iterations
    prefill_s: np.ndarray  # duration of its prefill iteration
    bytes_moved: int  # over every iteration of every batch
    flops: int


def static_batches(result: SimulationResult) -> StaticBatches:
    """Each batch's prefill iteration, and the bytes and FLOPs of every iteration of the run.

    In decode iteration j (1-based) of a batch of B requests every member computes one token
    with c = P + j - 1, so sum(c + n) = sum(P) + B*j and the attention term is sum(P) + B*j too;
    summed over j = 1 .. max(O) - 1 in exact integers.
    """
    cost = result.scenario.gpu.iteration_cost()
    trace = result.trace
    batches = len(result.batch_size)
    members = result.batch_id >= 0
    batch_of = result.batch_id[members]
    prompt = trace.prompt_tokens[members].astype(np.int64)
    output = trace.output_tokens[members].astype(np.int64)
    sizes = np.bincount(batch_of, minlength=batches).astype(np.int64)
    prompts = np.zeros(batches, dtype=np.int64)
    pairs = np.zeros(batches, dtype=np.int64)
    longest = np.zeros(batches, dtype=np.int64)
    np.add.at(prompts, batch_of, prompt)
    np.add.at(pairs, batch_of, prompt * (prompt + 1) // 2)
    np.maximum.at(longest, batch_of, output)
    prefill = np.empty(batches)
    moved = flops = 0
    for k, (b, p, a, m) in enumerate(zip(sizes.tolist(), prompts.tolist(), pairs.tolist(),
                                         longest.tolist(), strict=True)):
        first_moved, first_flops = cost.work(p, p, a)
        prefill[k] = cost.seconds(first_moved, first_flops)
        steps = m - 1
        context = steps * p + b * steps * (steps + 1) // 2  # sum over j of sum(P) + B*j
        moved += first_moved + steps * cost.weight_bytes + cost.kv_bytes_per_token * context
        flops += (first_flops + cost.matmul_flops_per_token * b * steps
                  + cost.attention_flops_per_pair * context)
    return StaticBatches(sizes, prompts, longest, prefill, moved, flops)


def static_first_token_s(result: SimulationResult, batches: StaticBatches | None = None
                         ) -> np.ndarray:
    """When each request of a static run has its first token: the end of its batch's prefill
    iteration (NaN for rejected requests). ``batches``: the run's :func:`static_batches`, if
    already computed.

    This reads a static server as streaming each token the moment it is computed, the most
    favourable reading; its requests still finish only when their batch does.
    """
    if batches is None:
        batches = static_batches(result)
    first = np.full(len(result.reason), math.nan)
    members = result.batch_id >= 0
    batch_of = result.batch_id[members]
    first[members] = result.batch_start_s[batch_of] + batches.prefill_s[batch_of]
    return first


def static_iteration_log(result: SimulationResult, batches: StaticBatches | None = None
                         ) -> IterationLog:
    """A static run on the roofline as one row per iteration, in ITER.csv's columns.

    Each batch is a prefill iteration of all its prompts (``prefill_tokens`` = sum(P)) followed
    by max(O) - 1 decode iterations in which every member computes a token, finished or not
    (``decode_tokens`` = B); durations are the engine's own
    (:meth:`~apslab.core.roofline.IterationCost.static_batch_durations`), added in order, so
    each batch's iterations end exactly at its finish time. ``blocks_used`` and ``preempted``
    are 0: the static engine has no KV blocks and never preempts. ``batches``: the run's
    :func:`static_batches`, if already computed.
    """
    cost = result.scenario.gpu.iteration_cost()
    if batches is None:
        batches = static_batches(result)
    members = np.flatnonzero(result.batch_id >= 0)
    by_batch = members[np.argsort(result.batch_id[members], kind="stable")]
    member_prompts = np.split(result.trace.prompt_tokens[by_batch],
                              np.cumsum(batches.size)[:-1])
    columns: dict[str, list] = {name: [] for name in ("gpu", "start_s", "duration_s",
                                                      "requests", "prefill", "decode")}
    for gpu, start, b, p, m, prompts in zip(
            result.batch_gpu.tolist(), result.batch_start_s.tolist(), batches.size.tolist(),
            batches.prompt_tokens.tolist(), batches.max_output_tokens.tolist(), member_prompts,
            strict=True):
        durations = cost.static_batch_durations(prompts.tolist(), m)
        ends = start + np.add.accumulate(durations)
        starts = np.concatenate(([start], ends[:-1]))
        columns["gpu"].append(np.full(m, gpu))
        columns["start_s"].append(starts)
        columns["duration_s"].append(durations)
        columns["requests"].append(np.full(m, b))
        columns["prefill"].append(np.concatenate(([p], np.zeros(m - 1, dtype=np.int64))))
        columns["decode"].append(np.concatenate(([0], np.full(m - 1, b))))

    def joined(name, dtype):
        parts = columns[name]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    count = sum(len(part) for part in columns["gpu"])
    return IterationLog(
        gpu=joined("gpu", np.int32), start_s=joined("start_s", float),
        duration_s=joined("duration_s", float), requests=joined("requests", np.int64),
        prefill_tokens=joined("prefill", np.int64), decode_tokens=joined("decode", np.int64),
        blocks_used=np.zeros(count, dtype=np.int64), preempted=np.zeros(count, dtype=np.int64))


def iteration_log(result: RunResult, batches: StaticBatches | None = None) -> IterationLog:
    """The run's iterations: the continuous engine's log (run with ``keep_iterations=True``),
    or :func:`static_iteration_log` of a static run (``batches``: its :func:`static_batches`,
    if already computed)."""
    if isinstance(result, ContinuousResult):
        if result.iteration_log is None:
            raise ValueError("run the continuous engine with keep_iterations=True")
        return result.iteration_log
    return static_iteration_log(result, batches)


# --------------------------------------------------------------------------------------------
# One run's numbers, either engine


@dataclass(frozen=True)
class EngineRun:
    """The numbers notebook 08 compares, for one run of either engine.

    TTFT = first token - arrival; TPOT = (finish - first token) / (O - 1) over requests with
    O >= 2; both over completed requests. ``gpu_busy`` is SUMMARY.json's ``gpu_utilization``;
    ``mbu`` and ``mfu`` are the bytes moved and FLOPs done by every iteration over what the
    datasheet roofs allow in the elapsed time. A completed request needs P + O - 1 tokens
    computed (its prompt, then every generated token but the last); ``wasted_tokens`` is what the
    GPU computed beyond that: recomputation after preemptions (continuous) or the decodes of
    batch members that had already finished (static: the batch runs until its longest member is
    done). ``max_tbt_p99_s`` is the continuous engine's p99 of each request's longest gap
    between tokens (NaN for static runs, which do not record it). ``kv_blocks`` is the
    continuous engine's KV blocks per GPU (0 for static runs, which have none).
    """

    label: str
    batching: str
    load: float
    max_num_batched_tokens: int | None
    kv_cache_gib: float
    kv_blocks: int
    submitted: int
    completed: int
    throughput_tokens_per_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    max_tbt_p99_s: float
    latency_p50_s: float
    latency_p99_s: float
    gpu_busy: float
    mbu: float
    mfu: float
    preemptions: int
    requests_preempted: int
    computed_tokens: int
    wasted_tokens: int
    iterations: int


def measure(result: RunResult, label: str = "", load: float = math.nan,
            batches: StaticBatches | None = None) -> EngineRun:
    """:class:`EngineRun` of one run of either engine (on the roofline GPU); ``batches``: a
    static run's :func:`static_batches`, if already computed."""
    scenario, trace = result.scenario, result.trace
    summary = result.summary()
    done = result.completed
    gpus = scenario.cluster.gpus
    elapsed_gpu_s = summary["elapsed_s"] * gpus
    if isinstance(result, ContinuousResult):
        batching = "continuous"
        first = result.first_token_s
        max_tbt = summary["max_tbt_s"]["p99"]
        mbu, mfu = summary["mbu"], summary["mfu"]
        preemptions = summary["preemptions"]["count"]
        preempted = summary["preemptions"]["requests_preempted"]
        computed = result.iterations.tokens
        iterations = result.iterations.count
        budget = scenario.scheduler.max_num_batched_tokens
    else:
        batching = "static"
        if batches is None:
            batches = static_batches(result)
        first = static_first_token_s(result, batches)
        max_tbt = math.nan
        gpu = scenario.gpu
        mbu = batches.bytes_moved / (elapsed_gpu_s * gpu.hbm_bytes_per_s) if elapsed_gpu_s \
            else math.nan
        mfu = batches.flops / (elapsed_gpu_s * gpu.peak_flops) if elapsed_gpu_s else math.nan
        preemptions = preempted = 0
        iterations = int(batches.max_output_tokens.sum())
        # every member computes P tokens, then one per decode iteration of its batch
        computed = int(batches.prompt_tokens.sum()
                       + (batches.size * (batches.max_output_tokens - 1)).sum())
        budget = None
    arrival = trace.arrival_s
    ttft = first[done] - arrival[done]
    multi = done & (trace.output_tokens >= 2)
    tpot = (result.finish_s[multi] - first[multi]) / (trace.output_tokens[multi] - 1)
    useful = int((trace.prompt_tokens[done].astype(np.int64)
                  + trace.output_tokens[done].astype(np.int64) - 1).sum())
    return EngineRun(
        label=label or batching, batching=batching, load=float(load),
        max_num_batched_tokens=budget, kv_cache_gib=float(scenario.gpu.kv_cache_gib),
        kv_blocks=result.total_blocks if batching == "continuous" else 0,
        submitted=len(trace), completed=int(done.sum()),
        throughput_tokens_per_s=summary["throughput_tokens_per_s"] or 0.0,
        ttft_p50_s=percentile_or_nan(ttft, 50), ttft_p99_s=percentile_or_nan(ttft, 99),
        tpot_p50_s=percentile_or_nan(tpot, 50), tpot_p99_s=percentile_or_nan(tpot, 99),
        max_tbt_p99_s=math.nan if max_tbt is None else float(max_tbt),
        latency_p50_s=summary["latency_s"]["p50"] or math.nan,
        latency_p99_s=summary["latency_s"]["p99"] or math.nan,
        gpu_busy=summary["gpu_utilization"] or 0.0,
        mbu=math.nan if mbu is None else float(mbu), mfu=math.nan if mfu is None else float(mfu),
        preemptions=int(preemptions), requests_preempted=int(preempted),
        computed_tokens=int(computed), wasted_tokens=int(computed) - useful,
        iterations=int(iterations))


# --------------------------------------------------------------------------------------------
# The experiments


ENGINES = ("static", "continuous")


def run_engine(scenario: Scenario, trace: Trace, batching: str,
               max_batch_size: int | None = None, keep_iterations: bool = False) -> RunResult:
    """The (continuous) scenario's trace through one engine, ``"static"`` (:func:`as_static`,
    capped at ``max_batch_size``) or ``"continuous"`` (``keep_iterations`` keeps its log)."""
    if batching == "static":
        return simulate(as_static(scenario, max_batch_size), trace)
    return simulate(scenario, trace, keep_iterations=keep_iterations)


def run_engines(scenario: Scenario, trace: Trace, max_batch_size: int | None = None,
                keep_iterations: bool = False) -> dict[str, RunResult]:
    """The same trace through the static engine and the continuous one, on the same roofline
    GPU: ``{"static": ..., "continuous": ...}``."""
    return {batching: run_engine(scenario, trace, batching, max_batch_size, keep_iterations)
            for batching in ENGINES}


def compare_engines(scenario: Scenario, trace: Trace, load: float = math.nan,
                    max_batch_size: int | None = None) -> dict[str, EngineRun]:
    """:func:`measure` of :func:`run_engines`: ``{"static": ..., "continuous": ...}``."""
    return {name: measure(result, name, load)
            for name, result in run_engines(scenario, trace, max_batch_size).items()}


def budget_sweep(scenario: Scenario, trace: Trace, budgets: Sequence[int],
                 load: float = math.nan) -> list[EngineRun]:
    """The continuous engine at each token budget (``max_num_batched_tokens``)."""
    return [measure(simulate(with_continuous(scenario, max_num_batched_tokens=b), trace),
                    f"budget {b}", load) for b in budgets]


def kv_sweep(scenario: Scenario, trace: Trace, kv_cache_gib: Sequence[float],
             load: float = math.nan) -> list[EngineRun]:
    """The continuous engine at each KV cache size (GiB per GPU)."""
    return [measure(simulate(with_continuous(scenario, kv_cache_gib=g), trace),
                    f"{g:g} GiB", load) for g in kv_cache_gib]


def load_sweep(scenario: Scenario, loads: Sequence[float], seed: int | None = None,
               static: bool = False) -> list[EngineRun]:
    """The scenario's workload at each load multiplier (same seed), continuous or static."""
    runs = []
    for load in loads:
        trace = lab_trace(scenario, load, seed)
        run_on = as_static(scenario) if static else scenario
        runs.append(measure(simulate(run_on, trace), f"load {load:g}", load))
    return runs


def by_field(runs: Sequence[EngineRun], name: str) -> dict:
    """The runs keyed by one of their fields (e.g. ``max_num_batched_tokens``)."""
    return {getattr(run, name): run for run in runs}


ENGINE_COLUMNS = (
    ("run", "label", ""), ("served tok/s", "throughput_tokens_per_s", ".1f"),
    ("TTFT p50 (s)", "ttft_p50_s", ".3f"), ("TTFT p99 (s)", "ttft_p99_s", ".3f"),
    ("TPOT p50 (s)", "tpot_p50_s", ".4f"), ("TPOT p99 (s)", "tpot_p99_s", ".4f"),
    ("latency p50 (s)", "latency_p50_s", ".2f"), ("latency p99 (s)", "latency_p99_s", ".2f"),
    ("GPU busy", "gpu_busy", ".1%"), ("MBU", "mbu", ".1%"), ("MFU", "mfu", ".1%"),
)


def engine_table(runs: Sequence[EngineRun], columns: Sequence[tuple[str, str, str]] = ENGINE_COLUMNS
                 ) -> str:
    """A plain-text table of runs: ``columns`` lists (header, EngineRun field, format spec)."""
    return table([header for header, _, _ in columns],
                 [[getattr(run, field) for _, field, _ in columns] for run in runs],
                 [spec for _, _, spec in columns])


BUDGET_COLUMNS = (
    ("token budget", "max_num_batched_tokens", "d"),
    ("served tok/s", "throughput_tokens_per_s", ".1f"),
    ("TTFT p50 (s)", "ttft_p50_s", ".3f"), ("TTFT p99 (s)", "ttft_p99_s", ".3f"),
    ("TPOT p50 (s)", "tpot_p50_s", ".4f"), ("TPOT p99 (s)", "tpot_p99_s", ".4f"),
    ("longest gap p99 (s)", "max_tbt_p99_s", ".4f"), ("iterations", "iterations", ",d"),
)
KV_COLUMNS = (
    ("KV GiB", "kv_cache_gib", "g"), ("blocks", "kv_blocks", ",d"),
    ("preemptions", "preemptions", "d"),
    ("requests preempted", "requests_preempted", "d"), ("wasted tokens", "wasted_tokens", ",d"),
    ("served tok/s", "throughput_tokens_per_s", ".1f"), ("TTFT p99 (s)", "ttft_p99_s", ".3f"),
    ("TPOT p99 (s)", "tpot_p99_s", ".4f"), ("latency p99 (s)", "latency_p99_s", ".2f"),
)
LOAD_COLUMNS = (
    ("load", "load", "g"), ("requests", "submitted", "d"),
    ("served tok/s", "throughput_tokens_per_s", ".1f"), ("GPU busy", "gpu_busy", ".1%"),
    ("MBU", "mbu", ".1%"), ("MFU", "mfu", ".2%"), ("TTFT p99 (s)", "ttft_p99_s", ".3f"),
    ("TPOT p99 (s)", "tpot_p99_s", ".4f"),
)


def iteration_cost_rows(gpu, context: int = 500) -> list[tuple[str, int, float, float, str]]:
    """What single iterations cost on ``gpu`` (a :class:`~apslab.core.gpu.RooflineGPU`):
    decodes of B requests that each hold ``context`` tokens, and one prompt in one iteration.

    Rows of (iteration, tokens computed, seconds, tokens per second, the roof that binds).
    """
    cost = gpu.iteration_cost()
    shapes = [(f"decode, {b} request{'s' if b > 1 else ''} at context {context}",
               [(context, 1)] * b) for b in (1, 16, 64, 256)]
    shapes += [(f"prefill of one {p}-token prompt", [(0, p)]) for p in (128, 512, 2048)]
    rows = []
    for label, requests in shapes:
        new = sum(n for _, n in requests)
        moved, flops = cost.work(sum(c + n for c, n in requests), new,
                                 sum(attention_term(c, n) for c, n in requests))
        seconds = cost.seconds(moved, flops)
        bound = "FLOPs" if flops / cost.flop_rate > moved / cost.bandwidth else "bytes"
        rows.append((label, new, seconds, new / seconds, bound))
    return rows


def first_preemption_s(log: IterationLog) -> float:
    """When the first iteration whose round preempted requests started (NaN if none did)."""
    hits = np.flatnonzero(log.preempted > 0)
    return float(log.start_s[hits[0]]) if len(hits) else math.nan


def preemptions_by_tenant(result: ContinuousResult) -> dict[str, int]:
    """How many preemptions each tenant's requests suffered."""
    return {tenant: int(result.preemptions[result.tenant_index == index].sum())
            for index, tenant in enumerate(result.scenario.tenant_ids())}


def iteration_cost_table(gpu, context: int = 500) -> str:
    """:func:`iteration_cost_rows` as a plain-text table (durations in ms)."""
    return table(["iteration", "tokens", "duration (ms)", "tokens/s", "slower roof"],
                 [(label, tokens, seconds * 1e3, rate, bound)
                  for label, tokens, seconds, rate, bound in iteration_cost_rows(gpu, context)],
                 ["", "d", ".2f", ".0f", ""])
