"""Small builders for scenarios and traces used across the tests."""

from __future__ import annotations

from apslab.io.scenario import Scenario, parse_scenario
from apslab.io.trace import Trace


def make_scenario(tenants=(("A", 100.0, 2000.0),), gpu=None, scheduler=None, cluster=None,
                  workload=None, model=None) -> Scenario:
    """tenants: (id, rate_limit, burst_cap) tuples, or dicts of [[tenants]] keys (to set
    priority_bid or share); model: a [model] table."""
    data: dict = {"tenants": [dict(t) if isinstance(t, dict)
                              else {"id": t[0], "rate_limit": t[1], "burst_cap": t[2]}
                              for t in tenants]}
    if model:
        data["model"] = model
    if gpu:
        data["gpu"] = gpu
    if scheduler:
        data["scheduler"] = scheduler
    if cluster:
        data["cluster"] = cluster
    if workload:
        data["workload"] = workload
    return parse_scenario(data, source="<test>")


def make_trace(rows) -> Trace:
    """rows: (arrival_s, tenant_id, prompt_tokens, output_tokens, priority_bid)."""
    arrival, tenant, prompt, output, bid = zip(*rows, strict=True)
    return Trace.from_columns(list(arrival), list(tenant), list(prompt), list(output), list(bid))
