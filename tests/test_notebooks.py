"""The classroom notebooks (notebooks/): built from notebooks/build_notebooks.py, questions free of
solutions, and every notebook — questions and solutions — runs top to bottom without error on the sample
captures (nbclient, kernel python3)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))

import build_notebooks

CELL_TIMEOUT_S = 120
LESSON_FILES = [lesson.filename for lesson in build_notebooks.LESSONS]
ALL_NOTEBOOKS = [NOTEBOOKS / f for f in LESSON_FILES] + [NOTEBOOKS / "solutions" / f for f in LESSON_FILES]


def _sources(nb, cell_type: str | None = None) -> list[str]:
    return [c.source for c in nb.cells if cell_type is None or c.cell_type == cell_type]


def test_at_least_three_lessons():
    assert len(LESSON_FILES) >= 3


def test_notebooks_are_up_to_date_with_their_lessons(tmp_path):
    build_notebooks.build(tmp_path)
    for built in sorted(tmp_path.rglob("*.ipynb")):
        on_disk = NOTEBOOKS / built.relative_to(tmp_path)
        assert on_disk.exists(), f"{on_disk} missing: run python3 notebooks/build_notebooks.py"
        assert on_disk.read_text(encoding="utf-8") == built.read_text(encoding="utf-8"), (
            f"{on_disk.relative_to(ROOT)} differs from its lesson: run python3 notebooks/build_notebooks.py")


@pytest.mark.parametrize("name", LESSON_FILES)
def test_questions_hold_no_solutions(name):
    questions = nbformat.read(NOTEBOOKS / name, as_version=4)
    solutions = nbformat.read(NOTEBOOKS / "solutions" / name, as_version=4)
    q_text = "\n".join(_sources(questions))
    assert build_notebooks.SOLUTION_MARKER not in q_text
    assert build_notebooks.ANSWER_MARKER not in q_text
    assert not any("solution" in c.metadata.get("tags", []) for c in questions.cells)
    solution_cells = [c for c in solutions.cells if "solution" in c.metadata.get("tags", [])]
    solution_code = [c.source for c in solution_cells if c.cell_type == "code"]
    assert solution_code, f"solutions/{name} has no solution cells"
    assert all(src.startswith(build_notebooks.SOLUTION_MARKER) for src in solution_code)
    for src in solution_code:
        body = src.split("\n", 1)[1].strip()
        assert body and body not in q_text, f"solution code leaked into {name}:\n{body[:200]}"
    # one answer cell per exercise, each holding only a hint and the placeholder
    answers = [c.source for c in questions.cells if c.cell_type == "code" and "answer" in c.metadata.get("tags", [])]
    assert len(answers) == len(solution_code)
    for src in answers:
        assert src.endswith(build_notebooks.PLACEHOLDER)
        assert all(line.startswith("#") for line in src.splitlines()), src
    # the lesson itself is the same in both variants (the title cell says which variant it is)
    assert _lesson_text(questions)[1:] == _lesson_text(solutions)[1:]


def _lesson_text(nb) -> list[str]:
    return [c.source for c in nb.cells if not set(c.metadata.get("tags", [])) & {"solution", "answer"}]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: str(p.relative_to(NOTEBOOKS)))
def test_notebook_runs(path, monkeypatch):
    # The kernel inherits the environment: make the checkout importable even when synlens is not installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert images >= 1, "every lesson draws at least one plot"
