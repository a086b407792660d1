"""The OpenAI-compatible API: ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models``.

Clients that speak OpenAI's API (the ``openai`` Python client, ``vllm bench serve``, AIPerf,
locust scripts) send their usual bodies; the model behind them is apslab's scheduler and GPU
model, so the text is filler and only the token counts and their timing are real:

* **Prompt length** comes from a stand-in tokenizer: ``ceil(characters / 4)`` tokens of a text
  (at least 1 for a whole prompt); a list of token ids counts its ids. A chat prompt is
  ``3 + sum over messages of (4 + ceil(characters of its text / 4))`` (a fixed overhead per
  message and for the reply's priming, as OpenAI's own counting recipe has). The extension field
  ``prompt_tokens`` (an integer >= 1) overrides the count.
* **Output length** is ``max_tokens`` (chat: ``max_completion_tokens`` or ``max_tokens``); the
  model never stops early (``finish_reason`` is always ``"length"``). Without it, a request
  draws its length from its tenant's ``[[workload.tenants]] output_tokens`` distribution in the
  scenario (seeded by the workload's seed, in arrival order per tenant), or 16 tokens (OpenAI's
  default for completions) when the scenario has none for the tenant.
* **Text**: token i is ``FILLER[i % 9]``, the words of "the quick brown fox jumps over the
  lazy dog." with a leading space each.
* **The bid**: the tenant's ``priority_bid``; the extension field ``priority_bid`` may lower
  it, never raise it above the tenant's ``max_bid`` (a higher one is capped, not refused); the
  ``x-apslab-bid`` response header says what the request carried.
* **Streaming** (``"stream": true``): one server-sent event per generated token, sent when the
  model's iteration that produced it ends (at the wall instant, ``time_scale`` as always), then
  a usage chunk if ``stream_options.include_usage``, then ``data: [DONE]``. The static engine
  streams too, every token at its batch's finish (its first token comes with its last).
* Every answer carries an ``apslab`` object (non-streaming: in the body; streaming: in the chunk
  with ``finish_reason``): the engine's own model times of the request (``ttft_ms``, ``tpot_ms``,
  ``queue_wait_ms``, ``latency_ms``, ``preemptions``, ...), to set beside what a client measured.

A client that disconnects mid-stream does not cancel its request: it keeps its place in the
model (as in the simulator, which knows nothing of disconnects) and its tokens are dropped;
``/metrics`` counts such disconnects. Other OpenAI sampling parameters (temperature, top_p,
stop, seed, ...) and vLLM's extensions (ignore_eos, min_tokens, ...) are accepted and ignored;
an argument that is neither is a 400 naming it, as OpenAI does. ``n``, ``best_of`` above 1,
``echo`` and log-probabilities are not supported (400).
"""

from __future__ import annotations

import difflib
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from ..io.scenario import Scenario
from ..io.trace import MAX_TOKENS
from ..io.workload import draw_tokens
from .common import (
    INTERNAL_ERROR,
    SHUTTING_DOWN,
    UNAUTHENTICATED_LABEL,
    Rejection,
    effective_bid,
    retry_after_seconds,
    short,
)
from .keys import KeyStore

FILLER = (" the", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog.")
CHARS_PER_TOKEN = 4
CHAT_MESSAGE_OVERHEAD = 4
CHAT_REPLY_PRIMING = 3
DEFAULT_MAX_TOKENS = 16

# Arguments OpenAI's endpoints (and vLLM's common extensions) define: accepted, ignored unless
# used below. Anything else is refused with a "did you mean".
_SHARED_ARGUMENTS = {
    "model", "max_tokens", "stream", "stream_options", "n", "frequency_penalty", "logit_bias",
    "logprobs", "presence_penalty", "seed", "stop", "temperature", "top_p", "user",
    "service_tier", "metadata", "store",
    # vLLM's extensions, which benchmark clients send
    "ignore_eos", "min_tokens", "top_k", "min_p", "repetition_penalty", "length_penalty",
    "stop_token_ids", "include_stop_str_in_output", "skip_special_tokens",
    "spaces_between_special_tokens", "truncate_prompt_tokens", "use_beam_search",
    # apslab's extensions
    "priority_bid", "prompt_tokens",
}
COMPLETION_ARGUMENTS = _SHARED_ARGUMENTS | {"prompt", "best_of", "echo", "suffix"}
CHAT_ARGUMENTS = _SHARED_ARGUMENTS | {
    "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "functions", "function_call", "modalities",
    "audio", "prediction", "reasoning_effort", "web_search_options", "prompt_cache_key",
    "safety_identifier", "verbosity"}

TokenCount = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS)]


# --------------------------------------------------------------------------------------------
# Request bodies


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool | None = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr
    max_tokens: TokenCount | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = None
    priority_bid: StrictFloat | None = Field(None, ge=0, allow_inf_nan=False)
    prompt_tokens: TokenCount | None = None


class CompletionRequest(_Common):
    """``POST /v1/completions``."""

    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    best_of: StrictInt | None = None
    echo: StrictBool | None = None
    logprobs: StrictInt | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: StrictStr
    content: StrictStr | list[ContentPart] | None = None


class ChatRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: TokenCount | None = None
    logprobs: StrictBool | None = None


# --------------------------------------------------------------------------------------------
# The stand-in tokenizer and the filler text


def text_tokens(text: str) -> int:
    """The stand-in tokenizer: ``ceil(len(text) / 4)`` (characters, not bytes; 0 for "")."""
    return -(-len(text) // CHARS_PER_TOKEN)


def completion_prompt_tokens(prompt: str | list) -> int:
    """Tokens of a completions ``prompt`` (one prompt: a string, or a list of token ids)."""
    if isinstance(prompt, str):
        return max(1, text_tokens(prompt))
    return len(prompt)


def chat_prompt_tokens(messages: list[ChatMessage]) -> int:
    """``3 + sum(4 + ceil(characters / 4))`` over the messages' text."""
    total = CHAT_REPLY_PRIMING
    for message in messages:
        content = message.content
        if isinstance(content, list):
            content = "".join(part.text or "" for part in content)
        total += CHAT_MESSAGE_OVERHEAD + text_tokens(content or "")
    return total


def filler(first: int, count: int) -> str:
    """The text of output tokens ``first`` to ``first + count - 1``."""
    return "".join(FILLER[i % len(FILLER)] for i in range(first, first + count))


class OutputLengths:
    """Output lengths for requests without ``max_tokens``: each tenant's workload distribution,
    drawn in order from a stream seeded by the workload's seed (16 when there is none)."""

    def __init__(self, scenario: Scenario) -> None:
        self.dists: dict[str, Any] = {}
        self.rngs: dict[str, np.random.Generator] = {}
        workload = scenario.workload
        if workload is not None:
            streams = np.random.SeedSequence(workload.seed).spawn(len(workload.tenants))
            for tenant, stream in zip(workload.tenants, streams, strict=True):
                self.dists[tenant.tenant_id] = tenant.output_tokens
                self.rngs[tenant.tenant_id] = np.random.default_rng(stream)

    def draw(self, tenant_id: str) -> int:
        dist = self.dists.get(tenant_id)
        if dist is None:
            return DEFAULT_MAX_TOKENS
        return max(1, int(draw_tokens(dist, 1, self.rngs[tenant_id])[0]))


def served_model_name(scenario: Scenario) -> str:
    """The model id /v1/models lists: the scenario's [model] name (Llama-2-7B by default)."""
    model = getattr(scenario.gpu, "model", None)
    return getattr(model, "name", "Llama-2-7B")


# --------------------------------------------------------------------------------------------
# Authentication


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Authenticator:
    """Who is calling: the tenant of a bearer key (keys configured), or the tenant the bearer
    token names (no keys: the labs' unauthenticated default)."""

    def __init__(self, keys: KeyStore | None, scenario: Scenario) -> None:
        self.keys = keys
        self.tenant_ids = [t.id for t in scenario.tenants]
        self._known = frozenset(self.tenant_ids)  # checked on every request without keys
        if keys is not None:
            keys.check_tenants(self.tenant_ids)

    @property
    def required(self) -> bool:
        return self.keys is not None

    def describe(self) -> str:
        if self.keys is None:
            return ("no API keys configured: running UNAUTHENTICATED (the bearer token names "
                    "the tenant; --keys FILE or $APSLAB_API_KEYS to require keys)")
        return (f"{len(self.keys)} API key(s) for tenant(s) {', '.join(self.keys.tenants)} "
                f"from {self.keys.source}")

    def tenant(self, authorization: str | None) -> tuple[str | None, str | None]:
        """(tenant, None), or (None, why not) for a 401."""
        token = bearer_token(authorization)
        if token is None:
            if self.keys is None:
                return None, ("You didn't provide an API key. This service runs without keys: "
                              "send the tenant id as the bearer token (Authorization: Bearer "
                              f"{self.tenant_ids[0]}).")
            return None, ("You didn't provide an API key. You need to provide your API key in "
                          "an Authorization header using Bearer auth (Authorization: Bearer "
                          "YOUR_KEY).")
        if self.keys is not None:
            tenant = self.keys.tenant_for(token)
            if tenant is None:
                return None, f"Incorrect API key provided: {_redact(token)}."
            return tenant, None
        if token not in self._known:
            close = difflib.get_close_matches(token, self.tenant_ids, n=1)
            return None, (f"Unknown tenant {short(token)} in the bearer token (this service "
                          f"runs without keys, so the token names the tenant; tenants: "
                          f"{', '.join(self.tenant_ids[:10])})"
                          + (f"; did you mean {close[0]!r}?" if close else ""))
        return token, None


def _redact(token: str) -> str:
    return token[:7] + "*" * 6 + token[-4:] if len(token) > 14 else "*" * 6


# --------------------------------------------------------------------------------------------
# Errors in OpenAI's shape

#: How each rejection reason is answered on /v1: status, OpenAI error type, code.
V1_ERRORS: dict[str, tuple[int, str, str]] = {
    "unknown_tenant": (401, "invalid_request_error", "invalid_api_key"),
    "exceeds_kv_capacity": (400, "invalid_request_error", "context_length_exceeded"),
    "exceeds_burst": (400, "invalid_request_error", "request_too_large"),
    "rate_limited": (429, "tokens", "rate_limit_exceeded"),
    "queue_full": (503, "server_error", "engine_overloaded"),
    SHUTTING_DOWN: (503, "server_error", "shutting_down"),
    INTERNAL_ERROR: (500, "server_error", "internal_error"),
}


def openai_error(status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """``{"error": {"message", "type", "param", "code", ...}}`` with the status."""
    error = {"message": message, "type": type, "param": param, "code": code, **extra}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def rejection_headers(rejection: Rejection) -> dict[str, str]:
    """Retry-After (whole wall seconds, rounded up), retry-after-ms and x-ratelimit-* for a 429;
    a 503 for a full queue suggests a retry in a second."""
    headers: dict[str, str] = {}
    if rejection.retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_seconds(rejection.retry_after_s))
        headers["retry-after-ms"] = str(max(1, math.ceil(rejection.retry_after_s * 1000.0)))
    elif rejection.reason == "queue_full":
        headers["Retry-After"] = "1"
    if rejection.rate_limit is not None:
        headers.update(rejection.rate_limit.headers())
    return headers


def rejection_error(rejection: Rejection) -> JSONResponse:
    status, kind, code = V1_ERRORS[rejection.reason]
    extra = {key: value for key, value in (
        ("reason", rejection.reason), ("request_id", rejection.request_id),
        ("arrival_s", rejection.arrival_s), ("retry_after_s", rejection.retry_after_s))
        if value is not None}
    return openai_error(status, rejection.detail, type=kind, code=code,
                        headers=rejection_headers(rejection), **extra)


def _validation_message(error: dict) -> tuple[str, str | None]:
    loc = [str(part) for part in error.get("loc", ()) if not isinstance(part, int)]
    param = ".".join(loc) or None
    message = str(error.get("msg", "invalid"))
    return (f"{param}: {message}" if param else message), param


# --------------------------------------------------------------------------------------------
# Streams


class _Chunks:
    """The SSE chunks of one response. A token's chunk is one of a few (a filler word each,
    and chat's first, which names the role), so they are encoded once per response."""

    def __init__(self, chat: bool, request_id: int, created: int, model: str) -> None:
        self.chat = chat
        kind = "chat.completion.chunk" if chat else "text_completion"
        ident = f"{'chatcmpl' if chat else 'cmpl'}-apslab-{request_id}"
        self.head = (f'data: {{"id":"{ident}","object":"{kind}","created":{created},'
                     f'"model":{json.dumps(model)},"choices":')
        self.ident, self.kind, self.created, self.model = ident, kind, created, model
        self._tokens = [self._token_chunk(word) for word in FILLER]
        self._first = self._token_chunk(FILLER[0], first=True)

    def _token_chunk(self, word: str, first: bool = False) -> bytes:
        text = json.dumps(word)
        if self.chat:
            role = '"role":"assistant",' if first else ""
            choice = f'{{"index":0,"delta":{{{role}"content":{text}}},"logprobs":null,' \
                     '"finish_reason":null}'
        else:
            choice = f'{{"index":0,"text":{text},"logprobs":null,"finish_reason":null}}'
        return f"{self.head}[{choice}]}}\n\n".encode()

    def token(self, index: int) -> bytes:
        """The chunk of output token ``index``."""
        if index == 0 and self.chat:
            return self._first
        return self._tokens[index % len(FILLER)]

    def event(self, body: dict) -> str:
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    def base(self) -> dict[str, Any]:
        return {"id": self.ident, "object": self.kind, "created": self.created,
                "model": self.model}

    def finish(self, timings: dict[str, Any], last_index: int | None) -> str:
        """The chunk with finish_reason "length" (and the engine's timings)."""
        if self.chat:
            choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
        else:
            text = FILLER[last_index % len(FILLER)] if last_index is not None else ""
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        return self.event({**self.base(), "choices": [choice], "apslab": timings})

    def usage(self, prompt: int, output: int) -> str:
        return self.event({**self.base(), "choices": [], "usage": _usage(prompt, output)})


def _usage(prompt: int, output: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": output,
            "total_tokens": prompt + output}


async def _stream(ticket, chunks: _Chunks, include_usage: bool, on_disconnect
                  ) -> AsyncIterator[bytes]:
    """Each token when the model emits it; the finish, usage and [DONE] chunks at the end."""
    sent, output, completed = 0, ticket.output_tokens, False
    # Completions carry finish_reason on their last token's chunk; chat on an empty one.
    last_in_finish = not chunks.chat
    try:
        while True:
            await ticket.wait_for_tokens(sent)
            emitted = ticket.emitted
            upto = emitted - 1 if last_in_finish and emitted == output else emitted
            if upto > sent:
                yield b"".join(chunks.token(i) for i in range(sent, upto))
                sent = upto
            if ticket.outcome is not None:
                break
        if isinstance(ticket.outcome, Rejection):
            status, kind, code = V1_ERRORS[ticket.outcome.reason]
            yield chunks.event({"error": {"message": ticket.outcome.detail, "type": kind,
                                          "param": None, "code": code}}).encode()
        else:
            tail = [chunks.finish(ticket.timings(), output - 1 if last_in_finish else None)]
            if include_usage:
                tail.append(chunks.usage(ticket.prompt_tokens, output))
            yield "".join(tail).encode()
        yield b"data: [DONE]\n\n"
        completed = True
    finally:
        if not completed:
            on_disconnect(ticket)


# --------------------------------------------------------------------------------------------
# The routes


def add_openai_routes(app: FastAPI, scheduler, auth: Authenticator, model_name: str) -> None:
    """``/v1/completions``, ``/v1/chat/completions``, ``/v1/models`` on ``scheduler`` (either
    engine: :class:`~apslab.serve.continuous.ContinuousLiveScheduler` or the static
    :class:`~apslab.serve.service.LiveScheduler`)."""
    scenario = scheduler.scenario
    lengths = OutputLengths(scenario)
    created_at = int(time.time())

    def model_card() -> dict[str, Any]:
        return {"id": model_name, "object": "model", "created": created_at,
                "owned_by": "apslab"}

    def check_key(request: Request) -> JSONResponse | None:
        if not auth.required:
            return None
        _tenant, problem = auth.tenant(request.headers.get("authorization"))
        return None if problem is None else _unauthorized(problem)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        return check_key(request) or JSONResponse({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> Response:
        refused = check_key(request)
        if refused is not None:
            return refused
        if model_id != model_name:
            return _model_not_found(model_id, model_name)
        return JSONResponse(model_card())

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await answer(request, chat=True)

    def refuse(label: str, response: JSONResponse) -> JSONResponse:
        scheduler.count_response(label, response.status_code)
        return response

    async def answer(request: Request, chat: bool) -> Response:
        tenant, problem = auth.tenant(request.headers.get("authorization"))
        if problem is not None:
            return refuse(UNAUTHENTICATED_LABEL, _unauthorized(problem))
        parsed = await _parse(request, ChatRequest if chat else CompletionRequest,
                              CHAT_ARGUMENTS if chat else COMPLETION_ARGUMENTS)
        if isinstance(parsed, JSONResponse):
            return refuse(tenant, parsed)
        body = parsed
        if body.model != model_name:
            return refuse(tenant, _model_not_found(body.model, model_name))
        if chat:
            output = body.max_completion_tokens or body.max_tokens
            prompt = body.prompt_tokens or chat_prompt_tokens(body.messages)
        else:
            output = body.max_tokens
            prompt = body.prompt_tokens or completion_prompt_tokens(body.prompt)
        if output is None:
            output = lengths.draw(tenant)
        bid = effective_bid(scenario, scheduler.tenant_index[tenant], body.priority_bid)
        outcome = scheduler.submit(tenant, prompt, output, bid)
        if isinstance(outcome, Rejection):
            return refuse(tenant, rejection_error(outcome))
        headers = {"x-apslab-bid": f"{bid:g}", "x-request-id": str(outcome.request_id),
                   **outcome.rate_limit.headers()}
        if body.stream:
            scheduler.count_response(tenant, 200)
            chunks = _Chunks(chat, outcome.request_id, int(time.time()), model_name)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(outcome, chunks, include_usage, scheduler.note_disconnect),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await outcome.wait_until_ended()
        if isinstance(outcome.outcome, Rejection):
            return refuse(tenant, rejection_error(outcome.outcome))
        scheduler.count_response(tenant, 200)
        timings = outcome.timings()
        text = filler(0, output)
        ident = f"{'chatcmpl' if chat else 'cmpl'}-apslab-{timings['request_id']}"
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": "length"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        return JSONResponse({
            "id": ident, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model_name, "choices": [choice],
            "usage": _usage(prompt, output), "apslab": timings}, headers=headers)


async def _parse(request: Request, model: type[BaseModel], allowed: set[str]
                 ) -> BaseModel | JSONResponse:
    """The body as ``model``, or a 400 in OpenAI's shape saying what is wrong."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return openai_error(400, f"the body is not valid JSON: {str(exc)[:200]}",
                            code="invalid_json")
    if not isinstance(data, dict):
        return openai_error(400, f"the body must be a JSON object, got {type(data).__name__}",
                            code="invalid_json")
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            return openai_error(400, f"Unrecognized request argument supplied: {short(key)}"
                                + (f" (did you mean {close[0]!r}?)" if close else ""),
                                param=key[:80], code="unrecognized_argument")
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        message, param = _validation_message(exc.errors(include_input=False)[0])
        return openai_error(400, message, param=param, code="invalid_value")
    except RecursionError:
        return openai_error(400, "the body is nested too deeply", code="invalid_json")
    unsupported = _unsupported(body)
    if unsupported is not None:
        return openai_error(400, unsupported[1], param=unsupported[0], code="unsupported_value")
    return body


def _unsupported(body) -> tuple[str, str] | None:
    """(param, message) for what the model cannot do, or None."""
    if body.n not in (None, 1):
        return "n", "n: only one choice per request is supported (n = 1)"
    if isinstance(body, CompletionRequest):
        if body.best_of not in (None, 1):
            return "best_of", "best_of: only 1 is supported"
        if body.echo:
            return "echo", "echo: not supported (the model has no real text to echo)"
        if body.logprobs is not None:
            return "logprobs", "logprobs: not supported"
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                return "prompt", (f"prompt: one prompt per request is supported, got "
                                  f"{len(prompt)} (send one request each)")
            body.prompt = prompt[0]
        if isinstance(body.prompt, list) and not body.prompt and body.prompt_tokens is None:
            return "prompt", "prompt: an empty list of token ids"
    else:
        if body.logprobs:
            return "logprobs", "logprobs: not supported"
        for message in body.messages:
            if isinstance(message.content, list):
                for part in message.content:
                    if part.type != "text":
                        return "messages", (f"messages: only text content is supported, got "
                                            f"a {short(part.type)} part")
    if body.stream_options is not None and not body.stream:
        return "stream_options", ("stream_options: only allowed when stream is true")
    return None


def _unauthorized(message: str) -> JSONResponse:
    return openai_error(401, message, code="invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"})


def _model_not_found(asked: str, served: str) -> JSONResponse:
    return openai_error(404, f"The model {short(asked)} does not exist; this service serves "
                             f"{served!r} (GET /v1/models).", code="model_not_found",
                        param="model")
