"""One grading session inside pytest: a student process per exercise, one time budget each.

``tests/exercises/conftest.py`` makes one :class:`GradingSession` for the run. The
``ch`` fixture of a graded test file is the session's :class:`RemoteModule` for
that chapter; which exercise a call belongs to comes from the running test's
``@pytest.mark.exercise("N.M")``, so each exercise's calls go to its own process,
started at its first call and stopped at the end of the session.
"""
import importlib
import inspect
import tempfile
from pathlib import Path

from .exercises import CHAPTERS, collect
from .remote import RemoteModule, StudentProcess

DEFAULT_BUDGET = 60.0  # seconds of wall-clock time per exercise, all its tests together
LAST_SESSION = None  # the session of this process (the checker reads the copy verdicts from it)


def library_spec(exercise):
    """``"attention_scratch.sdpa:scaled_scores"``:
    where the library keeps the exercise's function."""
    origin = Path(exercise.origin.rsplit(":", 1)[0]).resolve()
    package = Path(__file__).resolve().parent.parent
    parts = origin.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts) + ":" + exercise.function_name


def parameter_names(spec):
    """The library function's parameter names, in order (a Numba function's too)."""
    module_name, _, name = spec.partition(":")
    function = getattr(importlib.import_module(module_name), name)
    function = getattr(function, "py_func", function)
    return [p.name for p in inspect.signature(function).parameters.values()]


class _ChapterModule(RemoteModule):
    def __init__(self, session, stem):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_stem", stem)
        object.__setattr__(self, "_process", None)

    def process_for(self, name):
        return self._session.current_process(self._stem)

    def harness(self, spec, *args, **kwargs):
        process = self._session.current_process(self._stem)
        return process.call(None, args, kwargs, harness=str(self._session.resolve_harness(spec)))


class GradingSession:
    """Student processes of one target folder, keyed by exercise id."""

    def __init__(self, target_dir, repo_dir, budget=DEFAULT_BUDGET, solutions_dir=None,
                 log_dir=None):
        self.target_dir = Path(target_dir)
        self.repo_dir = Path(repo_dir)
        self.budget = float(budget)
        self.solutions_dir = Path(solutions_dir or self.repo_dir / "solutions")
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="attention_scratch_grading_"))
        self.exercises = {ex.id: ex for ex in collect()}
        self.harnesses = sorted((self.repo_dir / "tests" / "exercises").glob("harness_*.py"))
        self.processes = {}
        self.current = None
        global LAST_SESSION
        LAST_SESSION = self

    def enter(self, exercise_id):
        """The test about to run belongs to ``exercise_id``."""
        if exercise_id not in self.exercises:
            raise KeyError(f"no exercise {exercise_id} in the library")
        if exercise_id != self.current and self.current in self.processes:
            self.processes[self.current].stop()  # one student process alive at a time
        self.current = exercise_id

    def module(self, stem):
        path = self.target_dir / f"{stem}.py"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run `make exercises` to create it")
        return _ChapterModule(self, stem)

    def current_process(self, stem):
        if self.current is None:
            raise RuntimeError("a graded test must carry @pytest.mark.exercise('N.M')")
        exercise = self.exercises[self.current]
        if CHAPTERS[exercise.chapter] != stem:
            raise RuntimeError(f"exercise {exercise.id} is not in {stem}.py")
        process = self.processes.get(exercise.id)
        if process is None:
            spec = library_spec(exercise)
            process = StudentProcess(
                self.target_dir / f"{stem}.py", exercise.function_name, budget=self.budget,
                library=spec, solutions_dir=self.solutions_dir, writes=exercise.writes,
                output_path=self.log_dir / f"{exercise.id}.out", signature=parameter_names(spec),
                scratch=self.log_dir / f"scratch-{exercise.id}", readable=self.harnesses,
                cache_dir=self.repo_dir / ".cache" / "grading-numba")
            self.processes[exercise.id] = process
        return process

    def resolve_harness(self, spec):
        path, _, name = spec.partition(":")
        full = (self.repo_dir / path).resolve()
        return f"{full}:{name}"

    def copied(self, exercise_id):
        process = self.processes.get(exercise_id)
        return process.copied if process is not None else None

    def close(self):
        for process in self.processes.values():
            process.stop()
