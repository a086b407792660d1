"""The continuous engine against queueing theory.

With ``max_num_seqs = 1`` and a token budget larger than every prompt, a GPU serves one request
at a time, without preemption (a request always fits alone): an M/G/1 queue whose service time
is the request's prefill iteration plus its O - 1 decode iterations, exactly the roofline's
``static_batch_seconds([P], O)``. With Poisson arrivals the mean wait (start - arrival) is
Pollaczek-Khinchine's W = lambda E[S^2] / (2 (1 - rho)); two bid classes wait as Cobham's
non-preemptive priority formula says.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import doc_text

from apslab.io.scenario import parse_scenario
from apslab.io.workload import generate_trace
from apslab.sim.run import simulate

PROMPT = 512
OUTPUTS = np.arange(1, 33)  # uniform on 1..32
REQUESTS = 150_000


def scenario(classes, rho):
    base = parse_scenario({"scheduler": {"batching": "continuous"}, "tenants": [
        {"id": "x", "rate_limit": 1.0, "burst_cap": 1.0}]})
    service = np.array([base.gpu.iteration_cost().static_batch_seconds([PROMPT], int(o))
                        for o in OUTPUTS])
    lam = rho / service.mean()
    total_share = sum(share for _, share, _ in classes)
    sc = parse_scenario({
        "scheduler": {"batching": "continuous", "max_num_seqs": 1,
                      "max_num_batched_tokens": 4096, "batch_window_ms": 0.0},
        "tenants": [{"id": name, "rate_limit": 1e12, "burst_cap": 1e12, "priority_bid": bid}
                    for name, _, bid in classes],
        "workload": {"duration_s": REQUESTS / lam, "seed": 11, "tenants": [
            {"id": name, "arrival_rate_per_s": lam * share / total_share,
             "prompt_tokens": PROMPT,
             "output_tokens": {"dist": "uniform", "low": 1, "high": 32}}
            for name, share, _ in classes]},
    })
    return sc, lam, service


def mean_waits(sc):
    trace = generate_trace(sc.workload)
    result = simulate(sc, trace)
    assert result.completed.all() and not result.preemptions.any()
    wait = result.start_s - trace.arrival_s
    return {t.id: float(wait[result.tenant_index == i].mean())
            for i, t in enumerate(sc.tenants)}


def _doc_row(case: str, theory: float, simulated: float) -> str:
    return (f"| {case} | {theory:.4f} | {simulated:.4f} | "
            f"{(simulated / theory - 1) * 100:+.1f}% |")


def test_mean_wait_matches_pollaczek_khinchine():
    sc, lam, service = scenario([("only", 1, 1.0)], rho=0.7)
    rho = lam * service.mean()
    expected = lam * (service ** 2).mean() / (2 * (1 - rho))
    simulated = mean_waits(sc)["only"]
    assert simulated == pytest.approx(expected, rel=0.03)
    page = doc_text("docs/continuous.md")
    assert f"E[S] = {service.mean():.4f} s" in page
    assert f"E[S²] = {(service ** 2).mean():.4g} s²" in page
    assert _doc_row("one class (Pollaczek-Khinchine)", expected, simulated) in page


def test_two_bid_classes_match_cobham():
    sc, lam, service = scenario([("high", 1, 2.0), ("low", 1, 1.0)], rho=0.7)
    residual = lam * (service ** 2).mean() / 2
    rho_high, rho = lam / 2 * service.mean(), lam * service.mean()
    waits = mean_waits(sc)
    high, low = residual / (1 - rho_high), residual / ((1 - rho_high) * (1 - rho))
    assert waits["high"] == pytest.approx(high, rel=0.03)
    assert waits["low"] == pytest.approx(low, rel=0.03)
    page = doc_text("docs/continuous.md")
    assert _doc_row("high bid (Cobham)", high, waits["high"]) in page
    assert _doc_row("low bid (Cobham)", low, waits["low"]) in page
