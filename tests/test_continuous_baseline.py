"""The continuous-batching baseline (benchmarks/continuous_baseline.py) against apslab's engine.

The baseline is an independent, plain implementation of the continuous engine's rules. Random
scenarios and traces run through both `apslab simulate --requests` and the baseline, and the two
REQUESTS.csv files must be byte-identical. Hand-made cases pin the corners: a request preempting
itself, a waiting pass that stops at a request that does not fit (no skipping ahead), a request
preempted twice.
"""

from __future__ import annotations

import contextlib
import csv
import io
import sys
import tempfile
from pathlib import Path

from helpers import make_scenario, make_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from apslab.cli import main
from apslab.io.trace import write_trace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import continuous_baseline  # noqa: E402

KV_BYTES = 524288  # Llama-2-7B's KV bytes per token, the default
SIMPLE_GPU = {"overhead_s": 0.25, "hbm_bytes_per_s": 1e30, "peak_flops": 1e30}  # 0.25 s each
TINY_MODEL = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 160,
              "vocab": 100, "bytes_per_param": 2}
HEADER = ("request_id,tenant_id,arrival_s,status,reason,start_s,first_token_s,finish_s,"
          "preemptions,max_tbt_s,gpu")
REASONS = {"unknown_tenant", "exceeds_kv_capacity", "exceeds_burst", "queue_full", "rate_limited"}


def run_both(scenario, trace) -> tuple[str, str]:
    """REQUESTS.csv from `apslab simulate` and from the baseline, as text."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        scenario.write(d / "s.toml")
        write_trace(d / "t.csv", trace)
        with contextlib.redirect_stderr(io.StringIO()):  # the unknown-tenant warning
            code = main(["simulate", str(d / "s.toml"), "--trace", str(d / "t.csv"),
                         "--requests", str(d / "apslab.csv"), "--quiet"])
        assert code == 0
        continuous_baseline.run(d / "s.toml", d / "t.csv", d / "baseline.csv")
        return ((d / "apslab.csv").read_bytes().decode(),
                (d / "baseline.csv").read_bytes().decode())


def assert_same(scenario, trace) -> str:
    ours, theirs = run_both(scenario, trace)
    assert theirs == ours
    return theirs


def rows_of(text: str) -> dict[int, list[str]]:
    """REQUESTS.csv's rows by request id, each as its fields."""
    lines = text.split("\n")
    assert lines[0] == HEADER and lines[-1] == ""
    return {int(fields[0]): fields for fields in csv.reader(lines[1:-1])}


def kv_gib(capacity_tokens: int, kv_bytes: int = KV_BYTES) -> float:
    """kv_cache_gib holding exactly ``capacity_tokens`` tokens (exact in binary)."""
    return capacity_tokens * kv_bytes / 2**30


# ---------------------------------------------------------------------------------------------
# Random scenarios and traces


@st.composite
def cases(draw):
    policy = draw(st.sampled_from(["priority", "fcfs", "vtc"]))
    block = draw(st.integers(1, 16))
    blocks = draw(st.integers(5, 40))
    capacity = blocks * block + draw(st.integers(0, block - 1))  # floor() leaves the rest over
    scheduler = {
        "batching": "continuous",
        "policy": policy,
        "max_num_seqs": draw(st.integers(1, 4)),
        "max_num_batched_tokens": draw(st.integers(1, 64)),
        "block_size": block,
        "batch_window_ms": draw(st.sampled_from([0.0, 0.0, 5.0, 250.0, 500.0, 1000.0])),
    }
    queue = draw(st.sampled_from([None, None, 1, 2, 3, 6]))
    if queue is not None:
        scheduler["max_queue_length"] = queue
    if policy == "priority":
        scheduler["aging_per_s"] = draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 4.0]))
    if policy == "vtc":
        scheduler["vtc_input_weight"] = draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]))
        scheduler["vtc_output_weight"] = draw(st.sampled_from([0.0, 1.0, 2.0, 7.0]))

    timing = draw(st.sampled_from(["simple", "default", "slow", "tiny_model"]))
    model = None
    kv_bytes = KV_BYTES
    if timing == "simple":  # every iteration takes 0.25 s: many exact ties
        gpu = dict(SIMPLE_GPU)
    elif timing == "default":  # the calibrated A100
        gpu = {}
    elif timing == "slow":  # both roofs matter; no overhead
        gpu = {"overhead_s": 0.0, "hbm_bytes_per_s": 1e10,
               "peak_flops": draw(st.sampled_from([1e11, 1e12, 1e13])),
               "eta_bandwidth": draw(st.sampled_from([1.0, 0.7])),
               "eta_flops": draw(st.sampled_from([1.0, 0.556, 0.3]))}
    else:  # a small custom model (kv_dim != hidden), its own KV bytes per token
        model = TINY_MODEL
        kv_bytes = draw(st.sampled_from([256, 1000]))
        gpu = {"kv_bytes_per_token": kv_bytes, "overhead_s": draw(st.sampled_from([0.0, 0.01])),
               "hbm_bytes_per_s": 1e6, "peak_flops": 1e8}
    gpu["kv_cache_gib"] = kv_gib(capacity, kv_bytes)

    n_tenants = draw(st.integers(1, 3))
    tenants = []
    for tid in "ABC"[:n_tenants]:
        tenant = {"id": tid,
                  "rate_limit": draw(st.sampled_from([0.5, 4.0, 100.0, 1000.0])),
                  "burst_cap": draw(st.sampled_from([12.0, 40.0, 100.0, 10000.0, 10000.0])),
                  "priority_bid": draw(st.sampled_from([0.0, 1.0, 2.0]))}
        if policy == "vtc":
            tenant["share"] = draw(st.sampled_from([0.5, 1.0, 1.0, 3.0]))
        tenants.append(tenant)
    tenant_ids = "ABC"[:n_tenants] + "X"  # X is not in the scenario

    grid = draw(st.booleans())
    arrival = st.integers(0, 40).map(lambda k: k / 4) if grid else st.floats(0.0, 10.0)
    rows = draw(st.lists(st.tuples(
        arrival,
        st.sampled_from(tenant_ids),
        st.one_of(st.integers(1, 8), st.integers(1, 60)),
        st.integers(1, 14),
        st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),
    ), min_size=1, max_size=40))
    scenario = make_scenario(tenants, gpu=gpu, scheduler=scheduler,
                             cluster={"gpus": draw(st.integers(1, 3))}, model=model)
    return scenario, make_trace(rows)


@settings(max_examples=1200)
@given(cases())
def test_baseline_matches_apslab(case):
    scenario, trace = case
    assert_same(scenario, trace)


@st.composite
def crowded_cases(draw):
    """Many requests on one or two small GPUs at 0.25 s per iteration: preemption every round."""
    block = draw(st.integers(1, 4))
    blocks = draw(st.integers(5, 12))
    scheduler = {"batching": "continuous", "max_num_seqs": draw(st.integers(2, 4)),
                 "max_num_batched_tokens": draw(st.integers(1, 16)), "block_size": block,
                 "batch_window_ms": draw(st.sampled_from([0.0, 250.0]))}
    queue = draw(st.sampled_from([None, None, 2, 4]))
    if queue is not None:  # preempted requests count as waiting
        scheduler["max_queue_length"] = queue
    policy = draw(st.sampled_from(["priority", "fcfs", "vtc"]))
    scheduler["policy"] = policy
    if policy == "priority":
        scheduler["aging_per_s"] = draw(st.sampled_from([0.0, 1.0]))
    tenants = [{"id": tid, "rate_limit": 1000.0, "burst_cap": 10000.0,
                **({"share": draw(st.sampled_from([1.0, 2.0]))} if policy == "vtc" else {})}
               for tid in "AB"]
    gpu = dict(SIMPLE_GPU, kv_cache_gib=kv_gib(blocks * block))
    limit = blocks * block
    rows = draw(st.lists(st.tuples(
        st.integers(0, 12).map(lambda k: k / 4), st.sampled_from("AB"),
        st.integers(1, limit // 2), st.integers(1, limit // 2),
        st.sampled_from([0.0, 1.0, 2.0])), min_size=2, max_size=30))
    scenario = make_scenario(tenants, gpu=gpu, scheduler=scheduler,
                             cluster={"gpus": draw(st.integers(1, 2))})
    return scenario, make_trace(rows)


@settings(max_examples=600)
@given(crowded_cases())
def test_baseline_matches_apslab_under_preemption(case):
    scenario, trace = case
    assert_same(scenario, trace)


# ---------------------------------------------------------------------------------------------
# Hand-made corners (1 GPU, block_size 1 unless said, 0.25 s per iteration, window 0)


def simple_scenario(blocks, block=1, max_seqs=4, budget=64, policy="priority"):
    return make_scenario(gpu=dict(SIMPLE_GPU, kv_cache_gib=kv_gib(blocks * block)), scheduler={
        "batching": "continuous", "max_num_seqs": max_seqs, "max_num_batched_tokens": budget,
        "block_size": block, "batch_window_ms": 0.0, "policy": policy})


def test_request_preempts_itself():
    # 6 blocks. A (bid 2, P3 O3) and B (bid 1, P2 O4) start at 0 with 5 blocks; each emits its
    # first token at 0.25. In the round at 0.25 A takes the last free block; B needs one more,
    # the last of the running list is B itself: B is preempted and the pass ends (no waiting
    # pass). At 0.5 B (3 tokens to recompute) does not fit beside A; A finishes at 0.75; B
    # recomputes 0.75-1.0 (second token), then 1.25, 1.5.
    scenario = simple_scenario(blocks=6, max_seqs=2)
    trace = make_trace([(0.0, "A", 3, 3, 2.0), (0.0, "A", 2, 4, 1.0)])
    rows = rows_of(assert_same(scenario, trace))
    assert rows[0][3:] == ["completed", "", "0.0", "0.25", "0.75", "0", "0.25", "0"]
    assert rows[1][3:] == ["completed", "", "0.0", "0.25", "1.5", "1", "0.75", "0"]


def test_waiting_pass_does_not_skip_ahead():
    # 10 blocks. R0 (P7 O3) runs from 0. At 0.1 R1 (bid 5, P5) and R2 (bid 1, P1) arrive. At
    # 0.25 and 0.5 R0 leaves 2, then 1 block free: R1, first in priority order, needs 5 and the
    # pass stops there, although R2 would fit. Both start when R0 finishes at 0.75.
    scenario = simple_scenario(blocks=10)
    trace = make_trace([(0.0, "A", 7, 3, 2.0), (0.1, "A", 5, 1, 5.0), (0.1, "A", 1, 1, 1.0)])
    rows = rows_of(assert_same(scenario, trace))
    assert rows[0][5:8] == ["0.0", "0.25", "0.75"]
    assert rows[1][5:8] == ["0.75", "1.0", "1.0"]
    assert rows[2][5:8] == ["0.75", "1.0", "1.0"]


def test_request_preempted_twice():
    # block_size 2, 4 blocks, budget 4. R0 (bid 1, P5 O2) prefills 4 tokens from 0.25; R1
    # (bid 2, P2 O4) joins at 0.5 ahead of it; both emit at 0.75. At 0.75 R1 needs a block: R0,
    # the last, is preempted. At 1.0 R0 rejoins (3 of its 6 tokens); at 1.25 R1 needs a block
    # again: R0 is preempted a second time. R1 finishes at 1.5, R0 recomputes 4 + 2 tokens and
    # emits its second token at 2.0.
    scenario = simple_scenario(blocks=4, block=2, max_seqs=3, budget=4)
    trace = make_trace([(0.25, "A", 5, 2, 1.0), (0.5, "A", 2, 4, 2.0)])
    rows = rows_of(assert_same(scenario, trace))
    assert rows[0][3:] == ["completed", "", "0.25", "0.75", "2.0", "2", "1.25", "0"]
    assert rows[1][3:] == ["completed", "", "0.5", "0.75", "1.5", "0", "0.25", "0"]


def test_vtc_charges_count_at_once_and_waiting_tenants_are_lifted():
    # One sequence at a time, weights 1 (input) and 2 (output), shares 1. A1 (P20) runs from 0:
    # A's counter 20. A2 arrives at 0.1 (no other tenant waits: no lift); B1 at 0.2 lifts B to
    # A's 20. At 0.25 A1's token makes A 22: B1 (20) goes first and is charged 5 at once, then
    # 2 for its token: B 27 > A 22, so A2 goes before B2. Without the lift B2 would go first.
    scenario = make_scenario(
        [{"id": "A", "rate_limit": 100.0, "burst_cap": 2000.0},
         {"id": "B", "rate_limit": 100.0, "burst_cap": 2000.0}],
        gpu=dict(SIMPLE_GPU, kv_cache_gib=kv_gib(64)),
        scheduler={"batching": "continuous", "max_num_seqs": 1, "block_size": 1,
                   "batch_window_ms": 0.0, "policy": "vtc"})
    trace = make_trace([(0.0, "A", 20, 1, 1.0), (0.1, "A", 1, 1, 1.0), (0.2, "B", 5, 1, 1.0),
                        (0.2, "B", 1, 1, 1.0)])
    rows = rows_of(assert_same(scenario, trace))
    assert [rows[i][5] for i in range(4)] == ["0.0", "0.5", "0.25", "0.75"]


def test_vtc_input_charge_counts_for_the_next_pick_in_the_round():
    # Three sequences, all four arrive at 0. Tie at 0: A (scenario order) takes A1 and is
    # charged 10 at once; then B (0) takes B1 (B 1), and B again (1 < 10) takes B2. A2 waits.
    scenario = make_scenario(
        [{"id": "A", "rate_limit": 100.0, "burst_cap": 2000.0, "share": 1.0},
         {"id": "B", "rate_limit": 100.0, "burst_cap": 2000.0, "share": 1.0}],
        gpu=dict(SIMPLE_GPU, kv_cache_gib=kv_gib(64)),
        scheduler={"batching": "continuous", "max_num_seqs": 3, "block_size": 1,
                   "batch_window_ms": 0.0, "policy": "vtc"})
    trace = make_trace([(0.0, "A", 10, 1, 1.0), (0.0, "A", 1, 1, 1.0), (0.0, "B", 1, 1, 1.0),
                        (0.0, "B", 1, 1, 1.0)])
    rows = rows_of(assert_same(scenario, trace))
    assert [rows[i][5] for i in range(4)] == ["0.0", "0.25", "0.0", "0.0"]


def test_timer_is_disarmed_at_every_round_instant():
    # Two GPUs, one sequence each, 1 s iterations, 2.5 s window. R1 and R2 arrive at 2.6 while
    # GPU 1 idles: the timer is armed for 5.1. GPU 0 ends an iteration at 3.5 and both GPUs take
    # a request; the timer is disarmed then. GPU 0 idles from 4.5; R3 arrives at 4.6 and arms
    # a new timer (7.1), so R3 starts at GPU 1's next iteration end, 5.5, not at 5.1.
    scenario = make_scenario(
        gpu=dict(SIMPLE_GPU, overhead_s=1.0, kv_cache_gib=kv_gib(64)), cluster={"gpus": 2},
        scheduler={"batching": "continuous", "max_num_seqs": 1, "block_size": 1,
                   "batch_window_ms": 2500.0})
    trace = make_trace([(0.0, "A", 1, 1, 1.0), (2.6, "A", 1, 1, 1.0), (2.6, "A", 1, 4, 1.0),
                        (4.6, "A", 1, 1, 1.0)])
    rows = rows_of(assert_same(scenario, trace))
    assert [rows[i][5] for i in range(4)] == ["2.5", "3.5", "3.5", "5.5"]
    assert [rows[i][10] for i in range(4)] == ["0", "0", "1", "0"]


def test_every_rejection_and_quoted_tenant():
    scenario = make_scenario(
        [("A", 1.0, 30.0)], gpu=dict(SIMPLE_GPU, kv_cache_gib=kv_gib(40)),
        scheduler={"batching": "continuous", "max_num_seqs": 1, "block_size": 8,
                   "batch_window_ms": 1000.0, "max_queue_length": 1})
    trace = make_trace([
        (0.0, "x,y", 1, 1, 1.0),  # unknown_tenant (quoted in the CSV)
        (0.0, "A", 35, 6, 1.0),  # 41 tokens: 6 blocks of 8 > 5: exceeds_kv_capacity
        (0.0, "A", 30, 1, 1.0),  # 31 > burst 30: exceeds_burst
        (0.0, "A", 20, 5, 1.0),  # admitted (bucket 30 -> 5), waits for the window (1.0)
        (0.5, "A", 1, 1, 1.0),  # queue_full: the one waiting request; the bucket is untouched
        (1.5, "A", 4, 4, 1.0),  # 5 + 1.5 = 6.5 < 8: rate_limited
        (3.0, "A", 2, 2, 1.0),  # 6.5 + 1.5 = 8 >= 4: admitted; the first finished at 2.25
    ])
    rows = rows_of(assert_same(scenario, trace))
    assert [rows[i][4] for i in range(7)] == [
        "unknown_tenant", "exceeds_kv_capacity", "exceeds_burst", "", "queue_full",
        "rate_limited", ""]
    assert rows[3][5:8] == ["1.0", "1.25", "2.25"]
    assert rows[6][5:] == ["4.0", "4.25", "4.5", "0", "0.25", "0"]  # idle GPU: the window


# ---------------------------------------------------------------------------------------------
# The baseline's own output format


def test_baseline_row_format():
    scenario = make_scenario(
        [("A", 2.0, 40.0), ("B", 100.0, 1000.0)],
        gpu={"kv_cache_gib": kv_gib(48)}, cluster={"gpus": 2},
        scheduler={"batching": "continuous", "max_num_seqs": 2, "max_num_batched_tokens": 8,
                   "block_size": 4, "batch_window_ms": 3.0, "max_queue_length": 4})
    trace = make_trace([(0.013 * i, "ABX"[i % 3], 1 + (7 * i) % 23, 1 + (5 * i) % 9, 1.0)
                        for i in range(60)])
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        scenario.write(d / "s.toml")
        write_trace(d / "t.csv", trace)
        continuous_baseline.run(d / "s.toml", d / "t.csv", d / "r.csv")
        raw = (d / "r.csv").read_bytes()
    assert b"\r" not in raw
    text = raw.decode()
    rows = rows_of(text)
    assert sorted(rows) == list(range(len(trace)))
    assert list(rows) == list(range(len(trace)))  # request-id order
    outputs = trace.output_tokens.tolist()
    statuses = set()
    for rid, fields in rows.items():
        assert len(fields) == 11
        assert fields[1] == trace.tenant_ids[rid]
        assert fields[2] == repr(trace.arrival_s[rid].item())
        statuses.add(fields[3] if fields[3] == "completed" else fields[4])
        if fields[3] == "rejected":
            assert fields[4] in REASONS
            assert fields[5:] == [""] * 6
            continue
        assert fields[3] == "completed" and fields[4] == ""
        start, first, finish = (float(x) for x in fields[5:8])
        for text_value in fields[5:8]:
            assert repr(float(text_value)) == text_value  # repr, shortest round trip
        assert float(fields[2]) <= start < first <= finish
        assert fields[8].isdigit()
        if outputs[rid] == 1:
            assert fields[9] == "" and first == finish
        else:
            tbt = float(fields[9])
            assert repr(tbt) == fields[9] and 0 < tbt <= finish - first
            assert tbt >= (finish - first) / (outputs[rid] - 1) * (1 - 1e-12)
        assert fields[10] in ("0", "1")
    assert {"completed", "unknown_tenant", "rate_limited"} <= statuses
