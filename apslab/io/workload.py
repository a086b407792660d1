"""Synthetic workloads: Poisson arrivals per tenant and seeded token-count distributions.

Each tenant draws from its own random stream, spawned from the seed with numpy's SeedSequence,
so adding or changing one tenant leaves the others' requests exactly as they were.
"""

from __future__ import annotations

import numpy as np

from .scenario import Scenario, TokenDistribution, WorkloadConfig
from .trace import Trace


def draw_tokens(dist: TokenDistribution, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``size`` non-negative integer token counts from ``dist``."""
    p = dist.params
    if dist.dist == "constant":
        values = np.full(size, int(round(p["value"])), dtype=np.int64)
    elif dist.dist == "uniform":
        values = rng.integers(int(np.ceil(p["low"])), int(np.floor(p["high"])) + 1, size=size)
    elif dist.dist == "geometric":
        values = rng.geometric(1.0 / p["mean"], size=size)  # support 1, 2, ...; mean = mean
    elif dist.dist == "exponential":
        values = np.rint(rng.exponential(p["mean"], size=size))
    elif dist.dist == "lognormal":
        values = np.rint(rng.lognormal(np.log(p["median"]), p["sigma"], size=size))
    else:  # pragma: no cover - the scenario parser admits only the names above
        raise ValueError(f"unknown distribution {dist.dist!r}")
    values = np.asarray(values, dtype=np.int64)
    if dist.min is not None or dist.max is not None:
        values = np.clip(values, dist.min, dist.max)
    return values


def generate_trace(workload: WorkloadConfig, seed: int | None = None) -> Trace:
    """A trace of every tenant's Poisson arrivals in [0, duration_s), sorted by arrival.

    ``seed`` overrides the workload's own seed. Given a Poisson count, the arrival times of a
    Poisson process are independent uniforms, which is how they are drawn (vectorised).
    """
    seed = workload.seed if seed is None else seed
    streams = np.random.SeedSequence(seed).spawn(len(workload.tenants))
    parts = []
    for code, (tenant, stream) in enumerate(zip(workload.tenants, streams, strict=True)):
        rng = np.random.default_rng(stream)
        count = int(rng.poisson(tenant.arrival_rate_per_s * workload.duration_s))
        arrivals = np.sort(rng.uniform(0.0, workload.duration_s, size=count))
        parts.append((
            arrivals,
            np.full(count, code, dtype=np.int32),
            draw_tokens(tenant.prompt_tokens, count, rng),
            draw_tokens(tenant.output_tokens, count, rng),
            np.full(count, tenant.priority_bid, dtype=np.float64),
        ))
    arrival, codes, prompt, output, bid = (np.concatenate(column)
                                           for column in zip(*parts, strict=True))
    order = np.argsort(arrival, kind="stable")
    return Trace(arrival[order], codes[order], [t.tenant_id for t in workload.tenants],
                 prompt[order], output[order], bid[order], source="<generated>")


def scenario_trace(scenario: Scenario, seed: int | None = None) -> Trace:
    """The trace a scenario's [workload] section generates (InputError-free: it was validated)."""
    if scenario.workload is None:
        raise ValueError(f"{scenario.source}: the scenario has no [workload] section")
    return generate_trace(scenario.workload, seed)
