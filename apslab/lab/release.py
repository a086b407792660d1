"""The students' copy of the lab notebooks, made with nbgrader (``make release``).

``notebooks/`` holds the instructor's copies. Each exercise in them is two code cells with
nbgrader's cell metadata (docs/lab.md, "Writing a notebook"):

* a **solution cell** (``solution: true``) defining the student's function, with the reference
  solution between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
* a **check cell** (``grade: true``, ``locked: true``, ``points``) that calls a checker of
  :mod:`apslab.lab.exercises` (or :func:`apslab.serve.widgets.check_retry_after`) on it. A
  checker raises on a wrong answer and writes nothing to stderr, so nbgrader's autograder gives
  the cell its points exactly when the student's function passes every case.

:func:`release` turns every notebook with an exercise into an nbgrader assignment of its own
(named after the notebook) in an nbgrader course directory: ``source/`` gets a copy of the
instructor's notebook, and ``nbgrader generate_assignment`` writes the students' copy to
``release/``, each solution replaced by ``# Your code here.`` and ``raise NotImplementedError``,
outputs cleared and the check cells locked. The course directory also gets the
``nbgrader_config.py`` that ``nbgrader collect``, ``autograde`` and ``generate_feedback`` read
when run from it. Notebooks without an exercise (06) hide nothing and are not released.

    python -m apslab.lab.release [--course release] [NOTEBOOK ...]

:func:`submit`, :func:`autograde` and :func:`scores` drive nbgrader's grading the way an
instructor would (the tests use them to show that the reference solutions get full marks and an
untouched release none). This is teaching tooling: nothing in the package imports it, and it
needs nbgrader (``pip install -e '.[teach]'``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .datasets import DATA_DIR

NOTEBOOKS_DIR = DATA_DIR.parent / "notebooks"
DEFAULT_COURSE = DATA_DIR.parent / "release"
COURSE_ID = "apslab"
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
CODE_STUB = "# Your code here.\nraise NotImplementedError"
CELL_TIMEOUT_S = 600  # nbgrader's default is 30 s a cell; 07 runs a live service

NBGRADER_CONFIG = f'''\
# nbgrader's configuration for the apslab course directory, written by `make release`
# (apslab.lab.release). Run nbgrader from this folder: nbgrader autograde 01_token_bucket
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = {COURSE_ID!r}
# What a solution between "{BEGIN_SOLUTION}" and "{END_SOLUTION}" becomes in the release
c.ClearSolutions.code_stub = {{"python": {CODE_STUB!r}}}
# The notebooks run simulations and a live service: allow more than nbgrader's 30 s a cell
c.Execute.timeout = {CELL_TIMEOUT_S}
'''


class ReleaseFailed(RuntimeError):
    """nbgrader refused a notebook or failed; the message carries its log."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of an instructor notebook: its solution cell and the check cell after it."""

    notebook: Path
    solution_cell: int  # index in the notebook's cells
    check_cell: int
    function: str  # what the solution cell defines, e.g. my_token_bucket
    checker: str  # what the check cell calls, e.g. check_token_bucket
    grade_id: str  # the check cell's nbgrader grade_id
    points: float


def nbgrader_metadata(cell) -> dict:
    return dict(cell.get("metadata", {}).get("nbgrader", {}))


def is_solution_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and bool(nbgrader_metadata(cell).get("solution"))


def is_check_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and bool(nbgrader_metadata(cell).get("grade"))


def _read(path: str | Path):
    import nbformat

    return nbformat.read(Path(path), as_version=4)


def find_exercises(path: str | Path, solutions: bool = True) -> list[Exercise]:
    """The exercises of an instructor notebook, in order; ValueError if one is malformed.

    A check cell must follow its solution cell directly, call one function on the function the
    solution cell defines (``check_x(my_y)``), be locked and be worth points. The solution cell
    must mark its solution with BEGIN/END SOLUTION (not in a released notebook:
    ``solutions=False``).
    """
    path = Path(path)
    cells = _read(path).cells
    found = []
    for index, cell in enumerate(cells):
        if not is_check_cell(cell):
            continue
        where = f"{path.name}, cell {index}"
        meta = nbgrader_metadata(cell)
        call = re.fullmatch(r"(\w+)\((\w+)\)", cell.source.strip())
        if call is None:
            raise ValueError(f"{where}: a check cell is one call, checker(student_function); "
                             f"got {cell.source!r}")
        if index == 0 or not is_solution_cell(cells[index - 1]):
            raise ValueError(f"{where}: a check cell must follow the solution cell it checks")
        solution = cells[index - 1].source
        if not re.search(rf"^def {call.group(2)}\(", solution, re.M):
            raise ValueError(f"{where}: the solution cell above does not define "
                             f"{call.group(2)}()")
        if solutions and (BEGIN_SOLUTION not in solution or END_SOLUTION not in solution):
            raise ValueError(f"{where}: the solution cell above has no {BEGIN_SOLUTION!r} ... "
                             f"{END_SOLUTION!r} region")
        if not meta.get("locked") or not float(meta.get("points", 0)) > 0:
            raise ValueError(f"{where}: a check cell is locked and worth points")
        found.append(Exercise(path, index - 1, index, call.group(2), call.group(1),
                              meta["grade_id"], float(meta["points"])))
    return found


def exercise_notebooks(folder: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    """The notebooks of ``folder`` with at least one exercise: the ones a release includes."""
    return [path for path in sorted(Path(folder).glob("*.ipynb")) if find_exercises(path)]


def solution_code(source: str) -> str:
    """A solution cell's source without its BEGIN/END SOLUTION lines: a correct answer."""
    return "\n".join(line for line in source.splitlines()
                     if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION))


def solution_lines(source: str) -> list[str]:
    """The lines between BEGIN and END SOLUTION (what the release must not contain)."""
    inside, lines = False, []
    for line in source.splitlines():
        if line.strip() == BEGIN_SOLUTION:
            inside = True
        elif line.strip() == END_SOLUTION:
            inside = False
        elif inside:
            lines.append(line)
    return lines


def source_copy(path: str | Path):
    """The instructor notebook as nbgrader's source: outputs and widget state dropped, solution
    cells no longer collapsed (in the release they hold the student's stub)."""
    notebook = _read(path)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        if is_solution_cell(cell):
            jupyter = cell.metadata.get("jupyter", {})
            jupyter.pop("source_hidden", None)
            if not jupyter:
                cell.metadata.pop("jupyter", None)
    return notebook


def run_nbgrader(course: str | Path, *arguments: str) -> str:
    """``nbgrader ARGUMENTS`` in the course directory; its log, or ReleaseFailed."""
    # nbgrader runs the `alembic` command of its environment: put that on the PATH even when
    # this Python was started without activating it.
    scripts = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=os.pathsep.join([scripts, os.environ.get("PATH", "")]))
    process = subprocess.run([sys.executable, "-m", "nbgrader", *arguments], cwd=course,
                             capture_output=True, text=True, env=env)
    log = process.stdout + process.stderr
    if process.returncode != 0 or re.search(r"\| ERROR\]", log):
        raise ReleaseFailed(f"nbgrader {' '.join(arguments)} failed in {course}:\n{log}")
    return log


def write_course(course: str | Path, notebooks: list[Path]) -> list[str]:
    """An nbgrader course directory with one assignment per notebook; the assignment ids.

    Only ``nbgrader_config.py`` and ``source/<assignment>/`` are (re)written: submissions,
    grades and feedback from earlier rounds stay where they are.
    """
    import nbformat

    course = Path(course)
    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(NBGRADER_CONFIG, encoding="utf-8")
    assignments = []
    for path in notebooks:
        assignment = Path(path).stem
        folder = course / "source" / assignment
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        nbformat.write(source_copy(path), folder / Path(path).name)
        assignments.append(assignment)
    return assignments


def release(course: str | Path = DEFAULT_COURSE, notebooks: list[Path] | None = None
            ) -> dict[str, Path]:
    """Release every notebook with an exercise (or ``notebooks``) into ``course``.

    Returns each assignment's released folder, ``course/release/<assignment>/``.
    """
    if notebooks:
        notebooks = [Path(p) for p in notebooks]
        for path in notebooks:  # exercise_notebooks() has already checked its own
            if not find_exercises(path):
                raise ReleaseFailed(f"{path}: no exercise (a solution cell and a check cell), "
                                    "so there is nothing to release")
    else:
        notebooks = exercise_notebooks()
    assignments = write_course(course, notebooks)
    # One nbgrader run for them all (each run costs seconds of start-up); "*" regenerates every
    # assignment in source/, which is every notebook released so far.
    run_nbgrader(course, "generate_assignment",
                 assignments[0] if len(assignments) == 1 else "*", "--force")
    return {a: Path(course) / "release" / a for a in assignments}


def with_reference_solutions(released, instructor):
    """A released notebook with its solution cells filled in from the instructor's copy, as a
    student who wrote the reference solutions would hand it in."""
    answers = {nbgrader_metadata(c)["grade_id"]: solution_code(c.source)
               for c in instructor.cells if is_solution_cell(c)}
    for cell in released.cells:
        if is_solution_cell(cell):
            cell.source = answers[nbgrader_metadata(cell)["grade_id"]]
    return released


def submit(course: str | Path, student: str, notebook, name: str,
           assignment: str | None = None) -> Path:
    """Put ``notebook`` where ``nbgrader collect`` would: ``submitted/<student>/<assignment>/``."""
    import nbformat

    assignment = assignment or Path(name).stem
    folder = Path(course) / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / name)
    return folder / name


def autograde(course: str | Path, assignment: str = "*", student: str | None = None) -> str:
    """``nbgrader autograde`` (every submission of ``assignment``, or one student's)."""
    arguments = ["autograde", assignment, "--force"]
    if student:
        arguments += ["--student", student]
    return run_nbgrader(course, *arguments)


def scores(course: str | Path, assignment: str, student: str
           ) -> dict[str, tuple[float, float]]:
    """``{grade_id: (score, max_score)}`` of an autograded submission, from the gradebook."""
    from nbgrader.api import Gradebook

    database = f"sqlite:///{(Path(course) / 'gradebook.db').resolve()}"
    with Gradebook(database, COURSE_ID) as gradebook:
        submission = gradebook.find_submission(assignment, student)
        return {grade.name: (float(grade.score), float(grade.max_score))
                for notebook in submission.notebooks for grade in notebook.grades}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apslab.lab.release",
                                     description="Write the students' copy of the lab notebooks "
                                                 "(an nbgrader course directory).")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="instructor notebooks (default: every notebook in notebooks/ with "
                             "an exercise)")
    parser.add_argument("--course", type=Path, default=DEFAULT_COURSE,
                        help="the nbgrader course directory (default: release/)")
    args = parser.parse_args(argv)
    try:
        released = release(args.course, args.notebooks or None)
    except (ReleaseFailed, ValueError) as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    for assignment, folder in released.items():
        exercises = find_exercises(folder / f"{assignment}.ipynb", solutions=False)
        points = sum(e.points for e in exercises)
        print(f"{folder}: {len(exercises)} exercise(s), {points:g} points "
              f"({', '.join(e.grade_id for e in exercises)})")
    print(f"nbgrader course directory: {args.course} (run nbgrader collect, autograde and "
          "generate_feedback from there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
