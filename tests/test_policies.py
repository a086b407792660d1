"""The scheduling policies (priority, fcfs, vtc) in both engines, rule by rule, and VTC's
properties: work conservation and the VTC paper's bound on the service difference.

Hand-made traces run on a GPU whose iterations last exactly 0.25 s (roofs of 1e30), so every
start time can be worked out by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_scenario, make_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from apslab.core.continuous_batcher import ContinuousBatcher
from apslab.core.fairness import ServiceDifference
from apslab.core.policies import VTCPolicy, make_policy
from apslab.sim import continuous as continuous_module
from apslab.sim import summary as summary_module
from apslab.sim.run import simulate

QUARTER = {"hbm_bytes_per_s": 1e30, "peak_flops": 1e30, "overhead_s": 0.25}
BIG = 1e9


def scenario(batching, policy, tenants=("a", "b"), blocks=None, seqs=1, **scheduler):
    gpu = dict(QUARTER)
    if blocks is not None:
        gpu["kv_cache_gib"] = blocks * 524288 / 2**30  # block_size 1 below
    if batching == "static":
        gpu["model"] = "roofline"
        sched = {"max_batch_size": seqs}
    else:
        sched = {"max_num_seqs": seqs, "block_size": 1 if blocks is not None else 16}
    sched.update({"batching": batching, "policy": policy, "batch_window_ms": 0.0, **scheduler})
    return make_scenario([{"id": t, "rate_limit": BIG, "burst_cap": BIG} for t in tenants],
                         gpu=gpu, scheduler=sched)


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_fcfs_ignores_bids(batching):
    # r0 runs [0, 0.5) (two tokens; static: prefill + one decode). r1 (bid 1) arrived before
    # r2 (bid 5): fcfs serves r1 first, priority r2.
    rows = [(0.0, "a", 1, 2, 1.0), (0.1, "a", 1, 1, 1.0), (0.2, "a", 1, 1, 5.0)]
    fcfs = simulate(scenario(batching, "fcfs"), make_trace(rows))
    priority = simulate(scenario(batching, "priority"), make_trace(rows))
    assert fcfs.start_s.tolist() == [0.0, 0.5, 0.75]
    assert priority.start_s.tolist() == [0.0, 0.75, 0.5]


def test_fcfs_preempts_the_last_admitted_whatever_its_bid():
    # Four one-token blocks; two prompts of 2 tokens at t = 0 (rows in order, the second with
    # the higher bid). At 0.25 the first running request needs a third block: fcfs preempts
    # the last admitted (row 1); priority keeps its running list in bid order, so the request
    # being scheduled first is row 1 and the victim row 0.
    rows = [(0.0, "a", 2, 2, 1.0), (0.0, "a", 2, 2, 9.0)]
    fcfs = simulate(scenario("continuous", "fcfs", blocks=4, seqs=4), make_trace(rows))
    priority = simulate(scenario("continuous", "priority", blocks=4, seqs=4), make_trace(rows))
    assert fcfs.preemptions.tolist() == [0, 1]
    assert priority.preemptions.tolist() == [1, 0]


@pytest.mark.parametrize("name", ["fcfs", "vtc"])
def test_the_running_list_is_in_admission_order_readmissions_at_the_end(name):
    """Under fcfs and vtc every round leaves the running list as it was (minus finished and
    preempted requests) followed by the requests the waiting pass admitted, in that order: a
    request re-admitted after a preemption goes to the end, the victim is always the last."""
    rng = np.random.default_rng(11)
    batcher = ContinuousBatcher(gpus=1, total_blocks=24, block_size=2, max_num_seqs=5,
                                max_num_batched_tokens=16,
                                policy=make_policy(name, [1.0, 1.0, 2.0]))
    for rid in range(40):
        batcher.add(int(rng.integers(1, 16)), int(rng.integers(1, 16)),
                    arrival_s=float(rid // 3), request_id=rid, tenant=int(rng.integers(0, 3)))
    readmitted = 0
    while batcher.waiting or batcher.running[0]:
        before = list(batcher.running[0])
        iteration = batcher.schedule(0)
        kept = [h for h in before if h not in iteration.preempted]
        assert batcher.running[0] == kept + iteration.admitted
        if iteration.preempted:  # victims come from the back, latest first
            assert before[len(before) - len(iteration.preempted):] == \
                iteration.preempted[::-1]
        readmitted += sum(batcher.preemptions[h] > 0 for h in iteration.admitted)
        batcher.complete(0)
    assert readmitted > 0


def test_vtc_counters_lift_and_charges_by_hand():
    policy = VTCPolicy([1.0, 2.0, 1.0], input_weight=1.0, output_weight=2.0)
    for handle, tenant in enumerate([0, 0, 1, 2]):
        policy.add(handle, neg_key=0.0, arrival_s=float(handle), request_id=handle,
                   tenant=tenant)
    policy.push(0)
    assert policy.counters == [0.0, 0.0, 0.0]  # nobody else waits: no lift
    assert policy.pop() == 0
    policy.admitted(0, 30)  # 1 * 30 / 1
    policy.emitted(0)  # + 2 / 1
    assert policy.counters[0] == 32.0
    policy.push(1)  # tenant 0 again: it already waits -> nothing changes
    policy.push(2)  # tenant 1 gets its first waiting request: lifted to min(others) = 32
    assert policy.counters[1] == 32.0
    policy.admitted(2, 10)  # 1 * 10 / 2
    policy.emitted(2)  # 2 / 2
    assert policy.counters[1] == 38.0
    # The pick: the smallest counter among tenants with waiting requests (ties: scenario
    # order), its oldest request.
    policy.counters[2] = 32.0
    policy.push(3)  # tenant 2: lift to min(32, 38) = 32 = own -> unchanged
    assert policy.peek() == 1  # tenant 0 (32) before tenant 2 (32): scenario order
    assert policy.pop() == 1
    assert policy.peek() == 3  # tenant 2 (32) before tenant 1 (38)


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_vtc_lift_keeps_a_newcomer_from_taking_a_long_turn(batching):
    # One request at a time (0.25 s each). Tenant a sends four requests (P 10, O 1) at t = 0;
    # tenant b three (P 1, O 1) at 0.6. Charges: a +10 at admission, +2 per token; b +1, +2.
    # Continuous: a0 at 0 (a = 10, then 12 at 0.25), a1 at 0.25 (24), a2 at 0.5 (34 at
    # admission). b arrives at 0.6 and is lifted to a's 34; at 0.75 a = 36 > b = 34: b0
    # (b = 37 at 1.0); at 1.0 a3 (36 < 37); then b1, b2.
    # Static (output charged at formation): a0 (12), a1 (24), a2 (36); b lifted to 36; at
    # 0.75 a tie (36, 36) goes to a (scenario order): a3, then b0, b1, b2.
    rows = [(0.0, "a", 10, 1, 1.0)] * 4 + [(0.6, "b", 1, 1, 1.0)] * 3
    result = simulate(scenario(batching, "vtc"), make_trace(rows))
    if batching == "continuous":
        assert result.start_s.tolist() == [0.0, 0.25, 0.5, 1.0, 0.75, 1.25, 1.5]
    else:
        assert result.start_s.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    # Without the lift b would have run its three requests before a3.
    fcfs = simulate(scenario(batching, "fcfs"), make_trace(rows))
    assert fcfs.start_s.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]


def test_vtc_charges_a_prompt_at_once_so_it_counts_for_the_next_pick():
    # Two seats; a and b each send two requests at t = 0; a's prompts are long (100), b's short.
    # First round: a (0, index 0) is picked (tie) and charged 100 at once, so the second pick
    # is b (0 < 100), not a's second request.
    rows = [(0.0, "a", 100, 2, 1.0), (0.0, "a", 100, 2, 1.0), (0.0, "b", 1, 2, 1.0),
            (0.0, "b", 1, 2, 1.0)]
    result = simulate(scenario("continuous", "vtc", seqs=2), make_trace(rows))
    assert result.start_s.tolist()[:3] == [0.0, 0.5, 0.0]


def test_vtc_does_not_charge_recomputation():
    batcher = ContinuousBatcher(gpus=1, total_blocks=4, block_size=1, max_num_seqs=4,
                                max_num_batched_tokens=100, policy=make_policy("vtc", [1.0, 1.0]))
    batcher.add(2, 2, arrival_s=0.0, request_id=0, tenant=0)
    batcher.add(2, 2, arrival_s=0.0, request_id=1, tenant=1)
    batcher.schedule(0)
    batcher.complete(0)  # each: +2 prompt, +2 token = 4
    batcher.schedule(0)  # request 0 needs a block: request 1 (last admitted) is preempted
    assert batcher.preemptions == [0, 1]
    batcher.complete(0)
    counters = list(batcher.policy.counters)
    batcher.schedule(0)  # request 1 re-admitted, recomputing 3 tokens: no new prompt charge
    assert batcher.policy.counters == counters


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 10_000), gpus=st.integers(1, 3), seqs=st.integers(1, 6),
       budget=st.integers(4, 256), blocks=st.integers(8, 60),
       policy=st.sampled_from(["priority", "fcfs", "vtc"]))
def test_no_gpu_idles_while_a_request_waits(seed, gpus, seqs, budget, blocks, policy):
    """Work conservation: with no batch window, a round that schedules nothing leaves no
    request waiting (a GPU only idles when there is nothing it could run)."""
    rng = np.random.default_rng(seed)
    rows = [(float(t), str(u), int(p), int(o), 1.0) for t, u, p, o in zip(
        np.sort(rng.uniform(0, 3, 60)), rng.choice(["a", "b"], 60), rng.integers(1, 20, 60),
        rng.integers(1, 20, 60), strict=True)]
    rows = [r for r in rows if r[2] + r[3] <= blocks]
    if not rows:
        return
    sc = scenario("continuous", policy, blocks=blocks, seqs=seqs,
                  max_num_batched_tokens=budget)
    sc = sc.with_overrides({"cluster.gpus": gpus})
    idle_with_waiting = []
    original = continuous_module._Loop._start

    def watched(loop, gpu, t):
        end = original(loop, gpu, t)
        if end == float("inf") and loop.batcher.waiting:
            idle_with_waiting.append((gpu, t))
        return end

    continuous_module._Loop._start = watched
    try:
        result = simulate(sc, make_trace(rows), engine="python")
    finally:
        continuous_module._Loop._start = original
    assert result.completed.all()
    assert not idle_with_waiting


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 100_000), gpus=st.integers(1, 3), block_size=st.sampled_from([1, 4]),
       blocks=st.integers(8, 60), seqs=st.integers(1, 16), budget=st.integers(8, 512),
       longest_prompt=st.integers(1, 200), longest_output=st.integers(1, 100),
       spread_s=st.sampled_from([0.5, 2.0, 20.0]),
       shares=st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=2, max_size=4))
def test_vtc_keeps_the_service_difference_within_the_papers_bound(
        seed, gpus, block_size, blocks, seqs, budget, longest_prompt, longest_output, spread_s,
        shares):
    """Sheng et al. (OSDI'24), Theorem 4.4: for VTC, two clients f, g backlogged throughout an
    interval receive services that differ by at most 2 * max(w_p * L_input, w_q * M).

    Mapped to this engine: service is what the counters charge, divided by the tenant's share
    (input_weight * P / share at first admission, output_weight / share per token), so with
    unequal shares the bound is divided by the smallest share; w_p = vtc_input_weight (1),
    w_q = vtc_output_weight (2); L_input = the longest prompt in the trace; M = the tokens the
    running batches can hold, here every GPU's KV cache: gpus * total_blocks * block_size. The
    measured difference (``service_difference``, apslab.core.fairness) is the largest over
    every interval in which both tenants of a pair had waiting requests throughout.
    """
    rng = np.random.default_rng(seed)
    names = [f"t{i}" for i in range(len(shares))]
    rows = []
    for _ in range(200):
        prompt = int(rng.integers(1, longest_prompt + 1))
        output = int(rng.integers(1, longest_output + 1))
        if -(-(prompt + output) // block_size) <= blocks:
            rows.append((float(rng.uniform(0, spread_s)), names[int(rng.integers(len(names)))],
                         prompt, output, 1.0))
    if not rows:
        return
    sc = make_scenario([{"id": u, "rate_limit": BIG, "burst_cap": BIG, "share": s}
                        for u, s in zip(names, shares, strict=True)],
                       gpu={"kv_cache_gib": blocks * block_size * 524288 / 2**30},
                       scheduler={"batching": "continuous", "policy": "vtc",
                                  "block_size": block_size, "max_num_seqs": seqs,
                                  "max_num_batched_tokens": budget, "batch_window_ms": 0.0},
                       cluster={"gpus": gpus})
    result = simulate(sc, make_trace(rows))
    longest = max(r[2] for r in rows)
    memory = gpus * sc.gpu.total_blocks(block_size) * block_size
    bound = 2 * max(1.0 * longest, 2.0 * memory) / min(shares)
    assert result.summary()["service_difference"] <= bound


def test_flooding_breaks_the_bound_without_vtc():
    """The same flood under fcfs lets one tenant run far ahead: the measure is not trivially
    small, VTC is what keeps it bounded."""
    rng = np.random.default_rng(1)
    rows = [(float(t), "flood" if i % 4 else "light", int(p), int(o), 1.0)
            for i, (t, p, o) in enumerate(zip(np.sort(rng.uniform(0, 2, 400)),
                                              rng.integers(50, 400, 400),
                                              rng.integers(5, 60, 400), strict=True))]
    tenants = ("flood", "light")
    measured = {}
    for policy in ("fcfs", "vtc"):
        sc = make_scenario([{"id": t, "rate_limit": BIG, "burst_cap": BIG} for t in tenants],
                           scheduler={"batching": "continuous", "policy": policy,
                                      "max_num_seqs": 8, "batch_window_ms": 0.0})
        measured[policy] = simulate(sc, make_trace(rows)).summary()["service_difference"]
    memory = sc.gpu.total_blocks(16) * 16
    assert measured["vtc"] <= 2 * max(400, 2 * memory)
    assert measured["fcfs"] > 5 * measured["vtc"]


def test_service_difference_by_hand():
    tracker = ServiceDifference([1.0, 1.0, 2.0])
    tracker.backlog(0, True)
    tracker.admitted(0, 10)  # a alone is backlogged: no pair yet
    tracker.settle(0.0)
    assert tracker.max_difference == 0.0
    tracker.backlog(1, True)  # pair (0, 1) from here: baseline 10 - 0
    tracker.emitted(0)
    tracker.emitted(0)  # a +4
    tracker.settle(1.0)
    assert tracker.max_difference == 4.0
    tracker.admitted(1, 10)  # b +10: difference now |(14 - 10) - 10| = 6
    tracker.backlog(0, False)  # evaluated before the pair ends
    assert tracker.max_difference == 6.0
    tracker.emitted(0)  # a no longer backlogged: nothing counts
    tracker.settle(2.0)
    assert tracker.max_difference == 6.0
    tracker.backlog(2, True)  # pair (1, 2) from 10 vs 0; tenant 2 has share 2
    tracker.admitted(2, 40)  # + 40 / 2 = 20
    tracker.settle(3.0)
    assert tracker.max_difference == 20.0


def test_the_service_curve_reaches_the_reported_maximum():
    """The curve (sampled at the end of each instant) includes the pairs that ended during the
    instant, so its peak is the run's service_difference; and simulate passes the request on."""
    rng = np.random.default_rng(5)
    rows = [(float(t), str(u), int(p), int(o), 1.0) for t, u, p, o in zip(
        np.sort(rng.uniform(0, 4, 300)), rng.choice(["a", "b", "c"], 300, p=[0.6, 0.3, 0.1]),
        rng.integers(20, 300, 300), rng.integers(2, 40, 300), strict=True)]
    for policy in ("fcfs", "vtc"):
        sc = make_scenario([{"id": t, "rate_limit": BIG, "burst_cap": BIG} for t in "abc"],
                           scheduler={"batching": "continuous", "policy": policy,
                                      "max_num_seqs": 4})
        result = simulate(sc, make_trace(rows), keep_service_curve=True)
        assert result.service_curve is not None and len(result.service_curve)
        assert result.service_curve[:, 1].max() == result.summary()["service_difference"] > 0
        assert np.all(np.diff(result.service_curve[:, 0]) > 0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), policy=st.sampled_from(["priority", "fcfs", "vtc"]),
       gpus=st.integers(1, 3), seqs=st.integers(1, 6))
def test_static_replay_compiled_matches_python(seed, policy, gpus, seqs):
    """The static run's service difference is replayed from its columns; the compiled replay
    and the Python one (ServiceDifference, event by event) agree exactly, ties included."""
    if summary_module.service_difference_replay() is None:
        pytest.skip("the compiled event loop is not built")
    rng = np.random.default_rng(seed)
    count = 200
    rows = [(float(t), str(u), int(p), int(o), float(b)) for t, u, p, o, b in zip(
        np.sort(rng.integers(0, 40, count)) / 4,  # quarter seconds: many simultaneous events
        rng.choice(["a", "b", "c", "d"], count, p=[0.5, 0.25, 0.15, 0.1]),
        rng.integers(1, 400, count), rng.integers(1, 60, count), rng.integers(0, 4, count),
        strict=True)]
    tenants = [{"id": t, "rate_limit": BIG, "burst_cap": BIG,
                **({"share": float(s)} if policy == "vtc" else {})}
               for t, s in zip("abcd", (1.0, 0.3, 2.5, 1.7), strict=True)]
    scheduler = {"batching": "static", "policy": policy, "max_batch_size": seqs,
                 "batch_window_ms": 0.0}
    if policy == "vtc":
        scheduler.update(vtc_input_weight=0.7, vtc_output_weight=1.3)
    sc = make_scenario(tenants, gpu={**QUARTER, "model": "roofline"}, scheduler=scheduler,
                       cluster={"gpus": gpus})
    result = simulate(sc, make_trace(rows))
    compiled = summary_module.static_service_difference(result)
    assert compiled == summary_module.static_service_difference(result, use_compiled=False)
    assert compiled == result.summary()["service_difference"] > 0
