"""Exercise checkers: pass correct answers, fail wrong ones, and name the mistake.

A checker returns its CheckResult when every case passes and raises ExerciseFailed (whose message
is the same feedback) on the first one that fails, writing nothing to stderr: nbgrader marks a
check cell by whether it raised, and scores any stderr output 0.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from notebook_conventions import notebook_checkers
from scipy.optimize import curve_fit

from apslab.lab import exercises
from apslab.lab.appkit import CheckResult, ExerciseFailed
from apslab.serve import widgets as serve_widgets


def not_written(*_args):
    raise NotImplementedError


def checkers_in(module) -> dict[str, object]:
    return {f"{module.__name__}.{name}": obj for name, obj in sorted(vars(module).items())
            if name.startswith("check_") and callable(obj)}


# The checkers of the two checker modules, and any other a notebook's check cell calls.
ALL_CHECKERS = {**checkers_in(exercises), **checkers_in(serve_widgets), **notebook_checkers()}
CHECKERS = list(ALL_CHECKERS.values())
CHECKER_IDS = list(ALL_CHECKERS)


def feedback(checker, student) -> CheckResult:
    """The failing result a checker raises for ``student``."""
    with pytest.raises(ExerciseFailed) as failed:
        checker(student)
    assert str(failed.value) == str(failed.value.result)
    assert not failed.value.result
    return failed.value.result


def test_every_checker_is_made_for_grading():
    assert len(CHECKERS) >= 7
    assert set(notebook_checkers()) <= set(ALL_CHECKERS)
    for check in CHECKERS:
        assert getattr(check, "is_exercise_checker", False), check.__name__


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_an_unwritten_function_gets_told_so(checker):
    result = feedback(checker, not_written)
    assert result.checks_run == 1
    assert "not written yet" in str(result)
    assert "raise NotImplementedError" in str(result)


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_a_crash_is_reported_as_feedback(checker):
    def broken(*_args):
        return {}["missing"]

    assert "raised KeyError" in str(feedback(checker, broken))


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_nothing_reaches_stderr(checker, capfd):
    """A student's warnings and stderr prints stay out of the cell: nbgrader would score 0."""
    def noisy(*_args):
        warnings.warn("a student's warning", RuntimeWarning, stacklevel=1)
        print("a student's stderr print", file=sys.stderr)
        np.log(np.array([0.0]))  # numpy's RuntimeWarning
        raise NotImplementedError

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        feedback(checker, noisy)
    assert capfd.readouterr().err == ""


def test_the_error_shows_the_feedback_without_a_traceback():
    with pytest.raises(ExerciseFailed) as failed:
        exercises.check_jain_index(not_written)
    lines = failed.value._render_traceback_()
    assert lines[0].endswith("Jain's index: check 1 of 7 failed (0 passed before it).")
    assert "ExerciseFailed" in lines[0]
    assert lines[1:] == str(failed.value.result).splitlines()[1:]


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
    check = exercises.check_headline_metrics
    rejected = feedback(check, lambda r: headline(r, count_rejected=True))
    assert "rejected requests too" in str(rejected)
    one_gpu = feedback(check, lambda r: headline(r, gpus=False))
    assert one_gpu.checks_run == 3 and "number of GPUs" in str(one_gpu)
    assert "return a dict" in str(feedback(check, lambda r: 3.0))


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
    result = feedback(exercises.check_token_bucket, lambda *a: bucket(*a, **mistake))
    hints = [line for line in result.messages if line.startswith("hint:")]
    assert len(hints) == 1 and hint in hints[0]
    assert "the bucket holds" in result.messages[0]


def test_token_bucket_correct_and_malformed():
    assert exercises.check_token_bucket(bucket)
    short = feedback(exercises.check_token_bucket, lambda costs, *a: [True])
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
    result = feedback(exercises.check_pop_order, wrong)
    hints = [line for line in result.messages if line.startswith("hint:")]
    assert len(hints) == 1 and hint in hints[0]


def test_pop_order_correct_and_malformed():
    assert exercises.check_pop_order(order)
    assert "exactly once" in str(feedback(exercises.check_pop_order, lambda r, a, n: [0]))


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
    result = feedback(exercises.check_form_batch, lambda *a: form(*a, **mistake))
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
    check = exercises.check_sqrt_fit
    unscaled = feedback(check, lambda b, y: sqrt_fit(b, y, scale=1.0))
    assert "128x too large" in str(unscaled)
    linear = feedback(check, lambda b, y: tuple(np.polyfit(b, y / 128, 1)[::-1]))
    assert "sqrt(B), not B" in str(linear)
    assert "return the pair" in str(feedback(check, lambda b, y: 0.4))


# --------------------------------------------------------------------------------------------
# 05


def jain(x):
    squares = sum(v * v for v in x)
    return None if not x or squares == 0 else sum(x) ** 2 / (len(x) * squares)


def test_jain():
    assert exercises.check_jain_index(jain)
    check = exercises.check_jain_index
    no_n = feedback(check,
                    lambda x: None if not x or not any(x) else sum(x) ** 2 / sum(v * v for v in x))
    assert "divide by N" in str(no_n)
    inverted = feedback(check, lambda x: None if not x or not any(x)
                        else len(x) * sum(v * v for v in x) / sum(x) ** 2)
    assert "inverted" in str(inverted)
    zero = feedback(check, lambda x: jain(x) if x and any(x) else 0.0)
    assert "return None" in str(zero)


def test_a_passing_result_prints_as_text(capsys):
    result = exercises.check_jain_index(jain)
    assert repr(result) == str(result)
    assert str(result).startswith("Jain's index: all 7 checks passed.")
    result._ipython_display_()  # how a notebook shows it: printed, not a cell value
    assert capsys.readouterr().out == str(result) + "\n"
