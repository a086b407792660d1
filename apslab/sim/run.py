"""One entry point for every engine: ``simulate`` runs a scenario on the engine it names.

``[scheduler] batching = "static"`` (the default) runs the seed's static micro-batches
(:mod:`apslab.sim.static`); ``"continuous"`` runs iteration-level batching
(:mod:`apslab.sim.continuous`).
"""

from __future__ import annotations

from ..io.scenario import Scenario
from ..io.trace import Trace
from .continuous import simulate_continuous
from .result import RunResult
from .static import simulate_static


def simulate(scenario: Scenario, trace: Trace, *, engine: str = "auto",
             keep_iterations: bool = False, keep_service_curve: bool = False) -> RunResult:
    """Run ``trace`` through ``scenario`` in virtual time and return every request's fate.

    ``engine`` picks the loop: "python" (the readable reference), "compiled" (the C loops,
    bit-identical) or "auto". ``keep_iterations`` keeps the continuous engine's per-iteration
    log (for ``--iterations ITER.csv``) and ``keep_service_curve`` its service-difference curve
    (``result.service_curve``); the static engine ignores both.
    """
    if scenario.scheduler.continuous:
        return simulate_continuous(scenario, trace, engine=engine,
                                   keep_iterations=keep_iterations,
                                   keep_service_curve=keep_service_curve)
    return simulate_static(scenario, trace, engine=engine)
