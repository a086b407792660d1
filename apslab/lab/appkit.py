"""The lab's small shared toolkit: figures, the widget-app base class and exercise checkers.

The lab's plots and widgets, and the planning and service notebooks' apps, are built from these
few pieces, so a figure renders, a control redraws and a checker reports the same way in every
notebook. This is the one lab module that :mod:`apslab.plan` and :mod:`apslab.serve` import.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ipywidgets as widgets
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f")
ADMITTED_COLOR = "#2ca02c"
REJECTED_COLOR = "#d62728"


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 9.0, height: float = 3.6
               ) -> Figure:
    """A figure with a grid of axes and an Agg canvas (``figure.axes`` lists them)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    figure.subplots(nrows, ncols, squeeze=False)
    return figure


def png_bytes(figure: Figure, dpi: int = 80) -> bytes:
    """The figure rendered as PNG, for an ``ipywidgets.Image``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def color(index: int) -> str:
    return COLORS[index % len(COLORS)]



T = TypeVar("T")

CONTROL_STYLE = {"description_width": "initial"}
CONTROL_LAYOUT = {"width": "340px"}


def slider(cls, description: str, **kwargs) -> widgets.Widget:
    """A slider that reports a new value when released, not on every pixel of a drag."""
    return cls(description=description, continuous_update=False, style=CONTROL_STYLE,
               layout=CONTROL_LAYOUT, **kwargs)


class FigureApp:
    """Controls, one figure, an image of it and a status line, wired by observers.

    Subclasses build ``self.figure`` and implement :meth:`draw`, which reads ``self.values()``,
    runs the model (through :meth:`cached`, so a control that changes nothing a run depends on
    does not re-run it), redraws the figure and returns the status text.
    """

    #: How many traces and runs :meth:`cached` keeps (the least recently used go first).
    CACHE_SIZE = 64

    def __init__(self, controls: dict[str, widgets.Widget], figure) -> None:
        self.controls = controls
        self.figure = figure
        self.artists: dict[str, Any] = {}
        self.updates = 0
        self._suspended = False
        self.image = widgets.Image(format="png", layout={"max_width": "100%"})
        self.status = widgets.HTML()
        for control in controls.values():
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([
            widgets.HBox(list(controls.values()), layout={"flex_flow": "row wrap"}),
            self.image,
            self.status,
        ])
        self.update()

    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, made once per ``key``: the key names everything the value depends on
        (floats rounded by the caller), so moving a slider back and forth re-runs nothing."""
        # In the instance's __dict__, not set in __init__: a subclass may ask before calling it.
        store: dict[Hashable, Any] = self.__dict__.setdefault("_cache", {})
        if key in store:
            store[key] = store.pop(key)  # now the most recently used
        else:
            store[key] = compute()
            while len(store) > self.CACHE_SIZE:
                del store[next(iter(store))]
        return store[key]

    def _on_change(self, change: dict) -> None:
        if not self._suspended:
            self.update()

    def update(self) -> None:
        """Re-run the model for the current control values and redraw."""
        text = self.draw()
        self.status.value = f"<pre style='margin:0'>{text}</pre>"
        self.image.value = png_bytes(self.figure)
        self.updates += 1

    def draw(self) -> str:  # pragma: no cover - every app overrides it
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


@dataclass
class CheckResult:
    """The outcome of checking one exercise."""

    exercise: str
    passed: bool
    checks_run: int
    checks_total: int
    messages: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.passed:
            head = f"{self.exercise}: all {self.checks_total} checks passed."
        else:
            head = (f"{self.exercise}: check {self.checks_run} of {self.checks_total} failed "
                    f"({self.checks_run - 1} passed before it).")
        return "\n".join([head, *("  " + line for line in self.messages)])

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _ipython_display_(self) -> None:
        # Shown as printed text, not as a cell's value: nbgrader reads a grade cell's value as
        # partial credit, and text that is not a number only gets full marks with a warning.
        print(str(self))

    def __bool__(self) -> bool:
        return self.passed


class ExerciseFailed(AssertionError):
    """A checker's verdict on a wrong answer; its message is the feedback (see :func:`checker`).

    ``result`` is the failing :class:`CheckResult`. In a notebook the error shows the feedback
    alone, without a traceback into the checker: the case, both answers and any hint.
    """

    def __init__(self, result: CheckResult) -> None:
        super().__init__(str(result))
        self.result = result

    def _render_traceback_(self) -> list[str]:
        first, *rest = str(self.result).splitlines()
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {first}", *rest]


def checker(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
    """Make an exercise checker (``check(student) -> CheckResult``) fit for grading.

    The decorated checker returns the :class:`CheckResult` when every case passes (a notebook
    prints it) and raises :class:`ExerciseFailed` with the same text when one fails, so an
    autograder (nbgrader) scores the cell by whether it raised. While it runs, warnings and
    anything written to ``sys.stderr`` (by the student's function or the reference) are
    swallowed: nbgrader scores a cell with any stderr output 0, even a correct one.
    """

    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> CheckResult:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            result = check(*args, **kwargs)
        if not result.passed:
            raise ExerciseFailed(result)
        return result

    run.is_exercise_checker = True  # how tests and the release tooling recognise checkers
    return run
