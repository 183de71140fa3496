"""Grade the exercises: ``python -m attention_scratch.grade [--solutions] [--chapter N]``.

Runs the graded tests in ``tests/exercises/`` against your files in
``exercises/`` (or the answers in ``solutions/``), and prints one table per
chapter: each exercise is "passed" (all its tests pass, full points),
"failing" (with the first failure's message), or "not started" (its function
still raises ``NotImplementedError``). The last line is ``score: X/Y points``.
"""
import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

from .exercise_tools import CHAPTERS, REPO_DIR, TITLES, collect

TESTS_DIR = REPO_DIR / "tests" / "exercises"
_MESSAGE_LINES = 6


class _Collector:
    """A pytest plugin that records each graded test's outcome under its exercise id."""

    def __init__(self):
        self.outcomes = {}  # exercise id -> list of (test name, status, message)

    def _record(self, item, status, message=""):
        marker = item.get_closest_marker("exercise")
        if marker is None:
            return
        self.outcomes.setdefault(str(marker.args[0]), []).append((item.name, status, message))

    def pytest_runtest_makereport(self, item, call):
        import pytest

        if call.when == "call" and call.excinfo is None:
            self._record(item, "passed")
        elif call.excinfo is not None:
            err = call.excinfo.value
            if isinstance(err, NotImplementedError) and str(err).startswith("Exercise "):
                self._record(item, "not started")
            elif call.excinfo.errisinstance(pytest.skip.Exception):
                self._record(item, "failing", f"skipped: {err}")
            else:
                text = call.excinfo.exconly().strip().splitlines()
                self._record(item, "failing", "\n".join(text[:_MESSAGE_LINES]))


def exercise_status(outcomes):
    """Fold the outcomes of one exercise's tests into one status and message."""
    if not outcomes:
        return "no tests", "this exercise has no graded test (a bug in the book: please report it)"
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


def run(target_dir, chapters=None, timeout=60, quiet=True):
    """Grade ``target_dir``; return a list of per-exercise result dicts."""
    import pytest

    exercises = [ex for ex in collect() if chapters is None or ex.chapter in chapters]
    test_files = sorted({str(TESTS_DIR / f"test_{CHAPTERS[ex.chapter]}.py") for ex in exercises})
    collector = _Collector()
    args = [*test_files, f"--target={target_dir}", f"--timeout={timeout}", "-p", "no:cacheprovider",
            "--rootdir", str(REPO_DIR), "-c", str(REPO_DIR / "pyproject.toml")]
    log = io.StringIO()
    with contextlib.redirect_stdout(log if quiet else sys.stdout):
        code = pytest.main(args + ["-q"], plugins=[collector])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        raise RuntimeError(f"the graded tests could not run (pytest exit code {int(code)}):\n"
                           f"{log.getvalue()[-3000:]}")
    results = []
    for ex in exercises:
        status, message = exercise_status(collector.outcomes.get(ex.id, []))
        results.append(dict(id=ex.id, chapter=ex.chapter, title=ex.title, points=ex.points,
                            earned=ex.points if status == "passed" else 0, status=status,
                            message=message, function=ex.function_name))
    return results


def format_report(results, target_label):
    """The tables a student reads, ending with ``score: X/Y points``."""
    lines = [f"Grading {target_label}", ""]
    for chapter in sorted({r["chapter"] for r in results}):
        rows = [r for r in results if r["chapter"] == chapter]
        lines.append(f"Chapter {chapter}: {TITLES[chapter]} ({CHAPTERS[chapter]}.py)")
        lines.append(f"  {'exercise':<9} {'points':>6}  {'status':<12} function: title")
        for r in rows:
            pts = f"{r['earned']}/{r['points']}"
            lines.append(f"  {r['id']:<9} {pts:>6}  {r['status']:<12} {r['function']}: {r['title']}")
            for msg_line in r["message"].splitlines():
                lines.append(f"  {'':<9} {'':>6}  | {msg_line}")
        lines.append("")
    earned = sum(r["earned"] for r in results)
    total = sum(r["points"] for r in results)
    lines.append(f"score: {earned}/{total} points")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Grade the exercises of attention_scratch.")
    parser.add_argument("--solutions", action="store_true", help="grade solutions/ instead of exercises/")
    parser.add_argument("--target", help="grade the chNN_*.py files in this folder instead")
    parser.add_argument("--chapter", type=int, action="append",
                        help="grade only this chapter (repeatable)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds allowed per test")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--require-full", action="store_true",
                        help="exit with status 1 unless every exercise passes (for CI)")
    args = parser.parse_args(argv)

    if args.target:
        target = Path(args.target).resolve()
        label = str(target)
    elif args.solutions:
        target, label = REPO_DIR / "solutions", "solutions/ (the reference answers)"
    else:
        target, label = REPO_DIR / "exercises", "exercises/ (your work)"
    known = {ex.chapter for ex in collect()}
    if args.chapter and not set(args.chapter) <= known:
        parser.error(f"no exercises in chapter(s) {sorted(set(args.chapter) - known)}; "
                     f"chapters with exercises: {sorted(known)}")
    results = run(target, chapters=set(args.chapter) if args.chapter else None, timeout=args.timeout)
    print(format_report(results, label))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.require_full and any(r["status"] != "passed" for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
