"""The checker: runs one exercise's graded tests (pytest) and writes its verdict to a file.

Started by the grader as ``python -m attention_scratch.course.checker``, one
process per exercise. It never imports student code: the tests call it through
:mod:`attention_scratch.course.remote`. The verdict is one of "passed",
"not started", "failing" (with the first failure, in words) and
"copied, not graded".
"""
import argparse
import json
import sys
from pathlib import Path

import pytest

from .remote import GradingError, NotStarted, StudentRaised, adopt_orphans, end_orphans

_MESSAGE_LINES = 8


def _message(excinfo):
    """What a student reads about one failed test: the message, without our traceback."""
    error = excinfo.value
    if isinstance(error, (GradingError, AssertionError, StudentRaised)):
        text = str(error) or "a check failed"
    else:
        text = (f"{type(error).__name__}: {error}\n(the test could not use what your function "
                "returned: check its type, shape and dtype)")
    lines = text.strip().splitlines()
    if len(lines) > _MESSAGE_LINES:
        lines = lines[:_MESSAGE_LINES] + ["..."]
    return "\n".join(lines)


class Verdicts:
    """A pytest plugin: keeps the chosen exercises' tests and records each one's outcome."""

    def __init__(self, exercise_ids):
        self.exercise_ids = set(exercise_ids)
        self.outcomes = {}  # exercise id -> [(test name, status, message)]

    @staticmethod
    def exercise_of(item):
        marker = item.get_closest_marker("exercise")
        return str(marker.args[0]) if marker is not None else None

    def pytest_collection_modifyitems(self, config, items):
        keep = [item for item in items if self.exercise_of(item) in self.exercise_ids]
        dropped = [item for item in items if item not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep

    def _record(self, item, status, message=""):
        self.outcomes.setdefault(self.exercise_of(item), []).append((item.name, status, message))

    def pytest_runtest_makereport(self, item, call):
        if call.when == "call" and call.excinfo is None:
            self._record(item, "passed")
        elif call.excinfo is not None:
            if call.excinfo.errisinstance(NotStarted):
                self._record(item, "not started")
            elif call.excinfo.errisinstance(pytest.skip.Exception):
                self._record(item, "failing", f"skipped: {call.excinfo.value}")
            elif call.when == "setup" and not call.excinfo.errisinstance(
                    (GradingError, AssertionError, FileNotFoundError)):
                self._record(item, "failing",
                             f"the test could not be set up: {_message(call.excinfo)}")
            else:
                self._record(item, "failing", _message(call.excinfo))


def fold(outcomes):
    """One exercise's status and message from its tests' outcomes."""
    if not outcomes:
        return "failing", "this exercise has no graded test (a bug in the book: please report it)"
    statuses = [status for _, status, _ in outcomes]
    if all(s == "passed" for s in statuses):
        return "passed", ""
    if all(s == "not started" for s in statuses):
        return "not started", ""
    for name, status, message in outcomes:
        if status == "failing":
            return "failing", f"{name}: {message}"
    name = next(n for n, s, _ in outcomes if s == "not started")
    return "failing", f"{name}: part of the exercise still raises NotImplementedError"


def run_checks(test_file, target_dir, exercise_ids, budget, repo_dir):
    """Run the tests of ``exercise_ids`` in ``test_file``; return {id: (status, message)}."""
    from . import session as session_module

    verdicts = Verdicts(exercise_ids)
    args = [str(test_file), f"--target={target_dir}", f"--exercise-budget={budget}",
            "-q", "--assert=plain", "-p", "no:cacheprovider", "-p", "no:timeout",
            "-W", "ignore::RuntimeWarning", "--rootdir", str(repo_dir),
            "-c", str(Path(repo_dir) / "pyproject.toml"), "-o", "addopts="]
    code = pytest.main(args, plugins=[verdicts])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED,
                    pytest.ExitCode.NO_TESTS_COLLECTED):
        raise RuntimeError(f"the graded tests could not run (pytest exit code {int(code)})")
    copied = session_module.LAST_SESSION.copied if session_module.LAST_SESSION else (lambda _: None)
    results = {}
    for exercise_id in exercise_ids:
        reason = copied(exercise_id)
        if reason:
            results[exercise_id] = ("copied, not graded",
                                    f"{reason}: write the function yourself "
                                    "(the library's other functions are yours to use)")
        else:
            results[exercise_id] = fold(verdicts.outcomes.get(exercise_id, []))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the graded tests of some exercises "
                                                 "of one chapter.")
    parser.add_argument("--test-file", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--exercise", action="append", required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    adopt_orphans()
    try:
        results = run_checks(args.test_file, args.target, args.exercise, args.budget, args.repo)
    finally:
        end_orphans()
    Path(args.result).write_text(json.dumps({exercise_id: {"status": status, "message": message}
                                             for exercise_id, (status,
                                                               message) in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
