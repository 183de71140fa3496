"""Tests of the grader: stubs score 0, solutions score full marks, wrong answers lose points.

Each "plausible wrong answer" is a solutions file with one function replaced by
a mistake students make; the grader must mark exactly that exercise "failing"
with a message that says what went wrong.
"""
import json
import re
import subprocess
import sys

import pytest

from attention_scratch.exercise_tools import CHAPTERS, REPO_DIR, collect


def run_grader(*args, json_path=None):
    cmd = [sys.executable, "-m", "attention_scratch.grade", *args]
    if json_path is not None:
        cmd += ["--json", str(json_path)]
    done = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=600)
    return done


def test_untouched_stubs_score_zero_with_every_exercise_not_started(tmp_path):
    done = run_grader(json_path=tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    total = sum(ex.points for ex in collect())
    assert done.stdout.strip().splitlines()[-1] == f"score: 0/{total} points"
    assert "Traceback" not in done.stdout + done.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    assert {r["status"] for r in results} == {"not started"}
    assert len(results) == len(collect())


def test_solutions_score_full_marks(tmp_path):
    done = run_grader("--solutions", "--require-full", json_path=tmp_path / "r.json")
    total = sum(ex.points for ex in collect())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"score: {total}/{total} points"
    assert {r["status"] for r in json.loads((tmp_path / "r.json").read_text())} == {"passed"}


def test_every_exercise_has_graded_tests():
    for ex in collect():
        test_file = REPO_DIR / "tests" / "exercises" / f"test_{CHAPTERS[ex.chapter]}.py"
        assert test_file.exists(), f"{test_file} is missing"
        assert f'@pytest.mark.exercise("{ex.id}")' in test_file.read_text(), f"no test for {ex.id}"


def replace_function(text, name, new_source):
    """Swap the top-level function `name` in a module's text for `new_source`."""
    pattern = re.compile(rf"^def {name}\(.*?(?=^# Exercise |\Z)", re.S | re.M)
    assert pattern.search(text), f"function {name} not found"
    return pattern.sub(lambda _: new_source.strip() + "\n\n\n", text, count=1)


CH01 = "ch01_numpy_toolkit"
WRONG_ANSWERS = {
    "softmax without the max subtraction": (CH01, "stable_softmax", "1.1", '''
def stable_softmax(x, axis=-1):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)
''', "NaN or inf"),
    "masked softmax that adds -1e9": (CH01, "masked_softmax", "1.2", '''
def masked_softmax(x, mask, axis=-1):
    z = np.where(mask, x, -1e9)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
''', "fully masked row"),
    "masked softmax that multiplies by the mask": (CH01, "masked_softmax", "1.2", '''
def masked_softmax(x, mask, axis=-1):
    e = np.exp(x - np.nanmax(np.where(mask, x, -np.inf), axis=axis, keepdims=True)) * mask
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s > 0, s, 1)
''', "NaN"),
    "logsumexp that overflows": (CH01, "stable_logsumexp", "1.3", '''
def stable_logsumexp(x, axis=-1):
    return np.log(np.exp(x).sum(axis=axis))
''', "exp(1000) overflowed"),
    "VJP with the row sum over the wrong axis": (CH01, "softmax_vjp", "1.4", '''
def softmax_vjp(grad_out, probs, axis=-1):
    return probs * (grad_out - (grad_out * probs).sum(axis=0, keepdims=True))
''', "entries differ"),
    "VJP that forgets the probabilities inside the sum": (CH01, "softmax_vjp", "1.4", '''
def softmax_vjp(grad_out, probs, axis=-1):
    return probs * (grad_out - grad_out.sum(axis=axis, keepdims=True))
''', "entries differ"),
    "one-sided differences": (CH01, "numerical_gradient", "1.5", '''
def numerical_gradient(f, x, eps=1e-6):
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    base = f(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        grad[i] = (f(x) - base) / eps
        x[i] = old
    return grad
''', "O(eps²)"),
    "central differences that forget to restore x[i]": (CH01, "numerical_gradient", "1.5", '''
def numerical_gradient(f, x, eps=1e-6):
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        grad[i] = (up - f(x)) / (2 * eps)
    return grad
''', "entries differ"),
}


def assert_wrong_answer_loses_points(stem, function, exercise_id, source, expected_words, tmp_path):
    """Grade the solutions with one function replaced by a plausible wrong answer.

    The exercise must fail with zero points and a message containing
    ``expected_words``; every other exercise of its chapter must still pass.
    Shared by the wrong-answer tests of every chapter.
    """
    chapter = exercise_id.split(".")[0]
    text = (REPO_DIR / "solutions" / f"{stem}.py").read_text()
    (tmp_path / f"{stem}.py").write_text(replace_function(text, function, source))
    done = run_grader("--target", str(tmp_path), "--chapter", chapter, json_path=tmp_path / "r.json")
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["id"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert results[exercise_id]["status"] == "failing", results[exercise_id]
    assert results[exercise_id]["earned"] == 0
    assert expected_words in results[exercise_id]["message"], results[exercise_id]["message"]
    others = [r for i, r in results.items() if i != exercise_id]
    assert all(r["status"] == "passed" for r in others), others
    return done


@pytest.mark.parametrize("case", sorted(WRONG_ANSWERS))
def test_a_plausible_wrong_answer_loses_points_with_an_actionable_message(case, tmp_path):
    done = assert_wrong_answer_loses_points(*WRONG_ANSWERS[case], tmp_path)
    expected_words = WRONG_ANSWERS[case][-1]
    assert "failing" in done.stdout and expected_words in done.stdout


def test_a_file_that_does_not_import_is_failing_not_a_crash(tmp_path):
    (tmp_path / f"{CH01}.py").write_text("import numpy as np\ndef stable_softmax(x:\n")
    done = run_grader("--target", str(tmp_path), "--chapter", "1", json_path=tmp_path / "r.json")
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "r.json").read_text())
    assert {r["status"] for r in results} == {"failing"}
    assert "SyntaxError" in results[0]["message"]


def test_unknown_chapter_is_a_usage_error():
    done = run_grader("--chapter", "99")
    assert done.returncode == 2 and "no exercises in chapter(s) [99]" in done.stderr


def test_a_test_that_hangs_is_stopped_by_the_per_test_timeout(tmp_path):
    text = (REPO_DIR / "solutions" / f"{CH01}.py").read_text()
    hanging = replace_function(text, "stable_logsumexp", '''
def stable_logsumexp(x, axis=-1):
    while True:
        pass
''')
    (tmp_path / f"{CH01}.py").write_text(hanging)
    done = run_grader("--target", str(tmp_path), "--chapter", "1", "--timeout", "2",
                      json_path=tmp_path / "r.json")
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["id"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert results["1.3"]["status"] == "failing" and "Timeout" in results["1.3"]["message"]
    assert results["1.1"]["status"] == "passed"
