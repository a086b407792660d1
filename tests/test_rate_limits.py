"""The rate limits real APIs use, rule by rule, and the exact wait a 429 reports.

* token_bucket: the seed's bucket charged prompt + output, optionally a requests bucket of
  ``requests_per_minute`` refilled over a minute;
* fixed_window: prompt + output tokens and requests counted in windows [k w, (k+1) w);
* split_buckets: an input bucket (prompt tokens) and an output bucket (output tokens), each of
  its per-minute figure refilled over a minute.

A rejection names the first limit broken (requests, input, output, tokens) and charges nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import make_scenario, make_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from apslab.cli import main
from apslab.core.limiter import (
    ADMITTED,
    RATE_LIMITED,
    RATE_LIMITED_INPUT,
    RATE_LIMITED_OUTPUT,
    RATE_LIMITED_REQUESTS,
    BucketLimiter,
    FixedWindowLimiter,
    SplitBucketLimiter,
    TenantLimits,
    TokenBucket,
    decide_columns,
    make_limiter,
)
from apslab.io.errors import InputError
from apslab.io.scenario import parse_scenario
from apslab.sim.run import simulate


def test_requests_per_minute_beside_a_token_bucket():
    limiter = BucketLimiter(1000.0, 10_000.0, requests_per_minute=2)
    assert limiter.admit(10, 10, 0.0) == ADMITTED
    assert limiter.admit(10, 10, 0.0) == ADMITTED
    assert limiter.admit(10, 10, 0.0) == RATE_LIMITED_REQUESTS  # 2 per minute, both used
    assert limiter.bucket.tokens == 10_000.0 - 40  # the refused one took nothing
    assert limiter.seconds_until_admitted(10, 10, 0.0) == pytest.approx(30.0)  # 1 per 30 s
    assert limiter.admit(10, 10, 30.0) == ADMITTED
    # Both limits short: the requests limit is named first.
    limiter = BucketLimiter(1.0, 100.0, requests_per_minute=1)
    assert limiter.admit(50, 50, 0.0) == ADMITTED
    assert limiter.admit(50, 50, 1.0) == RATE_LIMITED_REQUESTS
    assert limiter.admit(1, 1, 60.0) == ADMITTED
    # Requests to spare (one a second), tokens short: rate_limited.
    limiter = BucketLimiter(1.0, 100.0, requests_per_minute=60)
    assert limiter.admit(50, 50, 0.0) == ADMITTED
    assert limiter.admit(50, 50, 1.0) == RATE_LIMITED


def test_a_plain_bucket_decides_exactly_as_token_bucket_consume():
    limiter, bucket = BucketLimiter(3.0, 50.0), TokenBucket(3.0, 50.0)
    rng = np.random.default_rng(4)
    now = 0.0
    for _ in range(500):
        now += float(rng.exponential(2.0))
        p, o = int(rng.integers(0, 20)), int(rng.integers(0, 20))
        assert (limiter.admit(p, o, now) == ADMITTED) == bucket.consume(p + o, now)
        assert (limiter.bucket.tokens, limiter.bucket.last_update_s) == \
            (bucket.tokens, bucket.last_update_s)


def test_fixed_window_counts_reset_at_each_window():
    limiter = FixedWindowLimiter(60.0, 100.0, requests_per_minute=3)
    assert limiter.admit(30, 20, 1.0) == ADMITTED  # window 0: 50 tokens
    assert limiter.admit(30, 21, 59.0) == RATE_LIMITED  # 101 > 100
    assert limiter.seconds_until_admitted(30, 21, 59.0) == pytest.approx(1.0)  # window 1 at 60
    assert limiter.admit(30, 20, 59.5) == ADMITTED  # exactly 100
    assert limiter.admit(0, 0, 59.9) == ADMITTED  # third request, no tokens
    assert limiter.admit(0, 0, 59.9) == RATE_LIMITED_REQUESTS
    assert limiter.admit(60, 40, 60.0) == ADMITTED  # a new window: counts reset at 60
    assert limiter.exceeds(60, 41) and not limiter.exceeds(60, 40)
    assert limiter.seconds_until_admitted(60, 41, 61.0) == math.inf
    # requests_per_minute scales to the window: 3 per minute is 1.5 per 30 s window.
    half = FixedWindowLimiter(30.0, 1e9, requests_per_minute=3)
    assert [half.admit(1, 1, 0.0) for _ in range(2)] == [ADMITTED, RATE_LIMITED_REQUESTS]


def test_split_buckets_meter_input_and_output_apart():
    limiter = SplitBucketLimiter(600.0, 120.0)  # 10 input and 2 output tokens per second
    assert limiter.admit(600, 120, 0.0) == ADMITTED
    assert limiter.admit(10, 0, 0.5) == RATE_LIMITED_INPUT  # 5 input tokens refilled
    assert limiter.admit(5, 3, 1.0) == RATE_LIMITED_OUTPUT  # 10 input, but 2 output tokens
    assert limiter.input.tokens == 10.0 and limiter.output.tokens == 2.0
    assert limiter.seconds_until_admitted(5, 3, 1.0) == pytest.approx(0.5)
    assert limiter.admit(5, 3, 1.5) == ADMITTED
    assert limiter.exceeds(601, 1) and limiter.exceeds(1, 121) and not limiter.exceeds(600, 120)


@settings(max_examples=150)
@given(kind=st.sampled_from(["token_bucket", "fixed_window", "split_buckets"]),
       rpm=st.one_of(st.none(), st.sampled_from([1.0, 6.0, 60.0])),
       rows=st.lists(st.tuples(st.floats(0, 30), st.integers(0, 60), st.integers(0, 60)),
                     min_size=1, max_size=30))
def test_retry_after_is_the_exact_wait(kind, rpm, rows):
    """After a refusal, a copy of the limiter admits the request at now + wait and not at a
    moment before (when the wait is a positive, finite number)."""
    limits = TenantLimits("t", rate_limit=20.0, burst_cap=100.0, limiter=kind, window_s=15.0,
                          tokens_per_window=100.0, input_tokens_per_minute=600.0,
                          output_tokens_per_minute=600.0, requests_per_minute=rpm)
    limiter = make_limiter(limits)
    now = 0.0
    for gap, prompt, output in rows:
        now += gap
        if limiter.exceeds(prompt, output):
            assert limiter.seconds_until_admitted(prompt, output, now) == math.inf
            continue
        wait = limiter.seconds_until_admitted(prompt, output, now)
        probe = make_limiter(limits)
        probe.__dict__.update(_copy_state(limiter))
        code = limiter.admit(prompt, output, now)
        assert (code == ADMITTED) == (wait == 0.0)
        if code != ADMITTED:
            later = make_limiter(limits)
            later.__dict__.update(_copy_state(probe))
            assert later.admit(prompt, output, now + wait * (1 + 1e-9) + 1e-9) == ADMITTED
            if wait > 1e-6:
                earlier = make_limiter(limits)
                earlier.__dict__.update(_copy_state(probe))
                assert earlier.admit(prompt, output, now + wait * 0.99) != ADMITTED


def _copy_state(limiter):
    state = {}
    for name, value in vars(limiter).items():
        if isinstance(value, TokenBucket):
            copy = TokenBucket(value.rate_limit, value.burst_cap)
            copy.tokens, copy.last_update_s = value.tokens, value.last_update_s
            value = copy
        state[name] = value
    return state


def test_decide_columns_walks_every_limiter_like_admit():
    limiters = [make_limiter(TenantLimits("a", 5.0, 50.0)),
                make_limiter(TenantLimits("b", limiter="fixed_window", window_s=10.0,
                                          tokens_per_window=40.0)),
                make_limiter(TenantLimits("c", limiter="split_buckets",
                                          input_tokens_per_minute=120.0,
                                          output_tokens_per_minute=60.0,
                                          requests_per_minute=30.0))]
    reference = [make_limiter(TenantLimits("a", 5.0, 50.0)),
                 make_limiter(TenantLimits("b", limiter="fixed_window", window_s=10.0,
                                           tokens_per_window=40.0)),
                 make_limiter(TenantLimits("c", limiter="split_buckets",
                                           input_tokens_per_minute=120.0,
                                           output_tokens_per_minute=60.0,
                                           requests_per_minute=30.0))]
    rng = np.random.default_rng(7)
    n = 400
    times = np.sort(rng.uniform(0, 60, n))
    tenant = rng.integers(0, 3, n)
    prompt, output = rng.integers(0, 20, n), rng.integers(0, 20, n)
    codes = decide_columns(limiters, tenant, prompt, output, times)
    expected = [reference[u].admit(int(p), int(o), float(t))
                for u, p, o, t in zip(tenant, prompt, output, times, strict=True)]
    assert codes.tolist() == expected
    assert {RATE_LIMITED, RATE_LIMITED_INPUT, RATE_LIMITED_OUTPUT, RATE_LIMITED_REQUESTS} & \
        set(codes.tolist())


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_engines_name_the_limit_a_request_broke(batching):
    tenants = [{"id": "bucket", "rate_limit": 10.0, "burst_cap": 100.0,
                "requests_per_minute": 2.0},
               {"id": "window", "limiter": "fixed_window", "window_s": 10.0,
                "tokens_per_window": 50.0},
               {"id": "split", "limiter": "split_buckets", "input_tokens_per_minute": 60.0,
                "output_tokens_per_minute": 6.0}]
    scenario = make_scenario(tenants, scheduler={"batching": batching})
    rows = [(0.0, "bucket", 10, 10, 1.0), (0.1, "bucket", 10, 10, 1.0),
            (0.2, "bucket", 10, 10, 1.0),  # third request inside a minute
            (1.0, "window", 20, 20, 1.0), (2.0, "window", 5, 6, 1.0),  # 51 > 50 in window 0
            (11.0, "window", 25, 25, 1.0),  # window 1
            (3.0, "split", 30, 3, 1.0), (3.5, "split", 40, 1, 1.0),  # input short
            (4.0, "split", 1, 4, 1.0),  # output short
            (5.0, "split", 61, 1, 1.0), (5.0, "window", 30, 21, 1.0)]  # exceed
    result = simulate(scenario, make_trace(rows))
    assert result.reason_names() == [
        "", "", "rate_limited_requests", "", "rate_limited", "", "", "rate_limited_input",
        "rate_limited_output", "exceeds_burst", "exceeds_burst"]
    by_reason = result.summary()["requests"]["rejected_by_reason"]
    assert by_reason["rate_limited_requests"] == 1 and by_reason["rate_limited_input"] == 1
    assert by_reason["rate_limited_output"] == 1 and by_reason["exceeds_burst"] == 2


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_limiters_in_the_loop_with_a_queue_limit_agree_with_the_columns(batching):
    """With max_queue_length the loop asks the limiters; with a limit no queue reaches, the
    outcome is that of the column decisions."""
    tenants = [{"id": "w", "limiter": "fixed_window", "window_s": 5.0, "tokens_per_window": 400.0,
                "requests_per_minute": 30.0},
               {"id": "s", "limiter": "split_buckets", "input_tokens_per_minute": 3000.0,
                "output_tokens_per_minute": 1200.0}]
    rng = np.random.default_rng(3)
    rows = [(float(t), str(u), int(p), int(o), 1.0) for t, u, p, o in zip(
        np.sort(rng.uniform(0, 30, 200)), rng.choice(["w", "s"], 200),
        rng.integers(1, 120, 200), rng.integers(1, 60, 200), strict=True)]
    free = simulate(make_scenario(tenants, scheduler={"batching": batching}), make_trace(rows))
    looped = simulate(make_scenario(tenants, scheduler={"batching": batching,
                                                        "max_queue_length": 10_000}),
                      make_trace(rows))
    assert free.reason_names() == looped.reason_names()
    assert np.array_equal(free.finish_s, looped.finish_s, equal_nan=True)


@pytest.mark.parametrize(("tenant", "message"), [
    ({"id": "a", "limiter": "leaky", "rate_limit": 1.0, "burst_cap": 1.0},
     "limiter must be one of"),
    ({"id": "a", "limiter": "fixed_window", "tokens_per_window": 5.0, "rate_limit": 1.0},
     "rate_limit has no effect with limiter = 'fixed_window'"),
    ({"id": "a", "limiter": "split_buckets", "input_tokens_per_minute": 5.0},
     "output_tokens_per_minute is required"),
    ({"id": "a", "rate_limit": 1.0, "burst_cap": 1.0, "window_s": 60.0},
     "window_s has no effect with limiter = 'token_bucket'"),
    ({"id": "a", "rate_limit": 1.0, "burst_cap": 1.0, "requests_per_minute": 0},
     "requests_per_minute must be > 0"),
    ({"id": "a", "rate_limit": 1.0, "burst_cap": 1.0, "requests_per_minut": 3.0},
     "did you mean 'requests_per_minute'"),
])
def test_bad_limiter_keys_name_the_key(tenant, message):
    with pytest.raises(InputError, match=message):
        parse_scenario({"tenants": [tenant]})


def test_bad_limiter_keys_exit_2_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[[tenants]]\nid = "a"\nlimiter = "fixed_window"\ntokens_per_window = 9.0\n'
                    'burst_cap = 3.0\n')
    assert main(["simulate", str(path), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("apslab: error:") and f"{path} line 5" in error
    assert "burst_cap has no effect with limiter = 'fixed_window'" in error


def test_scenarios_with_other_limiters_round_trip():
    data = {"scheduler": {"policy": "vtc"}, "tenants": [
        {"id": "a", "limiter": "split_buckets", "input_tokens_per_minute": 600.0,
         "output_tokens_per_minute": 60.0, "requests_per_minute": 5.0, "share": 2.0},
        {"id": "b", "limiter": "fixed_window", "window_s": 30.0, "tokens_per_window": 90.0}]}
    scenario = parse_scenario(data)
    assert parse_scenario(scenario.to_dict()) == scenario
    assert parse_scenario(parse_scenario(scenario.to_dict()).to_dict()).tenants[0].share == 2.0


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_the_live_service_reports_the_exact_wait_of_every_limiter(batching):
    """The live schedulers' 429s carry, for every kind of limit, the exact (wall) time until the
    request would be admitted: a fresh limiter that replays the same admissions at the same
    model times gives the same wait."""
    import asyncio

    from apslab.serve.common import Rejection
    from apslab.serve.continuous import ContinuousLiveScheduler
    from apslab.serve.service import LiveScheduler

    tenants = [{"id": "w", "limiter": "fixed_window", "window_s": 2.0, "tokens_per_window": 100.0,
                "requests_per_minute": 90.0},
               {"id": "s", "limiter": "split_buckets", "input_tokens_per_minute": 600.0,
                "output_tokens_per_minute": 120.0},
               {"id": "b", "rate_limit": 20.0, "burst_cap": 60.0, "requests_per_minute": 30.0}]
    scenario = make_scenario(tenants, scheduler={"batching": batching})
    time_scale = 0.05
    requests = [("w", 40, 30), ("w", 30, 10), ("w", 5, 5), ("w", 1, 1), ("w", 1, 1),
                ("s", 500, 100), ("s", 200, 5), ("s", 50, 30),
                ("b", 20, 20), ("b", 10, 5), ("b", 1, 1)]

    async def go():
        cls = ContinuousLiveScheduler if batching == "continuous" else LiveScheduler
        scheduler = cls(scenario, time_scale=time_scale)
        await scheduler.start()
        outcomes = [(tenant, p, o, scheduler.submit(tenant, p, o, 1.0))
                    for tenant, p, o in requests]
        await scheduler.shutdown(30)  # drains: every admitted request settles
        return scheduler, outcomes

    scheduler, outcomes = asyncio.run(go())
    replay = {t.id: make_limiter(t.limits()) for t in scenario.tenants}
    reasons = set()
    for tenant, prompt, output, outcome in outcomes:
        # The model time the scheduler decided at: in the rejection, the request or its answer.
        now = outcome.arrival_s if hasattr(outcome, "arrival_s") else outcome.result().arrival_s
        wait = replay[tenant].seconds_until_admitted(prompt, output, now)
        code = replay[tenant].admit(prompt, output, now)
        if isinstance(outcome, Rejection):
            reasons.add(outcome.reason)
            assert code != ADMITTED
            assert outcome.status == 429
            assert outcome.retry_after_s == pytest.approx(wait * time_scale, rel=1e-12)
            assert outcome.rate_limit is not None
        else:
            assert code == ADMITTED
    assert {"rate_limited", "rate_limited_requests", "rate_limited_input",
            "rate_limited_output"} <= reasons
