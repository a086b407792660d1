"""The live continuous engine in-process: exact replay under late wakeups, tokens never early,
/infer on the continuous engine, /v1 on the static one, disconnects, shutdown and failure.

The replay tests drive :class:`ContinuousLiveScheduler` directly (no HTTP) with bursts of
arrivals while the test deliberately blocks the event loop, so that events are handled late and
in backlogs; ``apslab simulate`` on the service's own arrival times must still give every
request exactly the same fate and times.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from helpers import make_scenario

from apslab.serve.continuous import ContinuousLiveScheduler, LiveRequest
from apslab.serve.service import create_app, start_in_thread
from apslab.sim.run import simulate
from apslab.sim.summary import summarize

CONTINUOUS = {"batching": "continuous", "max_num_seqs": 6, "max_num_batched_tokens": 256,
              "max_queue_length": 60}
TIGHT_GPU = {"kv_cache_gib": 0.125}  # 16 blocks of 16 tokens per GPU: preemptions
TENANTS = (("A", 4000.0, 6000.0), ("B", 200.0, 1000.0), ("C", 1e6, 1e6))


def congested(policy: str, gpus: int = 2):
    scheduler = {**CONTINUOUS, "policy": policy}
    if policy == "priority":
        scheduler["aging_per_s"] = 0.5
    return make_scenario(tenants=TENANTS, gpu=TIGHT_GPU, scheduler=scheduler,
                         cluster={"gpus": gpus}, tenant_keys={"max_bid": 4.0})


async def drive(scheduler: ContinuousLiveScheduler, count: int, seed: int,
                block_s: float = 0.004) -> tuple[list, list]:
    """Open-loop arrivals in bursts, a consumer per admitted request recording when each token
    reached it (loop clock), and now and then the loop blocked for ``block_s`` wall seconds."""
    rng = np.random.default_rng(seed)
    loop = asyncio.get_running_loop()
    admitted, received = [], []

    async def consume(request: LiveRequest) -> None:
        seen, times = 0, []
        while True:
            await request.wait_for_tokens(seen)
            times += [loop.time()] * (request.emitted - seen)
            seen = request.emitted
            if request.ended:
                break
        received.append((request, times))

    consumers = []
    for i in range(count):
        tenant = str(rng.choice(["A", "B", "C", "Z"], p=[0.4, 0.3, 0.28, 0.02]))
        outcome = scheduler.submit(tenant, int(rng.integers(1, 120)), int(rng.integers(1, 40)),
                                   float(rng.choice([0.5, 1.0, 2.0, 4.0])))
        if isinstance(outcome, LiveRequest):
            admitted.append(outcome)
            consumers.append(asyncio.create_task(consume(outcome)))
        if i % 7 == 0:
            time.sleep(block_s)  # the event loop is busy: every wakeup after this is late
        await asyncio.sleep(float(rng.exponential(0.002)) if i % 5 else 0.0)
    await asyncio.wait_for(asyncio.gather(*consumers), 60)
    return admitted, received


@pytest.mark.parametrize("policy", ["priority", "fcfs", "vtc"])
def test_late_wakeups_do_not_change_a_single_model_time(policy):
    scenario = congested(policy)

    async def go():
        scheduler = ContinuousLiveScheduler(scenario, time_scale=0.2)
        await scheduler.start()
        admitted, received = await drive(scheduler, 400, seed=3)
        assert scheduler.in_flight == 0
        result = scheduler.settled_result()
        metrics = scheduler.metrics()
        await scheduler.shutdown(0)
        return scheduler, result, metrics, admitted, received

    scheduler, result, metrics, admitted, received = asyncio.run(go())
    replay = simulate(scenario, result.trace, engine="python")
    reasons = set(result.reason_names())
    assert {"", "rate_limited", "queue_full", "unknown_tenant"} <= reasons, reasons
    assert result.preemptions.sum() > 0 and metrics["service"]["event_lag_s"]["max"] > 0
    for name in ("reason", "tenant_index", "preemptions", "finish_gpu"):
        assert np.array_equal(getattr(result, name), getattr(replay, name)), name
    for name in ("start_s", "first_token_s", "finish_s", "max_tbt_s"):
        assert np.array_equal(getattr(result, name), getattr(replay, name), equal_nan=True), name
    assert summarize(result) == summarize(replay)
    assert len(admitted) == int(result.completed.sum())
    # Each token reached its waiter no earlier than its iteration's end on the wall clock.
    t0, scale = scheduler._t0, scheduler.time_scale
    for request, times in received:
        assert len(times) == request.output_tokens
        assert times[0] >= t0 + request.first_token_s * scale - 1e-9
        assert times[-1] >= t0 + request.finish_s * scale - 1e-9


def test_a_scheduler_failure_ends_every_request_with_500():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), scheduler={"batching": "continuous"})

    async def go():
        scheduler = ContinuousLiveScheduler(scenario, time_scale=0.01)
        await scheduler.start()

        def broken(gpu):
            raise RuntimeError("batcher bug")

        scheduler.batcher.schedule = broken
        request = scheduler.submit("A", 10, 3, 1.0)
        await asyncio.wait_for(request.wait_until_ended(), 10)
        after = scheduler.submit("A", 10, 3, 1.0)
        return request, after

    request, after = asyncio.run(go())
    assert request.outcome.reason == "internal_error" and "batcher bug" in request.outcome.detail
    assert after.status == 500


# --------------------------------------------------------------------------------------------
# HTTP, in-process


def run(coroutine):
    return asyncio.run(coroutine)


async def with_client(scenario, action, **kwargs):
    app = create_app(scenario, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://apslab.test",
                                     timeout=30) as client:
            return await action(app.state.scheduler, client)


def test_infer_on_the_continuous_engine_answers_with_token_times():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), scheduler={"batching": "continuous"},
                             tenant_keys={"priority_bid": 1.0, "max_bid": 2.0})

    async def action(scheduler, client):
        answer = await client.post("/infer", json={"tenant_id": "A", "prompt_tokens": 500,
                                                   "output_tokens": 20, "priority_bid": 9})
        zero = await client.post("/infer", json={"tenant_id": "A", "output_tokens": 5})
        by_header = await client.post("/infer", json={"prompt_tokens": 5, "output_tokens": 1},
                                      headers={"Authorization": "Bearer A"})
        metrics = (await client.get("/metrics")).json()
        return answer, zero, by_header, metrics

    answer, zero, by_header, metrics = run(with_client(scenario, action, time_scale=0.01))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["priority_bid"] == 2.0 and answer.headers["x-apslab-bid"] == "2"
    assert body["queue_wait_ms"] == pytest.approx(10.0)  # the window: the GPU was idle
    assert body["latency_ms"] > body["ttft_ms"] > body["queue_wait_ms"]
    assert body["tpot_ms"] == pytest.approx((body["latency_ms"] - body["ttft_ms"]) / 19)
    assert body["preemptions"] == 0 and body["gpu"] == 0
    assert zero.status_code == 422 and zero.json()["detail"][0]["loc"] == ["prompt_tokens"]
    assert by_header.status_code == 200 and by_header.json()["tenant_id"] == "A"
    assert metrics["requests"]["submitted"] == 2 and metrics["service"]["engine"] == "continuous"
    assert metrics["ttft_s"]["max"] == pytest.approx(body["ttft_ms"] / 1000)


def test_the_static_engine_streams_every_token_when_its_batch_finishes():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),),
                             gpu={"prefill_tokens_per_s": 1e5, "decode_tokens_per_s": 1e4})

    async def action(scheduler, client):
        stream = await client.post("/v1/completions", headers={"Authorization": "Bearer A"},
                                   json={"model": "Llama-2-7B", "prompt": "hello", "stream": True,
                                         "max_tokens": 5})
        plain = await client.post("/v1/chat/completions", headers={"Authorization": "Bearer A"},
                                  json={"model": "Llama-2-7B", "max_tokens": 2,
                                        "messages": [{"role": "user", "content": "hi"}]})
        return stream, plain

    stream, plain = run(with_client(scenario, action, time_scale=0.01))
    events = [line.removeprefix("data: ") for line in stream.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == " the quick brown fox jumps"
    timings = chunks[-1]["apslab"]
    assert timings["ttft_ms"] == timings["latency_ms"] and timings["batch_size"] == 1
    assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"] == \
        " the quick"


def test_a_client_that_disconnects_leaves_its_request_running():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), scheduler={"batching": "continuous"})
    with start_in_thread(scenario, time_scale=0.2) as service, \
            httpx.Client(base_url=service.url, timeout=30) as client:
        with client.stream("POST", "/v1/completions", headers={"Authorization": "Bearer A"},
                           json={"model": "Llama-2-7B", "prompt": "x", "max_tokens": 200,
                                 "stream": True}) as response:
            first = next(response.iter_lines())
            assert first.startswith("data: ")
        deadline = time.monotonic() + 30
        while service.scheduler.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = client.get("/metrics").json()
    assert metrics["service"]["client_disconnects"] == 1
    assert metrics["requests"]["completed"] == 1  # it ran to its last token all the same


def test_shutdown_ends_streams_with_an_error_event_and_plain_requests_with_503():
    scenario = make_scenario(tenants=(("A", 1e6, 1e6),), scheduler={"batching": "continuous"})

    async def action(scheduler, client):
        headers = {"Authorization": "Bearer A"}
        body = {"model": "Llama-2-7B", "prompt": "x", "max_tokens": 2000}
        plain = asyncio.create_task(client.post("/v1/completions", json=body, headers=headers))
        streamed = asyncio.create_task(client.post(
            "/v1/completions", json={**body, "stream": True}, headers=headers))
        while scheduler.in_flight < 2:
            await asyncio.sleep(0.01)
        await scheduler.shutdown(0.0)
        late = await client.post("/v1/completions", json=body, headers=headers)
        return await plain, await streamed, late

    plain, streamed, late = run(with_client(scenario, action, time_scale=1.0, drain_s=0.0))
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "shutting_down"
    assert late.status_code == 503
    events = [e for e in streamed.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "shutting_down"


# --------------------------------------------------------------------------------------------
# Small pieces: the stand-in tokenizer, header texts, the replay check itself


def test_the_stand_in_tokenizer_and_the_filler_are_the_documented_rules():
    from apslab.serve.openai_api import (
        ChatMessage,
        chat_prompt_tokens,
        completion_prompt_tokens,
        filler,
        text_tokens,
    )

    assert [text_tokens(t) for t in ("", "a", "abcd", "abcde", "é" * 8)] == [0, 1, 1, 2, 2]
    assert completion_prompt_tokens("") == 1 and completion_prompt_tokens([7, 8, 9]) == 3
    messages = [ChatMessage(role="system", content="abcdefgh"),
                ChatMessage(role="user", content=[{"type": "text", "text": "abc"},
                                                  {"type": "text", "text": "de"}]),
                ChatMessage(role="assistant", content=None)]
    assert chat_prompt_tokens(messages) == 3 + (4 + 2) + (4 + 2) + (4 + 0)
    assert filler(0, 10) == " the quick brown fox jumps over the lazy dog. the"
    assert filler(8, 2) == " dog. the"


def test_rate_limit_headers_read_like_openais():
    from apslab.serve.common import RateLimitState, duration_text

    assert [duration_text(s) for s in (0.0, 0.0001, 0.12, 1.5, 8.6643, 360.0, 61.25)] == \
        ["0ms", "1ms", "120ms", "1.5s", "8.665s", "6m0s", "1m1.25s"]
    assert RateLimitState(1500.0, 199.99, 8.6643).headers() == {
        "x-ratelimit-limit-tokens": "1500", "x-ratelimit-remaining-tokens": "199",
        "x-ratelimit-reset-tokens": "8.665s"}


def test_the_replay_check_notices_a_request_that_ran_differently():
    from apslab.serve.continuous import replay

    scenario = congested("priority", gpus=1)

    async def go():
        scheduler = ContinuousLiveScheduler(scenario, time_scale=0.2)
        await scheduler.start()
        await drive(scheduler, 60, seed=5, block_s=0.0)
        result = scheduler.settled_result()
        await scheduler.shutdown(0)
        return result

    result = asyncio.run(go())
    assert replay(result)[1] == []
    row = int(np.flatnonzero(result.completed)[0])
    result.finish_s[row] += 1e-9
    assert replay(result)[1] == [f"finish_s: 1 request(s) differ, the first row {row}"]


def test_metrics_cover_a_bounded_window_of_recent_requests(monkeypatch):
    import apslab.serve.continuous as live

    monkeypatch.setattr(live, "_CHECKPOINT_EVERY", 1)
    scenario = congested("fcfs", gpus=1)

    async def go():
        scheduler = ContinuousLiveScheduler(scenario, time_scale=0.2, history=20)
        await scheduler.start()
        await drive(scheduler, 150, seed=9, block_s=0.0)
        metrics = scheduler.metrics()
        total = scheduler._tally.count
        await scheduler.shutdown(0)
        return scheduler, metrics, total

    scheduler, metrics, total = asyncio.run(go())
    assert 20 <= metrics["requests"]["submitted"] <= 40 == 2 * scheduler.settled.history
    assert 0 < metrics["iterations"]["count"] < total
    assert 0 < metrics["gpu_utilization"] <= 1.05
    assert len(scheduler._checkpoints) < total
