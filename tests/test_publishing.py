"""What the published book and the notebooks made from it rely on.

A chapter runs as a notebook from any folder (``notebooks/``, Colab, Binder), so it
finds its data through the installed package, never through the working directory.
"""
import fnmatch
import re
from importlib.resources import files

import pytest

from attention_scratch.exercise_tools import REPO_DIR

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

BOOK = REPO_DIR / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))
PYPROJECT = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())

# A path given as a string literal to something that reads a file.
RELATIVE_READ = re.compile(
    r"""(open|Path|np\.load|np\.loadtxt|json\.load|pd\.read_\w+|imread|read_params|load_params)"""
    r"""\(\s*(f?["'])(?!/)""")


def code_cells(path):
    return re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", path.read_text(), re.S | re.M)


def test_the_pattern_catches_what_it_is_for():
    for line in ['Path("data/x.json").read_text()', "open('results.csv')", 'np.load(f"{name}.npz")',
                 'json.loads(Path("../book/data/x.json").read_text())']:
        assert RELATIVE_READ.search(line), line
    assert not RELATIVE_READ.search('files("attention_scratch") / "data" / "x.json"')


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_read_no_file_relative_to_the_working_directory(path):
    cells = code_cells(path)
    assert cells, f"{path.name} has no code cells (is the pattern out of date?)"
    for cell in cells:
        for line in cell.splitlines():
            assert not RELATIVE_READ.search(line), (
                f"{path.name} reads a file relative to the working directory, which breaks when the "
                f"chapter runs as a notebook elsewhere: {line.strip()!r}. Ship the file in "
                f"attention_scratch/data/ and read it with importlib.resources.files('attention_scratch').")


def test_every_data_file_is_package_data():
    """A file in attention_scratch/data/ that no package-data pattern names is missing from the wheel."""
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["attention_scratch"]
    data = files("attention_scratch") / "data"
    names = [entry.name for entry in data.iterdir() if entry.is_file()]
    assert "12_bench_full.json" in names  # chapter 12's recorded benchmark
    for name in names:
        assert any(fnmatch.fnmatch(f"data/{name}", pattern) for pattern in patterns), (
            f"attention_scratch/data/{name} is not listed in [tool.setuptools.package-data]")
