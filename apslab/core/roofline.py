"""A roofline model of LLM decoding on one GPU, from the hardware's and the model's constants.

Each decode step reads every weight once and every sequence's KV cache once, and does two FLOPs
per weight per sequence plus the attention products. Its time is whichever roof binds:

    step(B, c) = max(bytes(B, c) / (eta_bw * HBM bandwidth), flops(B, c) / (eta_flop * peak))

    bytes(B, c) = weight_bytes + B * c * kv_bytes_per_token
    flops(B, c) = B * (2 * matmul_params + 4 * c * hidden * layers)

with ``c`` the context a token attends to and ``eta`` the achieved fractions of the datasheet
roofs (the fitted parameters). Prefill of ``n`` prompt tokens is one step with ``B * n`` tokens
and causal attention. A batch whose KV cache does not fit beside the weights in HBM runs as many
sequences at once as fit (the simulator's KV rule), so throughput stops growing with B there.

Constants (cited in data/SOURCES.md): A100 HBM bandwidth 1,555 GB/s (40 GB) and 2,039 GB/s
(80 GB SXM), fp16 tensor-core peak 312 TFLOP/s dense; Llama-2-7B hidden 4096, 32 layers, 32
heads and 32 KV heads, MLP 11008, vocabulary 32000.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Accelerator:
    """Datasheet roofs of one GPU."""

    name: str
    hbm_bytes_per_s: float
    peak_flops: float
    hbm_bytes: float

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity above which the FLOP roof binds instead of the memory roof."""
        return self.peak_flops / self.hbm_bytes_per_s


A100_80GB_SXM = Accelerator("A100 80GB SXM", 2.039e12, 312e12, 80e9)
A100_40GB = Accelerator("A100 40GB", 1.555e12, 312e12, 40e9)
ACCELERATORS = {a.name: a for a in (A100_80GB_SXM, A100_40GB)}


@dataclass(frozen=True)
class TransformerModel:
    """A decoder-only transformer's shape (Llama layout: gated MLP, untied embeddings)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    bytes_per_param: int = 2  # fp16

    @property
    def params(self) -> int:
        """All weights: embeddings and LM head, attention, gated MLP and RMSNorm weights."""
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_dim
        mlp = 3 * self.hidden * self.intermediate
        per_layer = attention + mlp + 2 * self.hidden
        return 2 * self.vocab * self.hidden + self.layers * per_layer + self.hidden

    @property
    def matmul_params(self) -> int:
        """Weights that take part in a matrix product (the input embedding is a lookup)."""
        return self.params - self.vocab * self.hidden

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    @property
    def weight_bytes(self) -> int:
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer: 2 x layers x kv_dim x bytes (524,288 for Llama-2-7B)."""
        return 2 * self.layers * self.kv_dim * self.bytes_per_param


LLAMA2_7B = TransformerModel("Llama-2-7B", hidden=4096, layers=32, heads=32, kv_heads=32,
                             intermediate=11008, vocab=32000)


@dataclass(frozen=True)
class Roofline:
    """A model on an accelerator, with achieved fractions of its memory and FLOP roofs."""

    accelerator: Accelerator = A100_80GB_SXM
    model: TransformerModel = LLAMA2_7B
    eta_bandwidth: float = 1.0
    eta_flops: float = 1.0

    def decode_work(self, batch, context):
        """(bytes moved, FLOPs) of one decode step of ``batch`` sequences at ``context``."""
        m = self.model
        batch = np.asarray(batch, dtype=np.float64)
        context = np.asarray(context, dtype=np.float64)
        moved = m.weight_bytes + batch * context * m.kv_bytes_per_token
        flops = batch * (2.0 * m.matmul_params + 4.0 * context * m.hidden * m.layers)
        return moved, flops

    def prefill_work(self, batch, prompt_tokens):
        """(bytes moved, FLOPs) of prefilling ``batch`` prompts (causal attention)."""
        m = self.model
        batch = np.asarray(batch, dtype=np.float64)
        n = np.asarray(prompt_tokens, dtype=np.float64)
        moved = m.weight_bytes + batch * n * m.kv_bytes_per_token
        flops = batch * (2.0 * m.matmul_params * n + 2.0 * n * n * m.hidden * m.layers)
        return moved, flops

    def step_s(self, moved, flops):
        """The roofline itself: the slower of moving the bytes and doing the FLOPs."""
        a = self.accelerator
        return np.maximum(moved / (self.eta_bandwidth * a.hbm_bytes_per_s),
                          flops / (self.eta_flops * a.peak_flops))

    def decode_step_s(self, batch, context):
        """Seconds for one decode step of ``batch`` sequences attending to ``context`` tokens."""
        return self.step_s(*self.decode_work(batch, context))

    def prefill_s(self, batch, prompt_tokens):
        """Seconds to prefill ``batch`` prompts of ``prompt_tokens`` tokens."""
        return self.step_s(*self.prefill_work(batch, prompt_tokens))

    def max_concurrent(self, context_tokens):
        """Sequences of ``context_tokens`` whose KV cache fits in HBM beside the weights."""
        free = self.accelerator.hbm_bytes - self.model.weight_bytes
        per_sequence = np.asarray(context_tokens, dtype=np.float64) * self.model.kv_bytes_per_token
        return np.maximum(1.0, np.floor(free / per_sequence))

    def _steps(self, batch_size, input_len, output_len, decode_only):
        """Per row: concurrent sequences, tokens timed, and every timed step's bytes and FLOPs.

        Step arrays list each row's prefill (unless ``decode_only``) and decode steps; ``row``
        says which row a step belongs to. Decode step t attends to input + t tokens.
        """
        batch_size, input_len, output_len, decode_only = _columns(batch_size, input_len,
                                                                  output_len, decode_only)
        concurrent = np.minimum(batch_size, self.max_concurrent(input_len + output_len))
        steps = np.maximum(output_len - 1, 0)
        row = np.repeat(np.arange(len(steps)), steps)
        first = np.concatenate(([0], np.cumsum(steps)[:-1]))
        context = (input_len[row] + np.arange(len(row)) - first[row] + 1).astype(np.float64)
        moved, flops = self.decode_work(concurrent[row], context)
        prefilled = np.flatnonzero(~decode_only)
        prefill_moved, prefill_flops = self.prefill_work(concurrent[prefilled],
                                                         input_len[prefilled])
        row = np.concatenate((row, prefilled))
        moved = np.concatenate((moved, prefill_moved))
        flops = np.concatenate((flops, prefill_flops))
        tokens = np.where(decode_only, concurrent * steps, concurrent * output_len)
        return concurrent, tokens, row, moved, flops

    def throughput(self, batch_size, input_len, output_len, decode_only):
        """Output tokens/s of static batches, as the benchmarks in the data measured them.

        ``decode_only`` rows time the decode steps alone (``output_len - 1`` tokens after the one
        prefill produces); the others divide all ``output_len`` tokens by prefill + decode time.
        Sequences beyond what the KV cache holds wait their turn, so ``batch_size`` is capped by
        :meth:`max_concurrent` of the final context. Arguments broadcast as numpy columns.
        """
        concurrent, tokens, row, moved, flops = self._steps(batch_size, input_len, output_len,
                                                            decode_only)
        seconds = np.bincount(row, weights=self.step_s(moved, flops), minlength=len(tokens))
        rates = tokens / seconds
        scalar = all(np.ndim(a) == 0 for a in (batch_size, input_len, output_len, decode_only))
        return float(rates[0]) if scalar else rates

    def eta_flops_floor(self, batch_size, input_len, output_len, decode_only) -> float:
        """The smallest ``eta_flops`` at which every step of these rows stays memory-bound.

        Above it the FLOP roof never binds, so the data cannot tell one ``eta_flops`` from
        another: a fit that lands there has not identified it.
        """
        _c, _t, _row, moved, flops = self._steps(batch_size, input_len, output_len,
                                                 decode_only)
        a = self.accelerator
        memory_s = moved / (self.eta_bandwidth * a.hbm_bytes_per_s)
        return float(np.max(flops / a.peak_flops / memory_s))

    def regime(self, batch_size, input_len, output_len, decode_only) -> np.ndarray:
        """What limits each row: "kv capacity", "prefill", "kv bandwidth" or "weight bandwidth".

        * kv capacity: the batch's KV cache does not fit in HBM, so only part of it runs at once;
        * prefill: the prompt's (compute-bound) prefill takes longer than all the decoding;
        * kv bandwidth: mid-way through decoding, reading the batch's KV cache moves more bytes
          than reading the weights;
        * weight bandwidth: every step is dominated by reading the weights once, so a larger
          batch costs almost nothing extra: throughput grows nearly in proportion to B.
        """
        m = self.model
        batch_size, input_len, output_len, decode_only = _columns(batch_size, input_len,
                                                                  output_len, decode_only)
        concurrent, tokens, row, moved, flops = self._steps(batch_size, input_len, output_len,
                                                            decode_only)
        total_s = np.bincount(row, weights=self.step_s(moved, flops), minlength=len(tokens))
        prefill_s = np.where(decode_only, 0.0,
                             self.prefill_s(concurrent, input_len))
        mid_context = input_len + output_len / 2.0
        kv_bytes = concurrent * mid_context * m.kv_bytes_per_token
        return np.where(
            batch_size > concurrent, "kv capacity",
            np.where(prefill_s > total_s - prefill_s, "prefill",
                     np.where(kv_bytes > m.weight_bytes, "kv bandwidth", "weight bandwidth")))


def _columns(batch_size, input_len, output_len, decode_only):
    """The four row descriptors as equal-length 1-d arrays (scalars broadcast)."""
    columns = np.broadcast_arrays(
        np.asarray(batch_size, dtype=np.float64), np.asarray(input_len, dtype=np.int64),
        np.asarray(output_len, dtype=np.int64), np.asarray(decode_only, dtype=bool))
    return tuple(np.atleast_1d(column) for column in columns)


# ----------------------------------------------------------------------------------------------
# The continuous engine's cost model: one model iteration, in exact integers, on a GPU's roofs


def attention_term(computed: int, new: int) -> int:
    """``n*c + n*(n+1)/2``: query-key pairs of ``new`` tokens attending causally to ``computed``
    earlier ones and to each other (an exact integer: n*(n+1) is even)."""
    return new * computed + new * (new + 1) // 2


@dataclass(frozen=True)
class IterationCost:
    """The duration of one model iteration, as the continuous engine (and a static batch on the
    roofline) costs it:

        moved = weight_bytes + kv_bytes_per_token * sum(c + n)
        flops = 2 * matmul_params * sum(n) + 4 * hidden * layers * sum(n*c + n*(n+1)/2)
        seconds = overhead_s + max(moved / (eta_bandwidth * hbm_bytes_per_s),
                                   flops / (eta_flops * peak_flops))

    over the requests scheduled in the iteration (``c`` tokens already computed, ``n`` computed
    now). Both sums are exact integers, divided once; each ``eta * roof`` is one float, formed
    once here, so every engine (Python, compiled, live) gets bit-identical durations.
    """

    weight_bytes: int
    kv_bytes_per_token: int
    matmul_flops_per_token: int  # 2 * matmul_params
    attention_flops_per_pair: int  # 4 * hidden * layers
    bandwidth: float  # eta_bandwidth * hbm_bytes_per_s
    flop_rate: float  # eta_flops * peak_flops
    overhead_s: float

    def work(self, context_tokens: int, new_tokens: int, attention_pairs: int) -> tuple[int, int]:
        """(bytes moved, FLOPs) of an iteration with ``sum(c + n)``, ``sum(n)`` and
        ``sum(n*c + n*(n+1)/2)`` over its scheduled requests."""
        return (self.weight_bytes + self.kv_bytes_per_token * context_tokens,
                self.matmul_flops_per_token * new_tokens
                + self.attention_flops_per_pair * attention_pairs)

    def seconds(self, moved: int, flops: int) -> float:
        """overhead_s + the slower roof."""
        memory_s = moved / self.bandwidth
        compute_s = flops / self.flop_rate
        return self.overhead_s + (compute_s if compute_s > memory_s else memory_s)

    def static_batch_durations(self, prompt_tokens: list[int], max_output_tokens: int
                               ) -> np.ndarray:
        """A static batch on the roofline, iteration by iteration: one prefill iteration of
        every prompt (no token budget), then ``max_output_tokens - 1`` decode iterations of the
        whole batch (at least the prefill). One place for the rule, so the engine's batch time
        and the lab's iteration timeline of it cannot drift apart.

        In decode iteration j (1-based) every member computes one token with c = P + j - 1, so
        sum(c + n) = sum(P) + B*j and sum(n*c + n*(n+1)/2) = sum(P) + B*j as well.
        """
        batch = len(prompt_tokens)
        prompts = sum(prompt_tokens)
        pairs = sum(p * (p + 1) // 2 for p in prompt_tokens)
        first = self.seconds(*self.work(prompts, prompts, pairs))
        # The decode iterations as int64 columns (exact), divided and compared elementwise with
        # the same IEEE operations as seconds().
        context = prompts + batch * np.arange(1, max_output_tokens, dtype=np.int64)
        memory_s = (self.weight_bytes + self.kv_bytes_per_token * context) / self.bandwidth
        compute_s = (self.matmul_flops_per_token * batch
                     + self.attention_flops_per_pair * context) / self.flop_rate
        return np.concatenate(([first], self.overhead_s + np.maximum(memory_s, compute_s)))

    def static_batch_seconds(self, prompt_tokens: list[int], max_output_tokens: int) -> float:
        """A static batch's duration: its :meth:`static_batch_durations` added in order
        (np.add.accumulate adds strictly left to right, so the total is bit-identical to adding
        the durations one by one)."""
        return float(np.add.accumulate(
            self.static_batch_durations(prompt_tokens, max_output_tokens))[-1])
