"""Figures of live traffic, the widget that sends bursts to a running service, and the
Retry-After exercise (notebook 07).

The figures draw what clients saw (a :class:`~apslab.serve.load.LoadResult`): latency by bid
class, and every request on the service clock, admitted or turned away by the token bucket, so
the rate limiter can be watched at work. :class:`LiveBurstApp` sends a burst from the tenant and
at the bid its controls say each time its button is pressed, and redraws; moving a control
redraws too (tests set ``app.controls[name].value`` and call :meth:`LiveBurstApp.send`).
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Sequence
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
from .load import LoadResult, burst, combine, run_load_blocking
from .service import retry_after_seconds

STATUS_STYLES = (  # status, label, marker, colour, offset from the tenant's row
    (200, "admitted (200)", "|", ADMITTED_COLOR, 0.15),
    (429, "rate-limited (429)", "x", REJECTED_COLOR, -0.15),
    (503, "queue full (503)", "s", "#ff7f0e", -0.15),
)


def draw_latency_by_bid(ax: Axes, result: LoadResult) -> dict[str, Any]:
    """Model latency of the completed requests, one box per priority bid."""
    ax.clear()
    ok = result.ok
    bids = np.array([b.get("priority_bid", np.nan) for b in result.bodies],
                    dtype=np.float64)[ok]
    latency_s = result.column("latency_ms", ok) / 1000.0
    classes = sorted(set(bids[~np.isnan(bids)].tolist()))
    groups = [latency_s[bids == b] for b in classes]
    artists: dict[str, Any] = {"bids": classes, "counts": [len(g) for g in groups],
                               "medians_s": [float(np.median(g)) for g in groups]}
    if classes:
        artists["boxes"] = ax.boxplot(groups, tick_labels=[f"{b:g}" for b in classes])
    ax.set_xlabel("priority bid")
    ax.set_ylabel("latency, arrival to finish (model s)")
    ax.set_title(f"Latency by bid class ({int(ok.sum())} completed)")
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
    """Both panels for one load: the limiter's timeline and latency by bid."""
    figure = new_figure(1, 2, width=11.0, height=3.6)
    draw_limiter_timeline(figure.axes[0], result, tenants)
    draw_latency_by_bid(figure.axes[1], result)
    return figure


class LiveBurstApp(FigureApp):
    """Send bursts to a running service and watch every answer so far.

    Controls choose the tenant, the number of requests and their bid; "send burst" fires them
    all at once (one connection each) with ``prompt_tokens``/``output_tokens`` apiece.
    """

    def __init__(self, url: str, tenants: Sequence[str], prompt_tokens: int = 300,
                 output_tokens: int = 100) -> None:
        self.url = url
        self.tenants = list(tenants)
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
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
        super().__init__(controls, new_figure(1, 2, width=11.0, height=3.6))
        top, *rest = self.widget.children
        self.widget.children = (widgets.HBox([top, self.send_button]), *rest)

    def send(self) -> LoadResult:
        """Send one burst as the controls say, then redraw with every answer so far."""
        v = self.values()
        bodies = burst(v["tenant"], v["requests"], [v["priority_bid"]], self.prompt_tokens,
                       self.output_tokens)
        result = run_load_blocking(self.url, bodies, concurrency=len(bodies), client="httpx")
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
            "timeline": draw_limiter_timeline(self.figure.axes[0], everything, self.tenants),
            "latency": draw_latency_by_bid(self.figure.axes[1], everything),
        }
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
    is over the burst cap); compared with :func:`reference_retry_after` case by case."""
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
