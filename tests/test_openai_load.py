"""2,000 concurrent requests through the real ``openai`` client (AsyncOpenAI, 64 in flight) to a
real ``apslab serve`` process on the continuous engine, and the service's replay test.

Every request is answered exactly once, with a documented status. Then the requests the
scheduler decided (every one carries its request id and its arrival on the service clock) are
replayed through ``apslab simulate``: admission, start, first token, finish, preemptions and GPU
of every request are exactly the service's, and ``/metrics`` is exactly the simulator's
SUMMARY, although the service ran on a busy two-core machine whose event loop woke up late.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import numpy as np
import openai
from helpers import serve
from prometheus_client.parser import text_string_to_metric_families

from apslab.io.scenario import load_scenario
from apslab.io.trace import Trace
from apslab.serve.load import format_figures, mixed_load, run_load
from apslab.sim.run import simulate
from apslab.sim.summary import summarize

TENANTS = [  # (id, rate_limit tokens/s, burst_cap tokens, max_bid)
    ("t0", 20.0, 600.0, 1.0), ("t1", 50.0, 800.0, 2.0), ("t2", 200.0, 1000.0, 4.0),
    ("t3", 1e5, 1e5, 4.0), ("t4", 1e5, 1e5, 1.0), ("t5", 1e5, 1e5, 2.0),
]
SCENARIO = """\
[gpu]
kv_cache_gib = 0.25         # 32 blocks of 16 tokens on each GPU: preemptions

[scheduler]
batching = "continuous"
max_num_seqs = 16
max_num_batched_tokens = 512
aging_per_s = 0.5
max_queue_length = 40

[cluster]
gpus = 2
""" + "".join(f'\n[[tenants]]\nid = "{t}"\nrate_limit = {r}\nburst_cap = {b}\nmax_bid = {m}\n'
              for t, r, b, m in TENANTS)
TIME_SCALE = 0.02
MODEL = "Llama-2-7B"
STATUSES = {200, 400, 401, 429, 503}


async def send_all(url: str, requests: list[dict], concurrency: int = 64) -> list[dict]:
    """Each request through AsyncOpenAI (no retries); one outcome recorded per request."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    outcomes: list[dict | None] = [None] * len(requests)
    gate = asyncio.Semaphore(concurrency)
    # One client per tenant (the bearer token names the tenant), sharing one connection pool.
    pool = httpx.AsyncClient(limits=limits)
    clients = {tenant: openai.AsyncOpenAI(base_url=url + "/v1", api_key=tenant, max_retries=0,
                                          timeout=120, http_client=pool)
               for tenant in {r["tenant"] for r in requests}}

    async def one(i: int, request: dict) -> None:
        api = clients[request["tenant"]]
        body = {"model": MODEL, "prompt": "x" * (4 * request["prompt"]),
                "max_tokens": request["output"], "extra_body": {"priority_bid": request["bid"]}}
        async with gate:
            try:
                if request["stream"]:
                    timings, tokens = None, 0
                    async for chunk in await api.completions.create(
                            **body, stream=True, stream_options={"include_usage": True}):
                        tokens += bool(chunk.choices and chunk.choices[0].text)
                        timings = (chunk.model_extra or {}).get("apslab", timings)
                    outcome = {"status": 200, "apslab": timings, "tokens": tokens}
                else:
                    answer = await api.completions.create(**body)
                    outcome = {"status": 200, "apslab": answer.model_extra["apslab"],
                               "tokens": answer.usage.completion_tokens}
            except openai.APIStatusError as exc:
                outcome = {"status": exc.status_code, "error": exc.body}
        assert outcomes[i] is None, "answered twice"
        outcomes[i] = outcome

    try:
        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    finally:
        await pool.aclose()
    return outcomes


def test_two_thousand_openai_requests_answered_once_and_replayed_exactly(tmp_path):
    (tmp_path / "load.toml").write_text(SCENARIO)
    scenario = load_scenario(tmp_path / "load.toml")
    kv_tokens = scenario.gpu.total_blocks(16) * 16
    rng = np.random.default_rng(11)
    names = [t[0] for t in TENANTS]
    requests = []
    for _ in range(2000):  # a quarter streamed; the others longer (tokens cost them nothing)
        stream = bool(rng.random() < 0.25)
        requests.append({"tenant": str(rng.choice(names)) if rng.random() > 0.01 else "nobody",
                         "prompt": int(rng.integers(1, 200)),
                         "output": int(rng.integers(1, 17 if stream else 65)),
                         "bid": float(rng.choice([0.5, 1.0, 2.0, 8.0])), "stream": stream})
    for i in rng.choice(2000, 10, replace=False).tolist():  # can never fit in a GPU's blocks
        requests[i]["prompt"] = kv_tokens

    with serve(tmp_path / "load.toml", "--time-scale", TIME_SCALE) as (proc, url):
        assert "running UNAUTHENTICATED" in proc.banner
        outcomes = asyncio.run(asyncio.wait_for(send_all(url, requests), 300))
        metrics = httpx.get(url + "/metrics", timeout=30).json()
        prometheus = httpx.get(url + "/metrics/prometheus", timeout=30).text
    assert "Traceback" not in proc.stderr.read()

    # Every request answered, once, with a documented status; the server counted the same.
    status = Counter(o["status"] for o in outcomes)
    print(f"\nstatuses {dict(status)}; preemptions {metrics['preemptions']}; event lag "
          f"(model s) {metrics['service']['event_lag_s']}")
    assert sum(status.values()) == 2000 and set(status) <= STATUSES, status
    assert status[200] > 500 and status[429] > 0 and status[401] > 0 and status[400] >= 10
    assert metrics["service"]["responses"] == {str(k): v for k, v in sorted(status.items())}
    for outcome, request in zip(outcomes, requests, strict=True):
        if outcome["status"] == 200:
            assert outcome["tokens"] == request["output"]
            assert outcome["apslab"]["priority_bid"] == min(
                request["bid"], dict((t, m) for t, _r, _b, m in TENANTS)[request["tenant"]])

    # The requests the scheduler decided, by request id: ids 0..n-1, each exactly once.
    decided = {}
    for outcome, request in zip(outcomes, requests, strict=True):
        info = outcome.get("apslab") or outcome.get("error") or {}
        if "request_id" in info:
            assert info["request_id"] not in decided
            decided[info["request_id"]] = (request, outcome, info)
    assert sorted(decided) == list(range(len(decided)))
    assert len(decided) == 2000 - status[401]
    rows = [decided[i] for i in range(len(decided))]
    trace = Trace.from_columns(
        [info["arrival_s"] for _r, _o, info in rows], [r["tenant"] for r, _o, _i in rows],
        [r["prompt"] for r, _o, _i in rows],  # "x" * 4p is p tokens to the stand-in tokenizer
        [r["output"] for r, _o, _i in rows],
        [info.get("priority_bid", 0.0) for _r, _o, info in rows])
    replay = simulate(scenario, trace, engine="python")

    # Exactly the service's decisions and model times.
    reasons = replay.reason_names()
    for row, (_request, outcome, info) in enumerate(rows):
        if outcome["status"] == 200:
            assert reasons[row] == "", (row, reasons[row])
            assert (replay.start_s[row], replay.first_token_s[row], replay.finish_s[row]) == (
                info["start_s"], info["first_token_s"], info["finish_s"]), row
            assert replay.preemptions[row] == info["preemptions"]
            assert replay.finish_gpu[row] == info["gpu"]
        else:
            assert reasons[row] == info["reason"], (row, reasons[row], info)
    assert replay.preemptions.sum() > 0  # the KV blocks ran out, and recomputation matched
    expected = json.loads(json.dumps(summarize(replay)))
    assert {k: v for k, v in metrics.items() if k not in ("tenant_latency_s", "service")} \
        == expected

    # Prometheus counts what the clients saw.
    families = {f.name: f for f in text_string_to_metric_families(prometheus)}
    counted = Counter()
    for sample in families["apslab_requests"].samples:
        if sample.name == "apslab_requests_total":
            counted[int(sample.labels["status"])] += int(sample.value)
    assert counted == status
    ttft_count = sum(s.value for s in families["apslab_ttft_seconds"].samples
                     if s.name == "apslab_ttft_seconds_count")
    preempted = sum(s.value for s in families["apslab_preemptions"].samples
                    if s.name == "apslab_preemptions_total")
    assert ttft_count == status[200] and preempted == replay.preemptions.sum()


def test_the_load_tool_streams_and_measures_ttft(tmp_path):
    """``python -m apslab.serve.load --api openai``'s client (h11, server-sent events) on the
    same kind of service: every request answered, tokens counted, TTFT never early."""
    (tmp_path / "load.toml").write_text(SCENARIO)
    bodies = mixed_load([t[0] for t in TENANTS], 300, seed=2, output_tokens=(1, 10),
                        unknown_fraction=0.02)
    with serve(tmp_path / "load.toml", "--time-scale", TIME_SCALE) as (_proc, url):
        result = asyncio.run(run_load(url, bodies, concurrency=32, api="openai"))
    print("\n" + format_figures(result))
    assert len(result) == 300 and (result.status > 0).all()
    assert set(result.status.tolist()) <= STATUSES
    ok = result.ok
    assert (result.tokens[ok] == [b["output_tokens"] for b, k in zip(bodies, ok, strict=True)
                                  if k]).all()
    assert (result.client_ttft_ms() > result.engine_ttft_ms() - 1.0).all()
    assert "TTFT, client-measured" in format_figures(result)
