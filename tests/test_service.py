"""The live service in-process: every status code, the scheduling rules in real time, /metrics,
Prometheus, shutdown, and agreement with the simulator on the same arrivals.

The app runs on an httpx AsyncClient over ASGITransport inside ``asyncio.run`` (its lifespan
starts and drains the scheduler), so the requests reach the real FastAPI routes.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest
from helpers import make_scenario, make_trace
from prometheus_client.parser import text_string_to_metric_families

from apslab.cli import main as cli_main
from apslab.core._gc import paused_gc
from apslab.io.scenario import parse_scenario
from apslab.serve.service import LiveScheduler, create_app, start_in_thread
from apslab.sim.run import simulate

RESPONSE_KEYS = {"request_id", "tenant_id", "queue_wait_ms", "latency_ms", "batch_id",
                 "batch_size", "prompt_tokens", "output_tokens", "arrival_s", "gpu", "priority_bid"}
# A GPU fast enough that a small batch takes a few model milliseconds.
FAST_GPU = {"prefill_tokens_per_s": 1e5, "decode_tokens_per_s": 1e4}


@asynccontextmanager
async def live(scenario, **kwargs):
    app = create_app(scenario, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://apslab.test",
                                     timeout=30) as client:
            yield app.state.scheduler, client


def run(coroutine):
    return asyncio.run(coroutine)


async def wait_until(predicate, timeout_s=10.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.001)


# --------------------------------------------------------------------------------------------
# 200


def test_a_lone_request_runs_one_window_later_for_the_gpu_models_service_time():
    scenario = make_scenario(tenants=(("A", 1000.0, 5000.0),))

    async def go():
        async with live(scenario, time_scale=0.01) as (_sched, client):
            return await client.post("/infer", json={"tenant_id": "A", "prompt_tokens": 300,
                                                     "output_tokens": 40, "priority_bid": 2})

    response = run(go())
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == RESPONSE_KEYS
    assert (body["tenant_id"], body["prompt_tokens"], body["output_tokens"]) == ("A", 300, 40)
    assert (body["batch_id"], body["batch_size"], body["gpu"]) == (0, 1, 0)
    assert body["queue_wait_ms"] >= scenario.scheduler.batch_window_ms
    service_ms = scenario.gpu.service_time_s(300, 40, 1) * 1000
    assert body["latency_ms"] - body["queue_wait_ms"] == pytest.approx(service_ms, rel=1e-9)


def test_tokens_requested_is_an_alias_and_the_bid_defaults_to_the_tenants():
    scenario = parse_scenario({"gpu": FAST_GPU, "tenants": [
        {"id": "A", "rate_limit": 1e4, "burst_cap": 1e5, "priority_bid": 3.0}]})

    async def go():
        async with live(scenario, time_scale=0.01) as (sched, client):
            first = await client.post("/infer", json={"tenant_id": "A", "tokens_requested": 7})
            default_bid = sched.settled.bid[-1]
            second = await client.post("/infer", json={"tenant_id": "A", "output_tokens": 7,
                                                       "priority_bid": 0.5})
            return first, default_bid, second, sched.settled.bid[-1]

    first, default_bid, second, explicit_bid = run(go())
    assert first.status_code == second.status_code == 200
    assert first.json()["output_tokens"] == 7 and first.json()["prompt_tokens"] == 0
    assert default_bid == 3.0 and explicit_bid == 0.5


# --------------------------------------------------------------------------------------------
# 4xx


MALFORMED = [
    ({"tenant_id": "A", "prompt_token": 5, "output_tokens": 5}, ["prompt_token"],
     "did you mean 'prompt_tokens'?"),
    ({"tenant_id": "A"}, ["output_tokens"], "Field required"),
    ({"tenant_id": "A", "output_tokens": -1}, ["output_tokens"], "greater than or equal to 0"),
    ({"tenant_id": "A", "output_tokens": 2.5}, ["output_tokens"], "valid integer"),
    ({"tenant_id": "A", "output_tokens": "10"}, ["output_tokens"], "valid integer"),
    ({"tenant_id": "A", "output_tokens": True}, ["output_tokens"], "valid integer"),
    ({"tenant_id": "A", "output_tokens": 2**60}, ["output_tokens"], "less than or equal"),
    ({"tenant_id": "A", "output_tokens": 5, "tokens_requested": 5}, ["tokens_requested"],
     "unknown key"),
    ({"tenant_id": "", "output_tokens": 5}, ["tenant_id"], "at least 1 character"),
    ({"tenant_id": 7, "output_tokens": 5}, ["tenant_id"], "valid string"),
    ({"tenant_id": "A", "output_tokens": 5, "priority_bid": -1}, ["priority_bid"],
     "greater than or equal to 0"),
    ([{"tenant_id": "A", "output_tokens": 5}], [], "valid dictionary"),
]


def test_malformed_bodies_get_422_naming_the_key_and_are_counted():
    scenario = make_scenario(tenants=(("A", 1000.0, 5000.0),))
    raw = [
        (b'{"tenant_id": "A", "output_tokens": 5, "priority_bid": NaN}', "application/json",
         ["priority_bid"], "finite number"),
        (b'{"tenant_id": "A", "output_tokens": 5, "priority_bid": 1e999}', "application/json",
         ["priority_bid"], "finite number"),
        (b"not json", "application/json", [0], "JSON decode error"),
        (b'{"tenant_id": "A", "output_tokens": 5}', "text/plain", [], "Content-Type"),
    ]

    async def go():
        async with live(scenario, time_scale=0.01) as (_sched, client):
            answers = [await client.post("/infer", json=body) for body, _loc, _msg in MALFORMED]
            answers += [await client.post("/infer", content=body,
                                          headers={"content-type": content_type})
                        for body, content_type, _loc, _msg in raw]
            return answers, (await client.get("/metrics")).json()

    answers, metrics = run(go())
    expected = [(loc, msg) for _body, loc, msg in MALFORMED] + [(loc, msg) for *_x, loc, msg in raw]
    for response, (loc, message) in zip(answers, expected, strict=True):
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert any(error["loc"] == loc for error in detail), (loc, detail)
        assert any(message in error["msg"] for error in detail), (message, detail)
        assert "input" not in json.dumps(detail)  # the input is never echoed back
    assert metrics["service"]["responses"] == {"422": len(answers)}
    assert metrics["requests"]["submitted"] == 0


def test_unknown_tenant_is_404_with_a_suggestion():
    scenario = make_scenario(tenants=(("premium", 1000.0, 5000.0), ("batch", 100.0, 2000.0)))

    async def go():
        async with live(scenario, time_scale=0.01) as (_sched, client):
            return await client.post("/infer", json={"tenant_id": "premum", "output_tokens": 5})

    response = run(go())
    assert response.status_code == 404
    body = response.json()
    assert body["reason"] == "unknown_tenant" and body["tenant_id"] == "premum"
    assert "did you mean 'premium'?" in body["detail"]


def test_requests_that_can_never_run_are_422_saying_why():
    scenario = make_scenario(tenants=(("A", 100.0, 1000.0),), gpu={"kv_cache_gib": 1.0})
    assert scenario.gpu.kv_capacity_tokens == 2048

    async def go():
        async with live(scenario, time_scale=0.01) as (_sched, client):
            kv = await client.post("/infer", json={"tenant_id": "A", "prompt_tokens": 2000,
                                                   "output_tokens": 100})
            burst = await client.post("/infer", json={"tenant_id": "A", "prompt_tokens": 1000,
                                                      "output_tokens": 1})
            fits = await client.post("/infer", json={"tenant_id": "A", "prompt_tokens": 999,
                                                     "output_tokens": 1})
            return kv, burst, fits

    kv, burst, fits = run(go())
    assert kv.status_code == burst.status_code == 422
    assert kv.json()["reason"] == "exceeds_kv_capacity"  # checked before the burst cap
    assert "2100" in kv.json()["detail"] and "2048" in kv.json()["detail"]
    assert burst.json()["reason"] == "exceeds_burst"
    assert "1001" in burst.json()["detail"]
    assert "burst_cap of tenant 'A' (1000 tokens)" in burst.json()["detail"]
    assert fits.status_code == 200  # exactly the burst cap is admitted by a full bucket


def test_rate_limited_is_429_with_retry_after_in_wall_seconds():
    scenario = make_scenario(tenants=(("A", 100.0, 1000.0),), gpu=FAST_GPU)
    request = {"tenant_id": "A", "prompt_tokens": 400, "output_tokens": 100}

    async def go(time_scale):
        async with live(scenario, time_scale=time_scale) as (sched, client):
            drain = await client.post("/infer", json={"tenant_id": "A", "prompt_tokens": 1000,
                                                      "output_tokens": 0})
            limited = await client.post("/infer", json=request)
            now = sched.now()
            retry = None
            if time_scale < 1:
                await asyncio.sleep(float(limited.json()["retry_after_s"]))
                retry = await client.post("/infer", json=request)
            return drain, limited, now, retry

    drain, limited, now, _ = run(go(1.0))
    assert drain.status_code == 200 and limited.status_code == 429
    body = limited.json()
    assert body["reason"] == "rate_limited"
    # The bucket emptied at the first arrival and refills at 100 tokens/s: 500 tokens are there
    # 5 s after it, minus the time that passed before the second arrival.
    expected = (500 - (body["arrival_s"] - drain.json()["arrival_s"]) * 100) / 100
    assert body["retry_after_s"] == pytest.approx(expected, rel=1e-9)
    assert 4.5 < expected <= 5.0 and now >= body["arrival_s"]
    assert limited.headers["retry-after"] == str(math.ceil(body["retry_after_s"]))

    drain, limited, _now, retry = run(go(0.01))  # wall = model x 0.01
    assert limited.status_code == 429
    assert limited.json()["retry_after_s"] == pytest.approx(
        (500 - (limited.json()["arrival_s"] - drain.json()["arrival_s"]) * 100) / 100 * 0.01)
    assert limited.headers["retry-after"] == "1"  # whole seconds, rounded up
    assert retry.status_code == 200  # waiting retry_after_s was enough


# --------------------------------------------------------------------------------------------
# 503, shutdown, failure


SLOW_GPU = {"prefill_tokens_per_s": 1.0, "decode_tokens_per_s": 1.0}  # 1 token = 1 s alone


def test_queue_full_is_503_and_shutdown_answers_every_waiting_client():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), gpu=SLOW_GPU,
                             scheduler={"max_batch_size": 1, "max_queue_length": 2,
                                        "batch_window_ms": 0.0})
    job = {"tenant_id": "A", "output_tokens": 100}  # 100 model s on the GPU

    async def go():
        async with live(scenario, time_scale=1.0, drain_s=0.0) as (sched, client):
            running = asyncio.create_task(client.post("/infer", json=job))
            await wait_until(lambda: sched.gpus_busy == 1)
            waiting = [asyncio.create_task(client.post("/infer", json=job))
                       for _ in range(2)]
            await wait_until(lambda: len(sched.queue) == 2)
            full = await client.post("/infer", json=job)
            metrics = (await client.get("/metrics")).json()
            await sched.shutdown(0.0)  # what the lifespan does on exit
            late = await client.post("/infer", json=job)
            health = await client.get("/healthz")
            answers = await asyncio.wait_for(asyncio.gather(running, *waiting), 10)
            final = (await client.get("/metrics")).json()
        return full, metrics, late, health, answers, final

    full, metrics, late, health, answers, final = run(go())
    assert full.status_code == 503 and full.json()["reason"] == "queue_full"
    assert "max_queue_length" in full.json()["detail"]
    assert metrics["requests"]["rejected_by_reason"]["queue_full"] == 1
    assert metrics["service"]["in_flight"] == 3 and metrics["service"]["queue_length"] == 2
    assert metrics["service"]["kv_tokens_in_use"] == 100
    assert late.status_code == 503 and late.json()["reason"] == "shutting_down"
    assert health.status_code == 503 and health.json()["status"] == "shutting_down"
    assert [a.status_code for a in answers] == [503, 503, 503]
    assert all(a.json()["reason"] == "shutting_down" for a in answers)
    assert final["service"]["cancelled_at_shutdown"] == 3
    assert final["service"]["responses"] == {"503": 5}


def test_shutdown_finishes_what_completes_within_the_drain_and_503s_the_rest():
    # Each request is alone in its batch and takes 0.5 s; the drain allows 0.75 s from ~0.1 s.
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), gpu=SLOW_GPU,
                             scheduler={"max_batch_size": 1, "batch_window_ms": 0.0})
    job = {"tenant_id": "A", "output_tokens": 50}

    async def go():
        async with live(scenario, time_scale=0.01, drain_s=0.75) as (sched, client):
            first = asyncio.create_task(client.post("/infer", json=job))
            await wait_until(lambda: sched.gpus_busy == 1)
            second = asyncio.create_task(client.post("/infer", json=job))
            await wait_until(lambda: len(sched.queue) == 1)
            await asyncio.sleep(0.1)
            started = asyncio.get_running_loop().time()
            await sched.shutdown(0.75)
            took = asyncio.get_running_loop().time() - started
            return await first, await second, took

    first, second, took = run(go())
    assert first.status_code == 200
    assert second.status_code == 503 and second.json()["reason"] == "shutting_down"
    assert 0.7 <= took < 5.0


def test_a_scheduler_failure_answers_waiting_clients_500_instead_of_hanging():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),))

    async def go():
        async with live(scenario, time_scale=0.01) as (sched, client):
            def broken(queue, now_s):
                raise RuntimeError("batcher bug")

            object.__setattr__(sched, "batcher", type("B", (), {
                "form_batch": staticmethod(broken), "batch_window_s": 0.01})())
            answer = await asyncio.wait_for(
                client.post("/infer", json={"tenant_id": "A", "output_tokens": 5}), 10)
            after = await client.post("/infer", json={"tenant_id": "A", "output_tokens": 5})
            health = await client.get("/healthz")
            return answer, after, health

    answer, after, health = run(go())
    assert answer.status_code == 500 and "batcher bug" in answer.json()["detail"]
    assert after.status_code == 500
    assert health.status_code == 503 and health.json()["status"] == "failed"


# --------------------------------------------------------------------------------------------
# The scheduling rules in real time


def test_requests_admitted_within_one_window_share_a_batch():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), gpu=FAST_GPU,
                             scheduler={"batch_window_ms": 200.0})

    async def go():
        async with live(scenario, time_scale=1.0) as (_sched, client):
            return await asyncio.gather(*(
                client.post("/infer", json={"tenant_id": "A", "prompt_tokens": 10 * i,
                                            "output_tokens": 5}) for i in range(5)))

    answers = [r.json() for r in run(go())]
    assert {a["batch_id"] for a in answers} == {0}
    assert {a["batch_size"] for a in answers} == {5}
    latency = {a["latency_ms"] - a["queue_wait_ms"] for a in answers}
    service = scenario.gpu.service_time_s(100, 25, 5) * 1000
    assert all(value == pytest.approx(service, rel=1e-9) for value in latency)


def test_waiting_requests_run_in_bid_order():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), gpu=SLOW_GPU,
                             scheduler={"max_batch_size": 1, "batch_window_ms": 0.0},
                             tenant_keys={"max_bid": 4.0})
    bids = [1.0, 4.0, 2.0, 3.0]

    async def go():
        async with live(scenario, time_scale=0.01) as (sched, client):
            blocker = asyncio.create_task(
                client.post("/infer", json={"tenant_id": "A", "output_tokens": 30}))
            await wait_until(lambda: sched.gpus_busy == 1)
            waiting = []
            for count, bid in enumerate(bids, start=1):
                waiting.append(asyncio.create_task(client.post(
                    "/infer", json={"tenant_id": "A", "output_tokens": 1, "priority_bid": bid})))
                await wait_until(lambda n=count: len(sched.queue) == n)
            assert sched.gpus_busy == 1  # all four queued behind the blocker
            return await blocker, await asyncio.gather(*waiting)

    blocker, answers = run(go())
    assert blocker.json()["batch_id"] == 0
    order = sorted(range(len(bids)), key=lambda i: answers[i].json()["batch_id"])
    assert [bids[i] for i in order] == [4.0, 3.0, 2.0, 1.0]


def test_two_gpus_take_batches_side_by_side():
    # A window of 20 ms of wall time for the three requests to arrive in; 0.2 s batches.
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), gpu=SLOW_GPU,
                             scheduler={"max_batch_size": 1, "batch_window_ms": 200.0},
                             cluster={"gpus": 2})

    async def go():
        async with live(scenario, time_scale=0.1) as (_sched, client):
            return await asyncio.gather(*(client.post(
                "/infer", json={"tenant_id": "A", "output_tokens": 2}) for _ in range(3)))

    answers = [r.json() for r in run(go())]
    by_batch = sorted(answers, key=lambda a: a["batch_id"])
    assert [a["gpu"] for a in by_batch] == [0, 1, 0]
    start = [a["arrival_s"] + a["queue_wait_ms"] / 1000 for a in by_batch]
    finish = [a["arrival_s"] + a["latency_ms"] / 1000 for a in by_batch]
    assert start[0] == start[1]  # one formation instant, two GPUs
    assert start[2] >= finish[0]  # the third waited for a GPU


def test_the_service_batches_and_admits_as_the_simulator_does_on_the_same_arrivals():
    """Bursts separated by idle gaps: each burst lands inside one batch window, so the live
    service and the simulator, given the service's own arrival times, must make the same
    admission decisions and the same batches (time only shifts by the event loop's lag)."""
    scenario = parse_scenario({
        "gpu": FAST_GPU,
        "scheduler": {"batch_window_ms": 150.0, "max_batch_size": 3, "aging_per_s": 0.5},
        "tenants": [{"id": "gold", "rate_limit": 200.0, "burst_cap": 900.0, "max_bid": 3.0},
                    {"id": "free", "rate_limit": 50.0, "burst_cap": 400.0, "max_bid": 3.0}],
    })
    rng = np.random.default_rng(7)
    bursts = [[{"tenant_id": str(rng.choice(["gold", "free"])),
                "prompt_tokens": int(rng.integers(20, 200)),
                "output_tokens": int(rng.integers(5, 60)),
                "priority_bid": float(rng.choice([1.0, 2.0, 3.0]))} for _ in range(size)]
              for size in (5, 7, 4, 6)]

    async def go():
        answers = []
        async with live(scenario, time_scale=1.0) as (sched, client):
            for burst in bursts:
                answers += await asyncio.gather(*(client.post("/infer", json=b) for b in burst))
                await wait_until(lambda: sched.in_flight == 0)
                await asyncio.sleep(0.05)
        return answers

    # A burst must land inside one 150 ms window: a full garbage collection of the test
    # process (tens of milliseconds once many apps have been built) must not split it.
    with paused_gc():
        answers = run(go())
    bodies = [b for burst in bursts for b in burst]
    payloads = [a.json() for a in answers]
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}, statuses  # the limiter must have had work to do
    order = sorted(range(len(bodies)), key=lambda i: payloads[i]["request_id"])
    trace = make_trace([(payloads[i]["arrival_s"], bodies[i]["tenant_id"],
                         bodies[i]["prompt_tokens"], bodies[i]["output_tokens"],
                         bodies[i]["priority_bid"]) for i in order])
    result = simulate(scenario, trace)
    assert [statuses[i] == 200 for i in order] == result.completed.tolist()
    live_batches = {}
    for row, i in enumerate(order):
        if statuses[i] == 200:
            live_batches.setdefault(payloads[i]["batch_id"], set()).add(row)
    simulated = {}
    for row, batch in enumerate(result.batch_id.tolist()):
        if batch >= 0:
            simulated.setdefault(batch, set()).add(row)
    assert list(live_batches.values()) == [simulated[b] for b in sorted(simulated)]
    assert sorted(live_batches) == sorted(simulated)  # same batch ids, in the same order


# --------------------------------------------------------------------------------------------
# /metrics, Prometheus, /healthz


def mixed_session(scenario, bodies, time_scale=0.01):
    async def go():
        async with live(scenario, time_scale=time_scale) as (sched, client):
            answers = await asyncio.gather(*(client.post("/infer", json=b) for b in bodies))
            await client.post("/infer", json={"tenant_id": "A"})  # a malformed one
            await wait_until(lambda: sched.in_flight == 0)
            metrics = (await client.get("/metrics")).json()
            prometheus = await client.get("/metrics/prometheus")
            health = await client.get("/healthz")
        return answers, metrics, prometheus, health

    return run(go())


MIXED_SCENARIO = dict(tenants=(("A", 200.0, 1500.0), ("B", 100.0, 800.0)),
                      scheduler={"max_batch_size": 4})


def mixed_bodies():
    rng = np.random.default_rng(3)
    bodies = [{"tenant_id": str(rng.choice(["A", "B", "C"], p=[0.5, 0.4, 0.1])),
               "prompt_tokens": int(rng.integers(10, 300)),
               "output_tokens": int(rng.integers(1, 80)),
               "priority_bid": float(rng.choice([1.0, 2.0]))} for _ in range(40)]
    bodies.append({"tenant_id": "A", "prompt_tokens": 1600, "output_tokens": 1})  # over burst
    return bodies


def test_metrics_agree_with_what_the_clients_saw():
    scenario = make_scenario(**MIXED_SCENARIO)
    bodies = mixed_bodies()
    answers, metrics, _prometheus, _health = mixed_session(scenario, bodies)
    status = np.array([a.status_code for a in answers])
    payload = [a.json() for a in answers]
    assert set(status.tolist()) == {200, 404, 422, 429}

    counts = {str(code): int((status == code).sum()) for code in set(status.tolist())}
    counts["422"] += 1  # the malformed body
    assert metrics["service"]["responses"] == counts
    req = metrics["requests"]
    assert req["submitted"] == len(bodies) and req["completed"] == int((status == 200).sum())
    assert req["rejected_by_reason"] == {
        "rate_limited": int((status == 429).sum()), "unknown_tenant": int((status == 404).sum()),
        "exceeds_burst": 1, "exceeds_kv_capacity": 0}

    # Recompute the seed's figures from the responses alone.
    ok = status == 200
    arrival = np.array([p["arrival_s"] for p in payload])
    finish = np.array([p["arrival_s"] + p["latency_ms"] / 1000
                       for p, k in zip(payload, ok, strict=True) if k])
    elapsed = finish.max() - arrival.min()
    assert metrics["elapsed_s"] == pytest.approx(elapsed, rel=1e-9)
    output = sum(b["output_tokens"] for b, k in zip(bodies, ok, strict=True) if k)
    assert metrics["throughput_tokens_per_s"] == pytest.approx(output / elapsed, rel=1e-9)
    assert metrics["cost_per_million_tokens"] == pytest.approx(
        scenario.gpu.price_per_hour / 3600 / (output / elapsed) * 1e6, rel=1e-9)
    service = {p["batch_id"]: (p["latency_ms"] - p["queue_wait_ms"]) / 1000
               for p, k in zip(payload, ok, strict=True) if k}
    assert metrics["gpu_utilization"] == pytest.approx(sum(service.values()) / elapsed, rel=1e-6)
    assert metrics["batches"]["count"] == len(service)
    latency = np.array([p["latency_ms"] / 1000 for p, k in zip(payload, ok, strict=True) if k])
    assert metrics["latency_s"]["p99"] == pytest.approx(np.percentile(latency, 99), rel=1e-9)
    tokens = {t: sum(b["prompt_tokens"] + b["output_tokens"]
                     for b, k in zip(bodies, ok, strict=True) if k and b["tenant_id"] == t)
              for t in ("A", "B")}
    x = np.array(list(tokens.values()), dtype=float)
    assert metrics["jain_fairness"] == pytest.approx(x.sum() ** 2 / (2 * (x ** 2).sum()))
    for tenant in ("A", "B"):
        mine = [i for i, b in enumerate(bodies) if b["tenant_id"] == tenant]
        row = metrics["tenants"][tenant]
        assert row["submitted"] == len(mine)
        assert row["completed"] == int(ok[mine].sum())
        assert row["tokens_completed"] == tokens[tenant]
        tenant_latency = [payload[i]["latency_ms"] / 1000 for i in mine if ok[i]]
        assert metrics["tenant_latency_s"][tenant]["p50"] == pytest.approx(
            np.percentile(tenant_latency, 50), rel=1e-9)
    assert metrics["service"]["in_flight"] == 0 and metrics["service"]["time_scale"] == 0.01


def test_prometheus_text_parses_and_counts_what_the_clients_saw():
    scenario = make_scenario(**MIXED_SCENARIO)
    bodies = mixed_bodies()
    answers, _metrics, prometheus, _health = mixed_session(scenario, bodies)
    assert prometheus.status_code == 200
    assert prometheus.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(prometheus.text)}
    assert {"apslab_requests", "apslab_rejections", "apslab_queue_wait_seconds",
            "apslab_latency_seconds", "apslab_queue_length", "apslab_kv_tokens_in_use",
            "apslab_gpu_busy_seconds", "apslab_batches"} <= set(families)

    def samples(name, suffix=""):
        return [s for s in families[name].samples if s.name == name + suffix]

    by_status: dict[str, float] = {}
    for sample in samples("apslab_requests", "_total"):
        by_status[sample.labels["status"]] = by_status.get(sample.labels["status"], 0) + \
            sample.value
    seen = {}
    for answer in answers:
        seen[str(answer.status_code)] = seen.get(str(answer.status_code), 0) + 1
    seen["422"] += 1
    assert by_status == seen
    done = {t: sum(1 for a, b in zip(answers, bodies, strict=True)
                   if a.status_code == 200 and b["tenant_id"] == t) for t in ("A", "B")}
    latency_counts = {s.labels["tenant"]: s.value
                      for s in samples("apslab_latency_seconds", "_count")}
    assert latency_counts == done
    ok = [a.json() for a in answers if a.status_code == 200]
    service = {p["batch_id"]: (p["latency_ms"] - p["queue_wait_ms"]) / 1000 for p in ok}
    busy = sum(s.value for s in samples("apslab_gpu_busy_seconds", "_total"))
    assert busy == pytest.approx(sum(service.values()), rel=1e-6)
    assert samples("apslab_queue_length")[0].value == 0
    assert samples("apslab_kv_tokens_in_use")[0].value == 0


def test_healthz_reports_the_scenario():
    scenario = make_scenario(**MIXED_SCENARIO)
    _answers, _metrics, _prometheus, health = mixed_session(scenario, [])
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "scenario": "<test>", "tenants": ["A", "B"],
                             "gpus": 1, "time_scale": 0.01, "engine": "static",
                             "model": "Llama-2-7B", "authentication": "none"}


def test_metrics_cover_a_bounded_window_of_recent_requests():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),))

    async def go():
        sched = LiveScheduler(scenario, time_scale=0.01, history=5)
        await sched.start()
        for _ in range(23):
            sched.submit("nobody", 1, 1)
        sizes = len(sched.settled)
        metrics = sched.metrics()
        await sched.shutdown(0)
        return sizes, metrics

    size, metrics = run(go())
    assert 5 <= size <= 10
    assert metrics["requests"]["submitted"] == size == metrics["service"]["window_requests"]


def test_bad_settings_are_input_errors():
    from apslab.io.errors import InputError

    scenario = make_scenario()
    for kwargs in ({"time_scale": 0}, {"time_scale": float("nan")}, {"drain_s": -1.0}):
        with pytest.raises(InputError):
            create_app(scenario, **kwargs)


# --------------------------------------------------------------------------------------------
# The command line and the background server


def test_serve_is_a_subcommand_and_simulate_does_not_import_fastapi():
    code = ("import sys; from apslab.cli import build_parser; p = build_parser(); "
            "p.parse_args(['serve', 'x.toml', '--port', '0']); "
            "print('fastapi' in sys.modules, 'uvicorn' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("args, message", [
    (["--time-scale", "0"], "--time-scale must be a finite number > 0"),
    (["--time-scale", "nan"], "--time-scale must be a finite number > 0"),
    (["--drain-s", "-1"], "--drain-s must be a finite number >= 0"),
    (["--port", "70000"], "--port must be between 0 and 65535"),
])
def test_serve_rejects_bad_options_with_exit_2(args, message, example_scenario_path, capsys):
    assert cli_main(["serve", str(example_scenario_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apslab: error: ") and message in err and err.count("\n") == 1


def test_serve_reports_a_bad_scenario_and_a_busy_port_with_exit_2(tmp_path,
                                                                   example_scenario_path,
                                                                   capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[tenants]]\nid = "A"\nrate_limt = 5.0\nburst_cap = 10.0\n')
    assert cli_main(["serve", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "rate_limt" in err and "did you mean 'rate_limit'" in err
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert cli_main(["serve", str(example_scenario_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


def test_start_in_thread_serves_on_a_free_loopback_port_and_stops():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), gpu=FAST_GPU)
    service = start_in_thread(scenario, time_scale=0.01)
    try:
        assert service.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=service.url, timeout=10) as client:
            assert client.get("/healthz").json()["status"] == "ok"
            answer = client.post("/infer", json={"tenant_id": "A", "output_tokens": 3})
            assert answer.status_code == 200 and answer.json()["batch_size"] == 1
    finally:
        assert service.stop()
    assert service.errors == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(service.url + "/healthz", timeout=2)


# --------------------------------------------------------------------------------------------
# The load tools' checks, the figures and the burst widget


def fabricated(rows, time_scale=1.0):
    """A LoadResult from (tenant, prompt, output, status, arrival_s, batch_id, batch_size)."""
    from apslab.serve.load import LoadResult

    bodies, status, payloads = [], [], []
    for i, (tenant, prompt, output, code, arrival, batch_id, size) in enumerate(rows):
        bodies.append({"tenant_id": tenant, "prompt_tokens": prompt, "output_tokens": output,
                       "priority_bid": 1.0})
        status.append(code)
        payload = {"request_id": i, "arrival_s": arrival}
        if code == 200:
            payload.update(batch_id=batch_id, batch_size=size, gpu=0, prompt_tokens=prompt,
                           output_tokens=output, queue_wait_ms=(10.0 - arrival) * 1000,
                           latency_ms=(20.0 - arrival) * 1000)
        payloads.append(payload)
    n = len(rows)
    return LoadResult(bodies, np.array(status), np.zeros(n), np.full(n, 0.01), payloads,
                      [None] * n, 1.0, time_scale, 4, ["A"])


def test_the_bucket_check_finds_a_tenant_admitted_beyond_its_bucket():
    from apslab.serve.load import bucket_violations

    scenario = make_scenario(tenants=(("A", 100.0, 1000.0),))
    fine = fabricated([("A", 700, 100, 200, 0.0, 0, 2), ("A", 700, 100, 200, 7.0, 0, 2),
                       ("A", 700, 100, 429, 7.5, None, None)])
    assert bucket_violations(fine, scenario) == []
    breach = fabricated([("A", 700, 100, 200, 0.0, 0, 2), ("A", 700, 100, 200, 1.0, 0, 2)])
    problems = bucket_violations(breach, scenario)
    assert len(problems) == 1 and "tenant 'A': 1600 tokens admitted" in problems[0]


def test_the_batch_check_finds_oversized_and_inconsistent_batches():
    from apslab.serve.load import batch_violations

    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), gpu={"kv_cache_gib": 1.0},
                             scheduler={"max_batch_size": 2})
    fine = fabricated([("A", 1000, 24, 200, 0.0, 0, 2), ("A", 1000, 24, 200, 1.0, 0, 2)])
    assert batch_violations(fine, scenario) == []
    bad = fabricated([("A", 1000, 100, 200, 0.0, 0, 2), ("A", 1000, 100, 200, 1.0, 0, 2),
                      ("A", 1, 1, 200, 2.0, 1, 2), ("A", 1, 1, 200, 2.0, 1, 3),
                      ("A", 1, 1, 200, 2.0, 1, 3)])
    problems = "\n".join(batch_violations(bad, scenario))
    assert "batch 0: 2200 KV tokens > capacity 2048" in problems
    assert "batch 1: 3 members answered" in problems
    assert "batch 1: 3 requests > max_batch_size 2" in problems


def test_the_burst_widget_sends_bursts_and_redraws():
    from apslab.serve.keys import generate_keys
    from apslab.serve.widgets import LiveBurstApp, live_traffic_figure

    scenario = make_scenario(tenants=(("A", 100.0, 1000.0), ("B", 1e5, 1e5)),
                             scheduler={"batching": "continuous"}, tenant_keys={"max_bid": 3.0})
    keys, store = generate_keys(["A", "B"])
    with start_in_thread(scenario, time_scale=0.01, keys=store) as service:
        app = LiveBurstApp(service.url, ["A", "B"], prompt_tokens=150, output_tokens=50,
                           keys=keys)
        assert app.artists == {} and "nothing sent yet" in app.status.value
        app.controls["requests"].value = 8
        app.controls["priority_bid"].value = 5.0
        assert "next burst: 8 requests from 'A' at bid 5 (1600 tokens)" in app.status.value
        first = app.send()  # 1600 tokens against A's bucket of 1000: some are rate-limited
        assert len(first) == 8 and set(first.status.tolist()) == {200, 429}
        assert (first.tokens[first.ok] == 50).all()
        app.controls["tenant"].value = "B"
        app.send_button.click()
        assert len(app.results) == 2
        timeline = app.artists["timeline"]
        assert timeline[200] + timeline[429] == 16 and timeline[429] == int(
            (first.status == 429).sum())
        assert app.artists["latency"]["bids"] == [3.0]  # asked 5, capped at max_bid
        assert app.artists["ttft"]["count"] == timeline[200]
        assert "sent so far: 16 requests" in app.status.value
        figure = live_traffic_figure(first)
        assert len(figure.axes) == 3
    # Without keys, to /infer on the static engine, as before.
    static = make_scenario(tenants=(("A", 100.0, 1000.0),), gpu=FAST_GPU)
    with start_in_thread(static, time_scale=0.01) as service:
        app = LiveBurstApp(service.url, ["A"], prompt_tokens=150, output_tokens=50, api="infer")
        app.controls["requests"].value = 3
        result = app.send()
        assert set(result.status.tolist()) == {200} and len(app.figure.axes) == 2
        assert len(live_traffic_figure(result).axes) == 2


def test_the_documented_example_is_what_the_service_answers():
    """docs/service.md's streamed example: the command and options exist, the README's tour
    shows the same commands, and the service answers the documented request with the same
    chunks: text, usage, and the engine's model times to the last digit that matters."""
    import re

    from conftest import DATA, doc_text, marked_block

    from apslab.cli import build_parser
    from apslab.io.scenario import load_scenario
    from apslab.serve.openai_api import Authenticator

    page = doc_text("docs/service.md")
    usage = next(line for line in page.splitlines() if line.strip().startswith("apslab serve"))
    options = re.findall(r"\[(--[a-z-]+) ([^\]]+)\]", usage)
    args = build_parser().parse_args(["serve", "x.toml", *[part for o in options for part in o]])
    assert args.func.__name__ == "run_serve" and len(options) == 7
    example = marked_block(page, "service-example", fenced=True)
    commands = [line for line in example.splitlines() if line.startswith(("$ ", "    -"))]
    assert len(commands) == 4 and commands[0] == "$ apslab serve data/scenarios/service.toml"
    readme_lines = doc_text("README.md").splitlines()
    for line in commands:
        assert line in readme_lines, f"the README's tour lacks {line!r}"
    scenario = load_scenario(DATA / "scenarios" / "service.toml")
    banner = [line for line in example.splitlines() if line.startswith("apslab serve:")]
    auth = Authenticator(None, scenario).describe()
    assert banner[1] == f"apslab serve: model 'Llama-2-7B'; {auth}"
    assert "continuous batching, time scale 1) listening on http://127.0.0.1:8000" in banner[0]
    request = json.loads(re.search(r"-d '(\{.*\})'", example).group(1))
    documented = [line.removeprefix("data: ") for line in example.splitlines()
                  if line.startswith("data: ")]

    async def go():
        app = create_app(scenario, time_scale=0.05)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.post("/v1/completions", json=request,
                                         headers={"Authorization": "Bearer premium"})

    answer = run(go())
    served = [event.removeprefix("data: ") for event in answer.text.split("\n\n") if event]
    assert len(served) == len(documented) and served[-1] == documented[-1] == "[DONE]"
    for got, expected in zip(map(json.loads, served[:-1]), map(json.loads, documented[:-1]),
                             strict=True):
        for key in ("id", "object", "model", "choices", "usage"):
            assert got.get(key) == expected.get(key), key
        assert set(got.get("apslab", {})) == set(expected.get("apslab", {}))
        for key, value in expected.get("apslab", {}).items():
            if key.endswith("_ms"):
                assert got["apslab"][key] == pytest.approx(value, rel=1e-9), key
            elif not key.endswith("_s"):  # instants on the clock differ from run to run
                assert got["apslab"][key] == value, key
    assert "| 429 |" in page and "| 503 |" in page and "| 401 |" in page


def test_the_retry_after_exercise_accepts_the_service_and_names_the_mistakes():
    from apslab.lab.appkit import ExerciseFailed
    from apslab.serve.widgets import (
        RETRY_AFTER_CASES,
        check_retry_after,
        reference_retry_after,
    )

    assert check_retry_after(reference_retry_after).passed  # returned on success
    # What the service itself answers in the same situation, through HTTP.
    scenario = make_scenario(tenants=(("A", 100.0, 1000.0),), gpu=FAST_GPU)

    async def go():
        async with live(scenario, time_scale=0.01) as (_sched, client):
            await client.post("/infer", json={"tenant_id": "A", "output_tokens": 1000})
            return await client.post("/infer", json={"tenant_id": "A", "output_tokens": 500})

    refused = run(go())
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) == reference_retry_after(*RETRY_AFTER_CASES[3])

    def not_written(*_case):
        raise NotImplementedError

    def no_refill(cost, tokens, since, rate, burst, scale):
        return None if cost > burst else max(1, math.ceil((cost - tokens) / rate * scale))

    def model_seconds(cost, tokens, since, rate, burst, scale):
        return reference_retry_after(cost, tokens, since, rate, burst, 1.0)

    def rounds_down(cost, tokens, since, rate, burst, scale):
        if cost > burst:
            return None
        return max(1, int((cost - min(burst, tokens + since * rate)) / rate * scale))

    def crashes(*_case):
        return 1 / 0

    def feedback(student) -> str:
        with pytest.raises(ExerciseFailed) as failed:
            check_retry_after(student)
        assert not failed.value.result and str(failed.value) == str(failed.value.result)
        return str(failed.value)

    assert "not written yet" in feedback(not_written)
    assert "refilled since the bucket's last update" in feedback(no_refill)
    assert "multiply by time_scale" in feedback(model_seconds)
    assert "round *up*" in feedback(rounds_down)
    assert "ZeroDivisionError" in feedback(crashes)


def test_the_checker_writes_nothing_and_renders_only_its_feedback(capfd):
    from apslab.lab.appkit import ExerciseFailed
    from apslab.serve.widgets import check_retry_after, reference_retry_after

    def noisy_but_wrong(*case):
        return 0

    check_retry_after(reference_retry_after)
    with pytest.raises(ExerciseFailed) as raised:
        check_retry_after(noisy_but_wrong)
    assert capfd.readouterr() == ("", "")
    rendered = raised.value._render_traceback_()
    assert "ExerciseFailed" in rendered[0] and "Retry-After: check 1 of" in rendered[0]
