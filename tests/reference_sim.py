"""A deliberately plain simulator used as an oracle for apslab's optimised one.

It follows the contract one event at a time with the package's *scalar* component calls
(TokenBucket.consume, LazyAgingQueue.peek/pop, GPUModel.service_time_s) and none of the fast
paths (column admission, take-all batches, tabulated decode rates, chunked arrivals). Tests
require apslab.simulate to agree with it exactly, request by request.
"""

from __future__ import annotations

import math

from apslab.core.aging_queue import LazyAgingQueue
from apslab.core.limiter import REASON_NAMES, TokenBucket
from apslab.io.scenario import Scenario
from apslab.io.trace import Trace


def reference_simulate(scenario: Scenario, trace: Trace) -> dict:
    gpu = scenario.gpu
    sched = scenario.scheduler
    kv_capacity = gpu.kv_capacity_tokens
    window = sched.batch_window_ms / 1000
    tenants = {t.id: t for t in scenario.tenants}
    buckets = {t.id: TokenBucket(t.rate_limit, t.burst_cap) for t in scenario.tenants}
    n = len(trace)
    arrival = trace.arrival_s.tolist()
    tenant = trace.tenant_ids
    prompt = trace.prompt_tokens.tolist()
    output = trace.output_tokens.tolist()
    bid = trace.priority_bid.tolist()
    order = sorted(range(n), key=lambda i: (arrival[i], i))

    reason = [""] * n
    start = [None] * n
    finish = [None] * n
    batch_of = [None] * n
    gpu_of = [None] * n
    batches = []  # (start, finish, size, kv, gpu, service)
    queue = LazyAgingQueue(sched.aging_per_s)
    idle = set(range(scenario.cluster.gpus))
    busy: dict[int, float] = {}
    timer = math.inf

    def form(t):
        while len(queue) and idle:
            g = min(idle)
            idle.remove(g)
            members, kv = [], 0
            while len(queue) and len(members) < sched.max_batch_size:
                rid = queue.peek(t)
                cost = prompt[rid] + output[rid]
                if kv + cost > kv_capacity:
                    break
                queue.pop(t)
                members.append(rid)
                kv += cost
            service = gpu.service_time_s(sum(prompt[r] for r in members),
                                         sum(output[r] for r in members), len(members))
            done = t + service
            busy[g] = done
            for rid in members:
                start[rid], finish[rid] = t, done
                batch_of[rid], gpu_of[rid] = len(batches), g
            batches.append((t, done, len(members), kv, g, service))

    i = 0
    while True:
        next_arrival = arrival[order[i]] if i < n else math.inf
        next_gpu_event = min(min(busy.values(), default=math.inf), timer)
        if i < n and next_arrival <= next_gpu_event:
            rid = order[i]
            i += 1
            t = next_arrival
            cost = prompt[rid] + output[rid]
            if tenant[rid] not in tenants:
                reason[rid] = "unknown_tenant"
            elif cost > kv_capacity:
                reason[rid] = "exceeds_kv_capacity"
            elif cost > tenants[tenant[rid]].burst_cap:
                reason[rid] = "exceeds_burst"
            elif sched.max_queue_length is not None and len(queue) >= sched.max_queue_length:
                reason[rid] = "queue_full"
            elif not buckets[tenant[rid]].consume(cost, t):
                reason[rid] = "rate_limited"
            else:
                queue.push(rid, bid[rid], t, (prompt[rid], output[rid]))
                if timer == math.inf and idle:
                    timer = t + window
            continue
        if next_gpu_event == math.inf:
            break
        t = next_gpu_event
        for g in sorted(g for g, f in busy.items() if f == t):
            del busy[g]
            idle.add(g)
        if len(queue):
            form(t)
            timer = math.inf
    assert all(r in REASON_NAMES for r in reason)
    return {"reason": reason, "start": start, "finish": finish, "batch": batch_of,
            "gpu": gpu_of, "batches": batches}
