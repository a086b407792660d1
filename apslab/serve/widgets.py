"""Notebook 07's helpers: a timed streamed completion, figures of live traffic, the widget that
sends bursts to a running service, and the Retry-After exercise.

:func:`timed_completion` streams one completion through the ``openai`` client and times its
chunks on the client's clock, beside the engine's own figures. The figures draw what clients saw
(a :class:`~apslab.serve.load.LoadResult`): every request on the service clock, admitted or
turned away by the token bucket, so the rate limiter can be watched at work; the engine's time
to first token by bid class; and the client's TTFT against the engine's. :class:`LiveBurstApp`
sends a burst of streamed ``/v1/completions`` from the tenant and at the bid its controls say
each time its button is pressed, and redraws; moving a control redraws too (tests set
``app.controls[name].value`` and call :meth:`LiveBurstApp.send`).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..core.limiter import TokenBucket
from ..lab.appkit import (
    ADMITTED_COLOR,
    REJECTED_COLOR,
    CheckResult,
    FigureApp,
    checker,
    new_figure,
)
from .common import retry_after_seconds
from .load import LoadResult, burst, combine, run_load_blocking

STATUS_STYLES = (  # status, label, marker, colour, offset from the tenant's row
    (200, "admitted (200)", "|", ADMITTED_COLOR, 0.15),
    (429, "rate-limited (429)", "x", REJECTED_COLOR, -0.15),
    (503, "queue full (503)", "s", "#ff7f0e", -0.15),
)


# --------------------------------------------------------------------------------------------
# One streamed completion, timed


@dataclass
class TimedCompletion:
    """A streamed completion as the client saw it (wall seconds from sending) and the engine's
    own figures for it (``engine``: the ``apslab`` object, model milliseconds)."""

    text: str
    token_times_s: list[float]
    usage: dict[str, int]
    engine: dict[str, Any]
    time_scale: float

    @property
    def client_ttft_ms(self) -> float:
        return self.token_times_s[0] * 1000.0

    @property
    def client_itl_ms(self) -> float:
        """The mean gap between tokens the client received, wall ms."""
        times = self.token_times_s
        return (times[-1] - times[0]) / (len(times) - 1) * 1000.0 if len(times) > 1 \
            else float("nan")

    @property
    def engine_ttft_wall_ms(self) -> float:
        return self.engine["ttft_ms"] * self.time_scale

    @property
    def engine_tpot_wall_ms(self) -> float:
        tpot = self.engine.get("tpot_ms")
        return float("nan") if tpot is None else tpot * self.time_scale

    def report(self) -> str:
        return (f"{len(self.token_times_s)} tokens; time to first token: client "
                f"{self.client_ttft_ms:.1f} ms, engine {self.engine_ttft_wall_ms:.1f} ms "
                f"(+{self.client_ttft_ms - self.engine_ttft_wall_ms:.1f} ms of HTTP and "
                f"client); between tokens: client {self.client_itl_ms:.2f} ms, engine "
                f"{self.engine_tpot_wall_ms:.2f} ms (wall)")


def timed_completion(client, time_scale: float, **request: Any) -> TimedCompletion:
    """Stream ``client.completions.create(**request, stream=True)`` (an ``openai.OpenAI``) and
    time every token from the moment the request was sent."""
    sent = time.perf_counter()
    times, texts, usage, engine = [], [], {}, {}
    stream = client.completions.create(**request, stream=True,
                                       stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            times.append(time.perf_counter() - sent)
            texts.append(chunk.choices[0].text)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(include={"prompt_tokens", "completion_tokens",
                                                    "total_tokens"})
        engine = (chunk.model_extra or {}).get("apslab", engine)
    return TimedCompletion("".join(texts), times, usage, engine, time_scale)


# --------------------------------------------------------------------------------------------
# Figures


def draw_latency_by_bid(ax: Axes, result: LoadResult, key: str = "latency_ms",
                        label: str = "latency, arrival to finish") -> dict[str, Any]:
    """A model time of the completed requests (``key``, ms), one box per priority bid (the bid
    each carried, capped; the one asked for when the answer does not say)."""
    ax.clear()
    ok = result.ok
    asked = np.array([b.get("priority_bid", np.nan) for b in result.bodies], dtype=np.float64)
    carried = result.column("priority_bid")
    bids = np.where(np.isnan(carried), asked, carried)[ok]
    values_s = result.column(key, ok) / 1000.0
    classes = sorted(set(bids[~np.isnan(bids)].tolist()))
    groups = [values_s[bids == b] for b in classes]
    artists: dict[str, Any] = {"bids": classes, "counts": [len(g) for g in groups],
                               "medians_s": [float(np.median(g)) for g in groups]}
    if classes:
        artists["boxes"] = ax.boxplot(groups, tick_labels=[f"{b:g}" for b in classes])
    ax.set_xlabel("priority bid carried")
    ax.set_ylabel(f"{label} (model s)")
    ax.set_title(f"{label.split(',')[0].capitalize()} by bid class ({int(ok.sum())} completed)")
    return artists


def draw_client_vs_engine_ttft(ax: Axes, result: LoadResult) -> dict[str, Any]:
    """Each streamed request's TTFT as the client measured it against the engine's (wall ms):
    on the diagonal the service adds nothing; above it, HTTP, the event loop and the client."""
    ax.clear()
    artists: dict[str, Any] = {"count": 0}
    if result.streamed and result.ok.any():
        engine, client = result.engine_ttft_ms(), result.client_ttft_ms()
        artists.update(count=len(client), added_ms_p50=float(np.median(client - engine)))
        ax.scatter(engine, client, s=14, color=ADMITTED_COLOR, label="a streamed request")
        top = float(max(engine.max(), client.max())) * 1.05
        ax.plot([0, top], [0, top], color="grey", linewidth=1, label="client = engine")
        ax.legend(loc="upper left", fontsize="small")
    ax.set_xlabel("engine TTFT x time_scale (wall ms)")
    ax.set_ylabel("client-measured TTFT (ms)")
    ax.set_title("Time to first token: client vs engine")
    return artists


def draw_limiter_timeline(ax: Axes, result: LoadResult,
                          tenants: Sequence[str] | None = None) -> dict[str, Any]:
    """Every request at its arrival on the service clock, one row per tenant, by outcome."""
    ax.clear()
    tenants = list(tenants or dict.fromkeys(b["tenant_id"] for b in result.bodies))
    row_of = {t: i for i, t in enumerate(tenants)}
    arrival = result.column("arrival_s")
    rows = np.array([row_of.get(b["tenant_id"], -1) for b in result.bodies])
    artists: dict[str, Any] = {"tenants": tenants}
    for code, label, marker, colour, offset in STATUS_STYLES:
        mask = (result.status == code) & ~np.isnan(arrival) & (rows >= 0)
        artists[code] = int(mask.sum())
        if mask.any():
            ax.scatter(arrival[mask], rows[mask] + offset, marker=marker, color=colour,
                       label=label, s=40)
    ax.set_yticks(range(len(tenants)), tenants)
    ax.set_ylim(-0.6, len(tenants) - 0.4)
    ax.set_xlabel("arrival on the service clock (model s)")
    ax.set_title("The token buckets at work")
    if any(artists[style[0]] for style in STATUS_STYLES):
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return artists


def live_traffic_figure(result: LoadResult, tenants: Sequence[str] | None = None) -> Figure:
    """The panels for one load: the limiter's timeline and latency by bid; for a streamed load
    (``api="openai"``) TTFT by bid and the client's TTFT against the engine's instead."""
    if not result.streamed:
        figure = new_figure(1, 2, width=11.0, height=3.6)
        draw_limiter_timeline(figure.axes[0], result, tenants)
        draw_latency_by_bid(figure.axes[1], result)
        return figure
    figure = new_figure(1, 3, width=14.0, height=3.6)
    draw_limiter_timeline(figure.axes[0], result, tenants)
    draw_latency_by_bid(figure.axes[1], result, "ttft_ms", "time to first token")
    draw_client_vs_engine_ttft(figure.axes[2], result)
    return figure


class LiveBurstApp(FigureApp):
    """Send bursts to a running service and watch every answer so far.

    Controls choose the tenant, the number of requests and their bid; "send burst" fires them
    all at once (one connection each) with ``prompt_tokens``/``output_tokens`` apiece, as
    streamed ``/v1/completions`` with the tenant's key from ``keys`` (no keys: the tenant id is
    the bearer token), or to ``/infer`` with ``api="infer"``.
    """

    def __init__(self, url: str, tenants: Sequence[str], prompt_tokens: int = 300,
                 output_tokens: int = 100, keys: Mapping[str, str] | None = None,
                 api: str = "openai") -> None:
        self.url = url
        self.tenants = list(tenants)
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.keys = dict(keys or {})
        self.api = api
        self.results: list[LoadResult] = []
        style = {"description_width": "initial"}
        controls = {
            "tenant": widgets.Dropdown(options=self.tenants, description="tenant", style=style),
            "requests": widgets.IntSlider(value=20, min=1, max=60, description="requests",
                                          continuous_update=False, style=style),
            "priority_bid": widgets.FloatSlider(value=1.0, min=0.0, max=5.0, step=0.5,
                                                description="priority bid",
                                                continuous_update=False, style=style),
        }
        self.send_button = widgets.Button(description="send burst", button_style="primary")
        self.send_button.on_click(lambda _button: self.send())
        panels = 3 if api == "openai" else 2
        super().__init__(controls, new_figure(1, panels, width=4.7 * panels, height=3.6))
        top, *rest = self.widget.children
        self.widget.children = (widgets.HBox([top, self.send_button]), *rest)

    def send(self) -> LoadResult:
        """Send one burst as the controls say, then redraw with every answer so far."""
        v = self.values()
        bodies = burst(v["tenant"], v["requests"], [v["priority_bid"]], self.prompt_tokens,
                       self.output_tokens)
        result = run_load_blocking(self.url, bodies, concurrency=len(bodies), api=self.api,
                                   keys=self.keys)
        self.results.append(result)
        self.update()
        return result

    def draw(self) -> str:
        v = self.values()
        cost = v["requests"] * (self.prompt_tokens + self.output_tokens)
        next_burst = (f"next burst: {v['requests']} requests from {v['tenant']!r} at bid "
                      f"{v['priority_bid']:g} ({cost} tokens)")
        if not self.results:
            for ax in self.figure.axes:
                ax.clear()
            self.artists = {}
            return next_burst + "; nothing sent yet"
        everything = combine(self.results)
        self.artists = {
            "timeline": draw_limiter_timeline(self.figure.axes[0], everything, self.tenants)}
        if everything.streamed:
            self.artists["latency"] = draw_latency_by_bid(
                self.figure.axes[1], everything, "ttft_ms", "time to first token")
            self.artists["ttft"] = draw_client_vs_engine_ttft(self.figure.axes[2], everything)
        else:
            self.artists["latency"] = draw_latency_by_bid(self.figure.axes[1], everything)
        counts = ", ".join(f"{code}: {n}" for code, n in sorted(everything.status_counts()
                                                                .items()))
        return f"{next_burst}; sent so far: {len(everything)} requests ({counts})"


# --------------------------------------------------------------------------------------------
# Exercise: the Retry-After header

# (cost, bucket tokens at its last update, seconds since that update, rate_limit, burst_cap,
#  time_scale): each a request the bucket refuses, or one it never can admit.
RETRY_AFTER_CASES = (
    (500, 0.0, 0.0, 100.0, 1000.0, 1.0),
    (500, 100.0, 2.0, 100.0, 1000.0, 1.0),
    (455, 0.0, 0.5, 100.0, 1000.0, 1.0),
    (500, 0.0, 0.0, 100.0, 1000.0, 0.01),
    (1000, 0.0, 0.0, 1.0, 1000.0, 0.5),
    (1500, 0.0, 0.0, 100.0, 1000.0, 1.0),
)


def reference_retry_after(cost: int, tokens: float, seconds_since_update: float,
                          rate_limit: float, burst_cap: float, time_scale: float) -> int | None:
    """What the service sends: the bucket's own wait for ``cost`` (model seconds), in wall
    seconds, as an HTTP Retry-After; None when the cost is over the burst cap (never: 422)."""
    bucket = TokenBucket(rate_limit, burst_cap)
    bucket.tokens, bucket.last_update_s = tokens, 0.0
    wait_s = bucket.seconds_until_available(cost, seconds_since_update)
    return None if math.isinf(wait_s) else retry_after_seconds(wait_s * time_scale)


_RETRY_AFTER_MISTAKES = (
    ("the tokens refilled since the bucket's last update are left out",
     lambda c, t, s, r, b, k: None if c > b else retry_after_seconds((c - t) / r * k)),
    ("the wait is in model seconds: multiply by time_scale to get the wall seconds a client "
     "waits", lambda c, t, s, r, b, k: reference_retry_after(c, t, s, r, b, 1.0)),
    ("Retry-After must round *up* (math.ceil): rounding down invites a retry that is too early",
     lambda c, t, s, r, b, k: None if c > b else max(1, int(
         (c - min(b, t + s * r)) / r * k))),
)


@checker
def check_retry_after(student: Callable[..., int | None]) -> CheckResult:
    """``student(cost, tokens, seconds_since_update, rate_limit, burst_cap, time_scale)``
    returns the Retry-After header's whole seconds for a refused request (None if the request
    is over the burst cap); compared with :func:`reference_retry_after` case by case.

    Returns the passing CheckResult; raises :class:`~apslab.lab.appkit.ExerciseFailed` (an
    AssertionError) with the feedback on a wrong or unwritten answer (see ``checker``).
    """
    exercise, total = "Retry-After", len(RETRY_AFTER_CASES)
    for number, case in enumerate(RETRY_AFTER_CASES, start=1):
        described = ("cost {}, {} tokens {} s ago, rate_limit {}, burst_cap {}, time_scale {}"
                     .format(*case))
        try:
            got = student(*case)
        except NotImplementedError:
            return CheckResult(exercise, False, number, total, [
                f"{described}: your function raised NotImplementedError - it is not written "
                "yet.", "Replace the `raise NotImplementedError` line with your code and run "
                "the cell again."])
        except Exception as exc:  # the student's bug, reported rather than re-raised
            where = traceback.extract_tb(exc.__traceback__)[-1]
            return CheckResult(exercise, False, number, total, [
                f"{described}: your function raised {type(exc).__name__}: {exc}",
                f"(line {where.lineno}: {where.line})"])
        expected = reference_retry_after(*case)
        if got != expected or type(got) is not type(expected):
            messages = [f"{described}: expected {expected!r}, got {got!r}."]
            for hint, mistake in _RETRY_AFTER_MISTAKES:
                if all(_answers(student, c) == mistake(*c) for c in RETRY_AFTER_CASES):
                    messages.append(f"Hint: {hint}.")
                    break
            return CheckResult(exercise, False, number, total, messages)
    return CheckResult(exercise, True, total, total,
                       ["The same numbers the live service puts in its 429 answers."])


def _answers(student: Callable, case: tuple):
    try:
        return student(*case)
    except Exception:  # noqa: BLE001 - a crash matches no mistake
        return object()
