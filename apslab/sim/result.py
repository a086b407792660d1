"""The result of a run: per-request and per-batch columns, shared by every engine's writers.

It lives apart from the engines and from :mod:`apslab.sim.summary` so that the summary, the
writers and the live service can all take a result without importing an engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.limiter import ADMITTED, REASON_NAMES
from ..io.scenario import Scenario
from ..io.trace import Trace
from .summary import summarize


@dataclass
class SimulationResult:
    """Per-request and per-batch columns of one run. Request columns are in trace-row order."""

    scenario: Scenario
    trace: Trace
    reason: np.ndarray  # uint8 code per request; ADMITTED (0) = completed
    tenant_index: np.ndarray  # index into scenario.tenants, -1 if not in the scenario
    start_s: np.ndarray  # NaN for rejected requests
    finish_s: np.ndarray
    batch_id: np.ndarray  # -1 for rejected requests
    batch_start_s: np.ndarray
    batch_finish_s: np.ndarray
    batch_service_s: np.ndarray  # the GPU model's service time (finish - start up to rounding)
    batch_size: np.ndarray
    batch_kv_tokens: np.ndarray
    batch_gpu: np.ndarray

    @property
    def completed(self) -> np.ndarray:
        return self.reason == ADMITTED

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

    def summary(self) -> dict:
        """SUMMARY.json as a dict (see :func:`apslab.sim.summary.summarize`)."""
        return summarize(self)
