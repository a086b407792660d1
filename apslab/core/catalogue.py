"""The GPU catalogue: datasheet roofs, memory, an hourly price and achieved fractions per GPU.

Pure data about GPUs, read by ``[gpu] preset = "..."`` in scenario files
(:mod:`apslab.io.scenario`), by ``apslab plan --gpu-types`` and listed by ``apslab gpus``.

Every figure is cited (the sources are repeated in data/SOURCES.md, "GPU catalogue"):

* **HBM bandwidth, dense fp16/bf16 tensor-core peak and memory** are the datasheet figures.
  Peaks are *dense* (NVIDIA's datasheets print the 2:4-sparsity figure first; the dense one is
  half of it). Memory is the datasheet's decimal GB (80 GB = 80e9 bytes).
  A100 40GB and 80GB SXM: 1,555 and 2,039 GB/s, 312 TFLOP/s (NVIDIA A100 datasheet, via
  glennklockwood.com/garden/processors/A100). H100 SXM 80GB: 3,350 GB/s, 989.4 TFLOP/s dense
  (1,979 with sparsity; NVIDIA H100 datasheet, via glennklockwood.com/garden/processors/h100 and
  NVIDIA's Japanese datasheet page "Specifications 1/2 lower without sparsity"). L40S: 864 GB/s
  GDDR6, 48 GB, 362.05 TFLOP/s dense fp16/bf16 (733 with sparsity; NVIDIA L40S datasheet table).
  L4: 300 GB/s GDDR6, 24 GB, 121 TFLOP/s dense fp16 (the datasheet's 242 is with sparsity).
* **Prices** are one provider's public on-demand list prices per GPU-hour, so that the types are
  priced on one basis: Modal's per-second GPU rates (modal.com/pricing; GPU only, CPU and memory
  billed apart), as quoted on 2026-05-07 (techbytes.app "Serverless GPU Pricing Matrix", prices
  "verified on May 7, 2026 from official vendor pricing"): H100 $0.001097/s = $3.9492/h, A100
  80GB $2.4984/h, L40S $1.9512/h, L4 $0.7992/h. A100 40GB: $0.000583/s = $2.0988/h, Modal's
  A100-40GB rate as quoted in a public rate table of Modal GPU prices (no dated page found:
  the price with the weakest citation here).
* **Achieved fractions** (eta_bandwidth, eta_flops) and the per-iteration overhead: the A100
  80GB's are *fitted* to published Llama-2-7B figures (:mod:`apslab.sim.calibration`,
  ``A100_ETA_*`` in :mod:`apslab.core.gpu`). The A100 40GB is the same chip with less and slower
  HBM, so it takes the same fitted fractions (an assumption: the fit's data were measured on
  80 GB parts). No comparable published Llama-2-7B serving figures were fitted for H100, L40S
  or L4, so they take the A100's values as **documented assumptions** (``fractions`` says which);
  ``apslab calibrate`` fits them to your own measurements.

KV cache: with a preset (or ``memory_gb``) the cache defaults to what is left of the memory after
the weights and an activation reserve of :data:`ACTIVATION_RESERVE` of the memory (vLLM's
default ``gpu_memory_utilization`` of 0.9 leaves the same 10%; the activations, CUDA graphs and
allocator slack vLLM fits inside its 90% are not modelled).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .gpu import A100_ETA_BANDWIDTH, A100_ETA_FLOPS, A100_OVERHEAD_S
from .roofline import A100_40GB, A100_80GB_SXM, Accelerator

# Share of the GPU's memory kept back from weights and KV cache (activations, workspace).
ACTIVATION_RESERVE = 0.10

FITTED = "fitted"
ASSUMED = "assumed"

_PRICE_SOURCE = ("Modal on-demand GPU rate (modal.com/pricing), as quoted 2026-05-07 by "
                 "techbytes.app")
_PRICE_DATE = "2026-05-07"


@dataclass(frozen=True)
class CatalogueGPU:
    """One GPU type: its datasheet roofs and memory, a price, and the roofline's fractions."""

    name: str
    memory_gb: float  # datasheet GB (1e9 bytes)
    hbm_bytes_per_s: float
    peak_flops: float  # dense fp16/bf16 tensor-core peak
    price_per_hour: float  # US$ per GPU-hour, on-demand list price
    eta_bandwidth: float
    eta_flops: float
    overhead_s: float
    fractions: str  # FITTED or ASSUMED
    datasheet: str  # where the roofs and memory come from
    price_source: str = _PRICE_SOURCE
    price_date: str = _PRICE_DATE
    note: str = ""


def kv_cache_bytes(memory_gb: float, weight_bytes: int) -> float:
    """Memory left for the KV cache: memory x (1 - ACTIVATION_RESERVE) - weights (may be <= 0:
    the model does not fit)."""
    return memory_gb * 1e9 * (1 - ACTIVATION_RESERVE) - weight_bytes


def kv_cache_gib(memory_gb: float, weight_bytes: int) -> float:
    """:func:`kv_cache_bytes` in GiB (the unit of ``[gpu] kv_cache_gib``)."""
    return kv_cache_bytes(memory_gb, weight_bytes) / 2**30


def _datasheet(accelerator: Accelerator) -> tuple[float, float, float]:
    """(memory_gb, hbm_bytes_per_s, peak_flops) of a GPU the roofline module already holds."""
    return accelerator.hbm_bytes / 1e9, accelerator.hbm_bytes_per_s, accelerator.peak_flops


_A100_FIT = dict(eta_bandwidth=A100_ETA_BANDWIDTH, eta_flops=A100_ETA_FLOPS,
                 overhead_s=A100_OVERHEAD_S)
_A100_DATASHEET = ("NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf) via "
                   "glennklockwood.com/garden/processors/A100")

CATALOGUE: dict[str, CatalogueGPU] = {gpu.name: gpu for gpu in (
    CatalogueGPU("A100-40GB", *_datasheet(A100_40GB), 2.0988, **_A100_FIT, fractions=FITTED,
                 datasheet=_A100_DATASHEET,
                 price_source="Modal A100-40GB rate $0.000583/s (modal.com/pricing), as quoted "
                              "in a public table of Modal GPU rates; no dated page found",
                 price_date="undated",
                 note="the A100 80GB fit, same chip (an assumption: fitted on 80 GB parts)"),
    CatalogueGPU("A100-80GB", *_datasheet(A100_80GB_SXM), 2.4984, **_A100_FIT, fractions=FITTED,
                 datasheet=_A100_DATASHEET,
                 note="fitted to 29 published Llama-2-7B figures (apslab.lab.validation)"),
    CatalogueGPU("H100-SXM-80GB", 80.0, 3.35e12, 989.4e12, 3.9492, **_A100_FIT,
                 fractions=ASSUMED,
                 datasheet="NVIDIA H100 datasheet via glennklockwood.com/garden/processors/h100 "
                           "(FP16/BF16 989.4 dense, 1978.9 sparse; 3.35 TB/s; 80 GB HBM3)",
                 note="the A100 fit's fractions, assumed"),
    CatalogueGPU("L40S", 48.0, 0.864e12, 362.05e12, 1.9512, **_A100_FIT, fractions=ASSUMED,
                 datasheet="NVIDIA L40S datasheet (FP16/BF16 tensor 362.05 | 733 with "
                           "sparsity; 864 GB/s; 48 GB GDDR6)",
                 note="the A100 fit's fractions, assumed"),
    CatalogueGPU("L4", 24.0, 0.300e12, 121e12, 0.7992, **_A100_FIT, fractions=ASSUMED,
                 datasheet="NVIDIA L4 datasheet (FP16 tensor 242 TFLOPS with sparsity, 121 "
                           "dense; 300 GB/s; 24 GB GDDR6)",
                 note="the A100 fit's fractions, assumed"),
)}


def catalogue_names() -> list[str]:
    return list(CATALOGUE)


def lookup(name: str) -> CatalogueGPU | None:
    """The catalogue entry named ``name`` (case-insensitive), or None."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    folded = {key.lower(): gpu for key, gpu in CATALOGUE.items()}
    return folded.get(name.strip().lower())


def suggestion(name: str) -> str:
    """' (did you mean 'X'?)' for a name close to a catalogue entry, else ''."""
    folded = {key.lower(): key for key in CATALOGUE}
    needle = name.strip().lower()
    close = [key for key in folded if needle and (key.startswith(needle) or needle in key)]
    close = close or difflib.get_close_matches(needle, list(folded), n=1, cutoff=0.5)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""
