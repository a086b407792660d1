"""The continuous engine's default A100, fitted to and checked against published figures.

:func:`default_calibration` re-runs the fit behind the defaults in :mod:`apslab.core.gpu`
(``A100_ETA_BANDWIDTH``, ``A100_ETA_FLOPS``, ``A100_OVERHEAD_S``): every published Llama-2-7B
figure measured on an A100 with a serving engine (lmdeploy, NeMo's TensorRT-LLM and
TensorRT-LLM throughputs; lmdeploy's and TensorRT-LLM's single-request first-token latencies),
leaving out batches whose KV cache does not fit beside the weights in 80 GB.
:func:`validation_rows` replays published benchmarks in the continuous engine (B requests
arriving at once) and sets the engine's first-token latency, single-request decode rate and
peak throughput beside the published ones: the README's calibration table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.gpu import RooflineGPU
from ..io.measurements import FIRST_TOKEN, Measurements, measurements
from ..sim.calibration import Calibration, calibrate, fits_in_memory, replay_benchmark
from .datasets import (
    DecodeMeasurements,
    FirstTokenLatencies,
    load_a100_decode_throughput,
    load_a100_first_token_latency,
)
from .fit import significant

SERVING_ENGINES = ("lmdeploy-turbomind", "nemo-framework-llama2", "tensorrt-llm-perf-v0.6.1")
FIRST_TOKEN_SOURCES = ("lmdeploy-turbomind", "tensorrt-llm-perf-v0.5")
A100_HBM_BYTES = 80e9


def default_measurements() -> Measurements:
    """The published figures the default A100 is fitted to (see the module docstring)."""
    rows = load_a100_decode_throughput()
    rows = rows.where(np.isin(rows.source, SERVING_ENGINES))
    throughputs = measurements(np.where(rows.decode_only, "decode_throughput", "throughput"),
                               rows.input_len, rows.output_len, rows.batch_size,
                               rows.decode_tokens_per_s, rows.source)
    latencies = load_a100_first_token_latency()
    single = np.isin(latencies.source, FIRST_TOKEN_SOURCES) & (latencies.batch_size == 1)
    first = measurements(FIRST_TOKEN, latencies.input_len[single], 1, 1,
                         latencies.first_token_s[single], latencies.source[single])
    both = Measurements.concatenate([throughputs, first])
    return both.select(fits_in_memory(RooflineGPU(), both, A100_HBM_BYTES))


def default_calibration() -> Calibration:
    """The fit behind the default A100's eta_bandwidth, eta_flops and overhead_s."""
    return calibrate(RooflineGPU(), default_measurements())


@dataclass(frozen=True)
class ValidationRow:
    """One published figure beside the engine's replay of the same benchmark."""

    figure: str
    source: str
    benchmark: str
    published: float
    engine: float
    unit: str

    @property
    def difference(self) -> float:
        return self.engine / self.published - 1.0


# (figure, source, P, O, B, kind): kind "ttft" (first-token latency, seconds), "decode"
# (one request's tokens/s including prefill, as lmdeploy and NeMo publish it) or "throughput".
VALIDATION_FIGURES = (
    ("first-token latency", "tensorrt-llm-perf-v0.5", 128, 1, 1, "ttft"),
    ("first-token latency", "lmdeploy-turbomind", 128, 128, 1, "ttft"),
    ("first-token latency", "tensorrt-llm-perf-v0.5", 2048, 1, 1, "ttft"),
    ("first-token latency", "lmdeploy-turbomind", 2048, 128, 1, "ttft"),
    ("single-request decode rate", "lmdeploy-turbomind", 1, 128, 1, "decode"),
    ("single-request decode rate", "nemo-framework-llama2", 128, 20, 1, "decode"),
    ("peak throughput", "tensorrt-llm-perf-v0.6.1", 128, 128, 384, "throughput"),
    ("peak throughput", "lmdeploy-turbomind", 1, 128, 64, "throughput"),
)
# The three the engine must reproduce within 25% (tests/test_calibration.py): one per kind of
# figure, from the serving engine whose tables give all three kinds.
HEADLINE_FIGURES = (("first-token latency", "lmdeploy-turbomind", 2048),
                    ("single-request decode rate", "lmdeploy-turbomind", 1),
                    ("peak throughput", "tensorrt-llm-perf-v0.6.1", 128))


def _published(rows: DecodeMeasurements | FirstTokenLatencies, values: np.ndarray, source: str,
               p: int, o: int, b: int) -> float:
    """The one value of ``rows`` (a published table) for this source and benchmark."""
    match = ((rows.source == source) & (rows.input_len == p) & (rows.output_len == o)
             & (rows.batch_size == b))
    if match.sum() != 1:
        raise LookupError(f"no single published row for {source} {p}/{o} batch {b}")
    return float(values[match][0])


def validation_rows(gpu: RooflineGPU | None = None) -> list[ValidationRow]:
    """Every figure of :data:`VALIDATION_FIGURES`, published and replayed in the engine."""
    gpu = gpu or RooflineGPU()
    # Each published table is read (and validated) once, not once per figure.
    latencies = load_a100_first_token_latency()
    throughputs = load_a100_decode_throughput()
    rows = []
    for figure, source, p, o, b, kind in VALIDATION_FIGURES:
        replay = replay_benchmark(gpu, p, o, b, A100_HBM_BYTES)
        if kind == "ttft":
            engine, unit = replay.ttft_s, "s"
            published = _published(latencies, latencies.first_token_s, source, p, o, b)
        else:  # "decode" and "throughput" are both the replay's tokens/s
            engine, unit = replay.throughput_tokens_per_s, "tokens/s"
            published = _published(throughputs, throughputs.decode_tokens_per_s, source, p, o, b)
        rows.append(ValidationRow(figure, source, f"{p}/{o}, batch {b}", published, engine,
                                  unit))
    return rows


def validation_table(rows: list[ValidationRow]) -> str:
    """The rows as the README's Markdown table (3 significant digits, stable on any machine)."""
    lines = ["| figure | source | prompt/output, batch | published | engine | difference |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for row in rows:
        scale, unit = (1000.0, "ms") if row.unit == "s" else (1.0, "tok/s")
        lines.append(f"| {row.figure} | {row.source} | {row.benchmark} | "
                     f"{_significant(row.published * scale, 4)} {unit} | "
                     f"{_significant(row.engine * scale, 3)} {unit} | {row.difference:+.0%} |")
    return "\n".join(lines) + "\n"


def _significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, written without an exponent below 1e6."""
    return f"{significant(value, digits):g}" if abs(value) < 1e6 else f"{value:.{digits}g}"
