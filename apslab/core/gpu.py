"""The GPU model: the seed's A100 with separate prefill and decode phases and sqrt batching.

A batch of B requests is served statically (all finish together) in

    sum(prompt_tokens) / prefill_tokens_per_s
      + sum(output_tokens) / (decode_tokens_per_s * (a + b * sqrt(B)))

seconds, where (a, b) = batch_speedup. The KV cache bounds how many tokens a batch may hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Llama-2-7B at fp16: K and V (2) x 32 layers x hidden 4096 x 2 bytes.
LLAMA2_7B_KV_BYTES_PER_TOKEN = 2 * 32 * 4096 * 2


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
        return math.floor(self.kv_cache_gib * 2**30 / self.kv_bytes_per_token)

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
