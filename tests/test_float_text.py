"""format_floats (the writers' float-to-text) spells every double exactly as repr() does.

REQUESTS.csv, ITER.csv and generated traces promise Python's repr for floats; the fast path
takes orjson's digits inside the range where the two notations agree and repr elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import apslab.io.trace as trace_module
from apslab.io.trace import format_floats

EDGES = [0.0, -0.0, 1e-4, math.nextafter(1e-4, 0.0), -1e-4, 1e16, math.nextafter(1e16, 0.0),
         -1e16, 5e-324, 1.7976931348623157e308, 0.1, 0.3, 2.0 ** 53, 1e22, 123456789.0,
         math.nan, math.inf, -math.inf]


@pytest.fixture(params=["orjson", "repr only"])
def formatter(request, monkeypatch):
    if request.param == "repr only":
        monkeypatch.setattr(trace_module, "orjson", None)
    elif trace_module.orjson is None:
        pytest.skip("orjson is not installed")
    return format_floats


def test_edges_match_repr(formatter):
    assert formatter(np.array(EDGES)) == [repr(x) for x in EDGES]


def test_random_bit_patterns_match_repr(formatter):
    values = np.random.default_rng(7).integers(0, 2 ** 64, 200_000, dtype=np.uint64)
    values = values.view(np.float64)
    assert formatter(values) == list(map(repr, values.tolist()))


def test_times_across_magnitudes_match_repr(formatter):
    rng = np.random.default_rng(8)
    values = 10.0 ** rng.uniform(-9, 18, 200_000) * rng.choice([-1.0, 1.0], 200_000)
    assert formatter(values) == list(map(repr, values.tolist()))


def test_strided_and_other_dtypes(formatter):
    values = np.arange(20, dtype=np.float32)[::3] / 7
    assert formatter(values) == [repr(float(x)) for x in values]
    assert formatter(np.array([], dtype=np.float64)) == []
    assert formatter(np.array([3, 4], dtype=np.int64)) == ["3.0", "4.0"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
def test_any_floats_match_repr(values):
    assert format_floats(np.array(values, dtype=np.float64)) == list(map(repr, values))
