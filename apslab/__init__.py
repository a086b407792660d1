"""apslab: learn, analyse and plan multi-tenant LLM inference scheduling.

The request path: per-tenant token bucket -> lazy-aging priority queue -> KV-bounded
micro-batcher -> A100 model -> metrics. Every component takes the time as an argument, so the
same objects serve the virtual-time simulator, the notebooks and a live server.
"""

__version__ = "0.1.0"

from .aging_queue import EagerAgingQueue, LazyAgingQueue, effective_priority, static_priority_key
from .batcher import MicroBatcher
from .errors import InputError
from .gpu import GPUModel
from .limiter import TenantLimits, TenantManager, TokenBucket
from .metrics import jain_fairness, latency_stats, summarize
from .scenario import Scenario, load_scenario, parse_scenario
from .simulator import SimulationResult, simulate
from .trace import Trace, read_trace, write_trace
from .workload import generate_trace

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
