"""Grade an exercise from inside a notebook: ``grade("4.1", scaled_scores)``.

The function just defined in the notebook is written, with what it uses from
the notebook (its helper functions, the modules and library functions it
names, simple constants), into a chapter file of its own, and that file is
graded exactly as ``python -m attention_scratch.grade`` grades ``exercises/``:
in separate processes, under the exercise's time budget. The cell prints the
grader's own line for the exercise ("4.1  0/2  not started ...").
"""
import ast
import inspect
import tempfile
import textwrap
import types
from pathlib import Path

import numpy as np

from .exercises import CHAPTERS, collect
from .grader import grade_exercise, result_line
from .repo import PACKAGE_DIR, find_repository
from .session import DEFAULT_BUDGET

_CONSTANTS = (bool, int, float, complex, str, bytes, type(None))


def _plain(function):
    """The Python function behind a Numba dispatcher (or the function itself)."""
    return getattr(function, "py_func", function)


def _is_notebook_function(obj):
    obj = _plain(obj)
    return isinstance(obj, types.FunctionType) and obj.__module__ == "__main__"


def _names_used(source):
    """Every name a function's source reads (body, defaults, decorators, annotations)."""
    tree = ast.parse(source)
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def _is_constant(value, depth=0):
    if isinstance(value, _CONSTANTS):
        return True
    if isinstance(value, (tuple, list, frozenset)) and depth < 3:
        return all(_is_constant(v, depth + 1) for v in value)
    return False


def module_source(function, exercise):
    """A chapter file holding ``function`` (as the exercise's function) and what it needs.

    Returns ``(source, notes)``; ``notes`` name what could not be carried over.
    """
    imports = ["import numpy as np", *exercise.uses]
    definitions, notes, seen = [], [], set()

    def carry(fn):
        plain = _plain(fn)
        if id(plain) in seen:
            return
        seen.add(id(plain))
        source = textwrap.dedent(inspect.getsource(plain))
        for name in sorted(_names_used(source)):
            if name not in plain.__globals__ or name == plain.__name__:
                continue
            value = plain.__globals__[name]
            if isinstance(value, types.ModuleType):
                statement = (f"import {value.__name__}" if value.__name__ == name
                             else f"import {value.__name__} as {name}")
            elif _is_notebook_function(value):
                carry(value)
                continue
            elif isinstance(value, np.ufunc):
                statement = f"from numpy import {value.__name__} as {name}"
            elif (callable(value)
                  and getattr(_plain(value), "__module__", None) not in (None, "__main__")
                  and "." not in getattr(_plain(value), "__qualname__", ".")):
                origin = _plain(value)
                statement = f"from {origin.__module__} import {origin.__qualname__} as {name}"
            elif _is_constant(value):
                statement = f"{name} = {value!r}"
            else:
                notes.append(f"`{name}` ({type(value).__name__}) is defined elsewhere in the "
                             "notebook; the grader runs your function on its own: "
                             "define it inside the function or the exercise's cell")
                continue
            if statement not in imports:
                imports.append(statement)
        definitions.append(source)

    carry(function)
    if _plain(function).__name__ != exercise.function_name:
        definitions.append(f"{exercise.function_name} = {_plain(function).__name__}\n")
    return "\n".join(imports) + "\n\n\n" + "\n\n".join(definitions), notes


def _copied_reason(function, exercise):
    plain = _plain(function)
    try:
        origin = Path(inspect.getsourcefile(plain)).resolve()
    except (TypeError, OSError):
        return None
    if PACKAGE_DIR in origin.parents:
        return (f"{exercise.function_name} here is the library's own (from {origin.name}), "
                "not one defined in the notebook")
    return None


def grade(exercise_id, function, *, budget=DEFAULT_BUDGET, show=True):
    """Grade the notebook's ``function`` as exercise ``exercise_id`` and print the grader's line.

    With ``show=False`` nothing is printed and the result dict (status, earned,
    points, message) is returned instead.
    """
    exercises = {ex.id: ex for ex in collect()}
    if exercise_id not in exercises:
        raise ValueError(f"there is no exercise {exercise_id!r}; exercises are "
                         f"{', '.join(exercises)}")
    exercise = exercises[exercise_id]
    if not callable(function):
        raise TypeError(f"grade({exercise_id!r}, ...) needs the function itself, "
                        f"got {type(function).__name__}")
    reason = _copied_reason(function, exercise)
    notes = []
    if reason:
        result = dict(id=exercise.id, chapter=exercise.chapter, title=exercise.title,
                      points=exercise.points, earned=0, status="copied, not graded", message=reason,
                      function=exercise.function_name)
    else:
        source, notes = module_source(function, exercise)
        with tempfile.TemporaryDirectory(prefix="notebook_exercise_") as folder:
            (Path(folder) / f"{CHAPTERS[exercise.chapter]}.py").write_text(source)
            result = grade_exercise(exercise, Path(folder), find_repository(), budget)
    if not show:
        return result
    print(result_line(result))
    for line in result["message"].splitlines() + [f"note: {n}" for n in notes]:
        print(f"      | {line}")
    return None
