"""The notebooks' conventions, in one place (docs/lab.md, "Writing a notebook").

Tests find what to check from the notebooks themselves, so a new notebook is picked up as soon
as it is in ``notebooks/``:

* a cell whose output is an app (controls that redraw a figure) is tagged ``widget-app`` (and
  ``nbval-ignore-output``); the browser test opens every notebook with such a cell, moves one
  control of each app and screenshots the first one for the README's gallery. Which control:
  the cell's metadata ``{"apslab": {"move": "<label>"}}`` names it by the start of its label;
  by default it is the app's first slider, else its first dropdown, else its first toggle
  buttons. ``{"apslab": {"press": "<button>"}}`` presses a button afterwards (an app that
  redraws only on a button, like 07's).
* exercises are nbgrader cells (:func:`apslab.lab.release.find_exercises`).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import nbformat
from conftest import ROOT

NOTEBOOKS_DIR = ROOT / "notebooks"
IGNORE = "nbval-ignore-output"
WIDGET_APP = "widget-app"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# Widget models a person operates; an output holding one of them is an app, not a progress bar.
CONTROL_MODELS = re.compile(r"(Slider|Dropdown|ToggleButtons?|Button|Checkbox|Text|Select\w*|"
                            r"RadioButtons|Combobox|Play|Picker)Model$")
GALLERY = ROOT / "docs" / "gallery"


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def load(path: Path):
    return nbformat.read(path, as_version=4)


def tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def widget_app_cells(notebook) -> list[int]:
    """Indexes of the cells tagged widget-app, in order."""
    return [i for i, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and WIDGET_APP in tags(cell)]


def widget_notebooks() -> list[str]:
    """File names of the notebooks with at least one widget app."""
    return [p.name for p in notebook_paths() if widget_app_cells(load(p))]


def browser_instructions(cell) -> dict:
    """What the browser test does to a widget-app cell's app: ``move`` and ``press``."""
    return dict(cell.metadata.get("apslab", {}))


def shown_widget_models(notebook, cell) -> set[str]:
    """The model names of every widget a cell's stored output shows, children included."""
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    pending = [output["data"][WIDGET_MIME]["model_id"] for output in cell.get("outputs", [])
               if WIDGET_MIME in output.get("data", {})]
    names, seen = set(), set()
    while pending:
        model_id = pending.pop()
        if model_id in seen or model_id not in state:
            continue
        seen.add(model_id)
        model = state[model_id]
        names.add(model.get("model_name", ""))
        for value in model.get("state", {}).values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item.startswith("IPY_MODEL_"):
                    pending.append(item.removeprefix("IPY_MODEL_"))
    return names


def shows_an_app(notebook, cell) -> bool:
    """Whether a cell's stored output is a widget with a control in it."""
    return any(CONTROL_MODELS.search(name) for name in shown_widget_models(notebook, cell))


def imported_names(notebook) -> dict[str, str]:
    """Names a notebook imports with ``from module import name``: name -> module."""
    names = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines()
                           if not line.lstrip().startswith("%"))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.update({alias.asname or alias.name: node.module for alias in node.names})
    return names


def notebook_checkers() -> dict[str, object]:
    """Every checker a notebook's check cell calls, by ``module.name``."""
    from apslab.lab.release import find_exercises

    found = {}
    for path in notebook_paths():
        imported = imported_names(load(path))
        for exercise in find_exercises(path):
            module = imported[exercise.checker]
            found[f"{module}.{exercise.checker}"] = getattr(importlib.import_module(module),
                                                            exercise.checker)
    return found
