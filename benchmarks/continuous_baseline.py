"""The continuous-batching baseline: the engine's rules written out plainly, one object per request.

It is two things at once: an independent implementation that tests compare with apslab's
continuous engine request by request (REQUESTS.csv byte for byte), and the speed baseline the
engine is benchmarked against. It was written from the rules alone (repeated in the docstrings
below), not from apslab's engine; from apslab it uses only the input readers.

Usage: python benchmarks/continuous_baseline.py SCENARIO.toml TRACE.csv REQUESTS.csv

Design: a small ``Request`` class with ``__slots__``; one waiting queue shared by every GPU (a
heap for the priority and fcfs policies, a heap per tenant plus a heap of tenants for vtc); a
plain list per GPU for its running list, kept in the policy's order; one arrival pointer, the
GPUs' iteration end times and one batching timer as the event loop. Work per iteration is
proportional to the GPU's running list; each request costs O(log n) in the queue.

Readings of the rules where they could be read two ways (apslab agrees with each):

* The batching timer is disarmed at every instant where rounds run, also when it was armed for
  a later instant and an iteration end came first; the next admission while a GPU idles arms a
  new one.
* At an arrival that coincides with an iteration end the GPU still counts as busy (arrivals
  come first), so such an arrival arms no timer.
* VTC's lift compares with the counters of the tenants waiting at that moment, also in the
  middle of a round (a preempted request going back); counters only grow.

It trusts its input: validation is apslab's job (the readers it uses do it).
"""

from __future__ import annotations

import bisect
import heapq
import math
import sys
from pathlib import Path

# Run as a script from anywhere: the repository root holds the apslab package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apslab.io.scenario import load_scenario  # noqa: E402
from apslab.io.trace import read_trace  # noqa: E402

INF = math.inf
HEADER = ("request_id,tenant_id,arrival_s,status,reason,start_s,first_token_s,finish_s,"
          "preemptions,max_tbt_s,gpu\n")


class Request:
    """One trace row and its progress.

    ``c`` tokens of its context are computed (KV cache filled), ``g`` output tokens have been
    generated; it holds ``held`` KV blocks on the GPU whose running list it is in. ``n`` is what
    the current iteration computes for it. ``order`` is its place in the policy's order.
    """

    __slots__ = ("rid", "tenant", "P", "O", "arrival", "order", "c", "g", "held", "n",
                 "charged", "preemptions", "start", "first_token", "last_token", "max_tbt",
                 "finish", "gpu", "reason")

    def __init__(self, rid: int, tenant: int, prompt: int, output: int, arrival: float) -> None:
        self.rid = rid
        self.tenant = tenant  # index into scenario.tenants, -1 when unknown
        self.P = prompt
        self.O = output
        self.arrival = arrival
        self.order: tuple = ()
        self.c = 0
        self.g = 0
        self.held = 0
        self.n = 0
        self.charged = False  # vtc: its prompt has been charged to its tenant
        self.preemptions = 0
        self.start: float | None = None
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.max_tbt: float | None = None
        self.finish: float | None = None
        self.gpu: int | None = None
        self.reason = ""  # rejection reason; empty when admitted


# ----------------------------------------------------------------------------------------------
# Waiting queues. push() puts a request back at its place; peek() is the next one to try; pop()
# removes that one. Both are shared by every GPU.


class HeapQueue:
    """Priority policy: ``order`` = (-(bid - aging*arrival), arrival, id), higher key first.
    fcfs policy: ``order`` = (arrival, id). A preempted request returns to its place."""

    def __init__(self) -> None:
        self.heap: list[tuple[tuple, Request]] = []

    def __len__(self) -> int:
        return len(self.heap)

    def push(self, req: Request) -> None:
        heapq.heappush(self.heap, (req.order, req))  # orders are unique (they end in the id)

    def peek(self) -> Request:
        return self.heap[0][1]

    def pop(self) -> Request:
        return heapq.heappop(self.heap)[1]


class VtcQueue:
    """Virtual token counters: the tenant with the smallest counter among those with waiting
    requests goes next (ties: scenario order), with its oldest waiting request (arrival, id).

    Each tenant's waiting requests are a heap. The tenants with waiting requests are a heap of
    (counter, tenant index) entries that may be out of date: counters only ever grow, so an
    entry is a lower bound of its tenant's (counter, index). The top entry is exact when its
    counter is the tenant's current one, and then it is the true minimum; an out-of-date top
    is pushed again with the current counter, an entry of a tenant with nothing waiting is
    dropped. One entry per tenant at most.
    """

    def __init__(self, n_tenants: int) -> None:
        self.counter = [0.0] * n_tenants
        self.waiting: list[list[tuple[tuple, Request]]] = [[] for _ in range(n_tenants)]
        self.tenants: list[tuple[float, int]] = []
        self.in_heap = [False] * n_tenants
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _min_tenant(self) -> int | None:
        """The waiting tenant with the smallest (counter, index), or None."""
        heap, counter = self.tenants, self.counter
        while heap:
            value, tenant = heap[0]
            if not self.waiting[tenant]:
                heapq.heappop(heap)
                self.in_heap[tenant] = False
            elif value != counter[tenant]:
                heapq.heapreplace(heap, (counter[tenant], tenant))
            else:
                return tenant
        return None

    def push(self, req: Request) -> None:
        tenant = req.tenant
        if not self.waiting[tenant]:
            # A tenant that gets a waiting request again is lifted to the smallest counter of
            # the other waiting tenants (it has none waiting, so _min_tenant is another one).
            other = self._min_tenant()
            if other is not None:
                self.counter[tenant] = max(self.counter[tenant], self.counter[other])
            if not self.in_heap[tenant]:
                heapq.heappush(self.tenants, (self.counter[tenant], tenant))
                self.in_heap[tenant] = True
        heapq.heappush(self.waiting[tenant], (req.order, req))
        self.size += 1

    def peek(self) -> Request:
        return self.waiting[self._min_tenant()][0][1]

    def pop(self) -> Request:
        self.size -= 1
        return heapq.heappop(self.waiting[self._min_tenant()])[1]


# ----------------------------------------------------------------------------------------------


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def csv_text(text: str) -> str:
    """A field as CSV writes it: quoted when it holds a comma, quote, line break or edge space."""
    if any(ch in text for ch in ',"\r\n') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def simulate(scenario, trace) -> list[Request]:
    """Run the continuous engine's rules; one Request per trace row, in request-id order."""
    sched, gpu_spec, model = scenario.scheduler, scenario.gpu, scenario.gpu.model
    if not sched.continuous:
        raise SystemExit("the continuous baseline needs [scheduler] batching = \"continuous\"")
    policy = sched.policy
    max_seqs, max_tokens, block = (sched.max_num_seqs, sched.max_num_batched_tokens,
                                   sched.block_size)
    window, aging, max_queue = sched.batch_window_s, sched.aging_per_s, sched.max_queue_length
    n_gpus = scenario.cluster.gpus

    # Derived integers of the roofline.
    kv_dim = model.hidden * model.kv_heads // model.heads
    h = model.hidden
    params = (2 * model.vocab * h
              + model.layers * (2 * h * h + 2 * h * kv_dim + 3 * h * model.intermediate + 2 * h)
              + h)
    matmul_params = params - model.vocab * h
    weight_bytes = params * model.bytes_per_param
    kv_bytes = gpu_spec.kv_bytes_per_token
    flops_per_token = 2 * matmul_params
    flops_per_pair = 4 * h * model.layers
    bandwidth = gpu_spec.eta_bandwidth * gpu_spec.hbm_bytes_per_s
    flop_rate = gpu_spec.eta_flops * gpu_spec.peak_flops
    overhead = gpu_spec.overhead_s
    capacity_tokens = math.floor(gpu_spec.kv_cache_gib * 2**30 / kv_bytes)
    total_blocks = capacity_tokens // block

    # Tenants: limits, token buckets, vtc shares.
    tenants = scenario.tenants
    index_of = {t.id: i for i, t in enumerate(tenants)}
    bucket_tokens = [t.burst_cap for t in tenants]
    bucket_time = [-INF] * len(tenants)
    out_charge = [sched.vtc_output_weight / t.share for t in tenants]
    vtc = policy == "vtc"

    # Requests.
    names = trace.tenant_names
    tenant_col = [index_of.get(name, -1) for name in names]
    codes = trace.tenant_codes.tolist()
    arrivals = trace.arrival_s.tolist()
    prompts = trace.prompt_tokens.tolist()
    outputs = trace.output_tokens.tolist()
    bids = trace.priority_bid.tolist()
    reqs = [Request(rid, tenant_col[codes[rid]], prompts[rid], outputs[rid], arrivals[rid])
            for rid in range(len(arrivals))]
    for req, bid in zip(reqs, bids, strict=True):
        if policy == "priority":
            req.order = (-(bid - aging * req.arrival), req.arrival, req.rid)
        else:
            req.order = (req.arrival, req.rid)
    arrival_order = sorted(range(len(reqs)), key=arrivals.__getitem__)  # stable: row order ties

    waiting = VtcQueue(len(tenants)) if vtc else HeapQueue()
    counter = waiting.counter if vtc else None
    running: list[list[Request]] = [[] for _ in range(n_gpus)]
    scheduled: list[list[Request]] = [[] for _ in range(n_gpus)]
    free = [total_blocks] * n_gpus
    busy_until: list[float | None] = [None] * n_gpus  # end of the running iteration, or idle
    timer: float | None = None

    def admit(req: Request) -> bool:
        """The admission checks at arrival, in order; True when the request joins the queue."""
        t = req.tenant
        cost = req.P + req.O
        if t < 0:
            req.reason = "unknown_tenant"
        elif ceil_div(cost, block) > total_blocks:
            req.reason = "exceeds_kv_capacity"
        elif cost > tenants[t].burst_cap:
            req.reason = "exceeds_burst"
        elif max_queue is not None and len(waiting) >= max_queue:
            req.reason = "queue_full"
        else:
            now = req.arrival
            refilled = bucket_tokens[t] + (now - bucket_time[t]) * tenants[t].rate_limit
            available = min(tenants[t].burst_cap, refilled)
            bucket_time[t] = now
            if available >= cost:
                bucket_tokens[t] = available - cost
                return True
            bucket_tokens[t] = available
            req.reason = "rate_limited"
        return False

    def preempt(victim: Request, g: int) -> None:
        """Free all its blocks and send it back to the waiting queue; it recomputes later."""
        free[g] += victim.held
        victim.held = 0
        victim.c = 0
        victim.preemptions += 1
        waiting.push(victim)

    def join(req: Request, g: int) -> None:
        """Put a request taken from the waiting queue into GPU g's running list."""
        run = running[g]
        if policy == "priority":
            bisect.insort(run, req, key=_order_of)
        else:
            run.append(req)
        if vtc and not req.charged:
            req.charged = True
            counter[req.tenant] += sched.vtc_input_weight * req.P / tenants[req.tenant].share

    def run_round(g: int, t: float) -> None:
        """One scheduling round of GPU g at time t: running pass, waiting pass, iteration."""
        run = running[g]
        batch = scheduled[g]
        batch.clear()
        budget = max_tokens
        preempted = False
        # 1. Running pass, in running-list order.
        i = 0
        while i < len(run) and budget > 0:
            req = run[i]
            n = min(req.P + req.g - req.c, budget)
            need = ceil_div(req.c + n, block) - req.held
            victim = None
            while need > free[g]:
                victim = run.pop()  # the last one; not scheduled yet in this round
                preempt(victim, g)
                preempted = True
                if victim is req:
                    break
            if victim is req:
                break  # the request being scheduled was preempted itself: the pass ends
            free[g] -= need
            req.held += need
            req.n = n
            budget -= n
            batch.append(req)
            i += 1
        # 2. Waiting pass, only when nothing was preempted; stops at the first that does not fit.
        if not preempted:
            while len(waiting) and len(run) < max_seqs and budget > 0:
                req = waiting.peek()
                n = min(req.P + req.g, budget)
                need = ceil_div(n, block)
                if need > free[g]:
                    break
                waiting.pop()
                join(req, g)
                free[g] -= need
                req.held = need
                req.n = n
                budget -= n
                batch.append(req)
        # 3. The iteration, or idle.
        if not batch:
            busy_until[g] = None
            return
        context = 0
        tokens = 0
        pairs = 0
        for req in batch:
            c, n = req.c, req.n
            context += c + n
            tokens += n
            pairs += n * c + n * (n + 1) // 2
            if req.start is None:
                req.start = t
        moved = weight_bytes + kv_bytes * context
        flops = flops_per_token * tokens + flops_per_pair * pairs
        busy_until[g] = t + (overhead + max(moved / bandwidth, flops / flop_rate))

    def end_iteration(g: int, t_end: float) -> None:
        """Every scheduled request advances; a request that reaches P + g emits a token."""
        finished = False
        for req in scheduled[g]:
            req.c += req.n
            if req.c == req.P + req.g:
                req.g += 1
                if req.g == 1:
                    req.first_token = t_end
                else:
                    gap = t_end - req.last_token
                    if req.max_tbt is None or gap > req.max_tbt:
                        req.max_tbt = gap
                req.last_token = t_end
                if vtc:
                    counter[req.tenant] += out_charge[req.tenant]
                if req.g == req.O:
                    req.finish = t_end
                    req.gpu = g
                    free[g] += req.held
                    req.held = 0
                    finished = True
        if finished:
            running[g][:] = [req for req in running[g] if req.finish is None]
        scheduled[g].clear()

    # The event loop: arrivals first at equal times, then iteration ends and the timer.
    next_arrival = 0
    n_requests = len(arrival_order)
    while True:
        instant = INF if timer is None else timer
        for end in busy_until:
            if end is not None and end < instant:
                instant = end
        if next_arrival < n_requests:
            req = reqs[arrival_order[next_arrival]]
            if req.arrival <= instant:
                next_arrival += 1
                if admit(req):
                    waiting.push(req)
                    if timer is None and None in busy_until:
                        timer = req.arrival + window
                continue
        if instant == INF:
            break
        ended = [end == instant for end in busy_until]
        for g in range(n_gpus):
            if ended[g]:
                end_iteration(g, instant)
        for g in range(n_gpus):
            if ended[g] or busy_until[g] is None:
                run_round(g, instant)
        timer = None  # at every such instant, also when the timer was armed for later
    return reqs


def _order_of(req: Request) -> tuple:
    return req.order


def requests_csv(reqs: list[Request], tenant_names: list[str], codes: list[int]) -> str:
    """REQUESTS.csv's text: one row per request in id order, floats as repr()."""
    names = [csv_text(name) for name in tenant_names]
    lines = [HEADER]
    for req in reqs:
        head = f"{req.rid},{names[codes[req.rid]]},{req.arrival!r},"
        if req.reason:
            lines.append(f"{head}rejected,{req.reason},,,,,,\n")
        else:
            tbt = "" if req.max_tbt is None else repr(req.max_tbt)
            lines.append(f"{head}completed,,{req.start!r},{req.first_token!r},{req.finish!r},"
                         f"{req.preemptions},{tbt},{req.gpu}\n")
    return "".join(lines)


def run(scenario_path, trace_path, requests_path) -> None:
    """Read SCENARIO.toml and TRACE.csv, simulate, write REQUESTS.csv."""
    scenario = load_scenario(scenario_path)
    trace = read_trace(trace_path)
    reqs = simulate(scenario, trace)
    text = requests_csv(reqs, trace.tenant_names, trace.tenant_codes.tolist())
    with open(requests_path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    run(*sys.argv[1:])
