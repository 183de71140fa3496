"""The grader judges answers right: plausible wrong ones lose their points, valid ones get them all.

Each entry of ``tests/answers/chNN_*.py`` is one function. It replaces the
reference answer in a copy of the chapter's solutions file, and only its own
exercise is graded, in the grader's own processes, as a student's would be.
A wrong answer must lose every point with a message holding the entry's words;
a valid answer written differently (loops, einsum, broadcasting) must pass.
"""
import importlib.util
import re

import pytest

from attention_scratch.course.exercises import CHAPTERS, collect
from attention_scratch.course.grader import grade_exercise
from attention_scratch.course.repo import find_repository

REPO = find_repository()
EXERCISES = {ex.id: ex for ex in collect()}


def _load(path):
    spec = importlib.util.spec_from_file_location(f"answers_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entries(kind):
    found = []
    for path in sorted((REPO / "tests" / "answers").glob("ch*.py")):
        for entry in getattr(_load(path), kind):
            found.append(pytest.param(*entry, id=f"{entry[0]}: {entry[1]}"))
    return found


def replace_function(text, name, new_source):
    """Swap the top-level function ``name`` of a chapter file's text for ``new_source``."""
    pattern = re.compile(rf"^def {name}\(.*?(?=^# Exercise |\Z)", re.S | re.M)
    assert pattern.search(text), f"function {name} not found"
    return pattern.sub(lambda _: new_source.strip() + "\n\n\n", text, count=1)


def grade_answer(exercise_id, source, tmp_path):
    exercise = EXERCISES[exercise_id]
    stem = CHAPTERS[exercise.chapter]
    text = (REPO / "solutions" / f"{stem}.py").read_text()
    (tmp_path / f"{stem}.py").write_text(replace_function(text, exercise.function_name, source))
    return grade_exercise(exercise, tmp_path, REPO)


@pytest.mark.parametrize("exercise_id,what,words,source", _entries("WRONG"))
def test_a_wrong_answer_loses_its_points_with_a_message_that_says_why(exercise_id, what, words,
                                                                      source, tmp_path):
    result = grade_answer(exercise_id, source, tmp_path)
    assert result["status"] == "failing" and result["earned"] == 0, result
    assert words in result["message"], result["message"]


@pytest.mark.parametrize("exercise_id,what,source", _entries("VALID"))
def test_a_valid_answer_written_differently_gets_full_marks(exercise_id, what, source, tmp_path):
    result = grade_answer(exercise_id, source, tmp_path)
    assert result["status"] == "passed", result


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES,
                                               key=lambda i: [int(p) for p in i.split(".")]))
def test_every_exercise_has_two_wrong_answers_and_a_valid_alternative(exercise_id):
    wrong = [e for e in _entries("WRONG") if e.values[0] == exercise_id]
    valid = [e for e in _entries("VALID") if e.values[0] == exercise_id]
    assert len(wrong) >= 2, (f"exercise {exercise_id} has {len(wrong)} wrong answers in "
                             "tests/answers/; at least 2")
    assert len(valid) >= 1, (f"exercise {exercise_id} has no valid alternative answer in "
                             "tests/answers/")
