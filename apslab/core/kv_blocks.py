"""The paged KV cache: a GPU's KV memory handed out in fixed-size blocks of tokens.

As in vLLM, a request holding ``c`` computed tokens occupies ``ceil(c / block_size)`` blocks; a
request that grows by ``n`` tokens needs ``ceil((c + n) / block_size) - held`` more. A GPU has
``floor(floor(kv_cache_gib * 2^30 / kv_bytes_per_token) / block_size)`` blocks in all. A request
whose prompt and output could never fit (``ceil((P + O) / block_size) > total_blocks``) is
rejected at admission as ``exceeds_kv_capacity``.
"""

from __future__ import annotations


def blocks_for(tokens: int, block_size: int) -> int:
    """``ceil(tokens / block_size)``, in exact integer arithmetic (ints or numpy columns)."""
    return -(-tokens // block_size)


def exceeds_kv_capacity(prompt_tokens, output_tokens, block_size: int, total_blocks: int):
    """Whether a request could never fit in one GPU's blocks (scalars or numpy columns)."""
    return blocks_for(prompt_tokens + output_tokens, block_size) > total_blocks
