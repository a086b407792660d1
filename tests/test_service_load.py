"""The service under load, as a real ``apslab serve`` process (uvicorn on a free loopback port).

2,000 requests from 8 tenants with mixed bids, 64 in flight, time_scale 0.001: every request is
answered exactly once, the token buckets, batch size and KV capacity hold, and /metrics and the
Prometheus text count exactly what the clients saw. Then SIGINT: waiting clients are finished
or answered 503 and the process exits cleanly.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter

import httpx
import numpy as np
import pytest
from helpers import serve
from prometheus_client.parser import text_string_to_metric_families

from apslab.io.scenario import load_scenario
from apslab.serve.load import (
    batch_violations,
    bucket_violations,
    format_figures,
    mixed_load,
    run_load,
)

TENANTS = [  # (id, rate_limit tokens/s, burst_cap tokens): from starved to unlimited-ish
    ("t0", 2.0, 1000.0), ("t1", 5.0, 1500.0), ("t2", 10.0, 2000.0), ("t3", 20.0, 3000.0),
    ("t4", 50.0, 4000.0), ("t5", 100.0, 4000.0), ("t6", 1000.0, 4000.0), ("t7", 1e5, 4000.0),
]
LOAD_SCENARIO = """\
[gpu]
kv_cache_gib = 2.0          # 4096 tokens: big batches of big requests hit the KV bound

[scheduler]
batch_window_ms = 10.0
max_batch_size = 12
aging_per_s = 0.2
max_queue_length = 40
""" + "".join(f'\n[[tenants]]\nid = "{t}"\nrate_limit = {r}\nburst_cap = {b}\n'
              for t, r, b in TENANTS)
TIME_SCALE = 0.001


def test_two_thousand_requests_from_eight_tenants(tmp_path):
    scenario_path = tmp_path / "load.toml"
    scenario_path.write_text(LOAD_SCENARIO)
    scenario = load_scenario(scenario_path)
    kv_capacity = scenario.gpu.kv_capacity_tokens
    max_batch = scenario.scheduler.max_batch_size
    bodies = mixed_load([t for t, _r, _b in TENANTS], 2000, seed=1, prompt_tokens=(16, 400),
                        output_tokens=(8, 200), unknown_fraction=0.01, oversized_fraction=0.01,
                        oversized_tokens=kv_capacity + 1)

    with serve(scenario_path, "--time-scale", TIME_SCALE, "--drain-s", 2) as (proc, url):
        result = asyncio.run(asyncio.wait_for(
            run_load(url, bodies, concurrency=64, timeout_s=30), timeout=300))
        metrics = httpx.get(url + "/metrics", timeout=30).json()
        prometheus = httpx.get(url + "/metrics/prometheus", timeout=30).text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr
    print("\n" + format_figures(result))
    print(f"  formation lag (model s): {metrics['service']['formation_lag_s']}")

    # Every request was answered, once, with one of the documented statuses.
    status = result.status
    assert len(status) == 2000
    assert set(status.tolist()) <= {200, 404, 422, 429, 503}, Counter(status.tolist())
    assert all(p and "error" not in p for p in result.payloads)
    seen = Counter(status.tolist())
    assert seen[200] > 0 and seen[429] > 0 and seen[404] > 0 and seen[422] > 0
    reasons = Counter(p["reason"] for p in result.payloads if "reason" in p)
    assert reasons["exceeds_kv_capacity"] == seen[422]
    assert reasons["rate_limited"] == seen[429] and reasons["unknown_tenant"] == seen[404]
    assert reasons["queue_full"] == seen[503]  # nothing was cut short by a shutdown

    # The token buckets: over any stretch of a tenant's admitted arrivals, what it got
    # admitted is at most burst_cap + rate_limit x the stretch; hence also over the whole run.
    ok = result.ok
    tenant = np.array([b["tenant_id"] for b in result.bodies])
    cost = np.array([b["prompt_tokens"] + b["output_tokens"] for b in result.bodies])
    assert bucket_violations(result, scenario) == []
    for tenant_id, rate, burst in TENANTS:
        assert cost[ok & (tenant == tenant_id)].sum() <= burst + rate * result.wall_s / TIME_SCALE
    assert not ok[tenant == "t0"].all()  # the starved tenant was limited

    # Batches: every member answered (so the responses per batch are the whole batch), within
    # max_batch_size and the KV capacity, one GPU, one start and one finish.
    assert batch_violations(result, scenario) == []
    members = Counter(result.payloads[i]["batch_id"] for i in np.flatnonzero(ok).tolist())
    assert sorted(members) == list(range(len(members)))  # no batch went unanswered
    assert max(members.values()) > 1
    assert max(members.values()) <= max_batch

    # /metrics and Prometheus count exactly what the clients saw.
    assert metrics["service"]["responses"] == {str(k): v for k, v in sorted(seen.items())}
    req = metrics["requests"]
    assert req["submitted"] == 2000 and req["completed"] == seen[200]
    assert req["rejected_by_reason"] == {
        "rate_limited": seen[429], "exceeds_burst": 0, "exceeds_kv_capacity": seen[422],
        "unknown_tenant": seen[404], "queue_full": seen[503]}
    assert metrics["batches"]["count"] == len(members)
    for tenant_id, _rate, _burst in TENANTS:
        row = metrics["tenants"][tenant_id]
        assert row["submitted"] == int((tenant == tenant_id).sum())
        assert row["completed"] == int((ok & (tenant == tenant_id)).sum())
    families = {f.name: f for f in text_string_to_metric_families(prometheus)}
    counted = Counter()
    for sample in families["apslab_requests"].samples:
        if sample.name == "apslab_requests_total":
            counted[int(sample.labels["status"])] += int(sample.value)
    assert counted == seen
    latency_count = sum(s.value for s in families["apslab_latency_seconds"].samples
                        if s.name == "apslab_latency_seconds_count")
    assert latency_count == seen[200]
    batches = [s.value for s in families["apslab_batches"].samples
               if s.name == "apslab_batches_total"]
    assert batches == [len(members)]


def test_sigint_finishes_what_it_can_and_answers_the_rest_503(tmp_path):
    """A real server stopped mid-queue: the running batch and the one behind it finish within
    the drain, the long one waiting after them gets 503, nobody hangs, exit status 0."""
    scenario_path = tmp_path / "slow.toml"
    scenario_path.write_text(
        '[gpu]\nprefill_tokens_per_s = 1.0\ndecode_tokens_per_s = 1.0\n'
        '[scheduler]\nmax_batch_size = 1\nbatch_window_ms = 0.0\n'
        '[[tenants]]\nid = "A"\nrate_limit = 1e6\nburst_cap = 1e6\n')
    # time scale 0.01: 50 output tokens = 0.5 s of wall time, 30 = 0.3 s, 500 = 5 s.
    jobs = [{"tenant_id": "A", "output_tokens": n, "priority_bid": bid}
            for n, bid in ((50, 3.0), (30, 2.0), (500, 1.0))]

    async def scenario_run(url, proc):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = asyncio.create_task(client.post("/infer", json=jobs[0]))
            for _ in range(1000):
                if (await client.get("/metrics")).json()["service"]["gpus_busy"] == 1:
                    break
                await asyncio.sleep(0.005)
            rest = [asyncio.create_task(client.post("/infer", json=job)) for job in jobs[1:]]
            for _ in range(1000):
                if (await client.get("/metrics")).json()["service"]["queue_length"] == 2:
                    break
                await asyncio.sleep(0.005)
            proc.send_signal(signal.SIGINT)
            return await asyncio.wait_for(asyncio.gather(first, *rest), timeout=30)

    with serve(scenario_path, "--time-scale", 0.01, "--drain-s", 1.0) as (proc, url):
        answers = asyncio.run(scenario_run(url, proc))
        assert proc.wait(timeout=30) == 0
        stderr = proc.stderr.read()
    assert [a.status_code for a in answers] == [200, 200, 503], [a.text for a in answers]
    assert answers[2].json()["reason"] == "shutting_down"
    assert answers[1].json()["batch_id"] == 1
    assert "Traceback" not in stderr and "Cancel" not in stderr, stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz", timeout=2)
    json.dumps([a.json() for a in answers])  # every answer is a JSON body
