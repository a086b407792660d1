"""Small builders for scenarios and traces used across the tests."""

from __future__ import annotations

from apslab.io.scenario import Scenario, parse_scenario
from apslab.io.trace import Trace


def make_scenario(tenants=(("A", 100.0, 2000.0),), gpu=None, scheduler=None, cluster=None,
                  workload=None) -> Scenario:
    data: dict = {"tenants": [{"id": t, "rate_limit": r, "burst_cap": b} for t, r, b in tenants]}
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
