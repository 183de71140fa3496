"""Tests of the exercise generator: marks, stubs, solutions, edited files, the check mode."""
import importlib.util
import io
import textwrap

import pytest

from attention_scratch.course import exercises as tools
from attention_scratch.course.repo import find_repository

MARKED_MODULE = textwrap.dedent('''\
    import numpy as np


    # BEGIN EXERCISE 1.7 (3 points): double it
    # uses: from math import pi
    def double(x):
        """Return twice x."""
        # BEGIN SOLUTION
        # HINT: multiply
        return 2 * x
        # END SOLUTION


    # END EXERCISE


    def helper():
        return 1
    ''')


@pytest.fixture
def fake_repo(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(MARKED_MODULE)
    return tmp_path, package


def load(path):
    spec = importlib.util.spec_from_file_location(f"loaded_{path.stem}_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_reads_id_points_title_uses(fake_repo):
    _, package = fake_repo
    (ex,) = tools.collect(package)
    assert (ex.id, ex.points, ex.title, ex.function_name) == ("1.7", 3, "double it", "double")
    assert ex.uses == ("from math import pi",)


def test_write_makes_a_stub_that_raises_and_a_solution_that_works(fake_repo):
    repo, package = fake_repo
    tools.write(repo, package, out=io.StringIO())
    stub = load(repo / "exercises" / "ch01_numpy_toolkit.py")
    solution = load(repo / "solutions" / "ch01_numpy_toolkit.py")
    assert solution.double(4) == 8
    with pytest.raises(NotImplementedError, match=r"Exercise 1\.7: double it"):
        stub.double(4)
    stub_text = (repo / "exercises" / "ch01_numpy_toolkit.py").read_text()
    assert "# HINT: multiply" in stub_text and "return 2 * x" not in stub_text
    assert "from math import pi" in stub_text and "helper" not in stub_text
    assert "BEGIN SOLUTION" not in (repo / "solutions" / "ch01_numpy_toolkit.py").read_text()


def test_edited_stub_is_never_overwritten_and_check_accepts_it(fake_repo):
    repo, package = fake_repo
    tools.write(repo, package, out=io.StringIO())
    assert tools.check(repo, package) == []
    stub = repo / "exercises" / "ch01_numpy_toolkit.py"
    edited = stub.read_text().replace('raise NotImplementedError("Exercise 1.7: double it")',
                                      "return x + x")
    stub.write_text(edited)
    (package / "mod.py").write_text(MARKED_MODULE.replace("Return twice x.", "Return x doubled."))
    skipped = tools.write(repo, package, out=io.StringIO())
    assert skipped == ["exercises/ch01_numpy_toolkit.py"]
    assert stub.read_text() == edited
    assert "Return x doubled." in (repo / "solutions" / "ch01_numpy_toolkit.py").read_text()
    assert tools.check(repo, package) == []


SECOND_EXERCISE = textwrap.dedent('''\

    # BEGIN EXERCISE 1.8 (1 point): triple it
    # uses: from math import tau
    # writes: out
    def triple(x, out):
        """Write 3x into out."""
        # BEGIN SOLUTION
        out[...] = 3 * x
        # END SOLUTION
    # END EXERCISE
    ''')


def test_a_new_exercise_is_appended_to_an_edited_stub_and_check_says_it_is_missing(fake_repo):
    repo, package = fake_repo
    tools.write(repo, package, out=io.StringIO())
    stub = repo / "exercises" / "ch01_numpy_toolkit.py"
    edited = stub.read_text().replace('raise NotImplementedError("Exercise 1.7: double it")',
                                      "return x + x")
    stub.write_text(edited)
    (package / "mod.py").write_text(MARKED_MODULE + SECOND_EXERCISE)
    assert tools.check(repo, package) == [
        "exercises/ch01_numpy_toolkit.py lacks exercise 1.8 (triple); "
        "`make exercises` appends its stub without touching your code",
        "solutions/ch01_numpy_toolkit.py is stale"]
    kept = tools.write(repo, package, out=io.StringIO())
    assert kept == ["exercises/ch01_numpy_toolkit.py"]
    text = stub.read_text()
    assert text.startswith(edited.rstrip("\n")), "the student's code above must be untouched"
    assert "from math import tau" in text and "# Exercise 1.8 (1 point): triple it" in text
    module = load(stub)
    assert module.double(4) == 8
    with pytest.raises(NotImplementedError, match=r"Exercise 1\.8: triple it"):
        module.triple(1, None)
    assert tools.check(repo, package) == []
    assert tools.write(repo, package, out=io.StringIO()) == ["exercises/ch01_numpy_toolkit.py"]
    assert stub.read_text() == text, "appending happens once"


def test_writes_marks_name_the_arguments_changed_in_place(fake_repo):
    _, package = fake_repo
    (package / "mod.py").write_text(MARKED_MODULE + SECOND_EXERCISE)
    double, triple = tools.collect(package)
    assert double.writes == () and triple.writes == ("out",)
    assert tools.solution_region(triple) == ["    out[...] = 3 * x"]


def test_check_reports_stale_and_missing_files(fake_repo):
    """A changed docstring changes both files; a changed solution body only the solutions."""
    repo, package = fake_repo
    assert "exercises/ch01_numpy_toolkit.py is missing" in tools.check(repo, package)
    tools.write(repo, package, out=io.StringIO())
    (package / "mod.py").write_text(MARKED_MODULE.replace("Return twice x.", "Return 2x."))
    problems = tools.check(repo, package)
    assert problems == ["exercises/ch01_numpy_toolkit.py is stale",
                        "solutions/ch01_numpy_toolkit.py is stale"]
    tools.write(repo, package, out=io.StringIO())
    (package / "mod.py").write_text(MARKED_MODULE.replace("Return twice x.", "Return 2x.")
                                    .replace("2 * x", "x * 2"))
    assert tools.check(repo, package) == ["solutions/ch01_numpy_toolkit.py is stale"]


@pytest.mark.parametrize("broken, message", [
    (MARKED_MODULE.replace("# END EXERCISE\n", ""), "has no END EXERCISE"),
    (MARKED_MODULE.replace("    # BEGIN SOLUTION\n", ""), "has no BEGIN SOLUTION"),
    (MARKED_MODULE + "\n# END EXERCISE\n", "END EXERCISE without BEGIN"),
])
def test_malformed_marks_are_errors(fake_repo, broken, message):
    _, package = fake_repo
    (package / "mod.py").write_text(broken)
    with pytest.raises(ValueError, match=message):
        tools.collect(package)


def test_duplicate_ids_are_errors(fake_repo):
    _, package = fake_repo
    (package / "other.py").write_text(MARKED_MODULE)
    with pytest.raises(ValueError, match=r"exercise 1\.7 is marked twice"):
        tools.collect(package)


def test_repository_exercises_are_up_to_date():
    assert tools.check() == []


def test_library_functions_equal_their_solutions():
    """The solutions file holds exactly the library's code, minus the marks."""
    for ex in tools.collect():
        text = (find_repository() / "solutions" / f"{tools.CHAPTERS[ex.chapter]}.py").read_text()
        assert "\n".join(tools.solution_lines(ex)) in text
