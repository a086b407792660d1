"""The continuous engine, rule by rule, on hand-made traces whose times can be worked by hand.

With roofs of 1e30 bytes/s and FLOP/s every iteration lasts exactly ``overhead_s`` (the roof
terms are below half an ulp of 0.25), so an iteration of 0.25 s makes every instant exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import make_trace

from apslab.io.errors import InputError
from apslab.io.scenario import parse_scenario
from apslab.sim.run import simulate
from apslab.sim.summary import format_summary

QUARTER = {"hbm_bytes_per_s": 1e30, "peak_flops": 1e30, "overhead_s": 0.25}
BLOCK_BYTES = 524288  # one token of Llama-2-7B's KV cache


def scenario(*, tenants=(("a", 1e9, 1e9),), gpus=1, blocks=None, block_size=16,
             budget=2048, seqs=256, window_ms=0.0, gpu=None, **scheduler):
    gpu_table = dict(QUARTER if gpu is None else gpu)
    if blocks is not None:
        gpu_table["kv_cache_gib"] = blocks * block_size * BLOCK_BYTES / 2**30
    return parse_scenario({
        "gpu": gpu_table,
        "scheduler": {"batching": "continuous", "block_size": block_size,
                      "max_num_batched_tokens": budget, "max_num_seqs": seqs,
                      "batch_window_ms": window_ms, **scheduler},
        "cluster": {"gpus": gpus},
        "tenants": [{"id": t, "rate_limit": r, "burst_cap": b} for t, r, b in tenants],
    }, source="<test>")


def run(sc, rows, **kwargs):
    return simulate(sc, make_trace(rows), **kwargs)


def test_one_request_prefill_then_decode():
    result = run(scenario(window_ms=10.0), [(0.0, "a", 4, 3, 1.0)], keep_iterations=True)
    assert result.start_s[0] == 0.01
    assert result.first_token_s[0] == 0.26
    assert result.finish_s[0] == 0.76
    assert result.max_tbt_s[0] == 0.25
    assert result.tpot_s.tolist() == [0.25]
    assert result.ttft_s.tolist() == [0.26]
    log = result.iteration_log
    assert log.prefill_tokens.tolist() == [4, 0, 0]
    assert log.decode_tokens.tolist() == [0, 1, 1]
    assert log.blocks_used.tolist() == [1, 1, 1]


def test_chunked_prefill_under_a_small_budget():
    # P = 5 with a budget of 2: chunks 2, 2, 1 (the first token), then one decode.
    result = run(scenario(budget=2, block_size=2), [(0.0, "a", 5, 2, 1.0)],
                 keep_iterations=True)
    assert result.first_token_s[0] == 0.75
    assert result.finish_s[0] == 1.0
    log = result.iteration_log
    assert log.prefill_tokens.tolist() == [2, 2, 1, 0]
    assert log.blocks_used.tolist() == [1, 2, 3, 3]


def test_a_one_token_output_has_no_gap_and_no_tpot():
    result = run(scenario(), [(0.0, "a", 3, 1, 1.0)])
    assert result.first_token_s[0] == result.finish_s[0] == 0.25
    assert math.isnan(result.max_tbt_s[0])
    assert len(result.tpot_s) == 0
    summary = result.summary()
    assert summary["tpot_s"]["mean"] is None and summary["max_tbt_s"]["mean"] is None


def test_a_decoding_request_is_joined_by_a_new_one_at_the_next_iteration():
    # b arrives while a decodes: it joins a's next iteration, and a leaves the moment it is done.
    result = run(scenario(), [(0.0, "a", 2, 3, 1.0), (0.1, "a", 2, 2, 1.0)],
                 keep_iterations=True)
    assert result.start_s.tolist() == [0.0, 0.25]
    assert result.finish_s.tolist() == [0.75, 0.75]
    assert result.first_token_s.tolist() == [0.25, 0.5]
    assert result.iteration_log.requests.tolist() == [1, 2, 2]


def test_preemption_frees_the_lowest_priority_request_and_it_recomputes():
    # Four blocks of one token. A (bid 2) and B (bid 1) each take 2 blocks for their prompts;
    # when A needs a third block, B (the last of the running list) is preempted, recomputes
    # P + g = 3 tokens later, and its token gap spans the preemption.
    sc = scenario(blocks=4, block_size=1)
    result = run(sc, [(0.0, "a", 2, 2, 2.0), (0.0, "a", 2, 2, 1.0)], keep_iterations=True)
    log = result.iteration_log
    assert result.preemptions.tolist() == [0, 1]
    assert log.preempted.tolist() == [0, 1, 0]
    # t=0: both prefill (4 blocks). t=0.25: A needs a 3rd block -> B preempted, A decodes alone
    # and finishes at 0.5. t=0.5: B recomputes its prompt and first token (3 tokens), emits
    # its second token at 0.75.
    assert result.finish_s.tolist() == [0.5, 0.75]
    assert result.first_token_s.tolist() == [0.25, 0.25]
    assert result.max_tbt_s.tolist() == [0.25, 0.5]
    assert log.prefill_tokens.tolist() == [4, 0, 3]


def test_the_request_being_scheduled_can_be_its_own_victim():
    # Five one-token blocks. X (bid 2) and Y (bid 1) prefill 2 blocks each (1 free). At 0.25 X
    # takes the free block; Y then needs one, none is free and nobody is behind it: Y is its
    # own victim, the running pass ends, and the round admits nobody.
    sc = scenario(blocks=5, block_size=1)
    result = run(sc, [(0.0, "a", 2, 3, 2.0), (0.0, "a", 2, 3, 1.0)], keep_iterations=True)
    log = result.iteration_log
    assert result.preemptions.tolist() == [0, 1]
    assert log.requests.tolist() == [2, 1, 1, 1, 1]
    assert log.preempted.tolist() == [0, 1, 0, 0, 0]
    # At 0.5 Y (P + g = 3 tokens to recompute) does not fit in the 1 free block and waits; X
    # finishes at 0.75, Y recomputes then and emits its last two tokens at 1.0 and 1.25.
    assert result.finish_s.tolist() == [0.75, 1.25]
    assert result.max_tbt_s.tolist() == [0.25, 0.75]
    assert log.prefill_tokens.tolist() == [4, 0, 0, 3, 0]


def test_preemption_takes_victims_from_the_back_until_the_request_fits():
    # Six one-token blocks, three requests of 2 prompt tokens (bids 3, 2, 1). At 0.25 the first
    # needs a block and none is free: the last (bid 1) is preempted; the second then takes the
    # second of the two blocks freed.
    sc = scenario(blocks=6, block_size=1)
    rows = [(0.0, "a", 2, 2, 3.0), (0.0, "a", 2, 2, 2.0), (0.0, "a", 2, 2, 1.0)]
    result = run(sc, rows, keep_iterations=True)
    assert result.preemptions.tolist() == [0, 0, 1]
    assert result.finish_s.tolist() == [0.5, 0.5, 0.75]
    assert result.iteration_log.requests.tolist() == [3, 2, 1]


def test_no_new_admissions_in_a_round_that_preempted():
    sc = scenario(blocks=4, block_size=1)
    rows = [(0.0, "a", 2, 2, 2.0), (0.0, "a", 2, 2, 1.0), (0.1, "a", 1, 1, 0.5)]
    result = run(sc, rows, keep_iterations=True)
    log = result.iteration_log
    # At 0.25 the round preempts B, so C (waiting since 0.1) may not join although a block is
    # free after A takes its third.
    assert log.requests.tolist()[1] == 1
    assert result.start_s[2] == 0.5


def test_the_waiting_pass_does_not_skip_ahead():
    # Five one-token blocks. A (bid 3) decodes and holds 3 blocks at 0.25; B (bid 2, P=3) does
    # not fit in the 2 free blocks, and C (bid 1, P=1), which would, may not jump B.
    sc = scenario(blocks=5, block_size=1)
    rows = [(0.0, "a", 2, 3, 3.0), (0.1, "a", 3, 1, 2.0), (0.1, "a", 1, 1, 1.0)]
    result = run(sc, rows)
    assert result.start_s.tolist() == [0.0, 0.75, 0.75]


def test_max_num_seqs_bounds_the_running_list():
    sc = scenario(seqs=2)
    rows = [(0.0, "a", 1, 3, 1.0)] * 3
    result = run(sc, rows)
    assert result.start_s.tolist() == [0.0, 0.0, 0.75]


def test_admission_rules_and_their_order():
    sc = scenario(tenants=(("a", 1.0, 6.0), ("b", 1e9, 1e9)), blocks=2, block_size=4,
                  max_queue_length=1)
    rows = [
        (0.0, "ghost", 1, 1, 1.0),  # unknown_tenant
        (0.0, "b", 5, 4, 1.0),  # ceil(9 / 4) = 3 blocks > 2: exceeds_kv_capacity
        (0.0, "a", 4, 3, 1.0),  # 7 > burst cap 6: exceeds_burst
        (0.0, "a", 3, 3, 1.0),  # admitted (bucket 6 -> 0); waits for the round at t = 0
        (0.0, "a", 1, 1, 1.0),  # the waiting queue holds max_queue_length = 1: queue_full
        (2.0, "a", 1, 1, 1.0),  # bucket 2.0 >= 2: admitted
        (2.0, "a", 1, 1, 1.0),  # queue_full again (checked before the bucket)
        (3.0, "a", 3, 3, 1.0),  # bucket 1.0 < 6: rate_limited
    ]
    result = run(sc, rows)
    assert result.reason_names() == ["unknown_tenant", "exceeds_kv_capacity", "exceeds_burst",
                                     "", "queue_full", "", "queue_full", "rate_limited"]


def test_queue_full_counts_only_waiting_requests():
    sc = scenario(max_queue_length=1)
    rows = [(0.0, "a", 1, 8, 1.0), (0.1, "a", 1, 1, 1.0), (0.1, "a", 1, 1, 1.0)]
    result = run(sc, rows)
    # The first runs (not waiting), the second waits, the third finds the queue full.
    assert result.reason_names() == ["", "", "queue_full"]


def test_rounds_on_several_gpus_take_the_shared_queue_in_index_order():
    sc = scenario(gpus=2, window_ms=100.0)
    rows = [(0.0, "a", 1, 2, 1.0), (0.05, "a", 1, 2, 2.0), (0.3, "a", 1, 1, 1.0)]
    result = run(sc, rows)
    # The window fires at 0.1: GPU 0 takes both (the budget and seats allow), GPU 1 idles.
    assert result.start_s.tolist()[:2] == [0.1, 0.1]
    assert result.gpu.tolist()[:2] == [0, 0]
    # At 0.3 GPU 0 is busy and GPU 1 idle: a timer is armed; GPU 0's iteration ends at 0.35
    # first, and every idle GPU runs a round then: GPU 0 takes the request (index order).
    assert result.start_s[2] == 0.35
    assert result.gpu[2] == 0


def test_an_arrival_at_an_iteration_end_is_seen_by_that_round():
    result = run(scenario(), [(0.0, "a", 1, 3, 1.0), (0.25, "a", 1, 1, 1.0)])
    assert result.start_s.tolist() == [0.0, 0.25]


def test_trace_rows_need_a_prompt_and_an_output_token():
    for rows, column in (([(0.0, "a", 0, 3, 1.0)], "prompt_tokens"),
                         ([(0.0, "a", 1, 3, 1.0), (0.1, "a", 2, 0, 1.0)], "output_tokens")):
        with pytest.raises(InputError, match=f"line {len(rows) + 1}: {column} must be >= 1"):
            run(scenario(), rows)


def test_iteration_cost_is_the_roofline_formula():
    sc = scenario(gpu={})  # the default A100
    cost = sc.gpu.iteration_cost()
    result = run(sc, [(0.0, "a", 100, 2, 1.0)], keep_iterations=True)
    m = sc.gpu.model
    moved = m.weight_bytes + 524288 * 100
    flops = 2 * m.matmul_params * 100 + 4 * m.hidden * m.layers * (100 * 101 // 2)
    prefill = 0.00512 + max(moved / (1.0 * 2.039e12), flops / (0.556 * 312e12))
    assert result.iteration_log.duration_s[0] == prefill
    moved = m.weight_bytes + 524288 * 101
    flops = 2 * m.matmul_params + 4 * m.hidden * m.layers * 101
    assert result.iteration_log.duration_s[1] == cost.seconds(moved, flops)
    summary = result.summary()
    elapsed = result.finish_s[0]
    assert summary["mbu"] == pytest.approx(
        (2 * m.weight_bytes + 524288 * 201) / (elapsed * 2.039e12))
    assert summary["mfu"] == pytest.approx(
        (2 * m.matmul_params * 101 + 4 * m.hidden * m.layers * (5050 + 101)) / (elapsed * 312e12))


def test_summary_keys_and_table():
    sc = scenario(tenants=(("a", 1e9, 1e9), ("b", 1e9, 1e9)))
    rows = [(0.0, "a", 4, 3, 1.0), (0.0, "b", 4, 5, 1.0), (0.6, "a", 2, 1, 1.0)]
    summary = run(sc, rows).summary()
    # The third arrives mid-iteration, joins the round at 0.75, emits its token at 1.0.
    assert summary["ttft_s"]["max"] == pytest.approx(0.4)
    assert summary["tpot_s"]["mean"] == 0.25
    assert summary["iterations"]["count"] == 5
    assert summary["preemptions"] == {"count": 0, "requests_preempted": 0}
    assert "batches" not in summary
    assert summary["tenants"]["b"]["ttft_p99_s"] == 0.25
    text = format_summary(summary)
    assert "TTFT (s)" in text and "TPOT (s)" in text and "iterations" in text


def test_summary_columns_stay_apart_when_values_are_wide():
    sc = scenario(gpu={"hbm_bytes_per_s": 1e30, "peak_flops": 1e30, "overhead_s": 3000.0})
    summary = run(sc, [(0.0, "a", 1, 5, 1.0), (0.0, "a", 1, 5, 1.0)], ).summary()
    text = format_summary(summary)
    row = next(line for line in text.splitlines() if line.strip().startswith("latency"))
    cells = row.split()[2:]
    assert len(cells) == 5 and all(float(c) > 10000 for c in cells)


def test_kv_block_utilization_is_time_weighted():
    sc = scenario(blocks=10, block_size=1)
    result = run(sc, [(0.0, "a", 4, 2, 1.0)])
    # 4 blocks for 0.25 s, 5 blocks for 0.25 s, over 0.5 s x 10 blocks.
    assert result.summary()["kv_block_utilization"] == pytest.approx((4 + 5) * 0.25 / 5.0)


def test_static_batches_on_the_roofline():
    sc = parse_scenario({"gpu": {"model": "roofline", **QUARTER},
                         "scheduler": {"batch_window_ms": 0.0},
                         "tenants": [{"id": "a", "rate_limit": 1e9, "burst_cap": 1e9}]})
    result = simulate(sc, make_trace([(0.0, "a", 3, 4, 1.0), (0.0, "a", 5, 2, 1.0)]))
    # One prefill iteration, then max(O) - 1 = 3 decode iterations of the whole batch.
    assert result.batch_service_s.tolist() == [1.0]
    assert result.finish_s.tolist() == [1.0, 1.0]
    cost = parse_scenario({"gpu": {"model": "roofline"}, "tenants": [
        {"id": "a", "rate_limit": 1.0, "burst_cap": 1.0}]}).gpu.iteration_cost()
    total = cost.static_batch_seconds([3, 5], 4)
    by_hand = cost.seconds(*cost.work(8, 8, 6 + 15))
    for j in range(1, 4):
        by_hand += cost.seconds(*cost.work(8 + 2 * j, 2, 8 + 2 * j))
    assert total == by_hand


def test_python_engine_is_deterministic():
    rng = np.random.default_rng(5)
    rows = [(float(t), "a", int(p), int(o), 1.0) for t, p, o in zip(
        np.sort(rng.uniform(0, 5, 60)), rng.integers(1, 50, 60), rng.integers(1, 20, 60),
        strict=True)]
    sc = scenario(gpus=2, blocks=12, block_size=4, budget=32, gpu={})
    a, b = run(sc, rows, engine="python"), run(sc, rows, engine="python")
    for name in ("start_s", "first_token_s", "finish_s", "max_tbt_s"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True)
    assert a.summary() == b.summary()
