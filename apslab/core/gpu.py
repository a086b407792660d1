"""The two GPU models the engines cost work with, side by side.

* :class:`GPUModel`, the seed's A100 with separate prefill and decode phases and sqrt batching:
  a static batch of B requests is served (all finish together) in

      sum(prompt_tokens) / prefill_tokens_per_s
        + sum(output_tokens) / (decode_tokens_per_s * (a + b * sqrt(B)))

  seconds, where (a, b) = batch_speedup. The KV cache bounds how many tokens a batch may hold.
* :class:`RooflineGPU`, the roofline cost model of one model iteration (memory and FLOP roofs,
  achieved fractions of each, a fixed cost per iteration; see
  :class:`apslab.core.roofline.IterationCost`), which the continuous engine uses for every
  iteration and the static engine for a static batch's prefill and decode iterations. Its KV
  cache is handed out in blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .roofline import A100_80GB_SXM, LLAMA2_7B, IterationCost, TransformerModel

# Llama-2-7B at fp16: K and V (2) x 32 layers x hidden 4096 x 2 bytes.
LLAMA2_7B_KV_BYTES_PER_TOKEN = 2 * 32 * 4096 * 2


def kv_tokens_that_fit(kv_cache_gib: float, kv_bytes_per_token: int) -> int:
    """How many tokens (prompt + output) a KV cache of ``kv_cache_gib`` holds at once."""
    return math.floor(kv_cache_gib * 2**30 / kv_bytes_per_token)


@dataclass(frozen=True)
class GPUModel:
    """Parameters of one GPU; defaults are the seed's A100 running Llama-2-7B."""

    name: str = "A100"
    prefill_tokens_per_s: float = 1024.0
    decode_tokens_per_s: float = 128.0
    batch_speedup: tuple[float, float] = field(default=(0.4, 0.6))
    kv_cache_gib: float = 32.0
    kv_bytes_per_token: int = LLAMA2_7B_KV_BYTES_PER_TOKEN
    price_per_hour: float = 3.0

    @property
    def kv_capacity_tokens(self) -> int:
        """How many tokens (prompt + output) fit in the KV cache at once."""
        return kv_tokens_that_fit(self.kv_cache_gib, self.kv_bytes_per_token)

    def decode_speedup(self, batch_size):
        """a + b*sqrt(B): how much faster a batch of B decodes than one request alone."""
        a, b = self.batch_speedup
        return a + b * _sqrt(batch_size)

    def decode_tokens_per_s_at(self, batch_size):
        """Aggregate decode throughput of a batch of B requests (tokens/s)."""
        return self.decode_tokens_per_s * self.decode_speedup(batch_size)

    def service_time_s(self, prompt_tokens_total, output_tokens_total, batch_size):
        """Service time of one static batch (seconds); scalars give a float, arrays an array.

        The expression is written once, in the order the contract states it, so every caller
        (simulator, notebooks, live service) gets bit-identical floats.
        """
        a, b = self.batch_speedup
        return prompt_tokens_total / self.prefill_tokens_per_s + output_tokens_total / (
            self.decode_tokens_per_s * (a + b * _sqrt(batch_size))
        )

    def decode_rate_table(self, max_batch_size: int) -> list[float]:
        """``decode_tokens_per_s * (a + b*sqrt(B))`` for B = 0..max_batch_size (B = 0 is NaN)."""
        a, b = self.batch_speedup
        decode = self.decode_tokens_per_s
        return [math.nan] + [decode * (a + b * math.sqrt(size))
                             for size in range(1, max_batch_size + 1)]

    def batch_service_timer(self, max_batch_size: int):
        """:meth:`service_time_s` for scalar batches of up to ``max_batch_size`` requests.

        The decode rate ``decode_tokens_per_s * (a + b*sqrt(B))`` is tabulated once per B, so
        the simulator's hot loop pays two divisions per batch; the floats are identical.
        """
        rates = self.decode_rate_table(max_batch_size)
        prefill = self.prefill_tokens_per_s

        def service_time_s(prompt_tokens_total: int, output_tokens_total: int,
                           batch_size: int) -> float:
            return prompt_tokens_total / prefill + output_tokens_total / rates[batch_size]

        return service_time_s


def _sqrt(x):
    """math.sqrt for scalars (plain float result), numpy's for arrays; both correctly rounded."""
    if isinstance(x, (int, float, np.integer, np.floating)):
        return math.sqrt(x)
    return np.sqrt(np.asarray(x, dtype=np.float64))


# Achieved fractions of the A100 80GB SXM's roofs and the fixed cost of one iteration, fitted by
# apslab.sim.calibration to every published Llama-2-7B figure measured on an A100 with a serving
# engine (lmdeploy, NeMo/TensorRT-LLM and TensorRT-LLM throughputs; lmdeploy's and
# TensorRT-LLM's single-request first-token latencies), rounded to three significant digits.
# Data: data/a100_decode_throughput.csv and data/a100_first_token_latency.csv, sources in
# data/SOURCES.md; tests/test_calibration.py re-runs the fit and checks these values. The
# bandwidth fraction ends on its bound of 1: the per-iteration overhead absorbs what the
# memory roof alone does not explain.
A100_ETA_BANDWIDTH = 1.0
A100_ETA_FLOPS = 0.556
A100_OVERHEAD_S = 0.00512


@dataclass(frozen=True)
class RooflineGPU:
    """A GPU as the roofline costs it; defaults are an A100 80GB SXM serving Llama-2-7B.

    ``kv_bytes_per_token`` defaults to the model's own (2 x layers x kv_dim x bytes per
    parameter: 524,288 for Llama-2-7B at fp16, the seed's value). ``memory_gb`` is the GPU's
    memory when it is known (a catalogue preset, :mod:`apslab.core.catalogue`): scenario files
    then derive ``kv_cache_gib`` from it; the cost model does not read it.
    """

    name: str = "A100"
    hbm_bytes_per_s: float = A100_80GB_SXM.hbm_bytes_per_s
    peak_flops: float = A100_80GB_SXM.peak_flops
    eta_bandwidth: float = A100_ETA_BANDWIDTH
    eta_flops: float = A100_ETA_FLOPS
    overhead_s: float = A100_OVERHEAD_S
    kv_cache_gib: float = 32.0
    kv_bytes_per_token: int = 0  # 0: the model's
    price_per_hour: float = 3.0
    model: TransformerModel = LLAMA2_7B
    memory_gb: float | None = None  # the GPU's memory (datasheet GB), when known: a preset's

    def __post_init__(self) -> None:
        if not self.kv_bytes_per_token:
            object.__setattr__(self, "kv_bytes_per_token", self.model.kv_bytes_per_token)

    @property
    def kv_capacity_tokens(self) -> int:
        """How many tokens fit in the KV cache at once (as for the sqrt model)."""
        return kv_tokens_that_fit(self.kv_cache_gib, self.kv_bytes_per_token)

    def total_blocks(self, block_size: int) -> int:
        """KV blocks per GPU: floor(kv_capacity_tokens / block_size), where kv_capacity_tokens is
        floor(kv_cache_gib * 2^30 / kv_bytes_per_token)."""
        return self.kv_capacity_tokens // block_size

    def iteration_cost(self) -> IterationCost:
        """The per-iteration cost model, its integer constants and its two rates formed once."""
        m = self.model
        return IterationCost(
            weight_bytes=m.weight_bytes,
            kv_bytes_per_token=self.kv_bytes_per_token,
            matmul_flops_per_token=2 * m.matmul_params,
            attention_flops_per_pair=4 * m.hidden * m.layers,
            bandwidth=self.eta_bandwidth * self.hbm_bytes_per_s,
            flop_rate=self.eta_flops * self.peak_flops,
            overhead_s=self.overhead_s,
        )
