"""The baseline: ``apslab simulate``'s contract written as a careful SimPy user would write it.

One arrival process, one worker process per GPU, a heapq priority queue with the static aging key,
CSV in through the csv module, the same REQUESTS.csv and SUMMARY.json out. No process per request
and no needless copies. It exists so the benchmark compares apslab with what a user would
otherwise write, and a test checks that it computes exactly what apslab computes.

Usage: python benchmarks/simpy_baseline.py SCENARIO.toml TRACE.csv SUMMARY.json REQUESTS.csv

It reads the scenario keys the benchmark uses ([gpu], [scheduler], [cluster] gpus = 1,
[[tenants]]) and trusts its input: validation is apslab's job, not the baseline's.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import sys
import tomllib

import numpy as np
import simpy


def main(scenario_path: str, trace_path: str, summary_path: str, requests_path: str) -> None:
    with open(scenario_path, "rb") as handle:
        config = tomllib.load(handle)
    gpu = config.get("gpu", {})
    sched = config.get("scheduler", {})
    if config.get("cluster", {}).get("gpus", 1) != 1:
        raise SystemExit("the SimPy baseline models one GPU")
    prefill = float(gpu.get("prefill_tokens_per_s", 1024.0))
    decode = float(gpu.get("decode_tokens_per_s", 128.0))
    speed_a, speed_b = (float(x) for x in gpu.get("batch_speedup", [0.4, 0.6]))
    kv_capacity = math.floor(float(gpu.get("kv_cache_gib", 32.0)) * 2**30
                             / int(gpu.get("kv_bytes_per_token", 524288)))
    price = float(gpu.get("price_per_hour", 3.0))
    window = float(sched.get("batch_window_ms", 10.0)) / 1000
    max_batch = int(sched.get("max_batch_size", 16))
    aging = float(sched.get("aging_per_s", 0.0))
    max_queue = sched.get("max_queue_length")
    tenants = {t["id"]: (float(t["rate_limit"]), float(t["burst_cap"])) for t in config["tenants"]}
    bucket_tokens = {tid: cap for tid, (_rate, cap) in tenants.items()}
    bucket_time = dict.fromkeys(tenants, -math.inf)

    # (arrival_s, request_id, tenant_id, prompt_tokens, output_tokens, priority_bid)
    with open(trace_path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        ia, it, ip, io, ib = (header.index(c) for c in (
            "arrival_s", "tenant_id", "prompt_tokens", "output_tokens", "priority_bid"))
        rows = [(float(r[ia]), rid, r[it], int(r[ip]), int(r[io]), float(r[ib]))
                for rid, r in enumerate(reader)]
    n = len(rows)
    arrival_of = [0.0] * n
    tenant_of = [""] * n
    for row in rows:
        arrival_of[row[1]] = row[0]
        tenant_of[row[1]] = row[2]
    rows.sort()

    reason = [""] * n
    start = [None] * n
    finish = [None] * n
    batch_of = [None] * n
    batches: list[tuple[int, float, float, int]] = []  # (size, start, service, kv_tokens)
    queue: list[tuple] = []
    env = simpy.Environment(initial_time=0.0)
    state = {"idle": True, "wake": env.event()}

    def arrivals():
        for arrival, rid, tenant, prompt, output, bid in rows:
            if arrival > env.now:
                yield env.timeout(arrival - env.now)
            cost = prompt + output
            limits = tenants.get(tenant)
            if limits is None:
                reason[rid] = "unknown_tenant"
                continue
            if cost > kv_capacity:
                reason[rid] = "exceeds_kv_capacity"
                continue
            rate, cap = limits
            if cost > cap:
                reason[rid] = "exceeds_burst"
                continue
            if max_queue is not None and len(queue) >= max_queue:
                reason[rid] = "queue_full"
                continue
            available = min(cap, bucket_tokens[tenant] + (arrival - bucket_time[tenant]) * rate)
            bucket_time[tenant] = arrival
            if available < cost:
                bucket_tokens[tenant] = available
                reason[rid] = "rate_limited"
                continue
            bucket_tokens[tenant] = available - cost
            heapq.heappush(queue, (-(bid - aging * arrival), arrival, rid, prompt, output))
            if state["idle"] and not state["wake"].triggered:
                state["wake"].succeed()

    def worker():
        while True:
            if state["idle"]:
                # Idle until an admission wakes us; then the batch forms one window later.
                yield state["wake"]
                state["idle"] = False
                state["wake"] = env.event()
                yield env.timeout(window)
                yield env.timeout(0)  # arrivals at the formation instant come first
            now = env.now
            members, kv_used, prompt_sum, output_sum = [], 0, 0, 0
            while queue and len(members) < max_batch:
                head = queue[0]
                if kv_used + head[3] + head[4] > kv_capacity:
                    break
                heapq.heappop(queue)
                members.append(head[2])
                kv_used += head[3] + head[4]
                prompt_sum += head[3]
                output_sum += head[4]
            size = len(members)
            service = prompt_sum / prefill + output_sum / (
                decode * (speed_a + speed_b * math.sqrt(size)))
            done = now + service
            batch_id = len(batches)
            batches.append((size, now, service, kv_used))
            for rid in members:
                start[rid] = now
                finish[rid] = done
                batch_of[rid] = batch_id
            yield env.timeout(service)
            yield env.timeout(0)  # arrivals at the finish instant come first
            state["idle"] = not queue

    env.process(arrivals())
    env.process(worker())
    env.run()

    with open(requests_path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("request_id", "tenant_id", "arrival_s", "status", "reason", "start_s",
                         "finish_s", "batch_id", "batch_size", "gpu"))
        for rid in range(n):
            if reason[rid]:
                writer.writerow((rid, tenant_of[rid], arrival_of[rid], "rejected", reason[rid],
                                 "", "", "", "", ""))
            else:
                b = batch_of[rid]
                writer.writerow((rid, tenant_of[rid], arrival_of[rid], "completed", "", start[rid],
                                 finish[rid], b, batches[b][0], 0))

    write_summary(summary_path, config, tenants, rows, reason, start, finish, batches,
                  kv_capacity, price)


def write_summary(path, config, tenants, rows, reason, start, finish, batches, kv_capacity, price):
    first_arrival = rows[0][0]
    completed = [r for r in rows if not reason[r[1]]]
    last_finish = max((finish[r[1]] for r in completed), default=None)
    elapsed = last_finish - first_arrival if last_finish is not None else 0.0
    output_done = sum(r[4] for r in completed)
    throughput = output_done / elapsed if elapsed > 0 else None
    busy = float(np.sum([b[2] for b in batches])) if batches else 0.0
    waits = np.array([start[r[1]] - r[0] for r in sorted(completed, key=lambda r: r[1])])
    latencies = np.array([finish[r[1]] - r[0] for r in sorted(completed, key=lambda r: r[1])])

    def stats(values):
        if not len(values):
            return dict.fromkeys(("mean", "p50", "p95", "p99", "max"))
        p = np.percentile(values, [50, 95, 99])
        return {"mean": float(values.mean()), "p50": float(p[0]), "p95": float(p[1]),
                "p99": float(p[2]), "max": float(values.max())}

    by_tenant = {tid: [] for tid in tenants}
    for r in rows:
        if r[2] in by_tenant:
            by_tenant[r[2]].append(r)
    per_tenant = {}
    for tid, mine in by_tenant.items():
        done = sorted((r for r in mine if not reason[r[1]]), key=lambda r: r[1])
        per_tenant[tid] = {
            "submitted": len(mine), "completed": len(done), "rejected": len(mine) - len(done),
            "tokens_completed": sum(r[3] + r[4] for r in done),
            "queue_wait_p99_s": float(np.percentile([start[r[1]] - r[0] for r in done], 99))
            if done else None,
        }
    x = [t["tokens_completed"] for t in per_tenant.values() if t["submitted"]]
    jain = (sum(x) ** 2 / (len(x) * sum(v * v for v in x))) if x and any(x) else None
    counts = {k: 0 for k in ("rate_limited", "exceeds_burst", "exceeds_kv_capacity",
                             "unknown_tenant")}
    if config.get("scheduler", {}).get("max_queue_length") is not None:
        counts["queue_full"] = 0
    for r in reason:
        if r:
            counts[r] += 1
    summary = {
        "requests": {"submitted": len(rows), "completed": len(completed),
                     "rejected": len(rows) - len(completed), "rejected_by_reason": counts},
        "elapsed_s": elapsed,
        "throughput_tokens_per_s": throughput,
        "gpu_utilization": busy / elapsed if elapsed > 0 else None,
        "cost_per_million_tokens": price / 3600 / throughput * 1e6 if throughput else None,
        "jain_fairness": jain,
        "queue_wait_s": stats(waits),
        "latency_s": stats(latencies),
        "batches": {
            "count": len(batches),
            "mean_size": float(np.mean([b[0] for b in batches])) if batches else None,
            "kv_utilization_mean": float(np.mean([b[3] / kv_capacity for b in batches]))
            if batches else None,
        },
        "tenants": per_tenant,
    }
    with open(path, "w") as handle:
        json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
