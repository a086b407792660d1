"""The simulator against queueing theory (single GPU, batches of one, no window).

With max_batch_size 1, batch_window_ms 0, no binding rate limits, prompt 0 and geometric output
lengths, the GPU is an M/G/1 queue whose service time is output_tokens / 128 s.
"""

import numpy as np
import pytest
from helpers import make_scenario

from apslab.io.workload import generate_trace
from apslab.sim.run import simulate

MEAN_OUTPUT = 128  # tokens: E[S] = 1 s at 128 tokens/s
P = 1 / MEAN_OUTPUT
SERVICE_MEAN = MEAN_OUTPUT / 128
SERVICE_SECOND_MOMENT = (2 - P) / P**2 / 128**2  # geometric on {1, 2, ...}
REQUESTS = 600_000


def mm1_like_scenario(classes):
    """classes: (tenant id, arrival rate, bid)."""
    rate = sum(c[1] for c in classes)
    return make_scenario(
        [(name, 1e9, 1e9) for name, _, _ in classes],
        scheduler={"max_batch_size": 1, "batch_window_ms": 0.0, "aging_per_s": 0.0},
        workload={
            "duration_s": REQUESTS / rate,
            "seed": 2024,
            "tenants": [{"id": name, "arrival_rate_per_s": lam, "priority_bid": bid,
                         "prompt_tokens": 0,
                         "output_tokens": {"dist": "geometric", "mean": MEAN_OUTPUT}}
                        for name, lam, bid in classes],
        },
    )


def mean_wait_by_tenant(scenario):
    trace = generate_trace(scenario.workload)
    result = simulate(scenario, trace)
    assert result.completed.all()
    wait = result.start_s - trace.arrival_s
    return {t.id: float(wait[result.tenant_index == i].mean())
            for i, t in enumerate(scenario.tenants)}


def test_mean_wait_matches_pollaczek_khinchine_at_load_0_6():
    lam = 0.6
    waits = mean_wait_by_tenant(mm1_like_scenario([("only", lam, 1.0)]))
    rho = lam * SERVICE_MEAN
    expected = lam * SERVICE_SECOND_MOMENT / (2 * (1 - rho))  # 1.494 s
    assert waits["only"] == pytest.approx(expected, rel=0.03)


def test_two_bid_classes_match_cobhams_non_preemptive_priority_formula():
    lam_high = lam_low = 0.3
    waits = mean_wait_by_tenant(mm1_like_scenario([("high", lam_high, 2.0),
                                                   ("low", lam_low, 1.0)]))
    rho_high, rho = lam_high * SERVICE_MEAN, (lam_high + lam_low) * SERVICE_MEAN
    residual = (lam_high + lam_low) * SERVICE_SECOND_MOMENT / 2
    expected_high = residual / (1 - rho_high)                 # 0.854 s
    expected_low = residual / ((1 - rho_high) * (1 - rho))    # 2.134 s
    assert waits["high"] == pytest.approx(expected_high, rel=0.03)
    assert waits["low"] == pytest.approx(expected_low, rel=0.03)
    # and the classes really differ: the check is not vacuous
    assert waits["low"] > 2 * waits["high"]


def test_geometric_service_moments_are_what_the_formulas_assume():
    rng = np.random.default_rng(0)
    service = rng.geometric(P, size=400_000) / 128
    assert service.mean() == pytest.approx(SERVICE_MEAN, rel=0.01)
    assert (service**2).mean() == pytest.approx(SERVICE_SECOND_MOMENT, rel=0.02)
