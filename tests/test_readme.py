"""The README's worked example is what the current code prints."""

import subprocess
import sys

from conftest import ROOT, doc_text, marked_block


def test_readme_example_output_is_current(tmp_path):
    readme = doc_text("README.md")
    block = marked_block(readme, "example-output", fenced=True)
    command, _, expected = block.partition("\n")
    args = command.removeprefix("$ apslab ").split()
    args = [str(tmp_path / a) if a.endswith((".json", "REQUESTS.csv")) else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "apslab", *args], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert proc.stdout == expected
    first_rows = (tmp_path / "REQUESTS.csv").read_text().splitlines()[:4]
    for row in first_rows:
        assert "    " + row in readme


def test_readme_names_the_two_commands():
    readme = doc_text("README.md")
    assert "make lab" in readme and "make test" in readme
    assert "`.ci/run` runs `make test`" in readme and "environment.yml" in readme
