"""Tests of the grader: no student code can hang it, crash it, fool it or change another grade.

The answers themselves (wrong ones lose points, valid ones get them) are in
tests/test_answers.py; the reference answers' full marks are checked by
`make test` (`python -m attention_scratch.grade --solutions --require-full`).
"""
import json
import os
import subprocess
import sys
import time

import pytest
from test_answers import replace_function

from attention_scratch.course.exercises import CHAPTERS, collect, write_stubs
from attention_scratch.course.repo import find_repository
from attention_scratch.course.sandbox import abi_version as sandbox_abi

REPO = find_repository()
CH01, CH04, CH12 = "ch01_numpy_toolkit", "ch04_scaled_dot_product", "ch12_numba_cpu"


def run_grader(*args, json_path=None, cwd=REPO, env=None):
    cmd = [sys.executable, "-m", "attention_scratch.grade", *args]
    if json_path is not None:
        cmd += ["--json", str(json_path)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def solution_text(stem):
    return (REPO / "solutions" / f"{stem}.py").read_text()


def results_of(path):
    return {r["id"]: r for r in json.loads(path.read_text())}


def test_fresh_stubs_score_zero_with_every_exercise_not_started(tmp_path):
    """Graded on a fresh copy of the stubs, never on the student's own exercises/ folder."""
    stubs = write_stubs(tmp_path / "stubs")
    done = run_grader("--target", str(stubs), "--require-full", json_path=tmp_path / "r.json")
    total = sum(ex.points for ex in collect())
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"score: 0/{total} points"
    assert "Traceback" not in done.stdout + done.stderr
    results = results_of(tmp_path / "r.json")
    assert {r["status"] for r in results.values()} == {"not started"}
    assert len(results) == len(collect())
    assert "1.1  0/2  not started" in done.stdout
    assert f"[{len(results)}/{len(results)}]" in done.stderr, ("progress lines go to "
                                                               "stderr while grading")


def test_every_exercise_has_graded_tests():
    for ex in collect():
        test_file = REPO / "tests" / "exercises" / f"test_{CHAPTERS[ex.chapter]}.py"
        assert test_file.exists(), f"{test_file} is missing"
        assert f'@pytest.mark.exercise("{ex.id}")' in test_file.read_text(), f"no test for {ex.id}"


HOSTILE_PREAMBLE = '''
np.seterr(all="ignore")  # changes this process's NumPy state: other chapters must not see it
import attention_scratch.testing as _testing
_testing.assert_close = lambda *a, **k: None  # patches of the grader's helpers reach nothing
import attention_scratch.course.checker as _checker
_checker.fold = lambda outcomes: ("passed", "")
'''


def test_hostile_code_is_stopped_and_other_grades_do_not_change(tmp_path):
    """Python and Numba endless loops, os._exit(0) and a changed NumPy state, graded together."""
    ch01 = solution_text(CH01).replace("import numpy as np\n",
                                       "import numpy as np\n" + HOSTILE_PREAMBLE, 1)
    ch01 = replace_function(ch01, "stable_logsumexp",
                            "def stable_logsumexp(x, axis=-1):\n    while True:\n        pass\n")
    ch01 = replace_function(ch01, "softmax_vjp", "def softmax_vjp(grad_out, probs, axis=-1):\n"
                                                 "    import os\n    os._exit(0)\n")
    (tmp_path / f"{CH01}.py").write_text(ch01)
    (tmp_path / f"{CH04}.py").write_text(solution_text(CH04))  # graded beside them, unchanged
    ch12 = solution_text(CH12).replace("def exp_f32(x):\n", "def exp_f32(x):\n    while x == x:\n"
                                       "        x = x + np.float32(0.0)\n", 1)
    (tmp_path / f"{CH12}.py").write_text(ch12)
    start = time.monotonic()
    chosen = [arg for ex in ("1.1", "1.2", "1.3", "1.4", "1.5", "4.1", "4.2", "4.3", "12.1")
              for arg in ("--exercise", ex)]
    done = run_grader("--target", str(tmp_path), *chosen, "--timeout", "8", "--require-full",
                      json_path=tmp_path / "r.json")
    seconds = time.monotonic() - start
    assert done.returncode == 1, done.stdout + done.stderr
    results = results_of(tmp_path / "r.json")
    assert results["1.3"]["status"] == "failing"
    assert "time budget of 8 s" in results["1.3"]["message"]
    assert results["12.1"]["status"] == "failing", "a Numba loop that never ends must stop too"
    assert "time budget of 8 s" in results["12.1"]["message"]
    assert results["1.4"]["status"] == "failing"
    assert "exited with status 0" in results["1.4"]["message"]
    for exercise_id in ("1.1", "1.2", "1.5", "4.1", "4.2", "4.3"):
        assert results[exercise_id]["status"] == "passed", results[exercise_id]
    assert seconds < 120, f"grading took {seconds:.0f} s: the budgets did not hold"


def test_a_stub_that_patches_the_grader_scores_zero(tmp_path):
    stubs = write_stubs(tmp_path)
    for stem in (CH01, CH04):
        path = stubs / f"{stem}.py"
        path.write_text(path.read_text().replace("import numpy as np\n",
                                                 "import numpy as np\n" + HOSTILE_PREAMBLE, 1))
    done = run_grader("--target", str(stubs), "--chapter", "1", "--chapter", "4",
                      json_path=tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert {r["status"] for r in results_of(tmp_path / "r.json").values()} == {"not started"}
    assert done.stdout.strip().splitlines()[-1].startswith("score: 0/")


def test_a_file_that_does_not_import_fails_every_exercise_with_its_line(tmp_path):
    (tmp_path / f"{CH01}.py").write_text("import numpy as np\n\ndef stable_softmax(x:\n")
    done = run_grader("--target", str(tmp_path), "--chapter", "1", json_path=tmp_path / "r.json")
    assert done.returncode == 0, done.stdout + done.stderr
    results = results_of(tmp_path / "r.json")
    assert {r["status"] for r in results.values()} == {"failing"}
    assert "SyntaxError" in results["1.1"]["message"] and "line 3" in results["1.1"]["message"]


def test_an_exception_shows_the_students_file_and_line(tmp_path):
    text = replace_function(solution_text(CH04), "scaled_scores",
                            "def scaled_scores(query, key, scale):\n    out = query @ key\n "
                            "   return out * scale\n")
    (tmp_path / f"{CH04}.py").write_text(text)
    done = run_grader("--target", str(tmp_path), "--exercise", "4.1", json_path=tmp_path / "r.json")
    message = results_of(tmp_path / "r.json")["4.1"]["message"]
    assert "ValueError" in message, message
    assert f"of {CH04}.py, in scaled_scores: out = query @ key" in message, message
    assert "where np." not in done.stdout and "assert " not in message, "no assertion-rewrite noise"


def test_changing_an_input_in_place_fails_with_the_arguments_name(tmp_path):
    text = replace_function(solution_text(CH01), "stable_softmax", '''
def stable_softmax(x, axis=-1):
    x -= x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x
''')
    (tmp_path / f"{CH01}.py").write_text(text)
    run_grader("--target", str(tmp_path), "--exercise", "1.1", json_path=tmp_path / "r.json")
    result = results_of(tmp_path / "r.json")["1.1"]
    assert result["status"] == "failing", result
    assert "changed its argument `x` in place" in result["message"], result


@pytest.mark.parametrize("how,source,words", [
    ("imports the library's function", "from attention_scratch.sdpa import scaled_scores\n",
     "imports scaled_scores from the library"),
    ("wraps the library's function", "import attention_scratch.sdpa as lib\n\n"
     "def scaled_scores(query, key, scale):\n    return lib.scaled_scores(query, key, scale)\n",
     "runs the library's own scaled_scores"),
    ("reads solutions/", "def scaled_scores(query, key, scale):\n"
     "    namespace = {}\n"
     f"    exec(open({str(REPO / 'solutions' / (CH04 + '.py'))!r}).read(), namespace)\n"
     "    return namespace['scaled_scores'](query, key, scale)\n",
     "reads the reference answers in solutions/"),
])
def test_a_copied_answer_is_reported_and_not_graded(how, source, words, tmp_path):
    (tmp_path / f"{CH04}.py").write_text(replace_function(solution_text(CH04), "scaled_scores",
                                                          source))
    run_grader("--target", str(tmp_path), "--exercise", "4.1", json_path=tmp_path / "r.json")
    result = results_of(tmp_path / "r.json")["4.1"]
    assert result["status"] == "copied, not graded" and result["earned"] == 0, result
    assert words in result["message"], result["message"]


def test_using_the_librarys_other_functions_is_not_copying(tmp_path):
    text = replace_function(solution_text(CH01), "stable_softmax", '''
import attention_scratch as at

def stable_softmax(x, axis=-1):
    return np.exp(x - at.logsumexp(x, axis=axis)[..., None]) if axis in (-1, x.ndim - 1) else \\
        np.exp(x - np.expand_dims(at.logsumexp(x, axis=axis), axis))
''')
    (tmp_path / f"{CH01}.py").write_text(text)
    run_grader("--target", str(tmp_path), "--exercise", "1.1", json_path=tmp_path / "r.json")
    assert results_of(tmp_path / "r.json")["1.1"]["status"] == "passed"


@pytest.mark.parametrize("args,words", [
    (["--target", "/nonexistent/folder"], "no such folder"),
    (["--timeout", "-5"], "must be a positive number of seconds"),
    (["--timeout", "0"], "must be a positive number of seconds"),
    (["--chapter", "99"], "no exercises in chapter(s) [99]"),
    (["--exercise", "4.9"], "no exercise 4.9"),
])
def test_bad_command_lines_exit_2_with_a_message(args, words):
    done = run_grader(*args)
    assert done.returncode == 2 and words in done.stderr, done.stderr


def test_outside_a_clone_the_grader_says_so(tmp_path):
    env = dict(os.environ, ATTENTION_SCRATCH_REPO=str(tmp_path))
    done = run_grader("--chapter", "1", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "not a clone of attention_scratch" in done.stderr, done.stderr


SANDBOX_PROBE = '''
def write_through_proc(pid):
    import os
    for fd in os.listdir(f"/proc/{{pid}}/fd"):
        target = os.readlink(f"/proc/{{pid}}/fd/{{fd}}")
        if not target.startswith(("socket:", "anon_inode:", "/dev/null")):
            open(f"/proc/{{pid}}/fd/{{fd}}", "ab").close()  # a file of the checker's, reopened
            raise RuntimeError(target)


def scaled_scores(query, key, scale):
    import os, signal, subprocess
    repo = {repo!r}
    escaped = []
    attempts = {{
        "cat solutions/": lambda: subprocess.run(
            ["cat", os.path.join(repo, "solutions", "ch01_numpy_toolkit.py")],
            check=True, capture_output=True),
        "list the tests": lambda: os.listdir(os.path.join(repo, "tests")),
        "write the grader": lambda: open(
            os.path.join(repo, "attention_scratch", "course", "checker.py"), "a"),
        "write the repository": lambda: open(os.path.join(repo, "planted.txt"), "w"),
        "signal the checker": lambda: os.kill(os.getppid(), signal.SIGSTOP),
        "write into the checker's files": lambda: write_through_proc(os.getppid()),
        "read the checker's memory": lambda: open(f"/proc/{{os.getppid()}}/mem", "rb"),
    }}
    for what, attempt in attempts.items():
        try:
            attempt()
            escaped.append(what)
        except (OSError, subprocess.CalledProcessError):
            pass
        except RuntimeError as opened:
            escaped.append(f"{{what}} ({{opened}})")
    open(os.path.join(os.environ["TMPDIR"], "scratch.txt"), "w").write("its own folder is writable")
    if escaped:
        raise RuntimeError("escaped the sandbox: " + ", ".join(escaped))
    return (query @ np.swapaxes(key, -1, -2)) * scale
'''


@pytest.mark.skipif(sandbox_abi() < 1,
                    reason="this kernel has no Landlock: student code is not sandboxed here "
                           "(the grader says so); the sandbox is checked where Landlock exists")
def test_student_code_runs_in_a_sandbox_it_cannot_leave(tmp_path):
    """No reading solutions/ (a direct open is also caught as copying, above) or the tests, no
    writing the repository, no touching the checker."""
    source = SANDBOX_PROBE.format(repo=str(REPO))
    (tmp_path / f"{CH04}.py").write_text(replace_function(solution_text(CH04), "scaled_scores",
                                                          source))
    run_grader("--target", str(tmp_path), "--exercise", "4.1", json_path=tmp_path / "r.json")
    result = results_of(tmp_path / "r.json")["4.1"]
    assert result["status"] == "passed", result["message"]
    assert not (REPO / "planted.txt").exists()
