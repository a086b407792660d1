"""Load for the live service: seeded request mixes, a concurrent client, its figures and checks.

    python -m apslab.serve.load http://127.0.0.1:8000 --requests 2000 --concurrency 64 \
        [--api openai [--key TENANT=KEY ...]]

sends a seeded mix from every tenant the service reports at ``/healthz`` and prints what it
measured: requests/s handled, the status of every response, and the latency the service adds
over the model's own: the client's round trip minus the scheduler's arrival-to-finish time
(``latency_ms``, model milliseconds, times the service's time_scale). With ``--api openai`` the
requests go to ``/v1/completions``, streamed, and the client also measures each request's time
to first token and between tokens from the stream, beside the engine's own figures. The
notebooks and the load tests use the same functions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..io.scenario import Scenario

DEFAULT_BIDS = (0.5, 1.0, 2.0, 4.0)


def mixed_load(tenant_ids: Sequence[str], count: int, seed: int = 0, *,
               bids: Sequence[float] = DEFAULT_BIDS, prompt_tokens: tuple[int, int] = (16, 400),
               output_tokens: tuple[int, int] = (8, 200), unknown_fraction: float = 0.0,
               oversized_fraction: float = 0.0, oversized_tokens: int = 10**6
               ) -> list[dict[str, Any]]:
    """``count`` /infer bodies: tenants round-robin, bids and token counts drawn (seeded).

    Token counts are uniform on the inclusive ranges. A fraction of requests can name a tenant
    that does not exist (404) or ask for ``oversized_tokens`` output tokens (422), so a load
    exercises every answer.
    """
    if not tenant_ids:
        raise ValueError("mixed_load needs at least one tenant id")
    rng = np.random.default_rng(seed)
    tenants = [tenant_ids[i % len(tenant_ids)] for i in range(count)]
    bid = rng.choice(np.asarray(bids, dtype=np.float64), size=count)
    prompt = rng.integers(prompt_tokens[0], prompt_tokens[1] + 1, size=count)
    output = rng.integers(output_tokens[0], output_tokens[1] + 1, size=count)
    special = rng.random(count)
    bodies = []
    for i in range(count):
        body = {"tenant_id": tenants[i], "prompt_tokens": int(prompt[i]),
                "output_tokens": int(output[i]), "priority_bid": float(bid[i])}
        if special[i] < unknown_fraction:
            body["tenant_id"] = f"no-such-tenant-{i % 3}"
        elif special[i] < unknown_fraction + oversized_fraction:
            body["output_tokens"] = int(oversized_tokens)
        bodies.append(body)
    return bodies


def burst(tenant_id: str, count: int, priority_bids: Sequence[float], prompt_tokens: int,
          output_tokens: int) -> list[dict[str, Any]]:
    """``count`` identical-size requests from one tenant, cycling through ``priority_bids``."""
    return [{"tenant_id": tenant_id, "prompt_tokens": prompt_tokens,
             "output_tokens": output_tokens,
             "priority_bid": float(priority_bids[i % len(priority_bids)])}
            for i in range(count)]


@dataclass
class LoadResult:
    """What a client saw: one row per request, in the order the bodies were given.

    ``sent_s``/``received_s`` are wall seconds since the load started (client clock);
    ``payloads`` are the JSON bodies of the responses (for /v1: the ``apslab`` timings of a
    completion, the ``error`` object of a refusal); status 0 means no response arrived (the
    error is in the payload). Streamed loads also record, on the client clock, when each
    request's first and last token arrived and how many tokens came (``first_token_s``,
    ``last_token_s``, ``tokens``; NaN/0 otherwise).
    """

    bodies: list[dict[str, Any]]
    status: np.ndarray
    sent_s: np.ndarray
    received_s: np.ndarray
    payloads: list[dict[str, Any]]
    retry_after: list[str | None]
    wall_s: float
    time_scale: float
    concurrency: int
    tenants: list[str] = field(default_factory=list)
    first_token_s: np.ndarray | None = None
    last_token_s: np.ndarray | None = None
    tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.bodies)

    @property
    def ok(self) -> np.ndarray:
        return self.status == 200

    @property
    def requests_per_s(self) -> float:
        """Responses per wall second over the whole load."""
        return len(self) / self.wall_s if self.wall_s > 0 else float("nan")

    def column(self, key: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A numeric field of the response payloads (NaN where a payload lacks it)."""
        rows = np.arange(len(self)) if rows is None else np.flatnonzero(rows) \
            if rows.dtype == bool else rows
        values = [self.payloads[i].get(key) for i in rows.tolist()]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    def status_counts(self) -> dict[int, int]:
        codes, counts = np.unique(self.status, return_counts=True)
        return dict(zip(codes.tolist(), counts.tolist(), strict=True))

    def added_latency_ms(self) -> np.ndarray:
        """Per 200: client round trip minus the scheduler's arrival-to-finish, wall ms."""
        ok = self.ok
        round_trip_ms = (self.received_s[ok] - self.sent_s[ok]) * 1000.0
        return round_trip_ms - self.column("latency_ms", ok) * self.time_scale

    @property
    def streamed(self) -> bool:
        return self.first_token_s is not None

    def client_ttft_ms(self) -> np.ndarray:
        """Per 200: the first token's arrival minus the request's sending, client clock, ms."""
        ok = self.ok
        return (self.first_token_s[ok] - self.sent_s[ok]) * 1000.0

    def engine_ttft_ms(self) -> np.ndarray:
        """Per 200: the engine's own time to first token (model) times time_scale, wall ms."""
        return self.column("ttft_ms", self.ok) * self.time_scale

    def client_itl_ms(self) -> np.ndarray:
        """Per 200 with 2+ tokens: mean time between tokens as the client saw them, ms."""
        many = self.ok & (self.tokens >= 2)
        return ((self.last_token_s[many] - self.first_token_s[many])
                / (self.tokens[many] - 1) * 1000.0)

    def engine_tpot_ms(self) -> np.ndarray:
        """The same requests' engine TPOT (model) times time_scale, wall ms."""
        return self.column("tpot_ms", self.ok & (self.tokens >= 2)) * self.time_scale

    def figures(self) -> dict[str, Any]:
        """The load's headline numbers (milliseconds are wall milliseconds)."""
        ok = self.ok
        round_trip = (self.received_s - self.sent_s) * 1000.0
        added = self.added_latency_ms()
        streamed = {}
        if self.streamed:
            streamed = {
                "client_ttft_ms": _percentiles(self.client_ttft_ms()),
                "ttft_added_ms": _percentiles(self.client_ttft_ms() - self.engine_ttft_ms()),
                "client_itl_ms": _percentiles(self.client_itl_ms()),
                "engine_tpot_ms": _percentiles(self.engine_tpot_ms()),
            }
        return {
            "requests": len(self),
            "concurrency": self.concurrency,
            "time_scale": self.time_scale,
            "wall_s": self.wall_s,
            "requests_per_s": self.requests_per_s,
            "completed_per_s": int(ok.sum()) / self.wall_s if self.wall_s > 0 else None,
            "status_counts": self.status_counts(),
            "completed_round_trip_ms": _percentiles(round_trip[ok]),
            "rejected_round_trip_ms": _percentiles(round_trip[~ok & (self.status > 0)]),
            "added_latency_ms": _percentiles(added),
            **streamed,
        }

    def tenant_table(self) -> dict[str, dict[int, int]]:
        """Per tenant (as sent), the count of each status."""
        table: dict[str, dict[int, int]] = {}
        for body, status in zip(self.bodies, self.status.tolist(), strict=True):
            row = table.setdefault(body["tenant_id"], {})
            row[status] = row.get(status, 0) + 1
        return table


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99)}


def format_figures(result: LoadResult) -> str:
    """The figures as a few lines of text."""
    f = result.figures()
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(f["status_counts"].items()))

    def pair(stats: dict) -> str:
        return f"p50 {_ms(stats['p50'])}, p99 {_ms(stats['p99'])}"

    lines = [
        f"{f['requests']} requests, concurrency {f['concurrency']}, time scale "
        f"{f['time_scale']:g}: {f['wall_s']:.2f} s wall, {f['requests_per_s']:.0f} requests/s "
        f"answered, {f['completed_per_s']:.0f}/s completed",
        f"  statuses                 {statuses}",
        f"  round trip, completed    {pair(f['completed_round_trip_ms'])}",
        f"  round trip, rejected     {pair(f['rejected_round_trip_ms'])}",
        f"  added by the service     {pair(f['added_latency_ms'])}  (completed requests: round "
        "trip - the model's arrival-to-finish x time_scale)",
    ]
    if "client_ttft_ms" in f:
        lines += [
            f"  TTFT, client-measured    {pair(f['client_ttft_ms'])}",
            f"  TTFT, client - engine    {pair(f['ttft_added_ms'])}  (the engine's TTFT x "
            "time_scale)",
            f"  between tokens, client   {pair(f['client_itl_ms'])}  (engine TPOT "
            f"{pair(f['engine_tpot_ms'])})",
        ]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def openai_request(body: dict[str, Any], model: str, stream: bool = True) -> dict[str, Any]:
    """An /infer-style body (tenant, prompt and output tokens, bid) as a /v1/completions
    request: the prompt's length through the ``prompt_tokens`` extension, ``max_tokens``, the
    bid through the ``priority_bid`` extension, streamed with a usage chunk."""
    request = {"model": model, "prompt": "x", "prompt_tokens": body.get("prompt_tokens", 1),
               "max_tokens": body.get("output_tokens", body.get("tokens_requested"))}
    if body.get("priority_bid") is not None:
        request["priority_bid"] = body["priority_bid"]
    if stream:
        request.update(stream=True, stream_options={"include_usage": True})
    return request


class _StreamReader:
    """An OpenAI server-sent-event stream as it arrives: when its first and last tokens came,
    how many, and the payload (the ``apslab`` timings, or the error)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.buffer = b""
        self.first = self.last = np.nan
        self.tokens = 0
        self.payload: dict[str, Any] = {}
        self.done = False

    def feed(self, data: bytes) -> None:
        now = time.perf_counter() - self.t0
        self.buffer += data
        while b"\n\n" in self.buffer:
            event, self.buffer = self.buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data_line = line[5:].strip()
                if data_line == b"[DONE]":
                    self.done = True
                    continue
                self._chunk(json.loads(data_line), now)

    def _chunk(self, chunk: dict[str, Any], now: float) -> None:
        if "error" in chunk:
            self.payload = {**chunk["error"], "stream_error": True}
            return
        for choice in chunk.get("choices") or ():
            text = choice.get("text") if "text" in choice else \
                (choice.get("delta") or {}).get("content")
            if text:
                self.tokens += 1
                if self.tokens == 1:
                    self.first = now
                self.last = now
        if "apslab" in chunk:
            self.payload = dict(chunk["apslab"])


async def run_load(url: str, bodies: Sequence[dict[str, Any]], *, concurrency: int = 64,
                   timeout_s: float = 60.0, client: str = "h11", api: str = "infer",
                   keys: Mapping[str, str] | None = None, model: str | None = None
                   ) -> LoadResult:
    """Send every body from ``concurrency`` workers; record each answer.

    ``api="infer"`` POSTs the bodies to ``/infer``; ``api="openai"`` sends each as a streamed
    ``/v1/completions`` request (:func:`openai_request`) with ``Authorization: Bearer`` the
    tenant's key from ``keys`` (or, for a service without keys, the tenant id itself), and
    times its tokens as they arrive. Each worker holds one keep-alive connection and takes the
    next body as soon as its previous request is answered, so at most ``concurrency`` requests
    are in flight and each round trip is the service's, not time spent queueing in this client.
    ``client="h11"`` speaks HTTP/1.1 through h11 (the protocol library uvicorn uses), a few
    hundred microseconds of client CPU a request, so the load measures the server;
    ``client="httpx"`` uses httpx's AsyncClient (several times the CPU: fine for bursts, not
    for measuring throughput).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if client not in ("h11", "httpx"):
        raise ValueError(f"client must be 'h11' or 'httpx', got {client!r}")
    if api not in ("infer", "openai"):
        raise ValueError(f"api must be 'infer' or 'openai', got {api!r}")
    n = len(bodies)
    status = np.zeros(n, dtype=np.int64)
    sent = np.zeros(n)
    received = np.zeros(n)
    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    tokens = np.zeros(n, dtype=np.int64)
    payloads: list[dict[str, Any]] = [{} for _ in range(n)]
    retry_after: list[str | None] = [None] * n
    health = await _get_json(url, "/healthz", timeout_s)
    streamed = api == "openai"
    path = "/v1/completions" if streamed else "/infer"
    if streamed:
        model = model or health.get("model", "Llama-2-7B")
        encoded = [json.dumps(openai_request(body, model)).encode() for body in bodies]
        keys = keys or {}
        auth = [{"Authorization": f"Bearer {keys.get(body['tenant_id'], body['tenant_id'])}"}
                for body in bodies]
    else:
        encoded = [json.dumps(body).encode() for body in bodies]
        auth = [{}] * n
    next_index = iter(range(n))
    shared_httpx = None
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency,
                              max_keepalive_connections=concurrency)
        shared_httpx = httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s)
    t0 = time.perf_counter()

    async def one(i: int, connection: _H11Client | None) -> None:
        reader = _StreamReader(t0) if streamed else None
        if connection is not None:
            code, headers, body = await asyncio.wait_for(connection.request(
                "POST", path, encoded[i], auth[i], reader), timeout_s)
        else:
            request = shared_httpx.build_request(
                "POST", path, content=encoded[i],
                headers={"content-type": "application/json", **auth[i]})
            response = await shared_httpx.send(request, stream=True)
            try:
                code, headers = response.status_code, response.headers
                if reader is not None and code == 200:
                    async for data in response.aiter_raw():
                        reader.feed(data)
                    body = b""
                else:
                    body = await response.aread()
            finally:
                await response.aclose()
        status[i] = code
        retry_after[i] = headers.get("retry-after")
        if reader is not None and code == 200:
            payloads[i] = reader.payload
            first[i], last[i], tokens[i] = reader.first, reader.last, reader.tokens
        else:
            payload = json.loads(body)
            if streamed and isinstance(payload.get("error"), dict):  # OpenAI's error shape
                payload = {**payload["error"], "detail": payload["error"].get("message")}
            payloads[i] = payload

    async def worker() -> None:
        connection = _H11Client(url) if client == "h11" else None
        try:
            for i in next_index:
                sent[i] = time.perf_counter() - t0
                try:
                    await one(i, connection)
                except Exception as exc:  # noqa: BLE001 - recorded: status 0, no answer
                    status[i] = 0
                    payloads[i] = {"error": repr(exc)}
                    if connection is not None:
                        connection.close()
                received[i] = time.perf_counter() - t0
        finally:
            if connection is not None:
                connection.close()

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, max(n, 1)))))
    finally:
        if shared_httpx is not None:
            await shared_httpx.aclose()
    wall = time.perf_counter() - t0
    result = LoadResult(list(bodies), status, sent, received, payloads, retry_after, wall,
                        float(health["time_scale"]), concurrency, list(health["tenants"]))
    if streamed:
        result.first_token_s, result.last_token_s, result.tokens = first, last, tokens
    return result


async def _get_json(url: str, path: str, timeout_s: float) -> Any:
    connection = _H11Client(url)
    try:
        code, _headers, body = await asyncio.wait_for(connection.request("GET", path), timeout_s)
    finally:
        connection.close()
    if code != 200:
        raise ConnectionError(f"GET {url}{path}: HTTP {code}")
    return json.loads(body)


class _H11Client:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected a URL such as http://127.0.0.1:8000, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.host_header = parts.netloc
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connection = None

    async def _open(self) -> None:
        import h11

        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.connection = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = self.connection = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        return await self.request("POST", path, body)

    async def request(self, method: str, path: str, body: bytes = b"",
                      extra_headers: Mapping[str, str] | None = None,
                      stream: _StreamReader | None = None
                      ) -> tuple[int, dict[str, str], bytes]:
        """One request; a 200's body goes to ``stream`` as it arrives, when one is given."""
        import h11

        if self.connection is None:
            await self._open()
        conn = self.connection
        headers = [("Host", self.host_header), ("Content-Length", str(len(body)))]
        if body:
            headers.append(("Content-Type", "application/json"))
        headers.extend((extra_headers or {}).items())
        self.writer.write(conn.send(h11.Request(method=method, target=path, headers=headers))
                          + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        code, response_headers, chunks = 0, {}, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                code = event.status_code
                response_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                if stream is not None and code == 200:
                    stream.feed(bytes(event.data))
                else:
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection before answering")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:  # the server said Connection: close
            self.close()
        return code, response_headers, b"".join(chunks)


def run_load_blocking(url: str, bodies: Sequence[dict[str, Any]], **options) -> LoadResult:
    """:func:`run_load` from synchronous code, including a Jupyter cell whose event loop is
    already running: the load runs on its own loop in a worker thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="apslab-load") as pool:
        return pool.submit(asyncio.run, run_load(url, bodies, **options)).result()


def combine(results: Sequence[LoadResult]) -> LoadResult:
    """Several loads against one service as one (client times shifted to follow each other)."""
    if not results:
        raise ValueError("combine needs at least one LoadResult")
    offsets = np.cumsum([0.0] + [r.wall_s for r in results[:-1]])
    combined = LoadResult(
        [b for r in results for b in r.bodies],
        np.concatenate([r.status for r in results]),
        np.concatenate([r.sent_s + o for r, o in zip(results, offsets, strict=True)]),
        np.concatenate([r.received_s + o for r, o in zip(results, offsets, strict=True)]),
        [p for r in results for p in r.payloads],
        [a for r in results for a in r.retry_after],
        float(sum(r.wall_s for r in results)), results[0].time_scale,
        max(r.concurrency for r in results), results[0].tenants)
    if all(r.streamed for r in results):
        combined.first_token_s = np.concatenate(
            [r.first_token_s + o for r, o in zip(results, offsets, strict=True)])
        combined.last_token_s = np.concatenate(
            [r.last_token_s + o for r, o in zip(results, offsets, strict=True)])
        combined.tokens = np.concatenate([r.tokens for r in results])
    return combined


# --------------------------------------------------------------------------------------------
# Checks of what the clients saw against the scenario's rules (empty list = all held)


def bucket_violations(result: LoadResult, scenario: Scenario, tolerance: float = 1e-9
                      ) -> list[str]:
    """Token-bucket breaches seen from outside: for every tenant and every stretch of its
    admitted arrivals (service clock), the tokens admitted must be at most
    ``burst_cap + rate_limit * stretch``. Uses the arrival times in the 200 responses."""
    problems = []
    ok = result.ok
    arrival = result.column("arrival_s")
    cost = np.array([b.get("prompt_tokens", 0) + b.get("output_tokens", 0)
                     for b in result.bodies], dtype=np.float64)
    tenant = np.array([b.get("tenant_id") for b in result.bodies], dtype=object)
    for config in scenario.tenants:
        mine = ok & (tenant == config.id)
        if not mine.any():
            continue
        order = np.argsort(arrival[mine], kind="stable")
        t, c = arrival[mine][order], cost[mine][order]
        totals = np.concatenate(([0.0], np.cumsum(c)))
        window = totals[None, 1:] - totals[:-1, None]  # [i, j]: arrivals i..j
        allowed = config.burst_cap + config.rate_limit * (t[None, :] - t[:, None])
        allowed += tolerance * config.burst_cap
        bad = np.triu(window > allowed)
        if bad.any():
            i, j = (int(x[0]) for x in np.nonzero(bad))
            problems.append(f"tenant {config.id!r}: {window[i, j]:g} tokens admitted between "
                            f"{t[i]:.6f} s and {t[j]:.6f} s, more than burst_cap "
                            f"{config.burst_cap:g} + rate_limit {config.rate_limit:g} x "
                            f"{t[j] - t[i]:.6f} s")
    return problems


def batch_violations(result: LoadResult, scenario: Scenario) -> list[str]:
    """Batches that break the rules: a size other than its members seen, over max_batch_size,
    over the KV capacity, members on different GPUs or with different start or finish times.
    Only meaningful when every member of every batch was sent by this load."""
    problems = []
    members: dict[int, list[int]] = {}
    for i in np.flatnonzero(result.ok).tolist():
        members.setdefault(result.payloads[i]["batch_id"], []).append(i)
    capacity = scenario.gpu.kv_capacity_tokens
    largest = scenario.scheduler.max_batch_size
    for batch_id, rows in sorted(members.items()):
        payloads = [result.payloads[i] for i in rows]
        kv = sum(p["prompt_tokens"] + p["output_tokens"] for p in payloads)
        starts = {round(p["arrival_s"] + p["queue_wait_ms"] / 1000, 6) for p in payloads}
        finishes = {round(p["arrival_s"] + p["latency_ms"] / 1000, 6) for p in payloads}
        if {p["batch_size"] for p in payloads} != {len(rows)}:
            problems.append(f"batch {batch_id}: {len(rows)} members answered, sizes "
                            f"{sorted({p['batch_size'] for p in payloads})} reported")
        if len(rows) > largest:
            problems.append(f"batch {batch_id}: {len(rows)} requests > max_batch_size {largest}")
        if kv > capacity:
            problems.append(f"batch {batch_id}: {kv} KV tokens > capacity {capacity}")
        if len({p["gpu"] for p in payloads}) != 1 or len(starts) != 1 or len(finishes) != 1:
            problems.append(f"batch {batch_id}: members disagree on GPU, start or finish")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apslab.serve.load",
                                     description="Send a seeded mixed load to a running "
                                                 "apslab service and print what it measured.")
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api", choices=("infer", "openai"), default="infer",
                        help="POST /infer (default) or streamed /v1/completions")
    parser.add_argument("--key", action="append", default=[], metavar="TENANT=KEY",
                        help="a tenant's API key, for a service run with --keys (repeat per "
                             "tenant); without keys the bearer token is the tenant id")
    args = parser.parse_args(argv)
    keys = dict(item.split("=", 1) for item in args.key if "=" in item)
    try:
        tenants = asyncio.run(_get_json(args.url, "/healthz", 10.0))["tenants"]
        bodies = mixed_load(tenants, args.requests, args.seed)
        result = asyncio.run(run_load(args.url, bodies, concurrency=args.concurrency,
                                      api=args.api, keys=keys))
    except (OSError, ValueError) as exc:
        print(f"apslab.serve.load: error: {args.url}: {exc}", file=sys.stderr)
        return 2
    print(format_figures(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
