"""The students' release (``make release``): nbgrader removes every reference solution, the
released notebooks run with only their checks failing, and nbgrader's autograder gives the
reference solutions full marks and an untouched release none.

One course directory is built for the module (apslab.lab.release, as ``make release`` does);
every notebook in notebooks/ with an exercise is released, so new ones are covered as they come.
Two students hand in every assignment: "reference" with the instructor's solutions typed into
the solution cells, "untouched" with the release as it is. One ``nbgrader autograde`` grades both.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from notebook_conventions import NOTEBOOKS_DIR, notebook_paths

from apslab.lab import release

pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install -e '.[teach]')")

STUDENTS = ("reference", "untouched")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    released = release.release(course)
    for assignment, folder in released.items():
        name = f"{assignment}.ipynb"
        handed_out = nbformat.read(folder / name, as_version=4)
        release.submit(course, "untouched", handed_out, name)
        instructor = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
        filled = release.with_reference_solutions(nbformat.read(folder / name, as_version=4),
                                                  instructor)
        release.submit(course, "reference", filled, name)
    release.autograde(course)
    return course


def released_notebooks(course):
    return sorted((course / "release").glob("*/*.ipynb"))


def autograded(course, student, assignment):
    return nbformat.read(course / "autograded" / student / assignment / f"{assignment}.ipynb",
                         as_version=4)


def test_every_notebook_with_an_exercise_is_released(course):
    expected = release.exercise_notebooks()
    assert [p.name for p in released_notebooks(course)] == [p.name for p in expected]
    assert len(expected) >= 7
    without = [p.name for p in notebook_paths() if p not in expected]
    assert "06_capacity_planning.ipynb" in without  # no exercise: nothing to hide
    assert not list((course / "release").glob("*/06_*"))


def test_the_release_contains_no_reference_solution(course):
    for path in released_notebooks(course):
        instructor = nbformat.read(NOTEBOOKS_DIR / path.name, as_version=4)
        secret = {line.strip() for cell in instructor.cells if release.is_solution_cell(cell)
                  for line in release.solution_lines(cell.source) if line.strip()}
        assert secret
        text = path.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        notebook = nbformat.read(path, as_version=4)
        lines = {line.strip() for cell in notebook.cells for line in cell.source.splitlines()}
        assert not secret & lines, f"{path.name} gives away {sorted(secret & lines)}"
        # nothing of the instructor's run is left either: no outputs, no widget state
        assert "widgets" not in notebook.metadata
        for cell in notebook.cells:
            assert not cell.get("outputs") and cell.get("execution_count") is None


def test_each_exercise_is_a_stub_and_a_locked_check_worth_its_points(course):
    for path in released_notebooks(course):
        exercises = release.find_exercises(path, solutions=False)
        instructor = release.find_exercises(NOTEBOOKS_DIR / path.name)
        assert [(e.grade_id, e.checker, e.function, e.points) for e in exercises] == \
            [(e.grade_id, e.checker, e.function, e.points) for e in instructor]
        cells = nbformat.read(path, as_version=4).cells
        for exercise in exercises:
            solution, check = cells[exercise.solution_cell], cells[exercise.check_cell]
            body = solution.source.splitlines()[1:]
            assert [line.strip() for line in body] == release.CODE_STUB.splitlines()
            assert not solution.metadata.get("jupyter", {}).get("source_hidden")
            assert check.metadata["nbgrader"]["locked"] and check.metadata["editable"] is False
            assert check.source == f"{exercise.checker}({exercise.function})"
            markdown = cells[exercise.solution_cell - 1]
            assert markdown.cell_type == "markdown"
            assert f"**{exercise.points:g} points**" in markdown.source


def test_released_notebooks_run_top_to_bottom_with_only_the_checks_failing(course):
    for path in released_notebooks(course):
        assignment = path.parent.name
        checks = {e.check_cell for e in release.find_exercises(path, solutions=False)}
        notebook = autograded(course, "untouched", assignment)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            assert cell.execution_count is not None, f"{assignment} cell {index} did not run"
            errors = [o for o in cell.outputs if o.output_type == "error"]
            stderr = [o.text for o in cell.outputs
                      if o.output_type == "stream" and o.name == "stderr"]
            assert not stderr, f"{assignment} cell {index} wrote to stderr: {stderr}"
            if index in checks:
                assert len(errors) == 1 and errors[0].ename == "ExerciseFailed"
                assert "not written yet" in errors[0].evalue
                assert re.search(r"check 1 of \d+ failed", errors[0].traceback[0])
            else:
                assert not errors, f"{assignment} cell {index}: {errors}"


def test_autograde_gives_the_reference_solutions_full_marks(course):
    for path in released_notebooks(course):
        scores = release.scores(course, path.parent.name, "reference")
        assert scores and all(score == top > 0 for score, top in scores.values()), \
            (path.name, scores)
        notebook = autograded(course, "reference", path.parent.name)
        text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                       for o in c.outputs)
        assert re.search(r"all \d+ checks passed", text)


def test_autograde_gives_an_untouched_release_zero(course):
    for path in released_notebooks(course):
        scores = release.scores(course, path.parent.name, "untouched")
        exercises = release.find_exercises(path, solutions=False)
        assert set(scores) == {e.grade_id for e in exercises}
        assert all(score == 0 and top == e.points for e in exercises
                   for score, top in [scores[e.grade_id]]), (path.name, scores)


def test_the_course_directory_is_ready_for_nbgrader(course):
    config = (course / "nbgrader_config.py").read_text()
    assert f"course_id = {release.COURSE_ID!r}" in config
    assert "ClearSolutions.code_stub" in config and "Execute.timeout" in config
    assert (course / "gradebook.db").is_file()
    assert sorted(p.name for p in (course / "source").iterdir()) == \
        [p.parent.name for p in released_notebooks(course)]


def test_a_malformed_exercise_is_refused(tmp_path):
    notebook = nbformat.read(NOTEBOOKS_DIR / "01_token_bucket.ipynb", as_version=4)
    exercise = release.find_exercises(NOTEBOOKS_DIR / "01_token_bucket.ipynb")[0]
    notebook.cells[exercise.check_cell].metadata["nbgrader"]["points"] = 0
    nbformat.write(notebook, tmp_path / "broken.ipynb")
    with pytest.raises(ValueError, match="locked and worth points"):
        release.find_exercises(tmp_path / "broken.ipynb")
    notebook.cells.pop(exercise.solution_cell)
    nbformat.write(notebook, tmp_path / "broken.ipynb")
    with pytest.raises(ValueError, match="must follow the solution cell"):
        release.find_exercises(tmp_path / "broken.ipynb")
