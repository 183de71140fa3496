"""Shared test configuration: Hypothesis profiles, the optional PyTorch oracle, grading targets."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=400, deadline=None)
# make fuzz: tests/test_fuzz.py repeats runs of this profile for FUZZ_SECONDS seconds.
settings.register_profile("fuzz", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_addoption(parser):
    parser.addoption(
        "--target",
        default=os.environ.get("ATTENTION_SCRATCH_TARGET", "exercises"),
        help="what the graded tests in tests/exercises import: 'exercises' (default), "
        "'solutions', or a folder holding chNN_*.py files",
    )
    parser.addoption(
        "--exercise-budget", type=float, default=60.0,
        help="seconds of wall-clock time each exercise's student code may run, "
             "all its tests together",
    )


@pytest.fixture
def rng():
    """A fresh, seeded generator for each test (no global seeding anywhere)."""
    return np.random.default_rng(20141)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, the test-only oracle; tests that need it skip with a reason when it is absent."""
    return pytest.importorskip("torch", reason="PyTorch (test-only oracle) is not installed; "
                               "`make test` installs it")


@pytest.fixture(scope="session")
def cuda_emulation_library():
    """The g++ build of the CUDA emulation, made once per test run (per xdist worker) before the
    first test that needs it, so that no test's own time includes the compiler's. The library is
    cached on disk by source digest, so a later run only loads it. Skips with the reason when
    there is no C++ compiler."""
    from attention_scratch.backends.cuda import emulator

    reason = emulator.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    return emulator.library()
