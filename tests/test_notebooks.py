"""The lab notebooks' shape: goals, a widget, checked results, an exercise, nbval-ready outputs.

nbval (``make test``) re-runs the notebooks and compares their outputs; these tests check what
nbval cannot: that each notebook teaches in the agreed shape, that widget cells are tagged so
their kernel-drawn output is not compared (and so the browser test finds them), that exercises
are nbgrader cells the release can turn into a students' copy, that no compared cell hides output
behind a trailing ';' (nbval runs with store_history off, where ';' does not suppress anything),
and that the stored outputs are complete and error-free.

Every notebook in notebooks/ is checked; which ones have exercises or widget apps is read from
their cells (tests/notebook_conventions.py), so a new notebook is covered as soon as it is added.
"""

from __future__ import annotations

import importlib
import re

import nbformat
import pytest
from conftest import ROOT, doc_text
from notebook_conventions import (
    GALLERY,
    IGNORE,
    WIDGET_APP,
    WIDGET_MIME,
    browser_instructions,
    imported_names,
    notebook_paths,
    shows_an_app,
    tags,
    widget_app_cells,
    widget_notebooks,
)

from apslab.lab.release import exercise_notebooks, find_exercises, is_check_cell, is_solution_cell

NOTEBOOKS = [p.stem for p in notebook_paths()]
# The lab notebooks teach one stage each and end with an exercise; 06 is the capacity-planning
# study that `apslab report` also renders for any scenario, so it has no exercise and asserts
# nothing about its numbers (they are the reported scenario's).
LAB_NOTEBOOKS = [p.stem for p in exercise_notebooks()]
# Besides widgets, the only outputs left uncompared: wall-clock timings (02, 07), a progress bar
# (06) and a live HTTP service's answers, whose timing fields vary (07).
IGNORED_FOR_TIMING = (r"time_pops|progress=True|\bpost\(|\bburst\(|\"/metrics|"
                      r"\btimed_completion\(")


def load(name: str):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def code_cells(notebook):
    return [c for c in notebook.cells if c.cell_type == "code"]


def exercise_cells(notebook):
    return [c for c in notebook.cells if is_solution_cell(c) or is_check_cell(c)]


@pytest.fixture(params=NOTEBOOKS)
def notebook(request):
    nb = load(request.param)
    nbformat.validate(nb)
    return nb


@pytest.fixture(params=LAB_NOTEBOOKS)
def lab_notebook(request):
    return load(request.param)


def test_the_notebooks_are_found():
    assert len(NOTEBOOKS) >= 8 and "06_capacity_planning" in NOTEBOOKS
    assert len(LAB_NOTEBOOKS) >= 7 and "06_capacity_planning" not in LAB_NOTEBOOKS
    assert set(LAB_NOTEBOOKS) <= set(NOTEBOOKS)


def test_runs_in_the_python3_kernel(notebook):
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_opens_with_learning_goals(notebook):
    first = notebook.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# ")
    assert "**Learning goals**" in first.source
    assert len(re.findall(r"^\* ", first.source, flags=re.M)) >= 3


def test_has_a_widget_app_in_a_tagged_ignored_cell(notebook):
    apps = widget_app_cells(notebook)
    assert apps, "at least one cell tagged widget-app"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        # an output with a control in it is an app, and an app is tagged (the browser test and
        # the gallery find apps by the tag); a progress bar is not an app
        assert shows_an_app(notebook, cell) == (index in apps), cell.source
        if index in apps:
            assert IGNORE in tags(cell)
            assert any(WIDGET_MIME in o.get("data", {}) for o in cell.outputs), \
                "the stored output is the widget (its state is saved with the notebook)"
            assert set(browser_instructions(cell)) <= {"move", "press"}
    assert notebook.metadata.get("widgets"), "widget state is stored so the widget renders"


def test_every_cell_showing_a_widget_is_ignored(notebook):
    for cell in code_cells(notebook):
        if any(WIDGET_MIME in o.get("data", {}) for o in cell.outputs):
            assert IGNORE in tags(cell), cell.source


def test_ignored_cells_are_only_widgets_and_timings(notebook):
    for cell in code_cells(notebook):
        if IGNORE in tags(cell):
            assert WIDGET_APP in tags(cell) or re.search(IGNORED_FOR_TIMING, cell.source), \
                cell.source


def test_states_what_to_notice_with_a_checked_number(lab_notebook):
    notebook = lab_notebook
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "What to notice" in markdown
    compared_text = [o for c in code_cells(notebook) if IGNORE not in tags(c)
                     for o in c.outputs if o.output_type == "stream"
                     and re.search(r"\d", o.text)]
    assert compared_text, "numbers nbval compares"
    assert any("assert " in c.source for c in code_cells(notebook)), \
        "at least one teaching claim is asserted, so it fails loudly if it stops being true"


@pytest.mark.parametrize("name", LAB_NOTEBOOKS)
def test_exercises_are_nbgrader_solution_and_check_cells(name):
    """Each exercise: a collapsed solution cell with the reference between BEGIN and END
    SOLUTION, then a locked check cell worth the points the exercise's text states, calling a
    checker made for grading; in this (the instructor's) copy the check passes."""
    notebook = load(name)
    exercises = find_exercises(ROOT / "notebooks" / f"{name}.ipynb")
    assert exercises
    imported = imported_names(notebook)
    ids = [c.metadata["nbgrader"]["grade_id"] for c in exercise_cells(notebook)]
    assert len(ids) == len(set(ids)), "grade ids are unique in a notebook"
    for exercise in exercises:
        solution = notebook.cells[exercise.solution_cell]
        check = notebook.cells[exercise.check_cell]
        assert solution.metadata.get("jupyter", {}).get("source_hidden") is True
        assert solution.metadata["nbgrader"]["schema_version"] == 3
        assert check.metadata["nbgrader"]["schema_version"] == 3
        checker = getattr(importlib.import_module(imported[exercise.checker]), exercise.checker)
        assert getattr(checker, "is_exercise_checker", False), exercise.checker
        assert re.search(r"all \d+ checks passed", _text(check))
        assert not any(o.output_type == "error" for o in check.outputs)
        text = notebook.cells[exercise.solution_cell - 1]
        assert text.cell_type == "markdown" and "Exercise" in text.source
        assert f"**{exercise.points:g} points**" in text.source
        assert "raise NotImplementedError" in text.source


def test_every_checker_call_is_a_graded_check_cell(notebook):
    """A checker called anywhere else would not be graded, and its answer not released."""
    for cell in code_cells(notebook):
        if re.search(r"\bcheck_\w+\(my_\w+\)", cell.source):
            assert is_check_cell(cell), cell.source
        if "BEGIN SOLUTION" in cell.source:
            assert is_solution_cell(cell), cell.source


def _text(cell) -> str:
    parts = []
    for output in cell.outputs:
        parts.append(output.get("text", ""))
        parts.append(output.get("evalue", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_no_trailing_semicolons(notebook):
    for cell in code_cells(notebook):
        lines = [line for line in cell.source.splitlines() if line.strip()]
        assert not lines or not lines[-1].rstrip().endswith(";"), cell.source


def test_outputs_are_stored_in_order_and_error_free(notebook):
    counts = [c.execution_count for c in code_cells(notebook)]
    assert counts == list(range(1, len(counts) + 1)), "executed top to bottom in one run"
    for cell in code_cells(notebook):
        assert all(o.output_type != "error" for o in cell.outputs), cell.source
        assert not any(o.output_type == "stream" and o.name == "stderr" for o in cell.outputs), \
            cell.source


def test_logic_lives_in_the_package(notebook):
    """Notebooks are thin: no model code (classes, heaps, pyplot state) outside exercises."""
    for cell in code_cells(notebook):
        if is_solution_cell(cell):
            continue
        assert "class " not in cell.source
        assert "heapq" not in cell.source
        assert "plt." not in cell.source and "pyplot" not in cell.source
        assert len(cell.source.splitlines()) <= 30


def test_figures_are_shown_with_a_stable_text_form(notebook):
    for cell in code_cells(notebook):
        for output in cell.outputs:
            data = output.get("data", {})
            if "image/png" in data and IGNORE not in tags(cell):
                assert re.fullmatch(r"<Figure size \d+x\d+ with \d+ Axes>|"
                                    r"<IPython\.core\.display\.Image object>",
                                    data["text/plain"])


@pytest.mark.parametrize("page", ["README.md", "docs/lab.md"])
def test_the_docs_list_every_notebook(page):
    text = doc_text(page)
    listed = re.findall(r"^\| `(\w+)\.ipynb` \|", text, re.M)
    assert listed == list(NOTEBOOKS), f"{page} should list the notebooks in order, one row each"


def test_the_readme_gallery_shows_every_widget_notebook():
    """One screenshot per notebook with a widget app (``make screenshots`` takes them)."""
    readme = doc_text("README.md")
    shown = re.findall(r'<img src="docs/gallery/(\w+)\.png"', readme)
    expected = [name.removesuffix(".ipynb") for name in widget_notebooks()]
    assert shown == expected
    assert sorted(p.stem for p in GALLERY.glob("*.png")) == expected
    for name in expected:
        header = (GALLERY / f"{name}.png").read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        width = int.from_bytes(header[16:20], "big")
        assert 300 <= width <= 1000, f"{name}.png is {width} pixels wide"
