"""The README's worked examples are what the current code prints."""

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


@pytest.mark.parametrize("name", ["example-output", "continuous-output"])
def test_readme_example_outputs_are_current(name, tmp_path):
    readme = doc_text("README.md")
    got, expected = _rerun(marked_block(readme, name, fenced=True), tmp_path)
    assert got == expected
    if name == "example-output":
        first_rows = (tmp_path / "REQUESTS.csv").read_text().splitlines()[:4]
        for row in first_rows:
            assert "    " + row in readme


def test_readme_names_the_two_commands():
    readme = doc_text("README.md")
    assert "make lab" in readme and "make test" in readme
    assert "`.ci/run` runs `make test`" in readme and "environment.yml" in readme
