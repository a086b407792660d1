import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apslab.core.limiter import (
    ADMITTED,
    EXCEEDS_BURST,
    EXCEEDS_KV_CAPACITY,
    QUEUE_FULL,
    RATE_LIMITED,
    UNKNOWN_TENANT,
    TenantLimits,
    TenantManager,
    TokenBucket,
    consume_columns,
)


def test_hand_worked_bucket_sequence():
    # rate 10 tokens/s, burst 50; the bucket starts full.
    bucket = TokenBucket(rate_limit=10.0, burst_cap=50.0)
    steps = [
        # (now, cost, admitted, tokens after)
        (0.0, 30, True, 20.0),   # 50 -> 20
        (0.5, 30, False, 25.0),  # 20 + 5 = 25 < 30: rejected, nothing subtracted
        (1.0, 30, True, 0.0),    # 25 + 5 = 30 >= 30
        (2.0, 5, True, 5.0),     # 0 + 10 = 10 -> 5
        (100.0, 50, True, 0.0),  # refill capped at 50, takes all of it
        (100.0, 1, False, 0.0),  # same instant: nothing left
    ]
    for now, cost, admitted, tokens in steps:
        assert bucket.consume(cost, now) is admitted, (now, cost)
        assert bucket.tokens == pytest.approx(tokens)
        assert bucket.last_update_s == now


def test_bucket_starts_full_and_caps_at_burst():
    bucket = TokenBucket(5.0, 100.0)
    assert bucket.available(123.0) == 100.0
    assert bucket.consume(100, 123.0)
    assert bucket.available(123.0) == 0.0
    assert bucket.available(1e9) == 100.0


def test_bucket_rejects_time_going_backwards_and_bad_limits():
    bucket = TokenBucket(1.0, 10.0)
    bucket.consume(1, 5.0)
    with pytest.raises(ValueError, match="backwards"):
        bucket.consume(1, 4.0)
    for rate, burst in ((0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (math.nan, 1.0), (1.0, math.inf)):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst)


def test_seconds_until_available():
    bucket = TokenBucket(10.0, 50.0)
    bucket.consume(50, 0.0)
    assert bucket.seconds_until_available(20, 0.0) == pytest.approx(2.0)
    assert bucket.seconds_until_available(20, 1.0) == pytest.approx(1.0)
    assert bucket.seconds_until_available(20, 5.0) == 0.0
    assert bucket.seconds_until_available(60, 5.0) == math.inf


@given(
    rate=st.floats(0.1, 1000.0),
    burst=st.floats(1.0, 5000.0),
    steps=st.lists(st.tuples(st.floats(0.0, 20.0), st.integers(0, 6000)), min_size=1,
                   max_size=60),
    cut=st.integers(0, 60),
    dyadic=st.booleans(),
)
def test_consume_many_is_bit_identical_to_consume(rate, burst, steps, cut, dyadic):
    gaps = [round(g * 4) / 4 if dyadic else g for g, _ in steps]
    times = np.cumsum(gaps)
    costs = np.array([c for _, c in steps], dtype=np.int64)
    one, many = TokenBucket(rate, burst), TokenBucket(rate, burst)
    expected = [one.consume(int(c), float(t)) for c, t in zip(costs, times, strict=True)]
    cut = min(cut, len(steps))
    got = list(many.consume_many(costs[:cut], times[:cut])) + list(
        many.consume_many(costs[cut:], times[cut:]))
    assert got == expected
    assert many.tokens == one.tokens  # exact floats, not approximately
    assert many.last_update_s == one.last_update_s


def test_consume_columns_matches_per_tenant_buckets():
    rng = np.random.default_rng(4)
    n = 3000
    tenants = rng.integers(0, 5, n)
    times = np.sort(rng.uniform(0, 100, n))
    costs = rng.integers(1, 400, n)
    limits = [(50.0, 800.0), (5.0, 500.0), (1e4, 1e4), (100.0, 300.0), (20.0, 2000.0)]
    buckets = [TokenBucket(r, b) for r, b in limits]
    got = consume_columns(buckets, tenants, costs, times)
    reference = [TokenBucket(r, b) for r, b in limits]
    expected = [reference[t].consume(int(c), float(s))
                for t, c, s in zip(tenants, costs, times, strict=True)]
    assert got.tolist() == expected
    assert 0 < got.sum() < n  # the mix exercised both outcomes


def test_tenant_manager_admission_order():
    manager = TenantManager([TenantLimits("a", 10.0, 100.0)])
    assert "a" in manager and "b" not in manager
    assert manager.admit("b", 10**9, 0.0, 50) == UNKNOWN_TENANT
    assert manager.admit("a", 200, 0.0, 150) == EXCEEDS_KV_CAPACITY  # kv before burst
    assert manager.admit("a", 120, 0.0, 1000) == EXCEEDS_BURST
    assert manager.admit("a", 60, 0.0, 1000, queue_full=True) == QUEUE_FULL
    assert manager.admit("a", 60, 0.0, 1000) == ADMITTED
    assert manager.admit("a", 60, 0.0, 1000) == RATE_LIMITED  # 40 left
    assert manager.buckets["a"].tokens == 40.0  # the rejections took nothing
    with pytest.raises(KeyError):
        manager.consume("b", 1, 0.0)
    with pytest.raises(ValueError, match="duplicate"):
        TenantManager([TenantLimits("a", 1.0, 1.0), TenantLimits("a", 1.0, 1.0)])


def test_column_rejections_follow_the_contract_order():
    from helpers import make_scenario, make_trace

    from apslab.sim.admission import admit_by_column

    scenario = make_scenario([("a", 1.0, 100.0), ("b", 1.0, 200.0)])
    trace = make_trace([(0.0, "a", 0, 10, 1.0), (0.0, "x", 0, 10, 1.0), (0.0, "a", 0, 5000, 1.0),
                        (0.0, "b", 0, 250, 1.0), (0.0, "b", 0, 90, 1.0)])
    admission = admit_by_column(scenario, trace, trace.kv_tokens > 1000)
    assert admission.reason.tolist() == [ADMITTED, UNKNOWN_TENANT, EXCEEDS_KV_CAPACITY,
                                         EXCEEDS_BURST, ADMITTED]


def test_walking_in_slices_changes_nothing(monkeypatch):
    import apslab.core.limiter as limiter_module

    rng = np.random.default_rng(9)
    n = 2000
    tenants = rng.integers(0, 3, n)
    times = np.sort(rng.uniform(0, 50, n))
    costs = rng.integers(1, 300, n)
    limits = [(30.0, 600.0), (400.0, 500.0), (5.0, 900.0)]
    whole = consume_columns([TokenBucket(r, b) for r, b in limits], tenants, costs, times)
    monkeypatch.setattr(limiter_module, "_WALK_SLICE", 7)
    sliced_buckets = [TokenBucket(r, b) for r, b in limits]
    sliced = consume_columns(sliced_buckets, tenants, costs, times, use_compiled=False)
    reference = [TokenBucket(r, b) for r, b in limits]
    expected = [reference[t].consume(int(c), float(s))
                for t, c, s in zip(tenants, costs, times, strict=True)]
    assert whole.tolist() == sliced.tolist() == expected
    assert [(b.tokens, b.last_update_s) for b in sliced_buckets] == \
        [(b.tokens, b.last_update_s) for b in reference]


@pytest.mark.parametrize("use_compiled", [False, True])
@given(
    # Gaps on a 1/8 s grid make exact ties (equal times, refills of exactly burst_cap) likely.
    rows=st.lists(st.tuples(st.integers(0, 3),
                            st.one_of(st.integers(0, 40).map(lambda k: k / 8), st.floats(0, 30)),
                            st.integers(0, 900)),
                  min_size=1, max_size=120),
    cut=st.integers(0, 120),
)
def test_python_and_compiled_walks_match_row_by_row_consume(use_compiled, rows, cut):
    from apslab.core.limiter import compiled_walk

    if use_compiled and compiled_walk() is None:
        pytest.skip("the compiled kernels are not built here")
    limits = [(10.0, 100.0), (1000.0, 500.0), (3.0, 700.0), (50.0, 50.0)]
    times = np.cumsum([gap for _, gap, _ in rows])
    tenants = np.array([t for t, _, _ in rows])
    costs = np.array([c for _, _, c in rows])
    reference = [TokenBucket(r, b) for r, b in limits]
    expected = [reference[t].consume(int(c), float(s))
                for t, c, s in zip(tenants, costs, times, strict=True)]
    buckets = [TokenBucket(r, b) for r, b in limits]
    cut = min(cut, len(rows))
    got = np.concatenate([
        consume_columns(buckets, tenants[:cut], costs[:cut], times[:cut], use_compiled),
        consume_columns(buckets, tenants[cut:], costs[cut:], times[cut:], use_compiled)])
    assert got.tolist() == expected
    for mine, theirs in zip(buckets, reference, strict=True):
        assert (mine.tokens, mine.last_update_s) == (theirs.tokens, theirs.last_update_s)
