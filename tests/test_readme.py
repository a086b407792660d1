"""The README's worked example is what the current code prints."""

import re
import subprocess
import sys

from conftest import ROOT


def test_readme_example_output_is_current(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example-output:start -->\n```\n(.*?)```\n<!-- example-output:end -->",
                      readme, re.S).group(1)
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
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
