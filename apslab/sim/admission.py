"""Admission by column, shared by both engines: who is rejected before the event loop runs.

The state-free checks come first, for the whole trace at once: tenant not in the scenario
(``unknown_tenant``), the engine's KV rule (``exceeds_kv_capacity``), more than the tenant's
limiter could ever admit (``exceeds_burst``). Without ``max_queue_length`` the limiters do not
depend on the queue, so they decide every remaining row here too, by column
(:func:`apslab.core.limiter.decide_columns`); with it, the event loop asks them request by
request, after the queue check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.limiter import (
    ADMITTED,
    EXCEEDS_BURST,
    EXCEEDS_KV_CAPACITY,
    UNKNOWN_TENANT,
    decide_columns,
    exceeds_columns,
    make_limiter,
)
from ..io.scenario import Scenario
from ..io.trace import Trace


@dataclass
class Admission:
    """The outcome of the column checks."""

    reason: np.ndarray  # uint8 per trace row: ADMITTED (still a candidate) or a rejection
    tenant_index: np.ndarray  # index into scenario.tenants, -1 if not in the scenario
    order: np.ndarray  # the candidates' rows, in (arrival_s, row) order
    limiters: list  # one per scenario tenant, in the state the column decisions left them
    in_loop: bool  # True: the loop still asks the limiters (max_queue_length is set)

    @property
    def limiter_of(self) -> np.ndarray | None:
        """Each candidate's tenant, when the loop asks the limiters."""
        return self.tenant_index[self.order] if self.in_loop else None


def tenant_indices(scenario: Scenario, trace: Trace) -> np.ndarray:
    """Each trace row's index into ``scenario.tenants`` (-1: not a scenario tenant)."""
    index_of = {t.id: i for i, t in enumerate(scenario.tenants)}
    to_scenario = np.array([index_of.get(name, -1) for name in trace.tenant_names] or [-1],
                           dtype=np.int32)
    return to_scenario[trace.tenant_codes]


def admit_by_column(scenario: Scenario, trace: Trace, exceeds_kv: np.ndarray,
                    use_compiled: bool = True) -> Admission:
    """Run the column checks; ``exceeds_kv`` is the engine's KV rule, per row."""
    tenant_index = tenant_indices(scenario, trace)
    limiters = [make_limiter(t.limits()) for t in scenario.tenants]
    reason = np.zeros(len(trace), dtype=np.uint8)
    reason[exceeds_columns(limiters, tenant_index, trace.prompt_tokens,
                           trace.output_tokens) & (tenant_index >= 0)] = EXCEEDS_BURST
    reason[exceeds_kv] = EXCEEDS_KV_CAPACITY
    reason[tenant_index < 0] = UNKNOWN_TENANT
    order = np.argsort(trace.arrival_s, kind="stable")
    order = order[reason[order] == ADMITTED]
    in_loop = scenario.scheduler.max_queue_length is not None
    if not in_loop:
        codes = decide_columns(limiters, tenant_index[order], trace.prompt_tokens[order],
                               trace.output_tokens[order], trace.arrival_s[order],
                               use_compiled=use_compiled)
        reason[order] = codes
        order = order[codes == ADMITTED]
    return Admission(reason, tenant_index, order, limiters, in_loop)
