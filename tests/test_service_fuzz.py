"""Fuzzing POST /infer through a real server: whatever the body, the answer is a documented
status with a JSON body, never a 500; and a well-formed request is never refused as malformed.

Hypothesis draws well-formed requests (edge cases included), arbitrary JSON (NaN and infinities
too, as Python's json writes them), near-miss request objects (right keys with wrong values,
typos, extra keys), raw bytes and odd content types. An independent oracle says which bodies
are well-formed and what the scheduler must answer for them.
"""

from __future__ import annotations

import json
import math

import httpx
import pytest
from helpers import make_scenario
from hypothesis import event, given, settings
from hypothesis import strategies as st

from apslab.serve.service import start_in_thread

KV_CAPACITY_GIB = 1.0  # 2048 tokens
TENANTS = (("A", 1e9, 1500.0), ("B", 1e9, 5000.0))
FIELDS = ("tenant_id", "prompt_tokens", "output_tokens", "tokens_requested", "priority_bid")
MAX_TOKENS = 2**53


def _served(scenario):
    """An httpx client of a service on ``scenario`` in a background thread, stopped after."""
    service = start_in_thread(scenario, time_scale=1e-3, drain_s=1.0)
    try:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            yield http
    finally:
        assert service.stop()


@pytest.fixture(scope="module")
def client():
    scenario = make_scenario(tenants=TENANTS, gpu={"kv_cache_gib": KV_CAPACITY_GIB,
                                                   "prefill_tokens_per_s": 1e6,
                                                   "decode_tokens_per_s": 1e6})
    yield from _served(scenario)


json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)
plausible = {
    "tenant_id": st.sampled_from(["A", "B", "a", "", " A", "C", "Ä"]) | json_values,
    "prompt_tokens": st.integers(-5, 3000) | st.sampled_from([MAX_TOKENS, MAX_TOKENS + 1])
    | json_values,
    "output_tokens": st.integers(-5, 3000) | json_values,
    "tokens_requested": st.integers(-5, 3000) | json_values,
    "priority_bid": st.floats(-2, 10) | st.integers(-2, 10) | st.none() | json_values,
}
near_miss = st.fixed_dictionaries(
    {}, optional={**plausible, "prompt_token": json_values, "tenant": json_values,
                  "extra": json_values})


@st.composite
def valid_bodies(draw):
    """Well-formed requests, with the edge cases: either output key, zero and 2**53 tokens,
    integer, float and null bids, tenants that do and do not exist."""
    body = {"tenant_id": draw(st.one_of(st.sampled_from(["A", "B"]),
                                        st.sampled_from(["A", "B", "C", "a"]),
                                        st.text(min_size=1, max_size=8)))}
    output_key = draw(st.sampled_from(["output_tokens", "tokens_requested"]))
    body[output_key] = draw(st.integers(0, 3000) | st.sampled_from([0, MAX_TOKENS]))
    if draw(st.booleans()):
        body["prompt_tokens"] = draw(st.integers(0, 3000) | st.just(MAX_TOKENS))
    if draw(st.booleans()):
        body["priority_bid"] = draw(st.none() | st.floats(0, 1e6) | st.integers(0, 10**6))
    return body


bodies = valid_bodies() | near_miss | json_values


def well_formed(body) -> bool:
    """The contract of InferenceRequest, written independently of the Pydantic model."""
    def token_count(value) -> bool:
        return type(value) is int and 0 <= value <= MAX_TOKENS

    if not isinstance(body, dict) or not set(body) <= set(FIELDS):
        return False
    if ("output_tokens" in body) == ("tokens_requested" in body):
        return False  # exactly one of the two names
    output = body.get("output_tokens", body.get("tokens_requested"))
    bid = body.get("priority_bid")
    return (isinstance(body.get("tenant_id"), str) and len(body["tenant_id"]) >= 1
            and token_count(body.get("prompt_tokens", 0)) and token_count(output)
            and (bid is None or (type(bid) in (int, float) and math.isfinite(bid) and bid >= 0)))


def expected_rejection(body) -> tuple[int, str] | None:
    """The status and reason the admission rules give a well-formed body before the bucket."""
    tenants = {t: burst for t, _rate, burst in TENANTS}
    cost = body.get("prompt_tokens", 0) + body.get("output_tokens", body.get("tokens_requested"))
    if body["tenant_id"] not in tenants:
        return 404, "unknown_tenant"
    if cost > KV_CAPACITY_GIB * 2**30 // 524288:
        return 422, "exceeds_kv_capacity"
    if cost > tenants[body["tenant_id"]]:
        return 422, "exceeds_burst"
    return None


@settings(max_examples=400)
@given(body=bodies)
def test_any_json_body_gets_a_documented_answer(client, body):
    response = client.post("/infer", content=json.dumps(body).encode(),
                           headers={"content-type": "application/json"})
    assert response.status_code != 500, response.text
    payload = response.json()
    if not well_formed(body):
        assert response.status_code == 422, (body, response.text)
        assert isinstance(payload["detail"], list) and payload["detail"]
        return
    expected = expected_rejection(body)
    if expected is not None:
        assert (response.status_code, payload["reason"]) == expected, (body, payload)
    else:
        assert response.status_code in (200, 429, 503), (body, response.text)
        if response.status_code == 200:
            output = body.get("output_tokens", body.get("tokens_requested"))
            assert payload["output_tokens"] == output
            assert payload["prompt_tokens"] == body.get("prompt_tokens", 0)


@settings(max_examples=150)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www"
                                     "-form-urlencoded", "multipart/form-data; boundary=x",
                                     "application/json; charset=utf-16"]))
def test_raw_bytes_and_odd_content_types_are_4xx(client, raw, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/infer", content=raw, headers=headers)
    assert 400 <= response.status_code < 500, (raw, content_type, response.text)
    assert "detail" in response.json()


def test_a_body_nested_too_deep_to_parse_is_a_4xx(client):
    response = client.post("/infer", content=b"[" * 100_000,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400 and "detail" in response.json()


def test_every_fuzzed_response_was_counted(client):
    metrics = client.get("/metrics").json()
    prometheus = client.get("/metrics/prometheus").text
    total = sum(metrics["service"]["responses"].values())
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in prometheus.splitlines()
                  if line.startswith("apslab_requests_total{"))
    assert total == counted > 0
    assert "500" not in metrics["service"]["responses"]


# --------------------------------------------------------------------------------------------
# The OpenAI-compatible endpoints on the continuous engine


@pytest.fixture(scope="module")
def v1():
    scenario = make_scenario(tenants=TENANTS, gpu={"kv_cache_gib": KV_CAPACITY_GIB},
                             scheduler={"batching": "continuous"},
                             tenant_keys={"max_bid": 3.0})
    yield from _served(scenario)


small_counts = st.integers(-3, 40) | st.sampled_from([0, 2047, 2048, MAX_TOKENS]) | json_values
message = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(["user", "system", "assistant"]) | json_values,
    "content": st.text(max_size=40) | st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url"]) | json_values},
        optional={"text": st.text(max_size=20) | json_values}), max_size=3) | json_values,
    "name": json_values})
openai_fields = {
    "model": st.sampled_from(["Llama-2-7B", "gpt-4", ""]) | json_values,
    "prompt": st.text(max_size=60) | st.lists(st.integers(-1, 50), max_size=5)
    | st.lists(st.text(max_size=10), max_size=3) | json_values,
    "messages": st.lists(message, max_size=3) | json_values,
    "max_tokens": small_counts, "max_completion_tokens": small_counts,
    "prompt_tokens": small_counts,
    "stream": st.booleans() | json_values,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()
                                                          | json_values}) | json_values,
    "n": st.sampled_from([1, 2, None]) | json_values,
    "priority_bid": st.floats(-2, 1e9) | st.integers(-2, 10) | json_values,
    "temperature": json_values, "echo": json_values, "logprobs": json_values,
    "max_token": json_values,
}


@st.composite
def valid_v1_bodies(draw):
    """Well-formed completions or chat bodies (with both prompt and messages: a test keeps the
    one its endpoint takes; the fuzz sends both, an unrecognised argument), optional fields at
    their edges."""
    body = {"model": "Llama-2-7B", "prompt": draw(st.text(max_size=40) | st.lists(
        st.integers(0, 50), min_size=1, max_size=5)),
            "messages": draw(st.lists(st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system"]), "content": st.text(max_size=30)}),
                min_size=1, max_size=3))}
    for key, values in (("max_tokens", st.integers(1, 30) | st.sampled_from([2048, 4000])),
                        ("prompt_tokens", st.integers(1, 100)),
                        ("stream", st.booleans()),
                        ("priority_bid", st.floats(0, 1e9) | st.integers(0, 10)),
                        ("temperature", st.floats(0, 2)), ("n", st.just(1))):
        if draw(st.booleans()):
            body[key] = draw(values)
    if body.get("stream") and draw(st.booleans()):
        body["stream_options"] = {"include_usage": draw(st.booleans())}
    return body


openai_bodies = valid_v1_bodies() | st.fixed_dictionaries({}, optional=openai_fields) \
    | json_values


def _check_v1_answer(response) -> None:
    assert response.status_code in (200, 400, 401, 404, 429, 503), response.text
    if response.status_code == 200 and response.headers["content-type"].startswith(
            "text/event-stream"):
        events = [e for e in response.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        for event in events[:-1]:
            assert "error" not in json.loads(event.removeprefix("data: "))
        return
    payload = response.json()
    if response.status_code == 200:
        assert payload["choices"] and payload["usage"]["completion_tokens"] >= 1
    else:
        assert isinstance(payload["error"]["message"], str) and payload["error"]["type"]


@settings(max_examples=300)
@given(body=openai_bodies, chat=st.booleans(),
       bearer=st.sampled_from(["A", "B", "A", "B", "a", "", "A B"]) | st.text(max_size=12))
def test_any_v1_body_gets_an_openai_answer_never_a_500(v1, body, chat, bearer):
    path = "/v1/chat/completions" if chat else "/v1/completions"
    if isinstance(body, dict) and {"prompt", "messages"} <= set(body) and len(body) % 3:
        body.pop("prompt" if chat else "messages")  # mostly well-formed, now and then not
    headers = {"content-type": "application/json"}
    value = f"Bearer {bearer}"
    if bearer.isprintable() and bearer.isascii() and value == value.strip():
        headers["Authorization"] = value
    response = v1.post(path, content=json.dumps(body).encode(), headers=headers)
    event(f"status {response.status_code}")
    _check_v1_answer(response)
    if response.status_code == 200:
        assert bearer in ("A", "B") and isinstance(body, dict) and body.get("model") == \
            "Llama-2-7B"



def expected_v1(body: dict, chat: bool, tenant: str) -> tuple[int, int, str | None]:
    """(prompt tokens, output tokens, the 400 code the scheduler must give or None), by the
    documented stand-in tokenizer, written independently of the service's code."""
    if "prompt_tokens" in body:
        prompt = body["prompt_tokens"]
    elif chat:
        prompt = 3 + sum(4 + math.ceil(len(m["content"]) / 4) for m in body["messages"])
    elif isinstance(body["prompt"], str):
        prompt = max(1, math.ceil(len(body["prompt"]) / 4))
    else:
        prompt = len(body["prompt"])
    output = body.get("max_tokens", 16)
    burst = dict((t, b) for t, _r, b in TENANTS)[tenant]
    code = "context_length_exceeded" if prompt + output > 2048 else \
        "request_too_large" if prompt + output > burst else None
    return prompt, output, code


@settings(max_examples=150)
@given(body=valid_v1_bodies(), chat=st.booleans(), tenant=st.sampled_from(["A", "B"]))
def test_a_well_formed_v1_body_is_served_by_the_documented_token_counts(v1, body, chat, tenant):
    if not chat:
        del body["messages"]
    else:
        del body["prompt"]
    response = v1.post("/v1/chat/completions" if chat else "/v1/completions", json=body,
                       headers={"Authorization": f"Bearer {tenant}"})
    prompt, output, code = expected_v1(body, chat, tenant)
    if code is not None:
        assert response.status_code == 400 and response.json()["error"]["code"] == code
        return
    assert response.status_code == 200, (body, response.text)
    _check_v1_answer(response)
    if not body.get("stream"):
        usage = response.json()["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, output)
        assert response.json()["apslab"]["priority_bid"] == min(
            3.0, body.get("priority_bid", 1.0))


@settings(max_examples=80)
@given(raw=st.binary(max_size=200), chat=st.booleans())
def test_any_v1_bytes_get_an_openai_answer(v1, raw, chat):
    path = "/v1/chat/completions" if chat else "/v1/completions"
    response = v1.post(path, content=raw, headers={"Authorization": "Bearer A"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_v1_fuzzing_left_no_500_and_nothing_in_flight(v1):
    metrics = v1.get("/metrics").json()
    assert "500" not in metrics["service"]["responses"]
    assert v1.get("/v1/completions").status_code == 405
    assert v1.get("/v1/completions").json()["error"]["message"]
