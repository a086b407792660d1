"""The GPU catalogue: cited figures, `[gpu] preset` (a preset plus an override is the explicit
table), the KV cache the memory leaves beside the weights, GPU files, and `apslab gpus`."""

import re
import subprocess
import sys

import pytest
from conftest import DATA, ROOT, doc_text, marked_block
from helpers import make_scenario

from apslab.core import gpu as gpu_module
from apslab.core.catalogue import (
    ACTIVATION_RESERVE,
    ASSUMED,
    CATALOGUE,
    FITTED,
    kv_cache_gib,
    lookup,
)
from apslab.core.roofline import LLAMA2_7B
from apslab.io.errors import InputError
from apslab.io.scenario import load_gpu_tables, load_scenario, parse_scenario

TENANTS = [{"id": "a", "rate_limit": 1.0, "burst_cap": 10.0}]

# (name, memory GB, HBM GB/s, dense fp16 TFLOP/s, $/hour): the datasheet figures and list
# prices data/SOURCES.md cites
CITED = [("A100-40GB", 40, 1555, 312, 2.0988), ("A100-80GB", 80, 2039, 312, 2.4984),
         ("H100-SXM-80GB", 80, 3350, 989.4, 3.9492), ("L40S", 48, 864, 362.05, 1.9512),
         ("L4", 24, 300, 121, 0.7992)]


@pytest.mark.parametrize("name, memory, bandwidth, tflops, price", CITED)
def test_the_catalogue_holds_the_cited_figures(name, memory, bandwidth, tflops, price):
    gpu = CATALOGUE[name]
    assert (gpu.memory_gb, gpu.hbm_bytes_per_s, gpu.peak_flops, gpu.price_per_hour) == (
        memory, bandwidth * 1e9, tflops * 1e12, price)
    assert gpu.datasheet and gpu.price_source and gpu.price_date
    sources = (ROOT / "data" / "SOURCES.md").read_text(encoding="utf-8")
    assert f"| {name} |" in sources and f"{price:g}" in sources


def test_only_the_a100s_are_fitted_and_the_rest_say_they_assume():
    assert [g.name for g in CATALOGUE.values() if g.fractions == FITTED] == [
        "A100-40GB", "A100-80GB"]
    for gpu in CATALOGUE.values():
        assert gpu.fractions in (FITTED, ASSUMED)
        assert (gpu.eta_bandwidth, gpu.eta_flops, gpu.overhead_s) == (
            gpu_module.A100_ETA_BANDWIDTH, gpu_module.A100_ETA_FLOPS, gpu_module.A100_OVERHEAD_S)
        if gpu.fractions == ASSUMED:
            assert "assumed" in gpu.note


def test_lookup_is_case_insensitive():
    assert lookup("h100-sxm-80gb") is CATALOGUE["H100-SXM-80GB"]
    assert lookup("H100") is None


def explicit_table(name: str, **overrides) -> dict:
    gpu = CATALOGUE[name]
    table = {"name": name, "hbm_bytes_per_s": gpu.hbm_bytes_per_s,
             "peak_flops": gpu.peak_flops, "eta_bandwidth": gpu.eta_bandwidth,
             "eta_flops": gpu.eta_flops, "overhead_s": gpu.overhead_s,
             "memory_gb": gpu.memory_gb, "price_per_hour": gpu.price_per_hour}
    return {**table, **overrides}


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_a_preset_plus_an_override_equals_the_explicit_table(name):
    data = {"scheduler": {"batching": "continuous"}, "tenants": TENANTS}
    preset = parse_scenario({**data, "gpu": {"preset": name, "eta_flops": 0.5,
                                             "price_per_hour": 1.25}})
    explicit = parse_scenario({**data, "gpu": explicit_table(name, eta_flops=0.5,
                                                             price_per_hour=1.25)})
    assert preset == explicit
    assert preset.gpu.eta_flops == 0.5 and preset.gpu.price_per_hour == 1.25
    # the preset's table written out reads back to the same scenario
    assert parse_scenario(preset.to_dict()) == preset


def test_kv_capacity_is_what_the_memory_leaves_beside_the_weights():
    scenario = parse_scenario({"gpu": {"preset": "L4"}, "tenants": TENANTS})
    assert scenario.scheduler.batching == "static"  # a preset is a roofline GPU in any engine
    weights = LLAMA2_7B.weight_bytes  # 13,476,831,232 bytes
    expected = (24e9 * (1 - ACTIVATION_RESERVE) - weights) / 2**30
    assert scenario.gpu.kv_cache_gib == expected == kv_cache_gib(24.0, weights)
    assert round(expected, 3) == 7.565
    assert scenario.gpu.total_blocks(16) == 968
    # an explicit kv_cache_gib overrides the derived one
    small = parse_scenario({"gpu": {"preset": "L4", "kv_cache_gib": 2.0}, "tenants": TENANTS})
    assert small.gpu.kv_cache_gib == 2.0
    assert parse_scenario(small.to_dict()) == small
    # a bigger model leaves less room: the KV cache follows the [model] after an override
    bigger = scenario.with_overrides({"model.layers": 36})
    assert bigger.gpu.kv_cache_gib < scenario.gpu.kv_cache_gib


def test_memory_gb_without_a_preset_derives_the_kv_cache_too():
    scenario = parse_scenario({"gpu": {"model": "roofline", "memory_gb": 80.0},
                               "tenants": TENANTS})
    assert scenario.gpu.kv_cache_gib == kv_cache_gib(80.0, LLAMA2_7B.weight_bytes)
    assert parse_scenario({"gpu": {"model": "roofline"}, "tenants": TENANTS}
                          ).gpu.kv_cache_gib == 32.0  # no memory given: the old default


def test_a_model_that_does_not_fit_is_an_error_naming_model_and_gpu(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text('[gpu]\npreset = "L4"\n\n[model]\nname = "Llama-2-13B"\nhidden = 5120\n'
                    'layers = 40\nheads = 40\nkv_heads = 40\nintermediate = 13824\n\n'
                    '[[tenants]]\nid = "a"\nrate_limit = 1.0\nburst_cap = 10.0\n')
    with pytest.raises(InputError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(f"{path} line 2: [gpu] preset 'L4' cannot hold the model "
                              "'Llama-2-13B'")
    assert "26.03 GB" in message and "21.6 GB left of 24 GB" in message


@pytest.mark.parametrize("table, message", [
    ({"preset": "H100"}, "'H100' is not in the GPU catalogue (did you mean 'H100-SXM-80GB'?)"),
    ({"preset": "A100-80"}, "did you mean 'A100-80GB'?"),
    ({"preset": 100}, "must be a GPU name"),
    ({"preset": "L4", "model": "sqrt"}, "describes a roofline GPU"),
    ({"model": "sqrt", "memory_gb": 80}, "memory_gb has no effect with model = 'sqrt'"),
    ({"preset": "L4", "memory_gb": 0}, "memory_gb must be > 0"),
])
def test_bad_presets(table, message):
    with pytest.raises(InputError, match=re.escape(message)):
        make_scenario(gpu=table)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "apslab", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_a_bad_preset_in_a_file_exits_2_with_file_and_line(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[gpu]\nname = "mine"\npreset = "A10O-80GB"\n\n[[tenants]]\nid = "a"\n'
                    'rate_limit = 1.0\nburst_cap = 10.0\n')
    proc = run_cli("simulate", path, "--trace", DATA / "scenarios" / "example_trace.csv")
    assert proc.returncode == 2
    assert proc.stderr == (f"apslab: error: {path} line 3: [gpu] preset 'A10O-80GB' is not in "
                           "the GPU catalogue (did you mean 'A100-80GB'?); presets: A100-40GB, "
                           "A100-80GB, H100-SXM-80GB, L40S, L4 (apslab gpus lists them)\n")


def test_gpu_files(tmp_path):
    good = tmp_path / "gpu.toml"
    good.write_text('[gpu]\npreset = "H100-SXM-80GB"\neta_flops = 0.4\n')
    assert load_gpu_tables(good) == {"gpu": {"preset": "H100-SXM-80GB", "eta_flops": 0.4}}
    scenario = load_scenario(DATA / "scenarios" / "example_continuous.toml")
    swapped = scenario.with_gpu(load_gpu_tables(good))
    assert swapped.gpu.name == "H100-SXM-80GB" and swapped.gpu.eta_flops == 0.4
    assert swapped.tenants == scenario.tenants and swapped.scheduler == scenario.scheduler
    bad = tmp_path / "bad.toml"
    bad.write_text('[gpu]\npreset = "A100-80GB"\neta_flop = 0.4\n')
    with pytest.raises(InputError, match=re.escape(f"{bad} line 3: [gpu] eta_flop is an "
                                                   "unknown key (did you mean 'eta_flops'?)")):
        load_gpu_tables(bad)
    extra = tmp_path / "extra.toml"
    extra.write_text('[gpu]\npreset = "L4"\n[scheduler]\nbatching = "static"\n')
    with pytest.raises(InputError, match="scheduler is an unknown top-level table"):
        load_gpu_tables(extra)
    proc = run_cli("simulate", DATA / "scenarios" / "example_continuous.toml", "--trace",
                   DATA / "scenarios" / "example_trace.csv", "--gpu", bad)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and str(bad) in proc.stderr


def test_apslab_gpus_lists_the_catalogue():
    proc = run_cli("gpus")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:6]] == list(CATALOGUE)
    assert "L4                24 GB      300        121.0  0.7992" in proc.stdout
    assert proc.stdout.rstrip().endswith("(apslab calibrate fits yours)")
    sourced = run_cli("gpus", "--sources").stdout
    assert "glennklockwood.com/garden/processors/h100" in sourced and "modal.com" in sourced


def test_the_docs_show_the_catalogue_table():
    """docs/planning.md quotes `apslab gpus` exactly."""
    block = marked_block(doc_text("docs/planning.md"), "gpus-output", fenced=True)
    command, _, expected = block.partition("\n")
    assert command == "$ apslab gpus"
    assert run_cli("gpus").stdout == expected


def test_a_preset_override_replaces_the_whole_gpu_table():
    """`--set gpu.preset=L4` / `--grid gpu.preset=...`: the old GPU's written-out keys must not
    override the new preset's."""
    scenario = load_scenario(DATA / "scenarios" / "conversation.toml")
    l4 = scenario.with_overrides({"gpu.price_per_hour": 0.5, "gpu.preset": "L4"})
    assert l4.gpu == scenario.with_gpu({"gpu": {"preset": "L4", "price_per_hour": 0.5}}).gpu
    assert l4.gpu.hbm_bytes_per_s == 300e9 and l4.gpu.price_per_hour == 0.5
    assert l4.gpu.kv_cache_gib == kv_cache_gib(24.0, LLAMA2_7B.weight_bytes)
    assert l4.scheduler == scenario.scheduler and l4.tenants == scenario.tenants
