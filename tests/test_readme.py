"""The README's worked examples (and the continuous one on docs/continuous.md) are what the
current code prints."""

import subprocess
import sys

import pytest
from conftest import ROOT, doc_text, marked_block


def _rerun(block: str, tmp_path) -> tuple[str, str]:
    command, _, expected = block.partition("\n")
    args = command.removeprefix("$ apslab ").split()
    args = [str(tmp_path / a) if a.endswith((".json", ".csv")) and not a.startswith("data/")
            else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "apslab", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return proc.stdout, expected


@pytest.mark.parametrize(("page", "name"), [("README.md", "example-output"),
                                           ("docs/continuous.md", "continuous-output")])
def test_readme_example_outputs_are_current(page, name, tmp_path):
    got, expected = _rerun(marked_block(doc_text(page), name, fenced=True), tmp_path)
    assert got == expected
    if name == "example-output":
        first_rows = (tmp_path / "REQUESTS.csv").read_text().splitlines()[:4]
        reference = doc_text("docs/simulator.md")
        for row in first_rows:
            assert "    " + row in reference


def test_readme_names_the_two_commands():
    readme = doc_text("README.md")
    assert "make lab" in readme and "make test" in readme
    assert "`.ci/run` runs `make test`" in readme and "environment.yml" in readme
