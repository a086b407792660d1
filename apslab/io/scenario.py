"""Scenario files: the GPU, the scheduler, the cluster, the tenants and an optional workload.

A scenario is a TOML file. Every key is checked: a typo such as ``rate_limt`` is an error naming
the file, the table, the line where it can be found and the keys that are allowed, never a
silently ignored setting. ``parse_scenario`` takes the same structure as a dict, so notebooks and
sweeps can build scenarios in code; ``Scenario.to_dict`` gives it back.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

try:  # tomli's compiled wheels parse a ten-thousand-tenant scenario 2.5x faster than tomllib
    import tomli as toml_reader
except ImportError:  # pragma: no cover - the same parser, pure Python, in the standard library
    import tomllib as toml_reader

from ..core.catalogue import (
    ACTIVATION_RESERVE,
    catalogue_names,
    kv_cache_gib,
    lookup,
    suggestion,
)
from ..core.gpu import GPUModel, RooflineGPU
from ..core.limiter import LIMITERS, TenantLimits
from ..core.policies import POLICIES
from ..core.roofline import LLAMA2_7B, TransformerModel
from .errors import InputError, reading

TOKEN_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "uniform": ("low", "high"),
    "geometric": ("mean",),
    "exponential": ("mean",),
    "lognormal": ("median", "sigma"),
}
_CLIP_KEYS = ("min", "max")


BATCHING_MODES = ("static", "continuous")
GPU_MODELS = ("sqrt", "roofline")
# Keys that only mean something in one engine or one GPU model: anywhere else they are errors.
STATIC_ONLY_KEYS = ("max_batch_size",)
CONTINUOUS_ONLY_KEYS = ("max_num_seqs", "max_num_batched_tokens", "block_size")
SQRT_ONLY_KEYS = ("prefill_tokens_per_s", "decode_tokens_per_s", "batch_speedup")
ROOFLINE_ONLY_KEYS = ("hbm_bytes_per_s", "peak_flops", "eta_bandwidth", "eta_flops", "overhead_s",
                      "memory_gb")
VTC_KEYS = ("vtc_input_weight", "vtc_output_weight")
# Each limiter's own keys (requests_per_minute goes with any of them).
LIMITER_KEYS = {
    "token_bucket": ("rate_limit", "burst_cap"),
    "fixed_window": ("window_s", "tokens_per_window"),
    "split_buckets": ("input_tokens_per_minute", "output_tokens_per_minute"),
}
MODEL_KEYS = ("name", "hidden", "layers", "heads", "kv_heads", "intermediate", "vocab",
              "bytes_per_param")


@dataclass(frozen=True)
class SchedulerConfig:
    """Batching and queueing rules: the static engine's micro-batches or continuous batching."""

    batching: str = "static"
    batch_window_ms: float = 10.0
    max_batch_size: int = 16  # static batching
    aging_per_s: float = 0.0
    max_queue_length: int | None = None  # None = unlimited
    max_num_seqs: int = 256  # continuous batching: running requests per GPU
    max_num_batched_tokens: int = 2048  # continuous batching: token budget per iteration
    block_size: int = 16  # continuous batching: KV cache block, in tokens
    policy: str = "priority"  # who goes next: priority (bids and aging), fcfs or vtc
    vtc_input_weight: float = 1.0  # VTC: service counted per prompt token
    vtc_output_weight: float = 2.0  # VTC: service counted per output token

    @property
    def batch_window_s(self) -> float:
        return self.batch_window_ms / 1000

    @property
    def continuous(self) -> bool:
        return self.batching == "continuous"


@dataclass(frozen=True)
class ClusterConfig:
    """How many identical GPUs share the one priority queue."""

    gpus: int = 1


@dataclass(frozen=True)
class TenantConfig:
    """A tenant's limits, and the bid its requests carry when a trace has none (Azure traces)."""

    id: str
    rate_limit: float | None  # token_bucket: tokens per second
    burst_cap: float | None  # token_bucket: the bucket's size, tokens
    priority_bid: float = 1.0
    share: float = 1.0  # the VTC policy's weight of this tenant's service
    max_bid: float | None = None  # the live service's cap on a request's bid (None: priority_bid)
    limiter: str = "token_bucket"  # token_bucket, fixed_window or split_buckets
    window_s: float = 60.0  # fixed_window: the window
    tokens_per_window: float | None = None  # fixed_window: prompt + output tokens per window
    input_tokens_per_minute: float | None = None  # split_buckets
    output_tokens_per_minute: float | None = None  # split_buckets
    requests_per_minute: float | None = None  # optional, with any limiter

    def limits(self) -> TenantLimits:
        return TenantLimits(self.id, self.rate_limit, self.burst_cap, self.limiter,
                            self.window_s, self.tokens_per_window,
                            self.input_tokens_per_minute, self.output_tokens_per_minute,
                            self.requests_per_minute)

    @property
    def bid_cap(self) -> float:
        """The highest bid the live service lets this tenant's requests carry."""
        return self.priority_bid if self.max_bid is None else self.max_bid


@dataclass(frozen=True)
class TokenDistribution:
    """A distribution of token counts: constant, uniform, geometric, exponential or lognormal.

    ``params`` holds the distribution's own keys; ``min``/``max`` clip the drawn integers.
    """

    dist: str
    params: dict[str, float]
    min: int | None = None
    max: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dist": self.dist, **self.params}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out


@dataclass(frozen=True)
class TenantWorkload:
    """One tenant's synthetic traffic: Poisson arrivals and token-count distributions."""

    tenant_id: str
    arrival_rate_per_s: float
    prompt_tokens: TokenDistribution
    output_tokens: TokenDistribution
    priority_bid: float


@dataclass(frozen=True)
class WorkloadConfig:
    """The generated workload: arrivals in [0, duration_s) from every tenant, seeded."""

    duration_s: float
    tenants: tuple[TenantWorkload, ...]
    seed: int = 0


@dataclass(frozen=True)
class Scenario:
    gpu: GPUModel | RooflineGPU = field(default_factory=GPUModel)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tenants: tuple[TenantConfig, ...] = ()
    workload: WorkloadConfig | None = None
    source: str = "<scenario>"

    def tenant_ids(self) -> list[str]:
        return [t.id for t in self.tenants]

    def to_dict(self) -> dict[str, Any]:
        """The scenario as the dict (and TOML) structure ``parse_scenario`` reads."""
        out: dict[str, Any] = {
            "gpu": gpu_to_dict(self.gpu, self.scheduler),
            "scheduler": scheduler_to_dict(self.scheduler),
            "cluster": {"gpus": self.cluster.gpus},
            "tenants": [tenant_to_dict(t, self.scheduler) for t in self.tenants],
        }
        if isinstance(self.gpu, RooflineGPU) and self.gpu.model != LLAMA2_7B:
            out["model"] = model_to_dict(self.gpu.model)
        if self.workload is not None:
            w = self.workload
            out["workload"] = {
                "duration_s": w.duration_s,
                "seed": w.seed,
                "tenants": [
                    {
                        "id": tw.tenant_id,
                        "arrival_rate_per_s": tw.arrival_rate_per_s,
                        "priority_bid": tw.priority_bid,
                        "prompt_tokens": tw.prompt_tokens.to_dict(),
                        "output_tokens": tw.output_tokens.to_dict(),
                    }
                    for tw in w.tenants
                ],
            }
        return out

    def to_toml(self) -> str:
        """The scenario as TOML text that :func:`load_scenario` reads back to an equal one."""
        return dump_toml(self.to_dict())

    def write(self, path: str | Path) -> None:
        """Write the scenario as a TOML file (atomically)."""
        from .trace import write_text_atomic

        write_text_atomic(path, self.to_toml())

    def with_overrides(self, overrides: dict[str, Any]) -> Scenario:
        """A copy with dotted keys replaced, e.g. ``{"scheduler.max_batch_size": 32}``.

        ``tenants.rate_limit`` (or ``tenants.<id>.rate_limit``) sets it for every (that) tenant;
        ``workload.tenants.arrival_rate_per_s`` likewise. ``gpu.preset`` replaces the whole
        ``[gpu]`` table with that catalogue GPU's (other ``gpu.*`` overrides apply on top). The
        result is validated like a file.
        """
        data = self.to_dict()
        if "gpu.preset" in overrides:
            data["gpu"] = {}  # the written-out keys of the old GPU would override the preset
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value, self.source)
        if any(key in overrides for key in ("scheduler.batching", "scheduler.policy",
                                            "gpu.model")):
            _drop_inapplicable_defaults(data)
        return parse_scenario(data, source=self.source)

    def with_gpu(self, tables: dict[str, Any]) -> Scenario:
        """A copy whose ``[gpu]`` table is ``tables["gpu"]`` (and ``[model]``
        ``tables["model"]`` when given; otherwise the scenario's own model is kept), e.g.
        ``{"gpu": {"preset": "L4"}}``. The result is validated like a file."""
        data = self.to_dict()
        data["gpu"] = copy.deepcopy(tables["gpu"])
        if "model" in tables:
            data["model"] = copy.deepcopy(tables["model"])
        return parse_scenario(data, source=self.source)

    def scaled_load(self, multiplier: float) -> Scenario:
        """The same scenario with every tenant's generated arrival rate multiplied."""
        if self.workload is None:
            raise InputError(f"{self.source}: no [workload] section to scale")
        tenants = tuple(
            TenantWorkload(
                tw.tenant_id, tw.arrival_rate_per_s * multiplier, tw.prompt_tokens,
                tw.output_tokens, tw.priority_bid,
            )
            for tw in self.workload.tenants
        )
        workload = WorkloadConfig(self.workload.duration_s, tenants, self.workload.seed)
        return Scenario(self.gpu, self.scheduler, self.cluster, self.tenants, workload, self.source)


# --------------------------------------------------------------------------------------------
# Writing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """TOML text for a scenario-shaped dict: tables, arrays of tables, plain values."""
    lines: list[str] = []

    def table(name: str, body: dict[str, Any], array: bool = False) -> None:
        plain = {k: v for k, v in body.items()
                 if not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
        nested = {k: v for k, v in body.items() if k not in plain}
        lines.append(f"[[{name}]]" if array else f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in plain.items())
        lines.append("")
        for key, items in nested.items():
            for item in items:
                table(f"{name}.{key}", item, array=True)

    for key, value in data.items():
        if isinstance(value, dict):
            table(key, value)
        elif isinstance(value, list) and all(isinstance(x, dict) for x in value):
            for item in value:
                table(key, item, array=True)
        else:
            lines.insert(0, f"{key} = {_toml_value(value)}")
    return "\n".join(lines)


def gpu_to_dict(gpu: GPUModel | RooflineGPU, scheduler: SchedulerConfig) -> dict[str, Any]:
    """The ``[gpu]`` table of a scenario: every key of its GPU model (``model`` only when it is
    not the default for the engine)."""
    if isinstance(gpu, GPUModel):
        out: dict[str, Any] = {"name": gpu.name}
        if scheduler.continuous:
            out["model"] = "sqrt"
        out.update({
            "prefill_tokens_per_s": gpu.prefill_tokens_per_s,
            "decode_tokens_per_s": gpu.decode_tokens_per_s,
            "batch_speedup": list(gpu.batch_speedup),
            "kv_cache_gib": gpu.kv_cache_gib,
            "kv_bytes_per_token": gpu.kv_bytes_per_token,
            "price_per_hour": gpu.price_per_hour,
        })
        return out
    out = {"name": gpu.name}
    if not scheduler.continuous:
        out["model"] = "roofline"
    out.update({
        "hbm_bytes_per_s": gpu.hbm_bytes_per_s,
        "peak_flops": gpu.peak_flops,
        "eta_bandwidth": gpu.eta_bandwidth,
        "eta_flops": gpu.eta_flops,
        "overhead_s": gpu.overhead_s,
    })
    if gpu.memory_gb is not None:
        out["memory_gb"] = gpu.memory_gb
    if gpu.memory_gb is None or gpu.kv_cache_gib != kv_cache_gib(gpu.memory_gb,
                                                                 gpu.model.weight_bytes):
        out["kv_cache_gib"] = gpu.kv_cache_gib
    if gpu.kv_bytes_per_token != gpu.model.kv_bytes_per_token:
        out["kv_bytes_per_token"] = gpu.kv_bytes_per_token
    out["price_per_hour"] = gpu.price_per_hour
    return out


def tenant_to_dict(tenant: TenantConfig, scheduler: SchedulerConfig) -> dict[str, Any]:
    """A ``[[tenants]]`` table: its limiter's keys (``limiter`` only when not the token
    bucket), its bid, and its share under the VTC policy."""
    out: dict[str, Any] = {"id": tenant.id}
    if tenant.limiter != "token_bucket":
        out["limiter"] = tenant.limiter
    for key in LIMITER_KEYS[tenant.limiter]:
        out[key] = getattr(tenant, key)
    if tenant.requests_per_minute is not None:
        out["requests_per_minute"] = tenant.requests_per_minute
    out["priority_bid"] = tenant.priority_bid
    if tenant.max_bid is not None:
        out["max_bid"] = tenant.max_bid
    if scheduler.policy == "vtc":
        out["share"] = tenant.share
    return out


def scheduler_to_dict(scheduler: SchedulerConfig) -> dict[str, Any]:
    """The ``[scheduler]`` table: the keys of its engine (``batching`` only when continuous)."""
    out: dict[str, Any] = {}
    if scheduler.continuous:
        out["batching"] = "continuous"
    if scheduler.policy != "priority":
        out["policy"] = scheduler.policy
    out["batch_window_ms"] = scheduler.batch_window_ms
    if scheduler.continuous:
        out.update({"max_num_seqs": scheduler.max_num_seqs,
                    "max_num_batched_tokens": scheduler.max_num_batched_tokens,
                    "block_size": scheduler.block_size})
    else:
        out["max_batch_size"] = scheduler.max_batch_size
    if scheduler.policy == "priority":
        out["aging_per_s"] = scheduler.aging_per_s
    if scheduler.policy == "vtc":
        out["vtc_input_weight"] = scheduler.vtc_input_weight
        out["vtc_output_weight"] = scheduler.vtc_output_weight
    if scheduler.max_queue_length is not None:
        out["max_queue_length"] = scheduler.max_queue_length
    return out


def model_to_dict(model: TransformerModel) -> dict[str, Any]:
    """The ``[model]`` table."""
    return {key: getattr(model, key) for key in MODEL_KEYS}


def _drop_inapplicable_defaults(data: dict[str, Any]) -> None:
    """After an override switches the engine or the GPU model, forget the other one's keys that
    only hold their defaults (to_dict wrote them out); a key set to anything else stays and is
    reported by the validation as having no effect."""
    sched, gpu = data.get("scheduler", {}), data.get("gpu", {})
    continuous = sched.get("batching", "static") == "continuous"
    model = gpu.get("model", "roofline" if continuous else "sqrt")
    defaults_sched, sqrt, roofline = SchedulerConfig(), GPUModel(), RooflineGPU()
    policy = sched.get("policy", "priority")
    inapplicable = list(CONTINUOUS_ONLY_KEYS if not continuous else STATIC_ONLY_KEYS)
    inapplicable += [] if policy == "vtc" else list(VTC_KEYS)
    inapplicable += [] if policy == "priority" else ["aging_per_s"]
    for key in inapplicable:
        if key in sched and sched[key] == getattr(defaults_sched, key):
            del sched[key]
    if policy != "vtc":
        for tenant in data.get("tenants", []):
            if tenant.get("share") == 1.0:
                del tenant["share"]
    for key in ROOFLINE_ONLY_KEYS if model == "sqrt" else SQRT_ONLY_KEYS:
        default = getattr(sqrt if key in SQRT_ONLY_KEYS else roofline, key)
        if key in gpu and gpu[key] == (list(default) if isinstance(default, tuple) else default):
            del gpu[key]
    if model == "roofline" and continuous and gpu.get("model") == "roofline":
        del gpu["model"]
    if model == "sqrt" and not continuous and gpu.get("model") == "sqrt":
        del gpu["model"]


# --------------------------------------------------------------------------------------------
# Loading and validation


def read_toml(path: str | Path, what: str) -> tuple[dict[str, Any], str]:
    """A TOML file's tables and its text; a file that cannot be read or is not TOML is an
    InputError naming it (``what`` says what kind of file it should have been)."""
    path = Path(path)
    with reading(path, what):
        text = path.read_text(encoding="utf-8")
    try:
        return toml_reader.loads(text), text
    except toml_reader.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file; any problem raises InputError naming the file."""
    data, text = read_toml(path, "scenario")
    return parse_scenario(data, source=str(path), text=text)


def load_gpu_tables(path: str | Path) -> dict[str, Any]:
    """Read a GPU file: a ``[gpu]`` table and optionally a ``[model]`` one (what ``apslab
    calibrate`` writes), checked as a scenario's would be, errors naming this file and line."""
    data, text = read_toml(path, "GPU")
    v = _Validator(str(path), text)
    v.keys(data, ("gpu", "model"), "", top_level=True)
    if not isinstance(data.get("gpu"), dict):
        v.fail("", "gpu", "table is required (a GPU file holds [gpu] and optionally [model])")
    parse_gpu_tables(data, str(path), text)
    return data


def parse_gpu_tables(data: dict[str, Any], source: str, text: str | None = None
                     ) -> GPUModel | RooflineGPU:
    """The GPU of a ``[gpu]`` table (and optional ``[model]`` table), checked as a scenario's
    would be: the tables are parsed in a scenario of one placeholder tenant, with static
    batching for the seed's sqrt curve and continuous batching otherwise."""
    gpu = data["gpu"]
    sqrt = gpu.get("model") == "sqrt" or ("model" not in gpu and "preset" not in gpu
                                          and any(key in gpu for key in SQRT_ONLY_KEYS))
    batching = "static" if sqrt else "continuous"
    return parse_scenario({**data, "scheduler": {"batching": batching},
                           "tenants": [{"id": "check", "rate_limit": 1.0, "burst_cap": 1.0}]},
                          source=source, text=text).gpu


def parse_scenario(data: dict[str, Any], source: str = "<scenario>", text: str | None = None
                   ) -> Scenario:
    """Validate a scenario given as a dict (the parsed TOML)."""
    v = _Validator(source, text)
    v.keys(data, ("gpu", "model", "scheduler", "cluster", "tenants", "workload"), "",
           top_level=True)

    sched_table = v.table(data, "scheduler", "")
    v.keys(sched_table, ("batching", "policy", "batch_window_ms", "max_batch_size",
                         "aging_per_s", "max_queue_length", *CONTINUOUS_ONLY_KEYS,
                         *VTC_KEYS), "[scheduler]")
    scheduler = _parse_scheduler(v, sched_table)
    gpu = _parse_gpu(v, v.table(data, "gpu", ""), data, scheduler)

    cluster_table = v.table(data, "cluster", "")
    v.keys(cluster_table, ("gpus",), "[cluster]")
    cluster = ClusterConfig(gpus=v.integer(cluster_table, "gpus", "[cluster]", 1, minimum=1))

    tenants_raw = data.get("tenants", [])
    if not isinstance(tenants_raw, list) or not all(isinstance(t, dict) for t in tenants_raw):
        v.fail("", "tenants", "must be an array of tables ([[tenants]])")
    if not tenants_raw:
        v.fail("", "tenants", "at least one [[tenants]] entry is required")
    tenants: list[TenantConfig] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(tenants_raw, start=1):
        where = f"[[tenants]] #{index}"
        v.keys(raw, ("id", "priority_bid", "share", "max_bid", "limiter",
                     *sorted(set().union(*LIMITER_KEYS.values())), "requests_per_minute"), where,
               occurrence=index)
        tenant_id = v.tenant_id(raw, where, index)
        where = f"[[tenants]] #{index} (id {tenant_id!r})"
        if tenant_id in seen:
            v.fail(where, "id", f"duplicate tenant id {tenant_id!r} (also [[tenants]] "
                                f"#{seen[tenant_id]})", occurrence=index)
        seen[tenant_id] = index
        limits = _parse_limiter(v, raw, where, index)
        tenants.append(TenantConfig(
            id=tenant_id,
            **limits,
            priority_bid=v.number(raw, "priority_bid", where, 1.0, minimum=0.0, occurrence=index),
            share=v.number(raw, "share", where, 1.0, positive=True, occurrence=index),
            max_bid=v.number(raw, "max_bid", where, None, minimum=0.0, occurrence=index)
            if "max_bid" in raw else None,
        ))
        if tenants[-1].bid_cap < tenants[-1].priority_bid:
            v.fail(where, "max_bid", f"must be >= priority_bid ({tenants[-1].priority_bid:g}), "
                                     f"got {tenants[-1].max_bid!r}", occurrence=index)
        if "share" in raw and scheduler.policy != "vtc":
            v.fail(where, "share", f"has no effect with policy = {scheduler.policy!r} (a share "
                                   "weighs a tenant's service under policy = \"vtc\")",
                   occurrence=index)

    workload = None
    if "workload" in data:
        workload = _parse_workload(v, data["workload"], {t.id: t for t in tenants})
    return Scenario(gpu, scheduler, cluster, tuple(tenants), workload, source)


def _parse_limiter(v: _Validator, raw: dict, where: str, index: int) -> dict[str, Any]:
    """A tenant's limiter and its keys; another limiter's keys are errors naming the key."""
    kind = raw.get("limiter", "token_bucket")
    if kind not in LIMITERS:
        v.fail(where, "limiter", f"must be one of {', '.join(map(repr, LIMITERS))}, got "
                                 f"{kind!r}" + suggest(str(kind), LIMITERS), occurrence=index)
    for other, keys in LIMITER_KEYS.items():
        for key in keys:
            if other != kind and key in raw:
                v.fail(where, key, f"has no effect with limiter = {kind!r} (it belongs to "
                                   f"limiter = {other!r})", occurrence=index)
    out: dict[str, Any] = {"limiter": kind, "rate_limit": None, "burst_cap": None}
    number = functools.partial(v.number, raw, where=where, positive=True, occurrence=index)
    if kind == "token_bucket":
        out["rate_limit"] = number(key="rate_limit", default=None)
        out["burst_cap"] = number(key="burst_cap", default=None)
    elif kind == "fixed_window":
        out["window_s"] = number(key="window_s", default=60.0)
        out["tokens_per_window"] = number(key="tokens_per_window", default=None)
    else:
        out["input_tokens_per_minute"] = number(key="input_tokens_per_minute", default=None)
        out["output_tokens_per_minute"] = number(key="output_tokens_per_minute", default=None)
    if "requests_per_minute" in raw:
        out["requests_per_minute"] = number(key="requests_per_minute", default=None)
    return out


def _parse_scheduler(v: _Validator, table: dict) -> SchedulerConfig:
    sd = SchedulerConfig()
    batching = table.get("batching", sd.batching)
    if batching not in BATCHING_MODES:
        v.fail("[scheduler]", "batching", f"must be one of {', '.join(map(repr, BATCHING_MODES))}, "
                                          f"got {batching!r}")
    continuous = batching == "continuous"
    for key in STATIC_ONLY_KEYS if continuous else CONTINUOUS_ONLY_KEYS:
        if key in table:
            v.fail("[scheduler]", key, f"has no effect with batching = {batching!r}"
                   + (" (continuous batching is bounded by max_num_seqs, "
                      "max_num_batched_tokens and the KV blocks)" if continuous else
                      " (it is a continuous-batching key; set batching = \"continuous\")"))
    policy = table.get("policy", sd.policy)
    if policy not in POLICIES:
        v.fail("[scheduler]", "policy", f"must be one of {', '.join(map(repr, POLICIES))}, "
                                        f"got {policy!r}")
    if policy != "vtc":
        for key in VTC_KEYS:
            if key in table:
                v.fail("[scheduler]", key, f"has no effect with policy = {policy!r}")
    if policy != "priority" and "aging_per_s" in table:
        v.fail("[scheduler]", "aging_per_s", f"has no effect with policy = {policy!r} (bids "
                                             "and aging only order the priority policy)")
    max_queue = table.get("max_queue_length")
    where = "[scheduler]"
    return SchedulerConfig(
        policy=policy,
        vtc_input_weight=v.number(table, "vtc_input_weight", where, sd.vtc_input_weight,
                                  minimum=0.0),
        vtc_output_weight=v.number(table, "vtc_output_weight", where, sd.vtc_output_weight,
                                   minimum=0.0),
        batching=batching,
        batch_window_ms=v.number(table, "batch_window_ms", where, sd.batch_window_ms, minimum=0.0),
        max_batch_size=v.integer(table, "max_batch_size", where, sd.max_batch_size, minimum=1),
        aging_per_s=v.number(table, "aging_per_s", where, sd.aging_per_s, minimum=0.0),
        max_queue_length=None if max_queue is None else v.integer(
            table, "max_queue_length", where, None, minimum=1),
        max_num_seqs=v.integer(table, "max_num_seqs", where, sd.max_num_seqs, minimum=1),
        max_num_batched_tokens=v.integer(table, "max_num_batched_tokens", where,
                                         sd.max_num_batched_tokens, minimum=1),
        block_size=v.integer(table, "block_size", where, sd.block_size, minimum=1),
    )


def _parse_gpu(v: _Validator, table: dict, data: dict, scheduler: SchedulerConfig
               ) -> GPUModel | RooflineGPU:
    v.keys(table, ("name", "preset", "model", *SQRT_ONLY_KEYS, *ROOFLINE_ONLY_KEYS,
                   "kv_cache_gib", "kv_bytes_per_token", "price_per_hour"), "[gpu]")
    preset = _parse_preset(v, table)
    model = table.get("model", "roofline" if scheduler.continuous or preset else "sqrt")
    if model not in GPU_MODELS:
        v.fail("[gpu]", "model", f"must be one of {', '.join(map(repr, GPU_MODELS))}, "
                                 f"got {model!r}")
    if model == "sqrt" and scheduler.continuous:
        v.fail("[gpu]", "model", "'sqrt' cannot cost continuous batching: the seed's curve "
                                 "prices whole static batches, not iterations (use 'roofline')")
    if model == "sqrt" and preset is not None:
        v.fail("[gpu]", "preset", "describes a roofline GPU (datasheet roofs and fitted "
                                  "fractions); it has no effect with model = 'sqrt'")
    for key in ROOFLINE_ONLY_KEYS if model == "sqrt" else SQRT_ONLY_KEYS:
        if key in table:
            v.fail("[gpu]", key, f"has no effect with model = {model!r}")
    if model == "sqrt" and "model" in data:
        v.fail("", "model", "has no effect with [gpu] model = 'sqrt' (the served model's shape "
                            "is what the roofline costs)")
    name = table.get("name", preset.name if preset is not None else "A100")
    if not isinstance(name, str):
        v.fail("[gpu]", "name", f"must be a string, got {name!r}")
    if model == "sqrt":
        return _parse_sqrt_gpu(v, table, name)
    defaults = RooflineGPU()
    if preset is not None:  # the catalogue fills every key; explicit keys override it
        defaults = replace(defaults, hbm_bytes_per_s=preset.hbm_bytes_per_s,
                           peak_flops=preset.peak_flops, eta_bandwidth=preset.eta_bandwidth,
                           eta_flops=preset.eta_flops, overhead_s=preset.overhead_s,
                           price_per_hour=preset.price_per_hour)
    served = _parse_model(v, data.get("model", {}))
    where = "[gpu]"
    memory_gb = preset.memory_gb if preset is not None else None
    if "memory_gb" in table:
        memory_gb = v.number(table, "memory_gb", where, None, positive=True)
    kv_default = defaults.kv_cache_gib
    if memory_gb is not None:
        kv_default = kv_cache_gib(memory_gb, served.weight_bytes)
        if kv_default <= 0:
            key = "memory_gb" if "memory_gb" in table else "preset"
            v.fail(where, key, f"{name!r} cannot hold the model {served.name!r}: its weights "
                               f"take {served.weight_bytes / 1e9:.2f} GB, more than the "
                               f"{memory_gb * (1 - ACTIVATION_RESERVE):g} GB left of "
                               f"{memory_gb:g} GB once {ACTIVATION_RESERVE:.0%} is kept for "
                               "activations")
    eta = {}
    for key in ("eta_bandwidth", "eta_flops"):
        eta[key] = v.number(table, key, where, getattr(defaults, key), positive=True)
        if eta[key] > 1:
            v.fail(where, key, f"is a fraction of the datasheet roof and must be <= 1, "
                               f"got {eta[key]!r}")
    return RooflineGPU(
        name=name,
        hbm_bytes_per_s=v.number(table, "hbm_bytes_per_s", where, defaults.hbm_bytes_per_s,
                                 positive=True),
        peak_flops=v.number(table, "peak_flops", where, defaults.peak_flops, positive=True),
        eta_bandwidth=eta["eta_bandwidth"],
        eta_flops=eta["eta_flops"],
        overhead_s=v.number(table, "overhead_s", where, defaults.overhead_s, minimum=0.0),
        kv_cache_gib=v.number(table, "kv_cache_gib", where, kv_default, positive=True),
        kv_bytes_per_token=v.integer(table, "kv_bytes_per_token", where,
                                     served.kv_bytes_per_token, minimum=1),
        price_per_hour=v.number(table, "price_per_hour", where, defaults.price_per_hour,
                                minimum=0.0),
        model=served,
        memory_gb=memory_gb,
    )


def _parse_preset(v: _Validator, table: dict):
    """The catalogue entry ``[gpu] preset`` names (None without one)."""
    if "preset" not in table:
        return None
    preset = table["preset"]
    if not isinstance(preset, str):
        v.fail("[gpu]", "preset", f"must be a GPU name (a string), got {preset!r}")
    entry = lookup(preset)
    if entry is None:
        v.fail("[gpu]", "preset", f"{preset!r} is not in the GPU catalogue{suggestion(preset)}; "
                                  f"presets: {', '.join(catalogue_names())} (apslab gpus lists "
                                  "them)")
    return entry


def _parse_sqrt_gpu(v: _Validator, table: dict, name: str) -> GPUModel:
    defaults = GPUModel()
    speedup = table.get("batch_speedup", list(defaults.batch_speedup))
    if (not isinstance(speedup, list) or len(speedup) != 2
            or not all(_is_number(x) and math.isfinite(x) for x in speedup)):
        v.fail("[gpu]", "batch_speedup", f"must be a list of two numbers [a, b], got {speedup!r}")
    a, b = float(speedup[0]), float(speedup[1])
    if b < 0 or a + b <= 0:
        v.fail("[gpu]", "batch_speedup",
               f"needs b >= 0 and a + b > 0 so every batch decodes at a positive rate, "
               f"got {speedup!r}")
    return GPUModel(
        name=name,
        prefill_tokens_per_s=v.number(table, "prefill_tokens_per_s", "[gpu]",
                                      defaults.prefill_tokens_per_s, positive=True),
        decode_tokens_per_s=v.number(table, "decode_tokens_per_s", "[gpu]",
                                     defaults.decode_tokens_per_s, positive=True),
        batch_speedup=(a, b),
        kv_cache_gib=v.number(table, "kv_cache_gib", "[gpu]", defaults.kv_cache_gib,
                              positive=True),
        kv_bytes_per_token=v.integer(table, "kv_bytes_per_token", "[gpu]",
                                     defaults.kv_bytes_per_token, minimum=1),
        price_per_hour=v.number(table, "price_per_hour", "[gpu]", defaults.price_per_hour,
                                minimum=0.0),
    )


def _parse_model(v: _Validator, table: Any) -> TransformerModel:
    """The ``[model]`` table: the served transformer's shape (default Llama-2-7B)."""
    if not isinstance(table, dict):
        v.fail("", "model", f"must be a table ([model]), got {table!r}")
    v.keys(table, MODEL_KEYS, "[model]")
    d = LLAMA2_7B
    name = table.get("name", d.name if not table else "custom")
    if not isinstance(name, str) or not name.strip():
        v.fail("[model]", "name", f"must be a non-empty string, got {name!r}")
    sizes = {key: v.integer(table, key, "[model]", getattr(d, key), minimum=1)
             for key in MODEL_KEYS[1:]}
    if sizes["kv_heads"] > sizes["heads"] or sizes["heads"] % sizes["kv_heads"]:
        v.fail("[model]", "kv_heads", f"must divide heads ({sizes['heads']}), "
                                      f"got {sizes['kv_heads']}")
    if sizes["hidden"] % sizes["heads"]:
        v.fail("[model]", "heads", f"must divide hidden ({sizes['hidden']}), "
                                   f"got {sizes['heads']}")
    return TransformerModel(name=name, **sizes)


def _parse_workload(v: _Validator, table: Any, tenants: dict[str, TenantConfig]) -> WorkloadConfig:
    if not isinstance(table, dict):
        v.fail("", "workload", "must be a table ([workload])")
    v.keys(table, ("duration_s", "seed", "tenants"), "[workload]")
    duration = v.number(table, "duration_s", "[workload]", None, positive=True)
    seed = v.integer(table, "seed", "[workload]", 0, minimum=0)
    raw_tenants = table.get("tenants")
    if not isinstance(raw_tenants, list) or not raw_tenants or not all(
            isinstance(t, dict) for t in raw_tenants):
        v.fail("[workload]", "tenants", "needs at least one [[workload.tenants]] table")
    streams: list[TenantWorkload] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_tenants, start=1):
        where = f"[[workload.tenants]] #{index}"
        v.keys(raw, ("id", "arrival_rate_per_s", "priority_bid", "prompt_tokens", "output_tokens"),
               where, occurrence=index, header="workload.tenants")
        tenant_id = v.tenant_id(raw, where, index, header="workload.tenants")
        if tenant_id not in tenants:
            v.fail(where, "id", f"tenant {tenant_id!r} is not defined in [[tenants]]"
                   + suggest(tenant_id, tenants), occurrence=index, header="workload.tenants")
        if tenant_id in seen:
            v.fail(where, "id", f"duplicate workload for tenant {tenant_id!r}",
                   occurrence=index, header="workload.tenants")
        seen.add(tenant_id)
        where = f"[[workload.tenants]] #{index} (id {tenant_id!r})"
        streams.append(TenantWorkload(
            tenant_id=tenant_id,
            arrival_rate_per_s=v.number(raw, "arrival_rate_per_s", where, None, minimum=0.0,
                                        occurrence=index, header="workload.tenants"),
            prompt_tokens=_parse_distribution(v, raw, "prompt_tokens", where, index),
            output_tokens=_parse_distribution(v, raw, "output_tokens", where, index),
            priority_bid=v.number(raw, "priority_bid", where, tenants[tenant_id].priority_bid,
                                  minimum=0.0, occurrence=index, header="workload.tenants"),
        ))
    return WorkloadConfig(duration_s=duration, tenants=tuple(streams), seed=seed)


def _parse_distribution(v: _Validator, raw: dict, key: str, where: str, index: int
                        ) -> TokenDistribution:
    loc = {"occurrence": index, "header": "workload.tenants"}
    if key not in raw:
        v.fail(where, key, "is required (an integer, or a table such as "
                           "{ dist = \"geometric\", mean = 128 })", **loc)
    spec = raw[key]
    if _is_number(spec):
        if isinstance(spec, float) and not spec.is_integer() or spec < 0:
            v.fail(where, key, f"must be a non-negative integer, got {spec!r}", **loc)
        return TokenDistribution("constant", {"value": int(spec)})
    if not isinstance(spec, dict):
        v.fail(where, key, f"must be an integer or a distribution table, got {spec!r}", **loc)
    dist = spec.get("dist")
    if dist not in TOKEN_DISTRIBUTIONS:
        v.fail(where, f"{key}.dist", f"must be one of {', '.join(TOKEN_DISTRIBUTIONS)}, "
                                     f"got {dist!r}", **loc)
    needed = TOKEN_DISTRIBUTIONS[dist]
    sub = f"{where} {key}"
    v.keys(spec, ("dist", *needed, *_CLIP_KEYS), sub, **loc)
    params: dict[str, float] = {}
    for name in needed:
        if name not in spec:
            v.fail(sub, name, f"is required for dist = {dist!r}", **loc)
        value = spec[name]
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            v.fail(sub, name, f"must be a finite number >= 0, got {value!r}", **loc)
        params[name] = value
    if dist == "uniform" and params["low"] > params["high"]:
        v.fail(sub, "low", f"must be <= high, got low={params['low']} high={params['high']}", **loc)
    if dist == "geometric" and params["mean"] < 1:
        v.fail(sub, "mean", f"must be >= 1 (geometric counts start at 1), got {params['mean']}",
               **loc)
    if dist == "lognormal" and params["median"] <= 0:
        v.fail(sub, "median", f"must be > 0, got {params['median']}", **loc)
    clip: dict[str, int | None] = {}
    for name in _CLIP_KEYS:
        clip[name] = v.integer(spec, name, sub, None, minimum=0, **loc) if name in spec else None
    if clip["min"] is not None and clip["max"] is not None and clip["min"] > clip["max"]:
        v.fail(sub, "min", f"must be <= max, got min={clip['min']} max={clip['max']}", **loc)
    return TokenDistribution(dist, params, clip["min"], clip["max"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'X'?)' for the choice closest to a mistyped ``word``, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TENANT_ID_FORBIDDEN = re.compile(r'[,"\r\n]')


class _Validator:
    """Checks values and raises InputError naming file, table, key and (when found) the line."""

    def __init__(self, source: str, text: str | None) -> None:
        self.source = source
        self.lines = text.splitlines() if text is not None else None

    # -- locating keys in the original text, for messages ------------------------------------
    def _line_of(self, where: str, key: str, occurrence: int = 1, header: str | None = None
                 ) -> int | None:
        if self.lines is None:
            return None
        key = key.split(".")[0]
        header = header or _header_name(where)
        start = 0
        if header:
            count = 0
            pattern = re.compile(r"^\s*\[\[?\s*" + re.escape(header) + r"\s*\]\]?\s*(#.*)?$")
            for i, line in enumerate(self.lines):
                if pattern.match(line):
                    count += 1
                    if count == occurrence:
                        start = i
                        break
            else:
                return None
        key_pattern = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=")
        for i in range(start, len(self.lines)):
            if i > start and header and self.lines[i].lstrip().startswith("["):
                break
            if key_pattern.match(self.lines[i]):
                return i + 1
        return None

    def fail(self, where: str, key: str, message: str, occurrence: int = 1,
             header: str | None = None):
        line = self._line_of(where, key, occurrence, header)
        location = f"{self.source}" + (f" line {line}" if line else "")
        place = f"{where} {key}" if where else key
        raise InputError(f"{location}: {place.strip()} {message}")

    # -- structural checks -----------------------------------------------------------------
    def keys(self, table: dict, allowed: tuple[str, ...], where: str, top_level: bool = False,
             occurrence: int = 1, header: str | None = None) -> None:
        for key in table:
            if key not in allowed:
                what = "unknown top-level table or key" if top_level else "unknown key"
                self.fail(where, repr(key)[1:-1],
                          f"is an {what}{suggest(key, allowed)}; allowed: {', '.join(allowed)}",
                          occurrence, header)

    def table(self, data: dict, key: str, where: str) -> dict:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail(where, key, f"must be a table ([{key}]), got {value!r}")
        return value

    def number(self, table: dict, key: str, where: str, default: float | None, *,
               positive: bool = False, minimum: float | None = None, occurrence: int = 1,
               header: str | None = None) -> float:
        if key not in table:
            if default is None:
                self.fail(where, key, "is required", occurrence, header)
            return default
        value = table[key]
        if not _is_number(value):
            self.fail(where, key, f"must be a number, got {value!r}", occurrence, header)
        if not math.isfinite(value):
            self.fail(where, key, f"must be finite, got {value!r}", occurrence, header)
        if positive and value <= 0:
            self.fail(where, key, f"must be > 0, got {value!r}", occurrence, header)
        if minimum is not None and value < minimum:
            self.fail(where, key, f"must be >= {minimum:g}, got {value!r}", occurrence, header)
        return float(value)

    def integer(self, table: dict, key: str, where: str, default: int | None, *,
                minimum: int | None = None, occurrence: int = 1, header: str | None = None
                ) -> int:
        if key not in table:
            if default is None:
                self.fail(where, key, "is required", occurrence, header)
            return default
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(where, key, f"must be an integer, got {value!r}", occurrence, header)
        if minimum is not None and value < minimum:
            self.fail(where, key, f"must be >= {minimum}, got {value!r}", occurrence, header)
        return value

    def tenant_id(self, raw: dict, where: str, occurrence: int, header: str | None = None) -> str:
        if "id" not in raw:
            self.fail(where, "id", "is required (the tenant's name)", occurrence, header)
        tenant_id = raw["id"]
        if not isinstance(tenant_id, str) or not tenant_id.strip():
            self.fail(where, "id", f"must be a non-empty string, got {tenant_id!r}", occurrence,
                      header)
        if tenant_id != tenant_id.strip() or _TENANT_ID_FORBIDDEN.search(tenant_id):
            self.fail(where, "id", f"{tenant_id!r} may not contain commas, quotes, line breaks "
                                   "or surrounding spaces", occurrence, header)
        return tenant_id


def _header_name(where: str) -> str:
    match = re.match(r"^\[\[?([^\]]+)\]\]?", where)
    return match.group(1) if match else ""


def _set_dotted(data: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    if parts[0] == "tenants" and len(parts) in (2, 3):
        selected = [t for t in data["tenants"] if len(parts) == 2 or t["id"] == parts[1]]
        if not selected:
            raise InputError(f"{source}: override {dotted!r}: no tenant {parts[1]!r}")
        for tenant in selected:
            tenant[parts[-1]] = copy.deepcopy(value)
        return
    if parts[:2] == ["workload", "tenants"] and len(parts) in (3, 4) and "workload" in data:
        selected = [t for t in data["workload"]["tenants"]
                    if len(parts) == 3 or t["id"] == parts[2]]
        if not selected:
            raise InputError(f"{source}: override {dotted!r}: no workload tenant {parts[2]!r}")
        for tenant in selected:
            tenant[parts[-1]] = copy.deepcopy(value)
        return
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"{source}: override {dotted!r}: {part!r} is not a table")
        node = child
    node[parts[-1]] = copy.deepcopy(value)
