"""The OpenAI-compatible API through the real ``openai`` client, against a real ``apslab serve``
process (uvicorn on a free loopback port) that requires per-tenant keys.

Completions and chat, streamed and not; the stand-in tokenizer; 401s for missing, wrong and
forged keys, and a 403 for naming another tenant on /infer; bids capped at the tenant's
max_bid; a 429 whose Retry-After is the bucket's exact wait; client-measured TTFT against the
engine's own; /v1/models; and what /metrics and Prometheus say about it all.
"""

from __future__ import annotations

import json
import math
import statistics
import time

import httpx
import openai
import pytest
from helpers import serve
from prometheus_client.parser import text_string_to_metric_families

from apslab.serve.keys import KeyEntry, new_key, write_keys_file
from apslab.serve.openai_api import FILLER, filler

TIME_SCALE = 0.5  # a model second lasts half a wall second: TTFTs of tens of wall milliseconds
MODEL = "Llama-2-7B"
SCENARIO = """\
[scheduler]
batching = "continuous"

[[tenants]]
id = "gold"
rate_limit = 1e6
burst_cap = 1e6
priority_bid = 2.0
max_bid = 5.0

[[tenants]]
id = "silver"
rate_limit = 1e6
burst_cap = 1e6

[[tenants]]
id = "tiny"
rate_limit = 100.0
burst_cap = 1000.0

[workload]
duration_s = 1.0

[[workload.tenants]]
id = "silver"
arrival_rate_per_s = 0.0
prompt_tokens = 1
output_tokens = 7
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, {tenant: key}, process): keys made here, only their hashes written to disk."""
    folder = tmp_path_factory.mktemp("openai")
    (folder / "scenario.toml").write_text(SCENARIO)
    keys, entries = {}, []
    for tenant in ("gold", "silver", "tiny"):
        keys[tenant], entry = new_key(tenant)
        entries.append(entry)
    write_keys_file(folder / "keys.toml", entries)
    stored = (folder / "keys.toml").read_text()
    assert not any(key in stored for key in keys.values())
    with serve(folder / "scenario.toml", "--keys", folder / "keys.toml", "--time-scale",
               TIME_SCALE, "--drain-s", 1) as (proc, url):
        yield url, keys, proc
    assert "Traceback" not in proc.stderr.read()


def client(url, key, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30,
                         **options)


def test_start_up_says_keys_are_required(server):
    url, _keys, proc = server
    assert "3 API key(s) for tenant(s) gold, silver, tiny" in proc.banner
    health = httpx.get(url + "/healthz").json()
    assert (health["engine"], health["authentication"], health["model"]) == (
        "continuous", "keys", MODEL)


def test_models_lists_the_served_model_and_an_unknown_one_is_404(server):
    url, keys, _proc = server
    api = client(url, keys["gold"])
    assert [m.id for m in api.models.list()] == [MODEL]
    assert api.models.retrieve(MODEL).owned_by == "apslab"
    with pytest.raises(openai.NotFoundError) as raised:
        api.completions.create(model="gpt-4", prompt="hi", max_tokens=2)
    assert raised.value.code == "model_not_found" and MODEL in raised.value.message


def test_a_streamed_completion_sends_each_token_then_usage_and_done(server):
    url, keys, _proc = server
    stream = client(url, keys["gold"]).completions.create(
        model=MODEL, prompt="abcdefghi", max_tokens=12, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert texts == [FILLER[i % 9] for i in range(12)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:11])
    usage = chunks[-1]
    assert usage.choices == [] and (usage.usage.prompt_tokens, usage.usage.completion_tokens,
                                    usage.usage.total_tokens) == (3, 12, 15)  # ceil(9 / 4)
    timings = chunks[-2].model_extra["apslab"]
    assert timings["tenant_id"] == "gold" and timings["output_tokens"] == 12
    assert timings["ttft_ms"] >= 10.0  # at least the batch window: the GPU was idle
    assert timings["finish_s"] > timings["first_token_s"] > timings["start_s"]
    # On the wire: server-sent events, each "data: {json}", and [DONE] last.
    with httpx.stream("POST", url + "/v1/completions", timeout=30,
                      headers={"Authorization": f"Bearer {keys['gold']}"},
                      json={"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": True}
                      ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and len(events) == 4
    assert all(json.loads(e.removeprefix("data: "))["object"] == "text_completion"
               for e in events[:-1])


def test_non_streamed_completion_and_chat_bodies(server):
    url, keys, _proc = server
    api = client(url, keys["gold"])
    completion = api.completions.create(model=MODEL, prompt=[1, 2, 3, 4, 5], max_tokens=4)
    assert completion.object == "text_completion" and completion.model == MODEL
    assert completion.choices[0].text == filler(0, 4) == " the quick brown fox"
    assert completion.choices[0].finish_reason == "length"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 4)
    assert completion.model_extra["apslab"]["latency_ms"] > 0
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Say hello to me."}]}]
    chat = api.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == " the quick brown"
    # 3 for the reply + (4 + ceil(9/4)) + (4 + ceil(16/4)) = 3 + 7 + 8
    assert chat.usage.prompt_tokens == 18 and chat.usage.completion_tokens == 3


def test_a_streamed_chat_sends_the_role_first_and_an_empty_finish_chunk(server):
    url, keys, _proc = server
    chunks = list(client(url, keys["gold"]).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=4,
        stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert [d.content for d in deltas] == [" the", " quick", " brown", " fox", None]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].usage.prompt_tokens == 8


def test_prompt_tokens_and_default_output_lengths(server):
    url, keys, _proc = server
    gold = client(url, keys["gold"])
    counted = gold.completions.create(model=MODEL, prompt="x", max_tokens=1,
                                      extra_body={"prompt_tokens": 777})
    assert counted.usage.prompt_tokens == 777
    # No max_tokens: gold has no workload entry, so OpenAI's default of 16; silver draws from
    # its workload's output distribution (a constant 7 here).
    assert gold.completions.create(model=MODEL, prompt="x").usage.completion_tokens == 16
    silver = client(url, keys["silver"])
    assert silver.completions.create(model=MODEL, prompt="x").usage.completion_tokens == 7


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 2.5}, "max_tokens"),
    ({"prompt": "x", "max_token": 5}, "max_token"),
    ({"prompt": ["a", "b"], "max_tokens": 2}, "prompt"),
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "priority_bid": -1}, "priority_bid"),
    ({"max_tokens": 2}, "prompt"),
])
def test_bad_bodies_are_400_in_openais_shape(server, body, param):
    url, keys, _proc = server
    with pytest.raises(openai.BadRequestError) as raised:  # raw bodies, through the client
        client(url, keys["gold"]).post("/completions", cast_to=object,
                                       body={"model": MODEL, **body})
    error = raised.value.body
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    if param == "max_token":
        assert "did you mean 'max_tokens'?" in error["message"]


def test_missing_wrong_and_forged_keys_are_401(server):
    url, keys, _proc = server
    forged = keys["gold"][:-4] + ("AAAA" if not keys["gold"].endswith("AAAA") else "BBBB")
    for key in ("wrong", "gold", forged, keys["gold"] + "x"):
        with pytest.raises(openai.AuthenticationError) as raised:
            client(url, key).completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert raised.value.code == "invalid_api_key"
        assert keys["gold"] not in raised.value.message  # the key is never echoed whole
    missing = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "didn't provide an API key" in missing.json()["error"]["message"]
    assert httpx.get(url + "/v1/models").status_code == 401
    # /infer needs the key too, and the key decides the tenant: naming another is 403.
    body = {"tenant_id": "gold", "prompt_tokens": 10, "output_tokens": 2}
    assert httpx.post(url + "/infer", json=body).status_code == 401
    as_silver = httpx.post(url + "/infer", json=body,
                           headers={"Authorization": f"Bearer {keys['silver']}"})
    assert as_silver.status_code == 403 and as_silver.json()["reason"] == "forbidden"
    as_gold = httpx.post(url + "/infer", json=body,
                         headers={"Authorization": f"Bearer {keys['gold']}"})
    assert as_gold.status_code == 200 and as_gold.json()["tenant_id"] == "gold"
    metrics = httpx.get(url + "/metrics/prometheus").text
    unauthenticated = [s for f in text_string_to_metric_families(metrics)
                       if f.name == "apslab_requests" for s in f.samples
                       if s.name.endswith("_total") and s.labels["tenant"] == "(unauthenticated)"]
    assert sum(s.value for s in unauthenticated) >= 6


def test_a_request_cannot_raise_its_bid(server):
    url, keys, _proc = server

    def bid_of(key, asked, path="/v1/completions"):
        body = {"model": MODEL, "prompt": "x", "max_tokens": 1} if path.startswith("/v1") \
            else {"prompt_tokens": 1, "output_tokens": 1}
        if asked is not None:
            body["priority_bid"] = asked
        answer = httpx.post(url + path, json=body, timeout=30,
                            headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        carried = answer.json()["apslab"]["priority_bid"] if path.startswith("/v1") \
            else answer.json()["priority_bid"]
        assert float(answer.headers["x-apslab-bid"]) == carried
        return carried

    assert bid_of(keys["gold"], None) == 2.0  # its priority_bid
    assert bid_of(keys["gold"], 1e9) == 5.0  # capped at max_bid
    assert bid_of(keys["gold"], 4.0) == 4.0
    assert bid_of(keys["gold"], 0.5) == 0.5  # lowering is fine
    assert bid_of(keys["silver"], 3.0) == 1.0  # no max_bid: its priority_bid is the cap
    assert bid_of(keys["gold"], 1e9, "/infer") == 5.0
    # Through the openai client's extra_body, as a benchmark script would send it.
    capped = client(url, keys["silver"]).completions.create(
        model=MODEL, prompt="x", max_tokens=1, extra_body={"priority_bid": 100.0})
    assert capped.model_extra["apslab"]["priority_bid"] == 1.0


def test_429_says_exactly_when_the_bucket_will_admit(server):
    url, keys, _proc = server
    tiny = client(url, keys["tiny"])
    drain = tiny.completions.create(model=MODEL, prompt="x", max_tokens=100,
                                    extra_body={"prompt_tokens": 900})  # the whole bucket
    with pytest.raises(openai.RateLimitError) as raised:
        tiny.completions.create(model=MODEL, prompt="x", max_tokens=100,
                                extra_body={"prompt_tokens": 400})
    error, headers = raised.value.body, raised.value.response.headers
    assert error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
    # The bucket emptied at the first arrival and refills at 100 tokens/s.
    elapsed = error["arrival_s"] - drain.model_extra["apslab"]["arrival_s"]
    wait_wall = (500 - elapsed * 100.0) / 100.0 * TIME_SCALE
    assert error["retry_after_s"] == pytest.approx(wait_wall, rel=1e-9)
    assert headers["retry-after"] == str(max(1, math.ceil(wait_wall)))
    assert int(headers["retry-after-ms"]) == math.ceil(error["retry_after_s"] * 1000)
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(headers["x-ratelimit-remaining-tokens"]) == math.floor(elapsed * 100.0)
    assert headers["x-ratelimit-reset-tokens"].endswith("s")
    time.sleep(error["retry_after_s"] + 0.02)
    retried = tiny.completions.create(model=MODEL, prompt="x", max_tokens=100,
                                      extra_body={"prompt_tokens": 400})
    assert retried.usage.total_tokens == 500


def test_client_measured_ttft_is_the_engines_plus_under_20_ms(server):
    """The first token leaves the server when the model's iteration ends (time scaled), so what
    the client measures from sending to the first chunk is the engine's TTFT x time_scale plus
    HTTP and the client's own work: never less, and (median of five) under 20 ms more."""
    url, keys, _proc = server
    api = client(url, keys["gold"])
    api.completions.create(model=MODEL, prompt="x", max_tokens=2)  # warm the connection
    added, gaps = [], []
    for _ in range(5):
        sent = time.perf_counter()
        arrivals, timings = [], None
        for chunk in api.completions.create(model=MODEL, prompt="x" * 8000, max_tokens=20,
                                            stream=True):
            if chunk.choices and chunk.choices[0].text:
                arrivals.append(time.perf_counter())
            timings = chunk.model_extra.get("apslab") or timings
        client_ttft_ms = (arrivals[0] - sent) * 1000.0
        engine_ttft_ms = timings["ttft_ms"] * TIME_SCALE
        assert client_ttft_ms > engine_ttft_ms - 1.0  # never early (1 ms of clock rounding)
        added.append(client_ttft_ms - engine_ttft_ms)
        gaps.append((arrivals[-1] - arrivals[0]) / 19 * 1000.0 - timings["tpot_ms"] * TIME_SCALE)
    print(f"\nclient TTFT - engine TTFT x {TIME_SCALE}: {[round(a, 2) for a in added]} ms; "
          f"client ITL - engine TPOT: {[round(g, 2) for g in gaps]} ms")
    assert statistics.median(added) < 20.0 + 1.0
    assert abs(statistics.median(gaps)) < 5.0


def test_metrics_and_prometheus_report_ttft_tpot_and_preemptions(server):
    url, keys, _proc = server
    client(url, keys["gold"]).completions.create(model=MODEL, prompt="x", max_tokens=3)
    metrics = httpx.get(url + "/metrics").json()
    for key in ("ttft_s", "tpot_s", "max_tbt_s", "preemptions", "iterations", "mbu", "mfu"):
        assert key in metrics, key
    assert metrics["tenants"]["gold"]["ttft_p99_s"] > 0
    assert metrics["service"]["engine"] == "continuous"
    families = {f.name: f for f in text_string_to_metric_families(
        httpx.get(url + "/metrics/prometheus").text)}
    assert {"apslab_ttft_seconds", "apslab_tpot_seconds", "apslab_preemptions",
            "apslab_iterations", "apslab_kv_blocks_in_use"} <= set(families)
    counted = sum(s.value for s in families["apslab_ttft_seconds"].samples
                  if s.name == "apslab_ttft_seconds_count")
    assert counted == metrics["requests"]["completed"]


def test_keys_can_come_from_the_environment(tmp_path):
    (tmp_path / "scenario.toml").write_text(SCENARIO)
    key, entry = new_key("tiny")
    other = KeyEntry("gold", "0123abcd", new_key("gold")[1].hash)
    import os

    env = {**os.environ, "APSLAB_API_KEYS": f"{entry.env_entry()}, {other.env_entry()}"}
    with serve(tmp_path / "scenario.toml", "--time-scale", 0.01, env=env) as (proc, url):
        assert "2 API key(s) for tenant(s) gold, tiny from APSLAB_API_KEYS" in proc.banner
        answer = client(url, key).completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert answer.model_extra["apslab"]["tenant_id"] == "tiny"
        with pytest.raises(openai.AuthenticationError):
            client(url, "tiny").completions.create(model=MODEL, prompt="x", max_tokens=1)
