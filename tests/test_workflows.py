"""The GitHub Actions workflows pass actionlint, and `make test`, which CI runs, starts with ruff.

`make test` installs actionlint (requirements-test.txt), so in CI these tests run;
elsewhere they skip, saying so, when the binary is absent. actionlint also runs
ShellCheck on the `run:` scripts when `shellcheck` is on the PATH (as on GitHub's runners).
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attention_scratch.course.repo import find_repository

REPO_DIR = find_repository()

WORKFLOWS = REPO_DIR / ".github" / "workflows"


def actionlint():
    """The actionlint binary: beside this Python
    (a virtual environment need not be on PATH), else on PATH."""
    beside = Path(sys.executable).parent / "actionlint"
    if beside.exists():
        return str(beside)
    found = shutil.which("actionlint")
    if found is None:
        pytest.skip("actionlint is not installed "
                    "(pip install -r requirements-test.txt; make test does)")
    return found


def lint(*paths):
    return subprocess.run([actionlint(), "-no-color", *map(str, paths)], capture_output=True,
                          text=True, cwd=REPO_DIR, timeout=120)


def test_the_workflows_exist():
    assert {"book.yml", "test.yml"} <= {p.name for p in WORKFLOWS.glob("*.yml")}


def test_actionlint_finds_no_problem_in_the_workflows():
    done = lint(*sorted(WORKFLOWS.glob("*.yml")))
    assert done.returncode == 0, f"actionlint:\n{done.stdout}{done.stderr}"


def test_actionlint_does_report_a_broken_workflow(tmp_path):
    """So that a passing run above means something:
    a bad permission and an undefined job are caught."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\npermissions:\n  pages: maybe\njobs:\n  a:\n    needs: nowhere\n"
                   "    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n")
    done = lint(bad)
    assert done.returncode != 0
    assert "nowhere" in done.stdout and "maybe" in done.stdout, done.stdout


def test_make_test_starts_with_ruff_and_ci_runs_make_test():
    """Ruff's configuration is only kept if something runs it: `make test` does, first."""
    recipe = REPO_DIR.joinpath("Makefile").read_text().split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    commands = [line.strip() for line in recipe.splitlines()[1:] if line.startswith("\t")]
    assert commands[0] == "$(PY) -m ruff check .", commands
    assert "run: make test" in (WORKFLOWS / "test.yml").read_text()
    assert "make test" in (REPO_DIR / ".ci" / "run").read_text()
