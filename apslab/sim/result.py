"""The result of a run: per-request columns, and per-batch or per-iteration ones by engine.

It lives apart from the engines and from :mod:`apslab.sim.summary` so that the summary, the
writers and the live service can all take a result without importing an engine.
:class:`SimulationResult` is the static engine's (requests and batches);
:class:`ContinuousResult` the continuous engine's (requests with first-token times,
preemptions and the longest gap between tokens, and the iterations' totals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.limiter import ADMITTED, REASON_NAMES
from ..core.metrics import GoodputTargets
from ..io.scenario import Scenario
from ..io.trace import Trace
from .summary import summarize


@dataclass
class RunResult:
    """What every engine's result has: per-request fates, in trace-row order."""

    scenario: Scenario
    trace: Trace
    reason: np.ndarray  # uint8 code per request; ADMITTED (0) = completed
    tenant_index: np.ndarray  # index into scenario.tenants, -1 if not in the scenario
    start_s: np.ndarray  # NaN for rejected requests
    finish_s: np.ndarray

    @property
    def completed(self) -> np.ndarray:
        return self.reason == ADMITTED

    @property
    def queue_wait_s(self) -> np.ndarray:
        """start - arrival of the completed requests, in trace-row order."""
        done = self.completed
        return self.start_s[done] - self.trace.arrival_s[done]

    @property
    def latency_s(self) -> np.ndarray:
        """finish - arrival of the completed requests, in trace-row order."""
        done = self.completed
        return self.finish_s[done] - self.trace.arrival_s[done]

    def reason_names(self) -> list[str]:
        names = REASON_NAMES
        return [names[r] for r in self.reason.tolist()]

    def summary(self, goodput: GoodputTargets | None = None) -> dict:
        """SUMMARY.json as a dict (see :func:`apslab.sim.summary.summarize`); ``goodput``
        targets add goodput_rps and slo_attainment."""
        return summarize(self, goodput)


@dataclass
class SimulationResult(RunResult):
    """The static engine's run: request columns, and one row per batch."""

    batch_id: np.ndarray = field(default=None)  # -1 for rejected requests
    batch_start_s: np.ndarray = field(default=None)
    batch_finish_s: np.ndarray = field(default=None)
    batch_service_s: np.ndarray = field(default=None)  # the GPU model's service time
    batch_size: np.ndarray = field(default=None)
    batch_kv_tokens: np.ndarray = field(default=None)
    batch_gpu: np.ndarray = field(default=None)

    @property
    def gpu(self) -> np.ndarray:
        """The GPU each request ran on (-1 for rejected requests)."""
        return np.where(self.batch_id >= 0, self.batch_gpu[np.maximum(self.batch_id, 0)], -1) \
            if len(self.batch_gpu) else np.full(len(self.reason), -1)

    @property
    def request_batch_size(self) -> np.ndarray:
        """The size of each request's batch (0 for rejected requests)."""
        if not len(self.batch_size):
            return np.zeros(len(self.reason), dtype=np.int64)
        return np.where(self.batch_id >= 0, self.batch_size[np.maximum(self.batch_id, 0)], 0)


@dataclass
class IterationTotals:
    """Totals over a continuous run's iterations (kept whether or not each one is logged)."""

    count: int
    requests: int  # sum over iterations of the requests scheduled
    tokens: int  # sum of tokens computed (prefill and decode)
    busy_s_per_gpu: list[float]  # sum of iteration durations, per GPU
    bytes_moved: int
    flops: int
    block_seconds: float  # sum of blocks_used x duration
    last_end_s: float  # when the last iteration ended (-inf if none ran)
    # the largest service difference between two backlogged tenants (apslab.core.fairness);
    # None when the scenario has too many tenants to track their pairs
    service_difference: float | None = None


@dataclass
class IterationLog:
    """One row per iteration, in the order they started (``--iterations ITER.csv``)."""

    gpu: np.ndarray
    start_s: np.ndarray
    duration_s: np.ndarray
    requests: np.ndarray
    prefill_tokens: np.ndarray
    decode_tokens: np.ndarray
    blocks_used: np.ndarray
    preempted: np.ndarray

    def __len__(self) -> int:
        return len(self.gpu)


@dataclass
class ContinuousResult(RunResult):
    """The continuous engine's run: request columns and iteration totals (and log, if kept)."""

    first_token_s: np.ndarray = field(default=None)  # NaN for rejected requests
    preemptions: np.ndarray = field(default=None)  # times each request was preempted
    max_tbt_s: np.ndarray = field(default=None)  # longest gap between tokens; NaN when O = 1
    finish_gpu: np.ndarray = field(default=None)  # where each request finished (-1: rejected)
    total_blocks: int = 0
    iterations: IterationTotals = field(default=None)
    iteration_log: IterationLog | None = None
    # (time, service difference between backlogged tenants) at every instant it changed, when
    # asked for (simulate_continuous(..., keep_service_curve=True))
    service_curve: np.ndarray | None = None

    @property
    def gpu(self) -> np.ndarray:
        """The GPU each request finished on (-1 for rejected requests)."""
        return self.finish_gpu

    @property
    def ttft_s(self) -> np.ndarray:
        """first token - arrival of the completed requests, in trace-row order."""
        done = self.completed
        return self.first_token_s[done] - self.trace.arrival_s[done]

    @property
    def tpot_s(self) -> np.ndarray:
        """(finish - first token) / (O - 1) of the completed requests with O >= 2."""
        done = self.completed & (self.trace.output_tokens >= 2)
        return ((self.finish_s[done] - self.first_token_s[done])
                / (self.trace.output_tokens[done] - 1))
