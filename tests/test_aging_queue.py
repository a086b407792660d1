import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apslab.core.aging_queue import (
    EagerAgingQueue,
    LazyAgingQueue,
    effective_priority,
    static_priority_key,
)


def test_higher_bid_first_then_earlier_arrival_then_lower_id():
    queue = LazyAgingQueue(aging_per_s=0.0)
    queue.push(5, 1.0, 0.0)
    queue.push(3, 2.0, 1.0)
    queue.push(9, 2.0, 0.5)
    queue.push(1, 2.0, 0.5)
    assert [queue.pop(2.0)[0] for _ in range(4)] == [1, 9, 3, 5]
    assert not queue and len(queue) == 0


def test_aging_lets_an_old_low_bid_overtake():
    queue = LazyAgingQueue(aging_per_s=1.0)
    queue.push(0, 1.0, 0.0)   # effective at t=10: 1 + 10 = 11
    queue.push(1, 5.0, 9.0)   # effective at t=10: 5 + 1 = 6
    assert queue.peek(10.0) == 0
    priorities = queue.effective_priorities(10.0)
    assert priorities == pytest.approx({0: 11.0, 1: 6.0})
    without_aging = LazyAgingQueue(0.0)
    without_aging.push(0, 1.0, 0.0)
    without_aging.push(1, 5.0, 9.0)
    assert without_aging.peek(10.0) == 1


def test_static_key_orders_like_effective_priority():
    bids = np.array([1.0, 3.0, 2.0])
    arrivals = np.array([0.0, 4.0, 1.0])
    keys = static_priority_key(bids, arrivals, 0.5)
    now = 7.0
    effective = effective_priority(bids, arrivals, 0.5, now)
    assert np.argsort(-keys).tolist() == np.argsort(-effective).tolist()
    assert np.allclose(effective - keys, 0.5 * now)


def test_queue_items_ride_along_and_ids_come_back():
    queue = LazyAgingQueue()
    queue.push(7, 1.0, 0.0, item=("payload", 1))
    assert queue.pop(0.0) == (7, ("payload", 1))


def test_negative_aging_is_refused():
    with pytest.raises(ValueError):
        LazyAgingQueue(-1.0)
    with pytest.raises(ValueError):
        EagerAgingQueue(-1.0)


# Times move in steps of 1/64 s and bids and aging are dyadic, so every priority is computed
# exactly and ties are real ties. (With arbitrary floats the two formulas can round a genuine
# tie differently; the order is the same everywhere else.)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from([0.5, 1.0, 2.0, 3.0]),
                  st.integers(0, 64).map(lambda k: k / 64)),
        st.tuples(st.just("pop"), st.just(0.0), st.integers(0, 128).map(lambda k: k / 64)),
    ),
    max_size=120,
)


@given(ops=operations, aging=st.sampled_from([0.0, 0.125, 1.0, 7.5]))
def test_lazy_and_eager_queues_pop_in_the_same_order(ops, aging):
    lazy, eager = LazyAgingQueue(aging), EagerAgingQueue(aging)
    now, next_id = 0.0, 0
    for kind, bid, step in ops:
        now += step
        if kind == "push":
            lazy.push(next_id, bid, now)
            eager.push(next_id, bid, now)
            next_id += 1
        elif len(lazy):
            assert lazy.pop(now) == eager.pop(now)
        assert len(lazy) == len(eager)
    while len(lazy):
        now += 1.0
        assert lazy.pop(now) == eager.pop(now)
    assert eager.heapify_work >= 0


def test_eager_queue_does_linear_work_per_pop():
    eager = EagerAgingQueue(1.0)
    for i in range(100):
        eager.push(i, 1.0, float(i))
    eager.pop(200.0)
    assert eager.heapify_work == 100
    eager.pop(201.0)
    assert eager.heapify_work == 199
