"""Shared fixtures. Hypothesis runs derandomized, so every run of the suite is the same run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SHARED_DATA = ROOT.parent / "shared" / "data"

settings.register_profile(
    "apslab", derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "apslab"))

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def example_scenario_path() -> Path:
    return DATA / "scenarios" / "example.toml"


@pytest.fixture
def example_trace_path() -> Path:
    return DATA / "scenarios" / "example_trace.csv"
