"""docs/lab.md's fit table is what apslab.lab.fit computes from the published data today."""

from __future__ import annotations

from conftest import doc_text, marked_block

from apslab.lab import fit
from apslab.lab.datasets import load_a100_decode_throughput


def test_lab_doc_fit_table_is_current():
    block = marked_block(doc_text("docs/lab.md"), "fit-table")
    expected = fit.markdown_table(fit.fit_all_sources(load_a100_decode_throughput()))
    assert block == expected + "\n", "re-run fit.markdown_table and paste it into docs/lab.md"
