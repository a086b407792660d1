"""The continuous batcher's invariants, on random workloads driven round by round.

A driver plays the engine's part (arrivals, rounds and iteration ends on several GPUs, in random
interleavings) and checks after every round and every iteration end that:

* the blocks a GPU hands out never exceed total_blocks, and after an iteration each running
  request holds exactly ceil(c / block_size) blocks (no leak);
* an iteration's tokens never exceed max_num_batched_tokens, and no GPU runs more than
  max_num_seqs requests;
* the waiting pass never skips ahead: the requests it admits are the policy's next ones, in
  order (checked against a copy of the policy), and when it stops with budget and seats left the
  next request's blocks are not free; a round that preempted admits nobody;
* every admitted request finishes exactly once, after emitting exactly O tokens.
"""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from apslab.core.continuous_batcher import ContinuousBatcher
from apslab.core.kv_blocks import blocks_for
from apslab.core.policies import make_policy


@st.composite
def workloads(draw):
    gpus = draw(st.integers(1, 3))
    block_size = draw(st.integers(1, 8))
    total_blocks = draw(st.integers(3, 30))
    requests = draw(st.lists(
        st.tuples(st.integers(1, 40), st.integers(1, 12), st.integers(0, 2), st.integers(0, 2)),
        min_size=1, max_size=25))
    # Admission guarantees that a request fits alone: ceil((P + O) / block_size) <= total_blocks.
    requests = [r for r in requests if blocks_for(r[0] + r[1], block_size) <= total_blocks]
    return dict(gpus=gpus, block_size=block_size, total_blocks=total_blocks,
                max_seqs=draw(st.integers(1, 5)), budget=draw(st.integers(1, 40)),
                policy=draw(st.sampled_from(["priority", "fcfs", "vtc"])), requests=requests,
                choices=draw(st.randoms(use_true_random=False)))


@settings(max_examples=400, deadline=None)
@given(workloads())
def test_invariants_hold_round_by_round(case):
    gpus, block_size, total = case["gpus"], case["block_size"], case["total_blocks"]
    batcher = ContinuousBatcher(gpus=gpus, total_blocks=total, block_size=block_size,
                                max_num_seqs=case["max_seqs"],
                                max_num_batched_tokens=case["budget"],
                                policy=make_policy(case["policy"], [1.0, 2.0, 0.5]))
    random = case["choices"]
    pending = list(enumerate(case["requests"]))
    emitted: dict[int, int] = {}
    finished: list[int] = []
    for _ in range(100_000):
        busy = [g for g in range(gpus) if not batcher.idle(g)]
        idle = [g for g in range(gpus) if batcher.idle(g)
                and (batcher.waiting or batcher.running[g])]
        actions = (["add"] if pending else []) + [("complete", g) for g in busy] + \
            [("schedule", g) for g in idle]
        if not actions:
            break
        action = random.choice(actions)
        if action == "add":
            rid, (p, o, bid, tenant) = pending.pop(0)
            handle = batcher.add(p, o, neg_key=-float(bid), arrival_s=float(rid // 2),
                                 request_id=rid, tenant=tenant)
            emitted[handle] = 0
        elif action[0] == "complete":
            done = batcher.complete(action[1])
            for handle in done.emitted:
                emitted[handle] += 1
            finished.extend(done.finished)
            _check_blocks(batcher, action[1], block_size, total)
        else:
            _check_round(batcher, action[1], case)
    else:
        raise AssertionError("the workload did not drain")
    assert batcher.waiting == 0
    assert sorted(finished) == sorted(emitted), "every admitted request finishes exactly once"
    for handle, count in emitted.items():
        assert count == batcher.output[handle] == batcher.generated[handle]
    assert batcher.free_blocks == [total] * gpus


def _check_blocks(batcher, gpu, block_size, total):
    held = sum(batcher.blocks[h] for h in batcher.running[gpu])
    assert 0 <= held == total - batcher.free_blocks[gpu] <= total
    for handle in batcher.running[gpu]:
        assert batcher.blocks[handle] == blocks_for(batcher.computed[handle], block_size)


def _check_round(batcher, gpu, case):
    shadow = copy.deepcopy(batcher.policy)
    iteration = batcher.schedule(gpu)
    assert iteration is not None, "a GPU with work to do scheduled nothing"
    assert sum(iteration.tokens) <= case["budget"]
    assert len(batcher.running[gpu]) <= case["max_seqs"]
    assert iteration.blocks_used == case["total_blocks"] - batcher.free_blocks[gpu]
    assert batcher.free_blocks[gpu] >= 0
    assert all(n >= 1 for n in iteration.tokens)
    if iteration.preempted:
        assert not iteration.admitted, "a round that preempted admitted from the waiting queue"
        return
    # The waiting pass took the policy's next requests, in order, charging as it went.
    charged = set()
    for handle in iteration.admitted:
        assert len(shadow) and shadow.peek() == handle, "the waiting pass skipped ahead"
        shadow.pop()
        if batcher.preemptions[handle] == 0 and handle not in charged:
            shadow.admitted(handle, batcher.prompt[handle])
            charged.add(handle)
    left = case["budget"] - sum(iteration.tokens)
    if len(shadow) and left > 0 and len(batcher.running[gpu]) < case["max_seqs"]:
        handle = shadow.peek()
        need = blocks_for(min(batcher.prompt[handle] + batcher.generated[handle], left),
                          case["block_size"])
        assert need > batcher.free_blocks[gpu], "the waiting pass stopped although it fit"
