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
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core.aging_queue import LazyAgingQueue
from ..core.batcher import MicroBatcher
from ..core.limiter import TokenBucket
from ..core.metrics import jain_fairness
from .appkit import CheckResult, ExerciseFailed, checker

__all__ = ["CheckResult", "ExerciseFailed", "check_form_batch", "check_headline_metrics",
           "check_jain_index", "check_pop_order", "check_sqrt_fit", "check_token_bucket"]


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


def _same_everywhere(student: Callable, mistake: Callable, cases: Sequence[tuple],
                     normalise: Callable = list) -> bool:
    """Whether the student's function answers like ``mistake`` on every case.

    A hint names a mistake only when it explains all of the student's answers, not just the
    one that failed (in a two-request case many different mistakes give the same order).
    """
    for case in cases:
        try:
            if normalise(student(*case)) != normalise(mistake(*case)):
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
                kwargs = {"cap": False} if flag == "cap" else {flag: True}

                def mistake(*args, kwargs=kwargs):
                    return _bucket_variant(*args, **kwargs)

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
                def mistake(*args, flag=flag):
                    return _batch_variant(*args, **{flag: True})

                if _same_everywhere(student, mistake, arguments, _integers):
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
