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
from hypothesis import given, settings
from hypothesis import strategies as st

from apslab.serve.service import start_in_thread

KV_CAPACITY_GIB = 1.0  # 2048 tokens
TENANTS = (("A", 1e9, 1500.0), ("B", 1e9, 5000.0))
FIELDS = ("tenant_id", "prompt_tokens", "output_tokens", "tokens_requested", "priority_bid")
MAX_TOKENS = 2**53


@pytest.fixture(scope="module")
def client():
    scenario = make_scenario(tenants=TENANTS, gpu={"kv_cache_gib": KV_CAPACITY_GIB,
                                                   "prefill_tokens_per_s": 1e6,
                                                   "decode_tokens_per_s": 1e6})
    service = start_in_thread(scenario, time_scale=1e-3, drain_s=1.0)
    try:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            yield http
    finally:
        assert service.stop()


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
