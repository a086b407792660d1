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


def doc_text(relative: str) -> str:
    """The text of a documentation page, by its path from the repository root.

    README.md and the pages under docs/ hold blocks that tests keep current (example output,
    tables); each test reads the page its block lives on through this one helper.
    """
    return (ROOT / relative).read_text(encoding="utf-8")


def marked_block(text: str, name: str, fenced: bool = False) -> str:
    """What lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` (inside its code fence
    when ``fenced``); AssertionError if the markers are missing."""
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    assert start in text and end in text, f"the {name} markers are missing"
    block = text.split(start, 1)[1].split(end, 1)[0]
    if fenced:
        assert block.startswith("```\n") and block.endswith("```\n"), f"{name} is not fenced"
        block = block[4:-4]
    return block


@pytest.fixture
def example_scenario_path() -> Path:
    return DATA / "scenarios" / "example.toml"


@pytest.fixture
def example_trace_path() -> Path:
    return DATA / "scenarios" / "example_trace.csv"
