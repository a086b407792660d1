"""The README's fit table is what apslab.lab.fit computes from the published data today."""

from __future__ import annotations

import re

from conftest import ROOT

from apslab.lab import fit
from apslab.lab.datasets import load_a100_decode_throughput


def test_readme_fit_table_is_current():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- fit-table:start -->\n(.*?)\n<!-- fit-table:end -->", readme, re.S)
    assert block, "the README's fit table markers are missing"
    expected = fit.markdown_table(fit.fit_all_sources(load_a100_decode_throughput()))
    assert block.group(1) == expected, "re-run fit.markdown_table and paste it into the README"
