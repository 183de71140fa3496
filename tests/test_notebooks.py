"""The chapters as notebooks: exercises as code cells graded in place, no answer on the page.

`make check-notebooks` (run by CI) executes every notebook from notebooks/; here
the structure of all of them is checked, and small notebooks are executed to
show in-place grading end to end.
"""
import json

import nbclient
import nbformat
import pytest

from attention_scratch.course import notebooks
from attention_scratch.course.exercises import CHAPTERS, collect, stub_lines
from attention_scratch.course.pages import page_leaks, visible_text_of_notebook
from attention_scratch.course.repo import find_repository

REPO = find_repository()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("notebooks")
    return out, notebooks.write_notebooks(out, REPO)


def code_cells(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_one_notebook_per_chapter_each_starting_with_the_install_cell(written):
    _, paths = written
    assert [p.stem for p in paths] == sorted(p.stem
                                             for p in (REPO / "book").glob("[0-9][0-9]_*.md"))
    url = notebooks.project_url(REPO)
    assert url.startswith("https://github.com/")
    for path in paths:
        first = code_cells(path)[0]
        assert url in first and "pip" in first and ("from "
                                                    "attention_scratch.course.notebook import "
                                                    "grade") in first
        assert nbformat.read(path, as_version=4).metadata.kernelspec.name == "python3"


def test_every_exercise_is_a_stub_cell_followed_by_its_grade_cell(written):
    out, _ = written
    for ex in collect():
        cells = code_cells(out / f"{CHAPTERS[ex.chapter][2:]}.ipynb")
        stub = "\n".join(stub_lines(ex))
        holding = [i for i, cell in enumerate(cells) if stub in cell]
        assert len(holding) == 1, f"exercise {ex.id}: its stub should be in exactly one code cell"
        assert cells[holding[0] + 1] == f'grade("{ex.id}", {ex.function_name})'


def test_no_answer_and_no_myst_directive_is_left_on_a_notebook_page(written):
    """Outside the exercise cells themselves
    (the stub and its docstring are the task, as in exercises/)."""
    _, paths = written
    stubs = ["\n".join(stub_lines(ex)) for ex in collect()]
    for path in paths:
        notebook = json.loads(path.read_text())
        notebook["cells"] = [c for c in notebook["cells"]
                             if not any(stub in "".join(c["source"]) for stub in stubs)]
        text = visible_text_of_notebook(notebook)
        chapter = int(path.stem[:2])
        assert page_leaks(chapter, text) == {}, path.name
        markdown = "\n".join("".join(c["source"]) for c in notebook["cells"]
                             if c["cell_type"] == "markdown")
        for leftover in ("{exercise}", "{solution}", "literalinclude", "{cite:p}"):
            assert leftover not in markdown, f"{path.name} still shows {leftover}"


def test_an_edited_notebook_is_kept_and_clean_removes_only_untouched_ones(tmp_path):
    paths = notebooks.write_notebooks(tmp_path, REPO)
    edited = paths[4]
    edited.write_text(edited.read_text().replace("raise NotImplementedError", "return 1  # mine",
                                                 1))
    work = edited.read_text()
    notebooks.write_notebooks(tmp_path, REPO)
    assert edited.read_text() == work, "make notebooks must not overwrite a notebook holding work"
    assert notebooks.clean(tmp_path) == [edited]
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [edited.name]


def _run(cells, folder):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()
    return ["".join(o.get("text", "") for o in cell.outputs) for cell in notebook.cells]


def test_grading_in_a_notebook_follows_the_function_just_defined(tmp_path):
    outputs = _run([
        "import numpy as np\nfrom attention_scratch.course.notebook import grade",
        "def scaled_scores(query, key, scale):\n"
        "    raise NotImplementedError('Exercise 4.1: the scaled scores')",
        'grade("4.1", scaled_scores)',
        "def transposed(k):\n    return np.swapaxes(k, -1, -2)\n\n"
        "def scaled_scores(query, key, scale):\n    return (query @ transposed(key)) * scale",
        'grade("4.1", scaled_scores)',
        "def scaled_scores(query, key, scale):\n    return query @ transposed(key)",
        'grade("4.1", scaled_scores)',
        "from attention_scratch.sdpa import scaled_scores\ngrade('4.1', scaled_scores)",
        "def scaled_scores(query, key, scale):\n    while True:\n        pass\n\n"
        "grade('4.1', scaled_scores, budget=3)",
    ], tmp_path)
    assert outputs[2].startswith("4.1  0/2  not started")
    assert outputs[4].startswith("4.1  2/2  passed"), outputs[4]
    assert outputs[6].startswith("4.1  0/2  failing"), outputs[6]
    assert outputs[7].startswith("4.1  0/2  copied, not graded"), outputs[7]
    assert outputs[8].startswith("4.1  0/2  failing"), outputs[8]
    assert "time budget of 3 s" in outputs[8], outputs[8]


def test_a_chapter_notebook_runs_from_its_folder_and_reports_not_started(written):
    out, _ = written
    problems = notebooks.check([out / "08_online_softmax.ipynb"])
    assert problems == []
