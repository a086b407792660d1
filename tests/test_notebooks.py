"""The lab notebooks' shape: goals, a widget, checked results, an exercise, nbval-ready outputs.

nbval (``make test``) re-runs the notebooks and compares their outputs; these tests check what
nbval cannot: that each notebook teaches in the agreed shape, that widget cells are tagged so
their kernel-drawn output is not compared, that no compared cell hides output behind a trailing
';' (nbval runs with store_history off, where ';' does not suppress anything), and that the
stored outputs are complete and error-free.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from conftest import ROOT, doc_text

# The lab notebooks teach one stage each and end with an exercise; 06 is the capacity-planning
# study that `apslab report` also renders for any scenario, so it has no exercise and asserts
# nothing about its numbers (they are the reported scenario's).
LAB_NOTEBOOKS = ["00_overview", "01_token_bucket", "02_lazy_aging_queue",
                 "03_micro_batching_kv_cache", "04_a100_model_and_sqrt_fit",
                 "05_latency_and_fairness", "07_live_service", "08_continuous_batching",
                 "09_fair_sharing"]
NOTEBOOKS = sorted(LAB_NOTEBOOKS + ["06_capacity_planning"])
# Notebooks whose checker already follows the nbgrader convention: it raises AssertionError (the
# feedback) on a wrong answer and returns its result on a right one. Their exercise is the stub
# and its check (tagged raises-exception: the stored error is the feedback), then the reference
# solution between nbgrader's solution markers, collapsed, and its check in the next cell.
RAISING_CHECKERS = ["08_continuous_batching", "09_fair_sharing"]
RAISES = "raises-exception"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_APP = r"\b\w+App\(|\bPlanExplorer\("
# Besides widgets, the only outputs left uncompared: wall-clock timings (02, 07), a progress bar
# (06) and a live HTTP service's answers, whose timing fields vary (07).
IGNORED_FOR_TIMING = r"time_pops|progress=True|\bpost\(|\bburst\(|\"/metrics|\btimed_completion\("
IGNORE = "nbval-ignore-output"


def load(name: str):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def code_cells(notebook):
    return [c for c in notebook.cells if c.cell_type == "code"]


def tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


@pytest.fixture(params=NOTEBOOKS)
def notebook(request):
    nb = load(request.param)
    nbformat.validate(nb)
    return nb


@pytest.fixture(params=LAB_NOTEBOOKS)
def lab_notebook(request):
    return load(request.param)


def test_runs_in_the_python3_kernel(notebook):
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_opens_with_learning_goals(notebook):
    first = notebook.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# ")
    assert "**Learning goals**" in first.source
    assert len(re.findall(r"^\* ", first.source, flags=re.M)) >= 3


def test_has_a_widget_app_in_an_ignored_cell(notebook):
    app_cells = [c for c in code_cells(notebook) if re.search(WIDGET_APP, c.source)]
    assert app_cells, "at least one widget app"
    for cell in app_cells:
        assert IGNORE in tags(cell)
        assert any(WIDGET_MIME in o.get("data", {}) for o in cell.outputs), \
            "the stored output is the widget (its state is saved with the notebook)"
    assert notebook.metadata.get("widgets"), "widget state is stored so the widget renders"


def test_every_cell_showing_a_widget_is_ignored(notebook):
    for cell in code_cells(notebook):
        if any(WIDGET_MIME in o.get("data", {}) for o in cell.outputs):
            assert IGNORE in tags(cell), cell.source


def test_ignored_cells_are_only_widgets_and_timings(notebook):
    for cell in code_cells(notebook):
        if IGNORE in tags(cell):
            assert re.search(WIDGET_APP, cell.source) or re.search(IGNORED_FOR_TIMING,
                                                                   cell.source), cell.source


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


@pytest.mark.parametrize("name", [n for n in LAB_NOTEBOOKS if n not in RAISING_CHECKERS])
def test_ends_with_an_exercise_and_a_collapsed_reference_solution(name):
    notebook = load(name)
    cells = code_cells(notebook)
    student, solution = cells[-2], cells[-1]
    check = re.search(r"^(check_\w+)\((my_\w+)\)$", student.source.strip().splitlines()[-1])
    assert check, "the student's cell ends by calling a checker on the student's function"
    assert "raise NotImplementedError" in student.source
    assert "not written yet" in _text(student)
    assert solution.metadata.get("jupyter", {}).get("source_hidden") is True
    assert re.search(rf"^{check.group(1)}\(reference_\w+\)$", solution.source.strip(), re.M)
    assert re.search(r"all \d+ checks passed", _text(solution))
    assert any("Exercise" in c.source for c in notebook.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("name", RAISING_CHECKERS)
def test_ends_with_an_exercise_whose_checker_raises(name):
    notebook = load(name)
    cells = code_cells(notebook)
    student, solution, check = cells[-3], cells[-2], cells[-1]
    call = re.search(r"^(check_\w+)\((my_\w+)\)$", student.source.strip().splitlines()[-1])
    assert call, "the student's cell ends by calling a checker on the student's function"
    assert "raise NotImplementedError" in student.source
    assert RAISES in tags(student)
    errors = [o for o in student.outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["AssertionError"]
    assert "not written yet" in errors[0].evalue, "the stored error is the checker's feedback"
    assert solution.metadata.get("jupyter", {}).get("source_hidden") is True
    assert re.match(r"def reference_\w+\(", solution.source)
    assert solution.source.count("### BEGIN SOLUTION") == 1
    assert solution.source.count("### END SOLUTION") == 1
    body = solution.source.split("### BEGIN SOLUTION\n")[1].split("### END SOLUTION")[0]
    assert "return " in body, "the whole solution body is between the markers"
    assert re.fullmatch(rf"{call.group(1)}\(reference_\w+\)", check.source.strip())
    assert re.search(r"all \d+ checks passed", _text(check))
    assert any("Exercise" in c.source for c in notebook.cells if c.cell_type == "markdown")


def test_only_raising_exercise_stubs_may_raise(notebook):
    stubs = [c for c in code_cells(notebook) if RAISES in tags(c)]
    assert len(stubs) <= 1
    for cell in stubs:
        assert "raise NotImplementedError" in cell.source and "check_" in cell.source


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
        if RAISES not in tags(cell):
            assert all(o.output_type != "error" for o in cell.outputs), cell.source
        assert not any(o.output_type == "stream" and o.name == "stderr" for o in cell.outputs), \
            cell.source


def test_logic_lives_in_the_package(notebook):
    """Notebooks are thin: no model code (classes, heaps, pyplot state) outside exercises."""
    for cell in code_cells(notebook)[:-2]:
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
