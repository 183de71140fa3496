"""Grade the exercises: ``python -m attention_scratch.grade [--solutions] [--chapter N]``.

Each exercise is graded in a checker process of its own (fresh NumPy state, no
module shared with another exercise), which runs the student's code in yet
another process with one wall-clock budget for all the exercise's tests. A
hard limit above that budget ends a checker that does not finish. The report
has one line per exercise, "N.M  earned/points  status", grouped by chapter,
and ends with ``score: X/Y points``; progress goes to stderr meanwhile.
"""
import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .exercises import CHAPTERS, TITLES, collect
from .repo import NotAClone, find_repository
from .session import DEFAULT_BUDGET

_STARTUP_GRACE = 60.0  # seconds for the checker's own start and its reference computations


def result_line(result):
    """``4.1  2/2  passed       scaled_scores: the scaled scores``
    (the line the notebooks print too)."""
    points = f"{result['earned']}/{result['points']}"
    return (f"{result['id']}  {points}  {result['status']:<12} {result['function']}: "
            f"{result['title']}")


def _result(exercise, status, message):
    return dict(id=exercise.id, chapter=exercise.chapter, title=exercise.title,
                points=exercise.points, earned=exercise.points if status == "passed" else 0,
                status=status, message=message, function=exercise.function_name)


def _kill_group(process):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def grade_exercise(exercise, target_dir, repo_dir, budget=DEFAULT_BUDGET, scratch=None):
    """Grade one exercise in a checker process;
    return its result dict (never raises for student code)."""
    test_file = repo_dir / "tests" / "exercises" / f"test_{CHAPTERS[exercise.chapter]}.py"
    with tempfile.TemporaryDirectory(prefix="grade_", dir=scratch) as work:
        result_path = Path(work) / "result.json"
        log_path = Path(work) / "checker.log"
        command = [sys.executable, "-m", "attention_scratch.course.checker", "--test-file",
                   str(test_file), "--target", str(target_dir), "--exercise", exercise.id,
                   "--budget", str(budget), "--repo", str(repo_dir), "--result", str(result_path)]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       cwd=repo_dir)
            try:
                process.wait(timeout=budget + _STARTUP_GRACE)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                return _result(exercise, "failing",
                               f"grading did not finish within {budget + _STARTUP_GRACE:g} s "
                               "and was stopped")
        if not result_path.exists():
            tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-8:])
            return _result(exercise, "failing",
                           "the grader could not run this exercise's tests "
                           f"(exit status {process.returncode}); please report it:\n{tail}")
        verdict = json.loads(result_path.read_text())[exercise.id]
        return _result(exercise, verdict["status"], verdict["message"])


def run(target_dir, chapters=None, exercise_ids=None, budget=DEFAULT_BUDGET, jobs=None,
        progress=None, repo_dir=None):
    """Grade ``target_dir``; return one result dict per exercise, in exercise order."""
    repo_dir = Path(repo_dir or find_repository())
    exercises = [ex for ex in collect() if (chapters is None or ex.chapter in chapters)
                 and (exercise_ids is None or ex.id in exercise_ids)]
    jobs = jobs or min(2, os.cpu_count() or 1)
    done = []

    def one(exercise):
        start = time.monotonic()
        result = grade_exercise(exercise, Path(target_dir), repo_dir, budget)
        done.append(result)
        if progress is not None:
            count = f"{len(done):>{len(str(len(exercises)))}}/{len(exercises)}"
            print(f"[{count}] {result_line(result)} ({time.monotonic() - start:.1f} s)",
                  file=progress, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, exercises))


def format_report(results, target_label):
    """The tables a student reads, ending with ``score: X/Y points``."""
    lines = [f"Grading {target_label}", ""]
    for chapter in sorted({r["chapter"] for r in results}):
        lines.append(f"Chapter {chapter}: {TITLES[chapter]} ({CHAPTERS[chapter]}.py)")
        for r in (r for r in results if r["chapter"] == chapter):
            lines.append("  " + result_line(r))
            lines.extend(f"      | {line}" for line in r["message"].splitlines())
        lines.append("")
    earned = sum(r["earned"] for r in results)
    total = sum(r["points"] for r in results)
    lines.append(f"score: {earned}/{total} points")
    return "\n".join(lines)


def _positive(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m attention_scratch.grade",
                                     description="Grade the exercises of attention_scratch.")
    parser.add_argument("--solutions", action="store_true",
                        help="grade solutions/ instead of exercises/")
    parser.add_argument("--target", help="grade the chNN_*.py files in this folder instead")
    parser.add_argument("--chapter", type=int, action="append",
                        help="grade only this chapter (repeatable)")
    parser.add_argument("--exercise", action="append",
                        help="grade only this exercise, e.g. 4.1 (repeatable)")
    parser.add_argument("--timeout", type=_positive, default=DEFAULT_BUDGET,
                        help="seconds each exercise's code may run, all its tests together "
                             "(default %(default)g)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="exercises graded at once (default: 2)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--require-full", action="store_true",
                        help="exit with status 1 unless every exercise passes (for CI)")
    args = parser.parse_args(argv)
    try:
        repo_dir = find_repository()
    except NotAClone as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.target:
        target = Path(args.target).resolve()
        if not target.is_dir():
            parser.error(f"--target {args.target}: no such folder")
        label = str(target)
    elif args.solutions:
        target, label = repo_dir / "solutions", "solutions/ (the reference answers)"
    else:
        target, label = repo_dir / "exercises", "exercises/ (your work)"
    known = collect()
    chapters = {ex.chapter for ex in known}
    if args.chapter and not set(args.chapter) <= chapters:
        parser.error(f"no exercises in chapter(s) {sorted(set(args.chapter) - chapters)}; "
                     f"chapters with exercises: {sorted(chapters)}")
    ids = {ex.id for ex in known}
    if args.exercise and not set(args.exercise) <= ids:
        parser.error(f"no exercise {', '.join(sorted(set(args.exercise) - ids))}")
    results = run(target, chapters=set(args.chapter) if args.chapter else None,
                  exercise_ids=set(args.exercise) if args.exercise else None, budget=args.timeout,
                  jobs=args.jobs, progress=None if args.quiet else sys.stderr, repo_dir=repo_dir)
    print(format_report(results, label))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.require_full and any(r["status"] != "passed" for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
