"""Small builders for scenarios and traces used across the tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from contextlib import contextmanager

from apslab.io.scenario import Scenario, parse_scenario
from apslab.io.trace import Trace


def make_scenario(tenants=(("A", 100.0, 2000.0),), gpu=None, scheduler=None, cluster=None,
                  workload=None, model=None, tenant_keys=None) -> Scenario:
    """tenants: (id, rate_limit, burst_cap) tuples, or dicts of [[tenants]] keys (to set
    priority_bid or share); ``tenant_keys`` (e.g. {"max_bid": 5.0}) are added to every tenant;
    model: a [model] table."""
    data: dict = {"tenants": [{**(dict(t) if isinstance(t, dict)
                                  else {"id": t[0], "rate_limit": t[1], "burst_cap": t[2]}),
                               **(tenant_keys or {})}
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


@contextmanager
def serve(scenario_path, *options, startup_timeout_s=60.0, env=None):
    """``python -m apslab serve`` on port 0; yields (process, url); SIGINT and wait at the end.

    The start-up lines it printed are in ``process.banner``.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "apslab", "serve", str(scenario_path), "--port", "0",
         "--log-level", "warning", *map(str, options)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(startup_timeout_s, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()
        proc.banner = line + (proc.stdout.readline() if line else "")
    finally:
        watchdog.cancel()
    try:
        assert "listening on http://127.0.0.1:" in line, (line, proc.stderr.read())
        url = line.split("listening on ")[1].split()[0]
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
