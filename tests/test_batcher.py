import pytest
from hypothesis import given
from hypothesis import strategies as st

from apslab.core.aging_queue import EagerAgingQueue, LazyAgingQueue
from apslab.core.batcher import MicroBatcher


def fill(queue, requests):
    for rid, (bid, prompt, output) in enumerate(requests):
        queue.push(rid, bid, float(rid), (prompt, output))


def test_takes_in_priority_order_up_to_max_batch_size():
    queue = LazyAgingQueue()
    fill(queue, [(1.0, 10, 10), (3.0, 10, 10), (2.0, 10, 10), (5.0, 10, 10)])
    batch = MicroBatcher(0.01, 2, 10_000).form_batch(queue, 5.0)
    assert batch.request_ids == [3, 1]
    assert (batch.kv_tokens, batch.prompt_tokens, batch.output_tokens) == (40, 20, 20)
    assert len(queue) == 2


def test_stops_at_the_first_request_that_does_not_fit():
    queue = LazyAgingQueue()
    # priority order: 0 (60 tokens), 1 (50 tokens), 2 (10 tokens)
    fill(queue, [(3.0, 30, 30), (2.0, 25, 25), (1.0, 5, 5)])
    batch = MicroBatcher(0.0, 16, 100).form_batch(queue, 0.0)
    assert batch.request_ids == [0]  # request 2 would fit, but there is no skipping ahead
    assert batch.kv_tokens == 60
    assert [queue.pop(0.0)[0] for _ in range(len(queue))] == [1, 2]


def test_everything_fits_takes_everything_without_ordering():
    queue = LazyAgingQueue()
    fill(queue, [(1.0, 1, 1), (9.0, 1, 1), (5.0, 1, 1)])
    batch = MicroBatcher(0.0, 3, 6).form_batch(queue, 0.0)
    assert sorted(batch.request_ids) == [0, 1, 2]
    assert batch.items[0] == (1, 1) and len(queue) == 0


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(-0.1, 1, 1)
    with pytest.raises(ValueError):
        MicroBatcher(0.0, 0, 1)


def reference_batch(requests, max_size, budget):
    """Pop one at a time in priority order (bid desc, then id)."""
    order = sorted(range(len(requests)), key=lambda r: (-requests[r][0], r))
    members, used = [], 0
    for rid in order[:max_size]:
        cost = requests[rid][1] + requests[rid][2]
        if used + cost > budget:
            break
        members.append(rid)
        used += cost
    return sorted(members)


@given(
    requests=st.lists(st.tuples(st.sampled_from([1.0, 2.0, 3.0]), st.integers(0, 60),
                                st.integers(0, 60)), max_size=40),
    max_size=st.integers(1, 20),
    budget=st.integers(0, 800),
    eager=st.booleans(),
)
def test_batches_match_one_at_a_time_popping(requests, max_size, budget, eager):
    queue = EagerAgingQueue() if eager else LazyAgingQueue()
    fill(queue, requests)
    batch = MicroBatcher(0.01, max_size, budget).form_batch(queue, 100.0)
    assert sorted(batch.request_ids) == reference_batch(requests, max_size, budget)
    assert batch.kv_tokens <= budget and len(batch.request_ids) <= max_size
    assert len(queue) == len(requests) - len(batch.request_ids)
