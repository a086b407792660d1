"""Several GPUs against Erlang C: the M/M/c queue.

Set-up: max_batch_size 1, batch_window_ms 0, rate limits that never bind, one tenant with Poisson
arrivals (the workload generator), prompt 0 tokens and output K ~ Geometric(p) on {1, 2, ...}
with p = 1/1000, decoded alone at r = 1000 tokens/s (batch_speedup a + b*sqrt(1) = 1). A batch
of one is then a server with service time S = K / r:

    E[S]   = 1/(p r)             = 1 s       (mu = 1 per second)
    E[S^2] = (2 - p)/(p^2 r^2)   = 1.999 s^2 (an exponential with mean 1 s has 2)
    SCV    = E[S^2]/E[S]^2 - 1   = 1 - p = 0.999

so S is the exponential service of M/M/c up to its discreteness (K = ceil of an exponential).
Erlang C with a = lambda/mu and rho = a/c:

    P(wait) = C(c, a) = (a^c/c!)/(1 - rho) / (sum_{k<c} a^k/k! + (a^c/c!)/(1 - rho))
    W_q     = C(c, a) / (c mu - lambda)

At rho = 0.7 that is W_q = 0.9608 s for c = 2 and 0.3572 s for c = 4. The M/G/c correction for
the service's SCV, (1 + SCV)/2 = 0.9995, is far inside the 3% tolerance. One million requests
per case keep the sampling error (about 0.9% standard deviation, measured over 24 seeds at
200,000 requests and scaled) well inside it too.
"""

import math

import numpy as np
import pytest
from conftest import doc_text
from helpers import make_scenario

from apslab.io.workload import generate_trace
from apslab.sim.run import simulate

DECODE_RATE = 1000.0  # tokens/s, one request alone
MEAN_OUTPUT = 1000  # tokens
P = 1 / MEAN_OUTPUT
SERVICE_MEAN = MEAN_OUTPUT / DECODE_RATE  # 1 s
SERVICE_SECOND_MOMENT = (2 - P) / P**2 / DECODE_RATE**2  # 1.999 s^2
LOAD = 0.7
REQUESTS = 1_000_000
SEED = 2024


def erlang_c(servers: int, offered: float) -> float:
    """P(an arrival waits) in M/M/c with ``offered`` = lambda/mu Erlangs."""
    rho = offered / servers
    top = offered**servers / math.factorial(servers) / (1 - rho)
    return top / (sum(offered**k / math.factorial(k) for k in range(servers)) + top)


def erlang_c_mean_wait(servers: int, arrival_rate: float, service_rate: float) -> float:
    return erlang_c(servers, arrival_rate / service_rate) / (servers * service_rate
                                                             - arrival_rate)


def mmc_scenario(gpus: int, requests: int = REQUESTS, seed: int = SEED):
    rate = LOAD * gpus / SERVICE_MEAN
    return make_scenario(
        [("only", 1e12, 1e12)],
        gpu={"decode_tokens_per_s": DECODE_RATE, "prefill_tokens_per_s": 1024.0,
             "batch_speedup": [0.4, 0.6]},
        scheduler={"max_batch_size": 1, "batch_window_ms": 0.0, "aging_per_s": 0.0},
        cluster={"gpus": gpus},
        workload={"duration_s": requests / rate, "seed": seed,
                  "tenants": [{"id": "only", "arrival_rate_per_s": rate, "prompt_tokens": 0,
                               "output_tokens": {"dist": "geometric", "mean": MEAN_OUTPUT}}]},
    )


def simulated_mean_wait(gpus: int) -> float:
    scenario = mmc_scenario(gpus)
    result = simulate(scenario, generate_trace(scenario.workload))
    assert result.completed.all()
    assert len(result.reason) > 0.99 * REQUESTS
    # every GPU served: the queue is shared, not pinned to GPU 0
    assert sorted(set(result.batch_gpu.tolist())) == list(range(gpus))
    return float(result.queue_wait_s.mean())


@pytest.fixture(scope="module")
def comparison():
    """{c: (Erlang C P(wait), Erlang C mean wait, simulated mean wait)} for c = 2 and 4."""
    rows = {}
    for gpus in (2, 4):
        rate = LOAD * gpus / SERVICE_MEAN
        rows[gpus] = (erlang_c(gpus, rate * SERVICE_MEAN),
                      erlang_c_mean_wait(gpus, rate, 1 / SERVICE_MEAN),
                      simulated_mean_wait(gpus))
    return rows


def doc_rows(comparison) -> list[str]:
    """docs/simulator.md's table rows for these figures."""
    lines = []
    for gpus, (p_wait, expected, simulated) in comparison.items():
        rate = LOAD * gpus / SERVICE_MEAN
        lines.append(f"| {gpus} | {rate:.1f} | {LOAD} | {p_wait:.4f} | {expected:.4f} | "
                     f"{simulated:.4f} | {simulated / expected - 1:+.2%} |")
    return lines


def test_erlang_c_formula_reduces_to_known_cases():
    # c = 1 is M/M/1: P(wait) = rho, W_q = rho / (mu - lambda)
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert erlang_c_mean_wait(1, 0.7, 1.0) == pytest.approx(0.7 / 0.3)
    # c = 2 has the closed form W_q = rho^2 / (mu (1 - rho^2))
    assert erlang_c_mean_wait(2, 1.4, 1.0) == pytest.approx(0.49 / 0.51)
    assert erlang_c_mean_wait(4, 2.8, 1.0) == pytest.approx(0.357212, rel=1e-5)


def test_service_moments_are_what_the_comparison_assumes():
    rng = np.random.default_rng(0)
    service = rng.geometric(P, size=2_000_000) / DECODE_RATE
    assert service.mean() == pytest.approx(SERVICE_MEAN, rel=0.005)
    assert (service**2).mean() == pytest.approx(SERVICE_SECOND_MOMENT, rel=0.01)
    # one request decoding alone runs at exactly the decode rate
    scenario = mmc_scenario(2)
    assert scenario.gpu.service_time_s(0, 1000, 1) == 1.0


@pytest.mark.parametrize("gpus", [2, 4])
def test_mean_queue_wait_matches_erlang_c_at_load_0_7(comparison, gpus):
    _, expected, simulated = comparison[gpus]
    assert simulated == pytest.approx(expected, rel=0.03)


def test_the_comparison_is_not_vacuous(comparison):
    # pooling matters: two and four GPUs at the same load wait far less than one GPU (M/M/1:
    # rho/(mu - lambda) = 2.33 s), and differently from each other
    mm1 = erlang_c_mean_wait(1, LOAD, 1.0)
    assert comparison[2][2] < 0.5 * mm1
    assert comparison[4][2] < 0.5 * comparison[2][2]


def test_simulator_doc_shows_these_figures(comparison):
    page = doc_text("docs/simulator.md")
    for row in doc_rows(comparison):
        assert row in page, f"docs/simulator.md lacks the Erlang C row {row!r}"
