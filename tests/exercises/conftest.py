"""Graded tests: the student's chapter file runs in a process of its own, one per exercise.

``load_target("ch04_scaled_dot_product")`` returns a stand-in for that file of the
selected target (``exercises/`` by default): calling ``ch.scaled_scores(...)`` runs
the student's function in the process of the exercise whose test is running
(its ``@pytest.mark.exercise``), under that exercise's time budget. No student
code is imported here, so none can change what the tests decide.
"""
from pathlib import Path

import pytest

from attention_scratch.course.session import GradingSession

REPO = Path(__file__).resolve().parents[2]


def _target_dir(config):
    target = config.getoption("--target")
    if target in ("exercises", "solutions"):
        return REPO / target
    return Path(target).resolve()


@pytest.fixture(scope="session")
def grading_session(request):
    session = GradingSession(_target_dir(request.config), REPO,
                             budget=request.config.getoption("--exercise-budget"))
    yield session
    session.close()


@pytest.fixture(autouse=True)
def _current_exercise(request, grading_session):
    marker = request.node.get_closest_marker("exercise")
    if marker is not None:
        grading_session.enter(str(marker.args[0]))
    yield


@pytest.fixture(scope="session")
def load_target(grading_session):
    """``load_target(stem)``: the stand-in for the selected target's chapter file ``stem``.py."""
    return grading_session.module
