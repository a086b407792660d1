"""Published A100 measurements, loaded strictly into numpy columns.

``data/a100_decode_throughput.csv`` holds decode throughputs read from public benchmarks (each
row names its source; ``data/SOURCES.md`` cites them). The lab notebooks fit the seed's
``128 * (a + b*sqrt(B))`` curve and a roofline to these rows, so a malformed row must stop the
analysis with the file and line named rather than quietly shift a fitted parameter. The strict
CSV reading is :func:`apslab.io.measurements.read_csv_columns`, which ``apslab calibrate`` uses
too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.measurements import (
    FIRST_TOKEN_COLUMNS,
    THROUGHPUT_COLUMNS,
    column_arrays,
    read_csv_columns,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
A100_DECODE_CSV = DATA_DIR / "a100_decode_throughput.csv"

A100_DECODE_COLUMNS = THROUGHPUT_COLUMNS


def data_path(relative: str) -> Path:
    """A file of the repository's ``data/`` folder, as a path relative to the working directory.

    Notebooks name their data files through this rather than as ``../data/...``, so they run
    from any folder (a student release, an nbgrader course directory); from ``notebooks/`` the
    path reads ``../data/...``, so outputs that print it are the same as before. It is absolute
    when no relative path leads there (another drive).
    """
    target = DATA_DIR / relative
    try:
        return Path(os.path.relpath(target))
    except ValueError:
        return target


@dataclass(frozen=True)
class DecodeMeasurements:
    """Rows of published throughput measurements, one numpy column per field.

    ``decode_only`` is True where the publication measured the decode phase alone (prefill
    excluded); elsewhere the time includes prefill. ``variant`` separates configurations a source
    published side by side (optimum-benchmark's fp16, fp16+bt and fp16+fa2); it is "" otherwise.
    """

    source: np.ndarray
    model: np.ndarray
    gpu: np.ndarray
    precision: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    batch_size: np.ndarray
    decode_tokens_per_s: np.ndarray
    notes: np.ndarray
    decode_only: np.ndarray
    variant: np.ndarray
    path: str = "<measurements>"

    def __len__(self) -> int:
        return len(self.batch_size)

    def sources(self) -> list[str]:
        """Source names in the order they first appear in the file."""
        return list(dict.fromkeys(self.source.tolist()))

    def where(self, mask: np.ndarray) -> DecodeMeasurements:
        """The rows where ``mask`` is True, in file order."""
        mask = np.asarray(mask, dtype=bool)
        fields = {name: getattr(self, name)[mask] for name in _ARRAY_FIELDS}
        return DecodeMeasurements(**fields, path=self.path)

    def select(self, source: str | None = None, model_contains: str | None = None,
               variant: str | None = None, input_len: int | None = None,
               output_len: int | None = None) -> DecodeMeasurements:
        """Rows matching every given criterion (``model_contains`` is case-insensitive)."""
        mask = np.ones(len(self), dtype=bool)
        if source is not None:
            if source not in self.sources():
                raise KeyError(f"{self.path}: no source {source!r}; sources: "
                               f"{', '.join(self.sources())}")
            mask &= self.source == source
        if model_contains is not None:
            needle = model_contains.lower()
            mask &= np.array([needle in m.lower() for m in self.model.tolist()], dtype=bool)
        if variant is not None:
            mask &= self.variant == variant
        if input_len is not None:
            mask &= self.input_len == input_len
        if output_len is not None:
            mask &= self.output_len == output_len
        return self.where(mask)

    def series_keys(self) -> list[tuple[str, str, str, int, int]]:
        """Distinct (source, model, variant, input_len, output_len), in file order.

        Within one series only the batch size changes, which is what a throughput-versus-batch
        curve needs.
        """
        keys = zip(self.source.tolist(), self.model.tolist(), self.variant.tolist(),
                   self.input_len.tolist(), self.output_len.tolist(), strict=True)
        return list(dict.fromkeys(keys))

    def series(self, key: tuple[str, str, str, int, int]) -> DecodeMeasurements:
        source, model, variant, input_len, output_len = key
        return self.where((self.source == source) & (self.model == model)
                          & (self.variant == variant) & (self.input_len == input_len)
                          & (self.output_len == output_len))


_ARRAY_FIELDS = ("source", "model", "gpu", "precision", "input_len", "output_len", "batch_size",
                 "decode_tokens_per_s", "notes", "decode_only", "variant")


def _variant(notes: str) -> str:
    for part in notes.split(";"):
        part = part.strip()
        if part.startswith("experiment="):
            return part.removeprefix("experiment=")
    return ""


def load_a100_decode_throughput(path: str | Path | None = None) -> DecodeMeasurements:
    """Read the published A100 throughput table (default: ``data/a100_decode_throughput.csv``).

    Every field is checked: the header must be exactly :data:`A100_DECODE_COLUMNS`, lengths and
    batch sizes are positive integers (input length may be 1), throughputs finite and > 0, and
    no source, model or notes field is empty. Problems raise InputError naming file and line.
    """
    path = Path(path) if path is not None else A100_DECODE_CSV
    columns, _lines = read_csv_columns(path, A100_DECODE_COLUMNS)
    notes = columns["notes"]
    return DecodeMeasurements(
        **column_arrays(columns),
        decode_only=np.array(["prefill excluded" in n for n in notes], dtype=bool),
        variant=np.array([_variant(n) for n in notes], dtype=object),
        path=str(path),
    )


A100_FIRST_TOKEN_CSV = DATA_DIR / "a100_first_token_latency.csv"
A100_FIRST_TOKEN_COLUMNS = FIRST_TOKEN_COLUMNS


@dataclass(frozen=True)
class FirstTokenLatencies:
    """Published first-token latencies (seconds), one numpy column per field."""

    source: np.ndarray
    model: np.ndarray
    gpu: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    batch_size: np.ndarray
    first_token_s: np.ndarray
    notes: np.ndarray

    def __len__(self) -> int:
        return len(self.first_token_s)


def load_a100_first_token_latency(path: str | Path | None = None) -> FirstTokenLatencies:
    """Read ``data/a100_first_token_latency.csv`` strictly (header, positive integers, finite
    positive latencies, no empty citation), naming file and line on any problem."""
    path = Path(path) if path is not None else A100_FIRST_TOKEN_CSV
    columns, _lines = read_csv_columns(path, A100_FIRST_TOKEN_COLUMNS)
    arrays = column_arrays(columns)
    del arrays["precision"]  # not kept: every row is fp16 (spelled two ways in the file)
    return FirstTokenLatencies(**arrays)
