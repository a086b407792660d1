"""Checkers for the lab notebooks' exercises: run the student's function, explain what is wrong.

Each ``check_*`` function calls the student's function on a series of cases, compares it with
the package's own implementation (the reference), and stops at the first disagreement with a
message naming the case, both answers and, where the answer matches a common mistake, what that
mistake is. Every checker is wrapped by :func:`apslab.lab.appkit.checker`: it returns a
:class:`CheckResult` when all cases pass (notebooks print it as a few lines of text) and raises
:class:`ExerciseFailed`, whose message is that feedback, when one fails, so that nbgrader marks
the check cell by whether it raised. Nothing is written to stderr.
"""

from __future__ import annotations

import math
import numbers
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from ..core.aging_queue import LazyAgingQueue
from ..core.batcher import MicroBatcher
from ..core.continuous_batcher import ContinuousBatcher
from ..core.kv_blocks import blocks_for
from ..core.limiter import TokenBucket
from ..core.metrics import jain_fairness
from ..core.policies import PriorityPolicy, VTCPolicy
from ..io.scenario import Scenario
from ..io.trace import Trace
from . import fairness_lab
from .appkit import CheckResult, ExerciseFailed, checker

__all__ = ["CheckResult", "ExerciseFailed", "check_counter_lift", "check_form_batch",
           "check_headline_metrics", "check_jain_index", "check_pop_order",
           "check_scheduling_round", "check_sqrt_fit", "check_token_bucket"]


class _Failed(Exception):
    def __init__(self, *messages: str) -> None:
        super().__init__(messages[0] if messages else "")
        self.messages = list(messages)


def _call(func: Callable, case: str, *args):
    """Call the student's function; turn its exceptions into feedback."""
    try:
        return func(*args)
    except NotImplementedError:
        raise _Failed(f"{case}: your function raised NotImplementedError - it is not written yet.",
                      "Replace the `raise NotImplementedError` line with your code and run the "
                      "cell again.") from None
    except Exception as exc:  # the student's bug, reported rather than re-raised
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise _Failed(f"{case}: your function raised {type(exc).__name__}: {exc}",
                      f"(line {where.lineno}: {where.line})") from None


def _same_everywhere(student: Callable, mistake: Callable, cases: Sequence,
                     normalise: Callable = list, arguments: Callable[[Any], tuple] = tuple
                     ) -> bool:
    """Whether the student's function answers like ``mistake`` on every case, each answer
    compared after ``normalise``; each call gets ``arguments(case)`` (a case's fresh copies, so
    a function that changes its arguments cannot mislead the next call).

    A hint names a mistake only when it explains all of the student's answers, not just the
    one that failed (in a two-request case many different mistakes give the same order).
    """
    for case in cases:
        try:
            if normalise(student(*arguments(case))) != normalise(mistake(*arguments(case))):
                return False
        except Exception:
            return False
    return True


def _run(exercise: str, checks: Sequence[tuple[str, Callable[[], None]]],
         success: str) -> CheckResult:
    for index, (_name, check) in enumerate(checks, start=1):
        try:
            check()
        except _Failed as failure:
            return CheckResult(exercise, False, index, len(checks), failure.messages)
    return CheckResult(exercise, True, len(checks), len(checks), [success])


# --------------------------------------------------------------------------------------------
# 00: headline metrics


@checker
def check_headline_metrics(student: Callable[[Any], dict]) -> CheckResult:
    """``student(result) -> {"throughput_tokens_per_s": ..., "gpu_utilization": ...}``.

    Compared with ``result.summary()`` on the example trace at three loads (one with rejected
    requests, one with several GPUs).
    """
    from ..io.workload import generate_trace
    from . import experiments as lab

    scenario, trace = lab.example()
    runs = [("the README example", lab.simulate(scenario, trace))]
    busy = scenario.scaled_load(2.0)
    runs.append(("the example at twice the load",
                 lab.simulate(busy, generate_trace(busy.workload))))
    two = scenario.with_overrides({"cluster.gpus": 2}).scaled_load(3.0)
    runs.append(("3x load on 2 GPUs", lab.simulate(two, generate_trace(two.workload))))

    def make_check(name, result):
        def check():
            summary = result.summary()
            answer = _call(student, name, result)
            if not isinstance(answer, dict):
                raise _Failed(f"{name}: return a dict with keys 'throughput_tokens_per_s' and "
                              f"'gpu_utilization', got {type(answer).__name__}")
            for key in ("throughput_tokens_per_s", "gpu_utilization"):
                if key not in answer:
                    raise _Failed(f"{name}: the dict has no key {key!r}")
                expected, got = summary[key], answer[key]
                if not _close(got, expected):
                    shown = f"{float(got):.6g}" if _is_number(got) else repr(got)
                    raise _Failed(f"{name}: {key} should be {expected:.6g}, yours is {shown}",
                                  *_headline_hints(result, key, got))
        return check

    return _run("headline metrics", [(n, make_check(n, r)) for n, r in runs],
                "Throughput is completed output tokens over elapsed time; utilisation is busy "
                "GPU-seconds over elapsed GPU-seconds.")


def _headline_hints(result, key: str, got) -> list[str]:
    trace = result.trace
    done = result.completed
    first, last = float(trace.arrival_s.min()), float(result.batch_finish_s.max())
    elapsed = last - first
    gpus = result.scenario.cluster.gpus
    busy = float(result.batch_service_s.sum())
    if key == "throughput_tokens_per_s":
        mistakes = {
            "you counted the output tokens of rejected requests too: use result.completed":
                trace.output_tokens.sum() / elapsed,
            "you counted prompt tokens as well: throughput counts output tokens only":
                trace.kv_tokens[done].sum() / elapsed,
            "elapsed time starts at the first arrival of the trace, rejected rows included":
                trace.output_tokens[done].sum() / (last - float(trace.arrival_s[done].min())),
            "elapsed time ends at the last finish, not at the last arrival":
                trace.output_tokens[done].sum() / (float(trace.arrival_s.max()) - first),
        }
    else:
        mistakes = {
            "with several GPUs, divide by elapsed time x number of GPUs": busy / elapsed,
            "elapsed time starts at the first arrival of the trace, rejected rows included":
                busy / ((last - float(trace.arrival_s[done].min())) * gpus),
            "busy time is the sum of batch service times (result.batch_service_s)":
                float((result.finish_s[done] - result.start_s[done]).sum()) / (elapsed * gpus),
        }
    hints = [f"hint: {text}" for text, value in mistakes.items() if _close(got, value)]
    return hints or ["hint: elapsed = last batch finish - first arrival in the trace"]


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _close(got, expected, rel: float = 1e-9, abs_tol: float = 1e-12) -> bool:
    try:
        return math.isclose(float(got), float(expected), rel_tol=rel, abs_tol=abs_tol)
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# 01: the token bucket


def _reference_bucket(costs, times_s, rate_limit, burst_cap) -> list[bool]:
    bucket = TokenBucket(rate_limit, burst_cap)
    return [bucket.consume(c, t) for c, t in zip(costs, times_s, strict=True)]


def _bucket_variant(costs, times_s, rate, burst, *, start_empty=False, cap=True,
                    charge_rejected=False, strict=False) -> list[bool]:
    tokens = 0.0 if start_empty else burst
    last = None
    out = []
    for cost, t in zip(costs, times_s, strict=True):
        if last is not None:
            tokens += (t - last) * rate
            if cap:
                tokens = min(burst, tokens)
        last = t
        ok = tokens > cost if strict else tokens >= cost
        if ok or charge_rejected:
            tokens -= cost
        out.append(ok)
    return out


def _booleans(values) -> list[bool]:
    return [bool(v) for v in values]


BUCKET_MISTAKES = {
    "start_empty": "the bucket starts full (burst_cap tokens), not empty",
    "cap": "refilling stops at burst_cap: tokens = min(burst_cap, tokens + elapsed * rate)",
    "charge_rejected": "a rejected request takes no tokens; only admitted ones are subtracted",
    "strict": "a request is admitted when the bucket holds at least its cost (>=, not >)",
}


@checker
def check_token_bucket(student: Callable[[Sequence[int], Sequence[float], float, float],
                                         Sequence[bool]]) -> CheckResult:
    """``student(costs, times_s, rate_limit, burst_cap) -> [admitted?, ...]`` per request."""
    rng = np.random.default_rng(4)
    random_times = np.sort(rng.uniform(0, 30, 60)).round(3).tolist()
    random_costs = rng.integers(50, 600, 60).tolist()
    cases = [
        ("three small requests", [100, 100, 100], [0.0, 1.0, 2.0], 50.0, 500.0),
        ("a burst larger than the bucket", [400, 400, 400, 400], [0.0, 0.1, 0.2, 0.3], 100.0,
         1000.0),
        ("a cost exactly equal to what the bucket holds", [500, 200, 100], [0.0, 1.0, 2.0], 100.0,
         500.0),
        ("a long idle gap", [900, 900, 900, 900], [0.0, 100.0, 100.5, 101.0], 100.0, 1000.0),
        ("a rejection followed by a smaller request", [800, 500, 150], [0.0, 0.5, 1.0], 100.0,
         1000.0),
        ("60 random requests", random_costs, random_times, 120.0, 1500.0),
    ]

    def make_check(name, costs, times, rate, burst):
        def check():
            expected = _reference_bucket(costs, times, rate, burst)
            got = _call(student, name, list(costs), list(times), rate, burst)
            try:
                got = [bool(x) for x in got]
            except TypeError:
                raise _Failed(f"{name}: return one True/False per request, got {got!r}") from None
            if len(got) != len(expected):
                raise _Failed(f"{name}: {len(costs)} requests but {len(got)} answers")
            if got == expected:
                return
            row = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
            bucket = TokenBucket(rate, burst)
            for c, t in zip(costs[:row], times[:row], strict=True):
                bucket.consume(c, t)
            holds = bucket.available(times[row])
            verdict = "admits" if expected[row] else "rejects"
            messages = [f"{name} (rate {rate:g}/s, burst cap {burst:g}): request {row} at "
                        f"t = {times[row]:g} s costing {costs[row]} tokens - the bucket holds "
                        f"{holds:.1f} tokens, so it {verdict}; yours "
                        f"{'admits' if got[row] else 'rejects'}."]
            arguments = [(list(c[1]), list(c[2]), c[3], c[4]) for c in cases]
            for flag, text in BUCKET_MISTAKES.items():
                mistake = partial(_bucket_variant, **({"cap": False} if flag == "cap"
                                                      else {flag: True}))
                if _same_everywhere(student, mistake, arguments, _booleans):
                    messages.append(f"hint: {text}")
            raise _Failed(*messages)
        return check

    return _run("token bucket", [(c[0], make_check(*c)) for c in cases],
                "Your bucket makes the same decisions as apslab.core.limiter.TokenBucket.")


# --------------------------------------------------------------------------------------------
# 02: the aging queue's order


def _reference_order(requests, aging_per_s, now_s) -> list[int]:
    queue = LazyAgingQueue(aging_per_s)
    for request_id, bid, arrival in requests:
        queue.push(request_id, bid, arrival)
    return [queue.pop(now_s)[0] for _ in range(len(requests))]


def _integers(values) -> list[int]:
    return [int(v) for v in values]


ORDER_MISTAKES = {
    "ignores aging: effective priority = bid + aging_per_s * (now - arrival)":
        lambda r, a, n: sorted(r, key=lambda x: (-x[1], x[2], x[0])),
    "aging has the wrong sign: a request that waited longer must gain priority":
        lambda r, a, n: sorted(r, key=lambda x: (-(x[1] - a * (n - x[2])), x[2], x[0])),
    "highest effective priority goes first, not lowest":
        lambda r, a, n: sorted(r, key=lambda x: (x[1] + a * (n - x[2]), x[2], x[0])),
    "ties go to the earlier arrival first, then to the lower request id":
        lambda r, a, n: sorted(r, key=lambda x: (-(x[1] + a * (n - x[2])), x[0])),
}


@checker
def check_pop_order(student: Callable[[list[tuple[int, float, float]], float, float], list[int]]
                    ) -> CheckResult:
    """``student(requests, aging_per_s, now_s) -> request ids in pop order``.

    ``requests`` is a list of (request_id, priority_bid, arrival_s).
    """
    rng = np.random.default_rng(2)
    random_requests = list(zip(range(40), rng.integers(1, 4, 40).astype(float).tolist(),
                               np.sort(rng.uniform(0, 60, 40)).round(2).tolist(), strict=True))
    cases = [
        ("no aging: bids decide", [(0, 1.0, 0.0), (1, 3.0, 1.0), (2, 2.0, 2.0)], 0.0, 5.0),
        ("equal bids: the earlier arrival first", [(0, 1.0, 2.0), (1, 1.0, 1.0), (2, 1.0, 3.0)],
         0.0, 5.0),
        ("an old low bid overtakes a new high bid", [(0, 1.0, 0.0), (1, 2.0, 20.0)], 0.1, 21.0),
        ("a young low bid does not", [(0, 1.0, 15.0), (1, 2.0, 20.0)], 0.1, 21.0),
        ("same effective priority: earlier arrival, then lower id",
         [(3, 2.0, 10.0), (1, 1.0, 0.0), (2, 1.0, 0.0), (0, 2.0, 10.0)], 0.1, 12.0),
        ("40 random requests, aging 0.05", random_requests, 0.05, 60.0),
    ]

    def make_check(name, requests, aging, now):
        def check():
            expected = _reference_order(requests, aging, now)
            got = _call(student, name, list(requests), aging, now)
            try:
                got = [int(x) for x in got]
            except (TypeError, ValueError):
                raise _Failed(f"{name}: return a list of request ids, got {got!r}") from None
            if got == expected:
                return
            if sorted(got) != sorted(expected):
                raise _Failed(f"{name}: return every request id exactly once; expected the ids "
                              f"{sorted(expected)}, got {got}")
            messages = [f"{name} (aging {aging:g}/s, now {now:g} s): expected {expected}, "
                        f"got {got}."]
            arguments = [(list(c[1]), c[2], c[3]) for c in cases]
            for text, mistake in ORDER_MISTAKES.items():
                def ids(*args, mistake=mistake):
                    return [x[0] for x in mistake(*args)]

                if _same_everywhere(student, ids, arguments, _integers):
                    messages.append(f"hint: {text}")
            raise _Failed(*messages)
        return check

    return _run("aging queue order", [(c[0], make_check(*c)) for c in cases],
                "Same order as apslab.core.aging_queue.LazyAgingQueue. Notice that now_s never "
                "changes it: sorting by bid - aging_per_s * arrival_s gives the same order at "
                "any time.")


# --------------------------------------------------------------------------------------------
# 03: forming a batch


def _reference_batch(waiting, max_batch_size, kv_capacity_tokens) -> list[int]:
    queue = LazyAgingQueue(0.0)
    for index, (prompt, output) in enumerate(waiting):
        # Decreasing bids keep the list order as the priority order.
        queue.push(index, float(len(waiting) - index), 0.0, (prompt, output))
    batch = MicroBatcher(0.0, max_batch_size, kv_capacity_tokens).form_batch(queue, 0.0)
    return batch.request_ids


def _batch_variant(waiting, size, kv, *, skip=False, prompt_only=False, strict=False,
                   off_by_one=False) -> list[int]:
    taken, used = [], 0
    limit = size + 1 if off_by_one else size
    for index, (prompt, output) in enumerate(waiting):
        if len(taken) >= limit:
            break
        need = prompt if prompt_only else prompt + output
        fits = used + need < kv if strict else used + need <= kv
        if not fits:
            if skip:
                continue
            break
        taken.append(index)
        used += need
    return taken


BATCH_MISTAKES = {
    "skip": "formation stops at the first request that does not fit - no skipping ahead, or a "
            "large high-priority request would be overtaken again and again",
    "prompt_only": "a request holds prompt + output tokens in the KV cache, not just its prompt",
    "strict": "a batch may fill the KV cache exactly (<=, not <)",
    "off_by_one": "a batch holds at most max_batch_size requests",
}


@checker
def check_form_batch(student: Callable[[list[tuple[int, int]], int, int], list[int]]
                     ) -> CheckResult:
    """``student(waiting, max_batch_size, kv_capacity_tokens) -> indices taken``.

    ``waiting`` lists (prompt_tokens, output_tokens) in priority order (index 0 goes first).
    """
    rng = np.random.default_rng(3)
    random_waiting = list(zip(rng.integers(50, 800, 30).tolist(),
                              rng.integers(20, 300, 30).tolist(), strict=True))
    cases = [
        ("everything fits", [(100, 50), (200, 50), (50, 50)], 16, 10_000),
        ("the size cap binds", [(10, 10)] * 6, 4, 10_000),
        ("the KV cache binds", [(300, 100), (300, 100), (300, 100)], 16, 1000),
        ("a batch that fills the KV cache exactly", [(300, 200), (400, 100)], 16, 1000),
        ("a big request blocks smaller ones behind it", [(200, 100), (900, 100), (50, 10)], 16,
         1000),
        ("30 random requests", random_waiting, 8, 3000),
    ]

    def make_check(name, waiting, size, kv):
        def check():
            expected = _reference_batch(waiting, size, kv)
            got = _call(student, name, list(waiting), size, kv)
            try:
                got = [int(x) for x in got]
            except (TypeError, ValueError):
                raise _Failed(f"{name}: return the list of indices taken, got {got!r}") from None
            if got == expected:
                return
            messages = [f"{name} (max_batch_size {size}, KV capacity {kv} tokens): expected "
                        f"{expected}, got {got}."]
            arguments = [(list(c[1]), c[2], c[3]) for c in cases]
            for flag, text in BATCH_MISTAKES.items():
                if _same_everywhere(student, partial(_batch_variant, **{flag: True}), arguments,
                                    _integers):
                    messages.append(f"hint: {text}")
            raise _Failed(*messages)
        return check

    return _run("batch formation", [(c[0], make_check(*c)) for c in cases],
                "Same batches as apslab.core.batcher.MicroBatcher.form_batch.")


# --------------------------------------------------------------------------------------------
# 04: fitting the sqrt curve


@checker
def check_sqrt_fit(student: Callable[[np.ndarray, np.ndarray], tuple[float, float]]
                   ) -> CheckResult:
    """``student(batch_sizes, throughputs) -> (a, b)`` of ``128 * (a + b*sqrt(B))``.

    Least squares on the throughputs; compared with :func:`apslab.lab.fit.fit_sqrt` to 1e-4.
    """
    from . import fit as fitting
    from .datasets import load_a100_decode_throughput

    data = load_a100_decode_throughput()
    batch = np.array([1, 2, 4, 8, 16, 32, 64], dtype=np.float64)
    cases = [("the seed's own curve (should give a = 0.4, b = 0.6)", batch,
              fitting.sqrt_curve(batch, 0.4, 0.6))]
    for source in ("optimum-benchmark", "argonne-llm-inference-bench-vllm"):
        rows = fitting.reference_series(data, source)
        cases.append((f"{source} {rows.input_len[0]}/{rows.output_len[0]}",
                      rows.batch_size.astype(np.float64), rows.decode_tokens_per_s))

    def make_check(name, x, y):
        def check():
            expected = fitting.fit_sqrt(x, y)
            got = _call(student, name, x.copy(), y.copy())
            try:
                a, b = (float(v) for v in got)
            except (TypeError, ValueError):
                raise _Failed(f"{name}: return the pair (a, b), got {got!r}") from None
            if _close(a, expected["a"], 1e-4, 1e-6) and _close(b, expected["b"], 1e-4, 1e-6):
                return
            messages = [f"{name}: expected a = {expected['a']:.5f}, b = {expected['b']:.5f}; "
                        f"yours a = {a:.5f}, b = {b:.5f}."]
            if _close(a, expected["a"] * 128, 1e-3, 1e-6) and _close(b, expected["b"] * 128,
                                                                      1e-3, 1e-6):
                messages.append("hint: the model is 128 * (a + b*sqrt(B)); you fitted "
                                "a + b*sqrt(B) to the raw throughputs, so your a, b are 128x too "
                                "large")
            linear = np.polyfit(x, y / 128, 1)[::-1]
            if _close(a, linear[0], 1e-3, 1e-6) and _close(b, linear[1], 1e-3, 1e-6):
                messages.append("hint: the curve is in sqrt(B), not B")
            raise _Failed(*messages)
        return check

    return _run("sqrt fit", [(c[0], make_check(*c)) for c in cases],
                "Your fit agrees with apslab.lab.fit.fit_sqrt.")


# --------------------------------------------------------------------------------------------
# 05: Jain's index


JAIN_MISTAKES = {
    "Jain's index is (sum x)^2 / (N * sum x^2); yours looks inverted":
        lambda x: (len(x) * sum(v * v for v in x)) / sum(x) ** 2,
    "divide by N: (sum x)^2 / (N * sum x^2)": lambda x: sum(x) ** 2 / sum(v * v for v in x),
    "square the sum, not sum the squares, in the numerator":
        lambda x: sum(v * v for v in x) / (len(x) * sum(v * v for v in x)),
}


@checker
def check_jain_index(student: Callable[[Sequence[float]], float | None]) -> CheckResult:
    """``student(allocations) -> Jain's index``, None when it is undefined (empty or all zero)."""
    cases = [
        ("four equal tenants", [10.0, 10.0, 10.0, 10.0]),
        ("one tenant gets everything", [40.0, 0.0, 0.0, 0.0]),
        ("allocations 1, 2, 3, 4", [1.0, 2.0, 3.0, 4.0]),
        ("the same shares in tokens (scale must not matter)", [1000.0, 2000.0, 3000.0, 4000.0]),
        ("one tenant", [7.0]),
        ("no tenants", []),
        ("nobody got anything", [0.0, 0.0, 0.0]),
    ]

    def make_check(name, values):
        def check():
            expected = jain_fairness(values)
            got = _call(student, name, list(values))
            if expected is None:
                if got is not None:
                    raise _Failed(f"{name}: the index is undefined here (0/0); return None, "
                                  f"got {got!r}")
                return
            if got is None or not _close(got, expected, 1e-9, 1e-12):
                messages = [f"{name} {values}: expected {expected:.6g}, got {got!r}."]
                for text, mistake in JAIN_MISTAKES.items():
                    try:
                        if got is not None and _close(got, mistake(values), 1e-9, 1e-12):
                            messages.append(f"hint: {text}")
                    except ZeroDivisionError:
                        pass
                raise _Failed(*messages)
        return check

    return _run("Jain's index", [(c[0], make_check(*c)) for c in cases],
                "1 when every tenant gets the same, 1/N when one gets everything, and the unit "
                "does not matter.")


# --------------------------------------------------------------------------------------------
# 08: one scheduling round of continuous batching
#
# Like every checker (see ``checker``): the CheckResult when every case passes, ExerciseFailed
# (an AssertionError whose message is the whole feedback) at the first disagreement.


@dataclass(frozen=True)
class RoundCase:
    """The state one GPU's scheduling round starts from.

    ``running`` and ``waiting`` are request names in priority order (highest first);
    ``requests[name]`` holds ``P`` (prompt tokens), ``g`` (tokens generated), ``c`` (tokens
    computed: in the KV cache) and ``blocks`` (KV blocks held).
    """

    name: str
    running: tuple[str, ...]
    waiting: tuple[str, ...]
    requests: dict[str, dict[str, int]]
    free_blocks: int
    budget: int
    max_num_seqs: int
    block_size: int

    def arguments(self) -> tuple:
        """Fresh copies, so a function that changes its arguments cannot change the case."""
        return (list(self.running), list(self.waiting),
                {name: dict(state) for name, state in self.requests.items()},
                self.free_blocks, self.budget, self.max_num_seqs, self.block_size)

    def describe(self) -> str:
        def show(names):
            return "[" + ", ".join(
                f"{n} (P={self.requests[n]['P']} g={self.requests[n]['g']} "
                f"c={self.requests[n]['c']} blocks={self.requests[n]['blocks']})"
                for n in names) + "]"

        return (f"running {show(self.running)}, waiting {show(self.waiting)}, free blocks "
                f"{self.free_blocks}, budget {self.budget}, max_num_seqs {self.max_num_seqs}, "
                f"block size {self.block_size}")


class _RecordingPolicy(PriorityPolicy):
    """The priority policy, remembering which requests were pushed back (preempted), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.pushed: list[int] = []

    def push(self, handle: int) -> None:
        self.pushed.append(handle)
        super().push(handle)


def engine_round(case: RoundCase) -> tuple[list[tuple[str, int]], list[str]]:
    """What :meth:`apslab.core.continuous_batcher.ContinuousBatcher.schedule` does from the
    case's state: ``(scheduled, preempted)``, ``scheduled`` as (name, n) pairs in the order the
    round scheduled them and ``preempted`` in the order it preempted them.

    The batcher is given the state directly: every request is added in priority order (running
    ones first, so they pop first and are moved to the running list), then its c, g and blocks
    are set; the GPU's blocks are the free ones plus those the running requests hold.
    """
    names = [*case.running, *case.waiting]
    held = sum(case.requests[name]["blocks"] for name in case.running)
    policy = _RecordingPolicy()
    batcher = ContinuousBatcher(gpus=1, total_blocks=case.free_blocks + held,
                                block_size=case.block_size, max_num_seqs=case.max_num_seqs,
                                max_num_batched_tokens=case.budget, policy=policy)
    for rank, name in enumerate(names):
        state = case.requests[name]
        handle = batcher.add(state["P"], state["g"] + 1, neg_key=float(rank), request_id=rank)
        batcher.computed[handle] = state["c"]
        batcher.generated[handle] = state["g"]
        batcher.blocks[handle] = state["blocks"]
        batcher.admitted_once[handle] = state["c"] + state["g"] > 0
    for _ in case.running:
        batcher.running[0].append(policy.pop())
    batcher.free_blocks[0] = case.free_blocks
    policy.pushed.clear()
    iteration = batcher.schedule(0)
    scheduled = [] if iteration is None else [
        (names[h], n) for h, n in zip(iteration.handles, iteration.tokens, strict=True)]
    return scheduled, [names[h] for h in policy.pushed]


def _round_variant(running, waiting, requests, free_blocks, budget, max_num_seqs, block_size, *,
                   front=False, admit_after_preemption=False, skip_ahead=False,
                   no_chunking=False, ignore_held=False, forget_generated=False):
    """A scheduling round as a student might write it, with one mistake switched on (with none,
    the round of docs/continuous.md)."""
    running = list(running)
    held = {name: state["blocks"] for name, state in requests.items()}
    scheduled, preempted = [], []
    free = free_blocks
    i = 0
    while i < len(running) and budget > 0:
        name = running[i]
        state = requests[name]
        left = state["P"] + state["g"] - state["c"]
        n = left if no_chunking else min(left, budget)
        need = blocks_for(state["c"] + n, block_size) - (0 if ignore_held else held[name])
        victim = None
        while need > free:
            victim = running.pop(i if front else -1)
            free += held[victim]
            held[victim] = 0
            preempted.append(victim)
            if victim == name:
                break
        if victim == name:
            break
        free -= need
        held[name] += need
        budget -= n
        scheduled.append((name, n))
        i += 1
    if not preempted or admit_after_preemption:
        for name in waiting:
            if len(running) >= max_num_seqs or budget <= 0:
                break
            state = requests[name]
            left = state["P"] + (0 if forget_generated else state["g"])
            n = left if no_chunking else min(left, budget)
            need = blocks_for(n, block_size)
            if need > free:
                if skip_ahead:
                    continue
                break
            running.append(name)
            free -= need
            held[name] = need
            budget -= n
            scheduled.append((name, n))
    return scheduled, preempted


ROUND_MISTAKES = {
    "front": "preempt from the back: the victim is the last request of the running list (the "
             "lowest priority, not yet scheduled this round), not the one at the front",
    "admit_after_preemption": "a round that preempted admits nobody: the waiting pass runs only "
                              "if nothing was preempted",
    "skip_ahead": "the waiting pass stops at the first request whose blocks are not free - no "
                  "skipping ahead to a smaller one behind it",
    "no_chunking": "chunk to the budget: a request computes n = min(tokens left to compute, "
                   "budget left) tokens, and the budget bounds the whole round",
    "ignore_held": "a running request already holds blocks: it needs ceil((c + n) / block_size) "
                   "- blocks held new ones, not ceil((c + n) / block_size)",
    "forget_generated": "a preempted request recomputes its prompt and the g tokens it had "
                        "generated: n = min(P + g, budget left)",
}


def _state(name, P, g=0, c=0, blocks=0) -> tuple[str, dict[str, int]]:  # noqa: N803
    return name, {"P": P, "g": g, "c": c, "blocks": blocks}


def _hand_case(name, running, waiting, free_blocks, budget, max_num_seqs=8, block_size=4
               ) -> RoundCase:
    states = dict(running + waiting)
    return RoundCase(name, tuple(n for n, _ in running), tuple(n for n, _ in waiting), states,
                     free_blocks, budget, max_num_seqs, block_size)


def engine_states(seed: int = 8, rounds: int = 400, total_blocks: int = 24, block_size: int = 4,
                  max_num_seqs: int = 5, budget: int = 16):
    """The states a real :class:`ContinuousBatcher` goes through on a seeded random stream of
    requests (one GPU; a request arrives before a round with probability 0.45): yields
    ``(step, case, (scheduled, preempted))`` for every round that scheduled something, with the
    state before the round and what the batcher then did."""
    rng = np.random.default_rng(seed)
    batcher = ContinuousBatcher(gpus=1, total_blocks=total_blocks, block_size=block_size,
                                max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                                policy=PriorityPolicy())
    for step in range(rounds):
        if rng.random() < 0.45:
            ident = len(batcher.prompt)
            batcher.add(int(rng.integers(2, 30)), int(rng.integers(1, 14)),
                        neg_key=-float(rng.integers(1, 4)), arrival_s=float(step),
                        request_id=ident)
        running = list(batcher.running[0])
        waiting = [h for _, h in sorted(batcher.policy.heap)]
        states = {f"r{h}": {"P": batcher.prompt[h], "g": batcher.generated[h],
                            "c": batcher.computed[h], "blocks": batcher.blocks[h]}
                  for h in running + waiting}
        case = RoundCase(f"round {step} of a simulated GPU", tuple(f"r{h}" for h in running),
                         tuple(f"r{h}" for h in waiting), states, batcher.free_blocks[0], budget,
                         max_num_seqs, block_size)
        iteration = batcher.schedule(0)
        if iteration is None:
            continue
        yield step, case, ([(f"r{h}", n) for h, n in zip(iteration.handles, iteration.tokens,
                                                          strict=True)],
                           [f"r{h}" for h in iteration.preempted])
        batcher.complete(0)


def _engine_cases() -> list[RoundCase]:
    """Three states from :func:`engine_states` (24 blocks of 4 tokens, budget 16, at most 5
    running): the first round that schedules at least four requests with a prompt chunk among
    them, the first that preempts, and the first whose waiting pass stops for want of blocks."""
    def left(case, name):
        state = case.requests[name]
        return state["P"] + state["g"] - state["c"]

    def chunk_beside_decodes(case, scheduled, preempted):
        return len(scheduled) >= 4 and any(1 < n < left(case, name) for name, n in scheduled)

    def stops_for_blocks(case, scheduled, preempted):
        admitted = sum(name in case.waiting for name, _ in scheduled)
        return (not preempted and admitted < len(case.waiting)
                and len(case.running) + admitted < case.max_num_seqs
                and sum(n for _, n in scheduled) < case.budget)

    kinds = {"schedules a prompt chunk beside decodes": chunk_beside_decodes,
             "preempts": lambda case, scheduled, preempted: bool(preempted),
             "stops for want of blocks": stops_for_blocks}
    found: dict[str, RoundCase] = {}
    for step, case, (scheduled, preempted) in engine_states():
        for kind, hit in kinds.items():
            if kind not in found and hit(case, scheduled, preempted):
                found[kind] = replace(case, name=f"round {step} of a simulated GPU ({kind})")
        if len(found) == len(kinds):
            break
    return sorted(found.values(), key=lambda case: int(case.name.split()[1]))


def scheduling_round_cases() -> list[RoundCase]:
    """The checker's cases, in order: one rule at a time, then states a real batcher reached."""
    S = _state  # noqa: N806
    decoding = [S("a", 8, g=1, c=8, blocks=2), S("b", 6, g=2, c=7, blocks=2),
                S("c", 12, g=3, c=14, blocks=4)]
    return [
        _hand_case("an idle GPU admits in priority order", [],
                   [S("a", 6), S("b", 9), S("c", 3)], free_blocks=20, budget=64),
        _hand_case("the budget chunks a long prompt", [S("a", 6, g=2, c=7, blocks=2)],
                   [S("b", 40), S("c", 4)], free_blocks=20, budget=16),
        _hand_case("a chunked prompt goes on; the budget runs out before the decode",
                   [S("a", 40, c=15, blocks=4), S("b", 5, g=3, c=7, blocks=2)], [],
                   free_blocks=10, budget=16),
        _hand_case("max_num_seqs caps the running list",
                   [S("a", 5, g=1, c=5, blocks=2), S("b", 7, g=4, c=10, blocks=3)],
                   [S("c", 3), S("d", 2), S("e", 2)], free_blocks=20, budget=64,
                   max_num_seqs=3),
        _hand_case("a request that does not fit blocks the ones behind it",
                   [S("a", 6, g=1, c=6, blocks=2)], [S("b", 30), S("c", 3)], free_blocks=5,
                   budget=64),
        _hand_case("a preempted request comes back", [], [S("a", 10, g=6)], free_blocks=10,
                   budget=64),
        _hand_case("blocks already held count",
                   [S("a", 10, g=3, c=12, blocks=3), S("b", 5, g=1, c=5, blocks=2)],
                   [S("c", 4)], free_blocks=2, budget=64),
        _hand_case("out of blocks: the last running request is preempted", decoding, [],
                   free_blocks=0, budget=64),
        _hand_case("no admissions in a round that preempted", decoding, [S("d", 2)],
                   free_blocks=0, budget=64),
        _hand_case("the victim can be the request being scheduled",
                   [S("x", 4, g=2, c=5, blocks=2), S("a", 20, c=8, blocks=2),
                    S("b", 2, g=1, c=2, blocks=1)], [], free_blocks=1, budget=16),
        *_engine_cases(),
    ]


def _round_answer(answer) -> tuple[list[tuple[str, int]], list[str]]:
    scheduled, preempted = answer
    return ([(str(name), int(n)) for name, n in scheduled], [str(name) for name in preempted])


def _show_round(answer) -> str:
    scheduled, preempted = answer
    return (f"scheduled [{', '.join(f'({n}, {k})' for n, k in scheduled)}], "
            f"preempted [{', '.join(preempted)}]")


@checker
def check_scheduling_round(student: Callable) -> CheckResult:
    """``student(running, waiting, requests, free_blocks, budget, max_num_seqs, block_size)
    -> (scheduled, preempted)``: one scheduling round of one GPU (see :class:`RoundCase` for
    the arguments; ``scheduled`` lists (name, n) pairs in the order the round schedules them,
    ``preempted`` the names it preempts, in order).

    Each case is compared with what the package's own
    :meth:`~apslab.core.continuous_batcher.ContinuousBatcher.schedule` does from the same state
    (:func:`engine_round`). At the first disagreement it raises ExerciseFailed with the case,
    both answers and, for each common mistake that explains every answer the student's function
    gave so far (the cases it passed and the one it failed), a hint. Returns the CheckResult when
    every case passes.
    """
    cases = scheduling_round_cases()

    def make_check(index, case):
        def check():
            expected = engine_round(case)
            got = _call(student, case.name, *case.arguments())
            try:
                got = _round_answer(got)
            except (TypeError, ValueError):
                raise _Failed(f"{case.name}: return (scheduled, preempted) - scheduled a list of "
                              f"(name, n) pairs, preempted a list of names; got {got!r}"
                              ) from None
            if got == expected:
                return
            messages = [f"{case.name}: {case.describe()}",
                        f"expected {_show_round(expected)}",
                        f"yours    {_show_round(got)}"]
            for flag, text in ROUND_MISTAKES.items():
                if _same_everywhere(student, partial(_round_variant, **{flag: True}),
                                    cases[:index + 1], _round_answer, RoundCase.arguments):
                    messages.append(f"hint: {text}")
            raise _Failed(*messages)
        return check

    return _run("scheduling round", [(c.name, make_check(i, c)) for i, c in enumerate(cases)],
                "Same rounds as apslab.core.continuous_batcher.ContinuousBatcher.schedule.")


# --------------------------------------------------------------------------------------------
# 09: the Virtual Token Counter's lift
#
# Like every checker: the CheckResult when every case passes, ExerciseFailed with the whole
# feedback at the first disagreement, nothing printed.


@dataclass(frozen=True)
class LiftCase:
    """The moment a request of ``tenant`` joins VTC's waiting queue.

    ``counters`` maps every tenant to its counter (service received, divided by its share);
    ``waiting`` are the tenants that have waiting requests just before this one joins.
    """

    name: str
    counters: dict[str, float]
    waiting: frozenset[str]
    tenant: str

    def arguments(self) -> tuple:
        """Fresh copies, so a function that changes its arguments cannot change the case."""
        return dict(self.counters), set(self.waiting), self.tenant

    def describe(self) -> str:
        counters = ", ".join(f"{name} {value:g}" for name, value in self.counters.items())
        waiting = ", ".join(sorted(self.waiting)) or "nobody"
        return f"counters {{{counters}}}, waiting: {waiting}; a request of {self.tenant} joins"


def engine_lift(case: LiftCase) -> float:
    """What :meth:`apslab.core.policies.VTCPolicy.push` makes of the case: a real policy is
    given one waiting request of every tenant in ``case.waiting``, its counters are set to the
    case's, and the tenant's request is pushed; returns the tenant's counter after it."""
    names = list(case.counters)
    policy = VTCPolicy([1.0] * len(names))
    arrivals = [name for name in names if name in case.waiting] + [case.tenant]
    for handle, name in enumerate(arrivals):
        policy.add(handle, neg_key=0.0, arrival_s=float(handle), request_id=handle,
                   tenant=names.index(name))
    for handle in range(len(arrivals) - 1):
        policy.push(handle)
    policy.counters = [float(case.counters[name]) for name in names]
    policy.push(len(arrivals) - 1)
    return policy.counters[names.index(case.tenant)]


def _lift_variant(counters, waiting, tenant, *, already_waiting=False, self_in_min=False,
                  max_of_others=False, lowers=False, lift_when_alone=False, all_tenants=False):
    """The lift as a student might write it, with one mistake switched on (with none, VTC's)."""
    own = counters[tenant]
    if tenant in waiting and not already_waiting:
        return own
    if all_tenants:
        pool = [value for name, value in counters.items() if name != tenant]
    else:
        pool = [counters[name] for name in waiting if name != tenant]
        if self_in_min:
            pool.append(own)
        if lift_when_alone and not pool:
            pool = [value for name, value in counters.items() if name != tenant]
    if not pool:
        return own
    target = max(pool) if max_of_others else min(pool)
    return target if lowers else max(own, target)


LIFT_MISTAKES = {
    "already_waiting": "only a tenant that had no waiting request is lifted: one that already "
                       "waits has been competing all along and keeps its counter",
    "self_in_min": "the min is over the *other* tenants that have waiting requests; with the "
                   "tenant itself in it (or with no lift at all) its counter never moves",
    "max_of_others": "lift to the *smallest* counter among the others that wait, not the "
                     "largest: the newcomer competes from where the least-served waiting tenant "
                     "stands",
    "lowers": "the lift is max(own counter, min of the others): a counter never goes down, or "
              "service a tenant already received would be forgotten",
    "lift_when_alone": "when no other tenant has waiting requests there is nobody to catch up "
                       "with: the counter stays as it is",
    "all_tenants": "only tenants with waiting requests count in the min: an idle tenant's "
                   "counter says nothing about where the competition stands",
}


def _lift_case(name, counters, waiting, tenant) -> LiftCase:
    return LiftCase(name, {k: float(v) for k, v in counters.items()}, frozenset(waiting), tenant)


def _replay_scenario_and_trace():
    """The engine replay: notebook 09's GPU for 30 s, a flood beside two tenants that come in
    bursts (alpha six requests at 2, 12 and 22 s, beta four at 7, 17 and 27 s). Each burst
    finds its tenant without waiting requests, so its counter is lifted; without the lift a
    burst would take a long turn on an old, small counter."""
    base = fairness_lab.lab_scenario().with_overrides({"workload.duration_s": 30.0})
    scenario = fairness_lab.shape_scenario(base, {"alpha": 0.6, "beta": 0.4, "flood": 2.5},
                                           "vtc")
    trace = fairness_lab.shape_trace(scenario)
    arrival = trace.arrival_s.copy()
    for code, (first, size) in ((0, (2.0, 6)), (1, (7.0, 4))):
        rows = np.flatnonzero(trace.tenant_codes == code)
        burst = np.arange(len(rows))
        arrival[rows] = first + 10.0 * (burst // size) + 0.001 * (burst % size)
    order = np.argsort(arrival, kind="stable")
    return scenario, replace(trace.subset(order), arrival_s=arrival[order],
                             source="<bursts beside a flood>")


class _ScenarioVTC(VTCPolicy):
    """The VTC policy a scenario names (its shares and weights), knowing the tenants' names."""

    def __init__(self, scenario: Scenario) -> None:
        sched = scenario.scheduler
        super().__init__([t.share for t in scenario.tenants], sched.vtc_input_weight,
                         sched.vtc_output_weight)
        self.names = scenario.tenant_ids()

    def state(self) -> tuple[dict[str, float], set[str]]:
        """Every tenant's counter and the tenants with waiting requests, by name."""
        return (dict(zip(self.names, self.counters, strict=True)),
                {self.names[u] for u in self.backlogged})


class _RecordingVTC(_ScenarioVTC):
    """VTC that records every push: the state before it (a :class:`LiftCase`) and the tenant's
    counter after it."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        self.pushes: list[tuple[LiftCase, float]] = []

    def push(self, handle: int) -> None:
        counters, waiting = self.state()
        before = LiftCase("", counters, frozenset(waiting), self.names[self.tenant[handle]])
        super().push(handle)
        self.pushes.append((before, self.counters[self.tenant[handle]]))


class _StudentVTC(_ScenarioVTC):
    """VTC whose lift is the student's function."""

    def __init__(self, scenario: Scenario, lift: Callable) -> None:
        super().__init__(scenario)
        self.lift = lift

    def lifted_counter(self, tenant: int) -> float:
        counters, waiting = self.state()
        return float(self.lift(counters, waiting, self.names[tenant]))


@dataclass(frozen=True)
class _Replay:
    """The engine replay (:func:`_replay_scenario_and_trace`) run with VTC: every request's
    start time and every push the policy saw."""

    scenario: Scenario
    trace: Trace
    start_s: np.ndarray
    pushes: list[tuple[LiftCase, float]]


def _engine_replay() -> _Replay:
    """One run of the replay, recorded: its pushes give the engine cases, and, as the policy is
    the engine's own VTC, its start times are what the student's lift must reproduce."""
    scenario, trace = _replay_scenario_and_trace()
    recorder = _RecordingVTC(scenario)
    start_s = fairness_lab.run_with_policy(scenario, trace, recorder)
    return _Replay(scenario, trace, start_s, recorder.pushes)


def _engine_lift_cases(replay: _Replay) -> list[LiftCase]:
    """Three moments a real VTC policy went through in the engine replay's run, in the order
    they happened: the first push that lifted a counter, the first by a tenant that already had
    waiting requests while another waiting tenant's counter was larger (a lift would raise
    it), and the first with nobody else waiting while another tenant's counter was larger."""
    kinds = {
        "lifted": lambda c, after: after > c.counters[c.tenant],
        "already waiting": lambda c, after: c.tenant in c.waiting and any(
            c.counters[u] > c.counters[c.tenant] for u in c.waiting if u != c.tenant),
        "nobody else waiting": lambda c, after: not (c.waiting - {c.tenant}) and any(
            v > c.counters[c.tenant] for u, v in c.counters.items() if u != c.tenant),
    }
    found: dict[str, LiftCase] = {}
    for step, (case, after) in enumerate(replay.pushes):
        for kind, hit in kinds.items():
            if kind not in found and hit(case, after):
                found[kind] = replace(case, name=f"push {step} of a simulated run ({kind})")
    return sorted(found.values(), key=lambda case: int(case.name.split()[1]))


def counter_lift_cases(replay: _Replay | None = None) -> list[LiftCase]:
    """The checker's lift cases, in order: one rule at a time, then moments of a real run
    (``replay``: the :func:`_engine_replay` they come from, if already run)."""
    C = _lift_case  # noqa: N806
    return [
        C("a newcomer is lifted to the smallest counter among the waiting tenants",
          {"a": 0, "b": 40, "c": 25}, {"b", "c"}, "a"),
        C("only tenants with waiting requests count",
          {"a": 0, "b": 40, "c": 25, "d": 10}, {"b", "c"}, "a"),
        C("nobody else waits: no lift", {"a": 5, "b": 30, "c": 12}, set(), "a"),
        C("a counter is never lowered", {"a": 50, "b": 40, "c": 25}, {"b", "c"}, "a"),
        C("a tenant that already waits keeps its counter",
          {"a": 3, "b": 40, "c": 25}, {"a", "b", "c"}, "a"),
        C("one other tenant waits", {"a": 7.5, "b": 9.25, "c": 1.0}, {"b"}, "a"),
        C("the tenant is not the first one", {"a": 12.5, "b": 7.25, "c": 30.0, "d": 7.0},
          {"a", "c"}, "d"),
        *_engine_lift_cases(replay or _engine_replay()),
    ]


@checker
def check_counter_lift(student: Callable[[dict[str, float], set[str], str], float]
                       ) -> CheckResult:
    """``student(counters, waiting, tenant) -> the tenant's new counter``: VTC's counter lift
    when a request of ``tenant`` joins the waiting queue (see :class:`LiftCase`).

    Each case is compared with what :meth:`apslab.core.policies.VTCPolicy.push` does from the
    same state (:func:`engine_lift`): rules one at a time, then moments of a real run. The last
    check runs a whole trace through the continuous engine with the student's lift inside a
    VTC policy (:func:`apslab.lab.fairness_lab.run_with_policy`): every request must start when
    it does in the engine. At the first disagreement it raises ExerciseFailed with the case,
    both answers and, for each common mistake that explains every answer so far, a hint.
    Returns the CheckResult when every case passes.
    """
    engine_replay = _engine_replay()
    cases = counter_lift_cases(engine_replay)

    def make_check(index, case):
        def check():
            expected = engine_lift(case)
            got = _call(student, case.name, *case.arguments())
            if isinstance(got, bool) or not isinstance(got, numbers.Real):
                raise _Failed(f"{case.name}: return the tenant's new counter (a number), got "
                              f"{got!r}")
            if float(got) == expected:
                return
            messages = [f"{case.name}: {case.describe()}",
                        f"expected {case.tenant}'s counter to be {expected:g}, yours is "
                        f"{float(got):g}"]
            for flag, text in LIFT_MISTAKES.items():
                if _same_everywhere(student, partial(_lift_variant, **{flag: True}),
                                    cases[:index + 1], float, LiftCase.arguments):
                    messages.append(f"hint: {text}")
            raise _Failed(*messages)
        return check

    def replay():
        name = "a whole run through the engine"
        scenario, trace, expected = (engine_replay.scenario, engine_replay.trace,
                                     engine_replay.start_s)
        try:
            got = fairness_lab.run_with_policy(scenario, trace, _StudentVTC(scenario, student))
        except Exception as exc:  # the student's bug, met inside the engine
            raise _Failed(f"{name}: the engine stopped - your function raised "
                          f"{type(exc).__name__}: {exc}") from None
        differs = np.flatnonzero(~((got == expected) | (np.isnan(got) & np.isnan(expected))))
        if len(differs):
            row = int(differs[0])
            raise _Failed(f"{name} ({len(trace)} requests of {', '.join(scenario.tenant_ids())} "
                          f"over 30 s, policy vtc, alpha and beta in bursts): request {row} (of "
                          f"{trace.tenant_names[trace.tenant_codes[row]]}) starts at "
                          f"{expected[row]:.6f} s in the engine, at {got[row]:.6f} s with your "
                          f"lift ({len(differs)} of {len(trace)} requests start at other times)")

    checks = [(c.name, make_check(i, c)) for i, c in enumerate(cases)]
    checks.append(("a whole run through the engine", replay))
    return _run("counter lift", checks,
                "Same lifts as apslab.core.policies.VTCPolicy, and the same start times as the "
                "engine on a whole run.")
