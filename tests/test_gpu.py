import math

import numpy as np
import pytest

from apslab.core.gpu import LLAMA2_7B_KV_BYTES_PER_TOKEN, GPUModel


def test_seed_defaults():
    gpu = GPUModel()
    assert LLAMA2_7B_KV_BYTES_PER_TOKEN == 524_288 == 2 * 32 * 4096 * 2
    assert gpu.kv_capacity_tokens == 65_536  # 32 GiB / 0.5 MiB
    assert gpu.decode_speedup(1) == pytest.approx(1.0)
    # The seed says "at batch=16: ~2.5x"; its own formula gives 0.4 + 0.6 * 4 = 2.8.
    assert gpu.decode_speedup(16) == pytest.approx(2.8)
    assert gpu.decode_tokens_per_s_at(16) == pytest.approx(358.4)


def test_service_time_formula():
    gpu = GPUModel()
    expected = 2048 / 1024 + 512 / (128 * (0.4 + 0.6 * math.sqrt(4)))
    assert gpu.service_time_s(2048, 512, 4) == expected
    assert isinstance(gpu.service_time_s(2048, 512, 4), float)
    vector = gpu.service_time_s(np.array([2048, 0]), np.array([512, 128]), np.array([4, 1]))
    assert vector.tolist() == [expected, 1.0]


def test_tabulated_timer_is_bit_identical():
    gpu = GPUModel(prefill_tokens_per_s=3000.0, decode_tokens_per_s=97.0,
                   batch_speedup=(0.25, 0.83))
    timer = gpu.batch_service_timer(64)
    rng = np.random.default_rng(1)
    for _ in range(2000):
        size = int(rng.integers(1, 65))
        prompt, output = int(rng.integers(0, 10**6)), int(rng.integers(0, 10**6))
        assert timer(prompt, output, size) == gpu.service_time_s(prompt, output, size)


def test_kv_capacity_floors():
    assert GPUModel(kv_cache_gib=1.0, kv_bytes_per_token=3).kv_capacity_tokens == 2**30 // 3
