"""Exercise checkers: pass correct answers, fail wrong ones, and name the mistake."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from apslab.lab import exercises


def not_written(*_args):
    raise NotImplementedError


CHECKERS = [exercises.check_headline_metrics, exercises.check_token_bucket,
            exercises.check_pop_order, exercises.check_form_batch, exercises.check_sqrt_fit,
            exercises.check_jain_index]


@pytest.mark.parametrize("checker", CHECKERS)
def test_an_unwritten_function_gets_told_so(checker):
    result = checker(not_written)
    assert not result
    assert result.checks_run == 1
    assert "not written yet" in str(result)
    assert "raise NotImplementedError" in str(result)


@pytest.mark.parametrize("checker", CHECKERS)
def test_a_crash_is_reported_not_raised(checker):
    def broken(*_args):
        return {}["missing"]

    result = checker(broken)
    assert not result and "raised KeyError" in str(result)


# --------------------------------------------------------------------------------------------
# 00


def headline(result, *, count_rejected=False, gpus=True):
    trace = result.trace
    elapsed = result.batch_finish_s.max() - trace.arrival_s.min()
    tokens = trace.output_tokens if count_rejected else trace.output_tokens[result.completed]
    divisor = elapsed * (result.scenario.cluster.gpus if gpus else 1)
    return {"throughput_tokens_per_s": tokens.sum() / elapsed,
            "gpu_utilization": result.batch_service_s.sum() / divisor}


def test_headline_metrics():
    assert exercises.check_headline_metrics(headline)
    rejected = exercises.check_headline_metrics(lambda r: headline(r, count_rejected=True))
    assert "rejected requests too" in str(rejected)
    one_gpu = exercises.check_headline_metrics(lambda r: headline(r, gpus=False))
    assert one_gpu.checks_run == 3 and "number of GPUs" in str(one_gpu)
    assert "return a dict" in str(exercises.check_headline_metrics(lambda r: 3.0))


# --------------------------------------------------------------------------------------------
# 01


def bucket(costs, times, rate, burst, *, empty=False, cap=True, charge=False, strict=False):
    tokens, last, out = (0.0 if empty else burst), None, []
    for cost, now in zip(costs, times, strict=True):
        if last is not None:
            tokens += (now - last) * rate
            tokens = min(burst, tokens) if cap else tokens
        last = now
        ok = tokens > cost if strict else tokens >= cost
        if ok or charge:
            tokens -= cost
        out.append(ok)
    return out


@pytest.mark.parametrize(("mistake", "hint"), [
    ({"empty": True}, "starts full"),
    ({"cap": False}, "refilling stops at burst_cap"),
    ({"charge": True}, "a rejected request takes no tokens"),
    ({"strict": True}, ">=, not >"),
])
def test_token_bucket_mistakes_are_named(mistake, hint):
    result = exercises.check_token_bucket(lambda *a: bucket(*a, **mistake))
    assert not result
    hints = [line for line in result.messages if line.startswith("hint:")]
    assert len(hints) == 1 and hint in hints[0]
    assert "the bucket holds" in result.messages[0]


def test_token_bucket_correct_and_malformed():
    assert exercises.check_token_bucket(bucket)
    short = exercises.check_token_bucket(lambda costs, *a: [True])
    assert "requests but 1 answers" in str(short)


# --------------------------------------------------------------------------------------------
# 02


def order(requests, aging, now):
    return [r[0] for r in sorted(requests, key=lambda r: (-(r[1] - aging * r[2]), r[2], r[0]))]


@pytest.mark.parametrize(("wrong", "hint"), [
    (lambda r, a, n: [x[0] for x in sorted(r, key=lambda x: (-x[1], x[2], x[0]))],
     "ignores aging"),
    (lambda r, a, n: [x[0] for x in sorted(r, key=lambda x: (-(x[1] - a * (n - x[2])), x[2],
                                                               x[0]))], "wrong sign"),
    (lambda r, a, n: [x[0] for x in sorted(r, key=lambda x: (-(x[1] - a * x[2]), x[0]))],
     "ties go to the earlier arrival"),
])
def test_pop_order_mistakes_are_named(wrong, hint):
    result = exercises.check_pop_order(wrong)
    assert not result
    hints = [line for line in result.messages if line.startswith("hint:")]
    assert len(hints) == 1 and hint in hints[0]


def test_pop_order_correct_and_malformed():
    assert exercises.check_pop_order(order)
    assert "exactly once" in str(exercises.check_pop_order(lambda r, a, n: [0]))


# --------------------------------------------------------------------------------------------
# 03


def form(waiting, size, kv, *, skip=False, prompt_only=False, strict=False):
    taken, used = [], 0
    for index, (prompt, output) in enumerate(waiting):
        if len(taken) == size:
            break
        need = prompt if prompt_only else prompt + output
        if (used + need >= kv) if strict else (used + need > kv):
            if skip:
                continue
            break
        taken.append(index)
        used += need
    return taken


@pytest.mark.parametrize(("mistake", "hint"), [
    ({"skip": True}, "no skipping ahead"),
    ({"prompt_only": True}, "prompt + output"),
    ({"strict": True}, "<=, not <"),
])
def test_batch_mistakes_are_named(mistake, hint):
    result = exercises.check_form_batch(lambda *a: form(*a, **mistake))
    assert not result
    hints = [line for line in result.messages if line.startswith("hint:")]
    assert len(hints) == 1 and hint in hints[0]


def test_batch_correct():
    assert exercises.check_form_batch(form)


# --------------------------------------------------------------------------------------------
# 04


def sqrt_fit(b, y, scale=128.0):
    (a, coef), _ = curve_fit(lambda x, a, c: scale * (a + c * np.sqrt(x)), b, y)
    return a, coef


def test_sqrt_fit():
    assert exercises.check_sqrt_fit(sqrt_fit)
    unscaled = exercises.check_sqrt_fit(lambda b, y: sqrt_fit(b, y, scale=1.0))
    assert "128x too large" in str(unscaled)
    linear = exercises.check_sqrt_fit(lambda b, y: tuple(np.polyfit(b, y / 128, 1)[::-1]))
    assert "sqrt(B), not B" in str(linear)
    assert "return the pair" in str(exercises.check_sqrt_fit(lambda b, y: 0.4))


# --------------------------------------------------------------------------------------------
# 05


def jain(x):
    squares = sum(v * v for v in x)
    return None if not x or squares == 0 else sum(x) ** 2 / (len(x) * squares)


def test_jain():
    assert exercises.check_jain_index(jain)
    no_n = exercises.check_jain_index(
        lambda x: None if not x or not any(x) else sum(x) ** 2 / sum(v * v for v in x))
    assert "divide by N" in str(no_n)
    inverted = exercises.check_jain_index(
        lambda x: None if not x or not any(x) else len(x) * sum(v * v for v in x) / sum(x) ** 2)
    assert "inverted" in str(inverted)
    zero = exercises.check_jain_index(lambda x: jain(x) if x and any(x) else 0.0)
    assert "return None" in str(zero)


def test_result_prints_as_text():
    result = exercises.check_jain_index(jain)
    assert repr(result) == str(result)
    assert str(result).startswith("Jain's index: all 7 checks passed.")
