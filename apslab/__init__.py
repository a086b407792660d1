"""apslab: learn, analyse and plan multi-tenant LLM inference scheduling.

The request path, one folder per concern (see docs/architecture.md):

    core  limiter -> aging_queue -> batcher -> gpu / roofline -> metrics   (pure, clock-free)
    io    scenario, trace, trace_formats, workload                        (what goes in)
    sim   the virtual-time engines, their result, summary and writers
    lab   experiments, plots, widgets, fits, datasets, exercises          (the notebooks)
    plan  SLO search, sweeps, reports                                     (capacity planning)
    serve the live FastAPI service, its load generator and widgets
    cli   the ``apslab`` command, which only dispatches

Every component takes the time as an argument, so the same objects serve the virtual-time
simulator, the notebooks and a live server. The names below are what notebooks and scripts
use; ``plots``, ``fit``, ``widgets``, ``exercises`` and ``datasets`` are the lab's modules,
imported on first use.
"""

import importlib

from ._version import __version__  # noqa: F401  (apslab.__version__)
from .core.aging_queue import (  # noqa: E402
    EagerAgingQueue,
    LazyAgingQueue,
    effective_priority,
    static_priority_key,
)
from .core.batcher import MicroBatcher  # noqa: E402
from .core.gpu import GPUModel  # noqa: E402
from .core.limiter import TenantLimits, TenantManager, TokenBucket  # noqa: E402
from .core.metrics import jain_fairness, latency_stats  # noqa: E402
from .io.errors import InputError  # noqa: E402
from .io.scenario import Scenario, load_scenario, parse_scenario  # noqa: E402
from .io.trace import Trace, read_trace, write_trace  # noqa: E402
from .io.workload import generate_trace  # noqa: E402
from .sim.result import SimulationResult  # noqa: E402
from .sim.run import simulate  # noqa: E402
from .sim.summary import summarize  # noqa: E402

_LAB_MODULES = ("datasets", "exercises", "fit", "plots", "widgets")


def __getattr__(name: str):
    """``apslab.lab.plots`` and the other lab modules, imported when first asked for."""
    if name in _LAB_MODULES:
        return importlib.import_module(f"apslab.lab.{name}")
    if name == "lab":
        return importlib.import_module("apslab.lab")
    raise AttributeError(f"module 'apslab' has no attribute {name!r}")


__all__ = [
    "EagerAgingQueue",
    "GPUModel",
    "InputError",
    "LazyAgingQueue",
    "MicroBatcher",
    "Scenario",
    "SimulationResult",
    "TenantLimits",
    "TenantManager",
    "TokenBucket",
    "Trace",
    "effective_priority",
    "generate_trace",
    "jain_fairness",
    "latency_stats",
    "load_scenario",
    "parse_scenario",
    "read_trace",
    "simulate",
    "static_priority_key",
    "summarize",
    "write_trace",
]
