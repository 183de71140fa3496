"""Checks for graded tests: what a student's function returned, judged against a reference.

Unlike :func:`attention_scratch.testing.assert_close`, which takes its tolerance
from the array under test, these take everything from the *reference*: the
type (a NumPy array, not a list or ``None``), the shape, the dtype and the
tolerance for that dtype. Every message says what was expected in words a
student can act on.
"""
import numpy as np

from ..testing import TOLERANCES, assert_close
from .wire import Unsupported

_SHOWN = 5


def _kind(value):
    if value is None:
        return "None (did the function forget to `return` its result?)"
    if isinstance(value, Unsupported):
        return value.description
    if isinstance(value, (list, tuple)):
        return f"a Python {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__module__}.{type(value).__qualname__}".replace("builtins.", "")


def expect_array(got, *, shape=None, dtype=None, what="the result"):
    """``got`` must be a NumPy array (of ``shape`` and ``dtype`` when given); returns it."""
    if not isinstance(got, np.ndarray):
        hint = " Return a NumPy array (build it with NumPy operations, or np.asarray(...))." \
            if isinstance(got, (list, tuple)) else ""
        raise AssertionError(f"{what}: expected a NumPy array, got {_kind(got)}.{hint}")
    if shape is not None and got.shape != tuple(shape):
        raise AssertionError(f"{what}: wrong shape: got {got.shape}, expected {tuple(shape)}")
    if dtype is not None and got.dtype != np.dtype(dtype):
        why = ("a boolean mask (True = may attend), not numbers" if np.dtype(dtype) == np.bool_ else
               "the result keeps the dtype of the inputs: no cast to another precision")
        raise AssertionError(f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)} ({why})")
    return got


def expect_tuple(got, length, what="the result"):
    """``got`` must be a tuple (or list) of ``length`` items; returns it as a tuple."""
    if not isinstance(got, (tuple, list)) or len(got) != length:
        raise AssertionError(f"{what}: expected a tuple of {length} items, got {_kind(got)}")
    return tuple(got)


def check_close(got, expected, *, what="the result", rtol=None, atol=None):
    """``got`` equals the reference ``expected`` within the tolerance of ``expected``'s dtype.

    ``got`` must be a NumPy array of the reference's shape and dtype; NaN must
    match NaN and infinities must match exactly.
    """
    expected = np.asarray(expected)
    expect_array(got, shape=expected.shape, dtype=expected.dtype, what=what)
    default_rtol, default_atol = TOLERANCES.get(expected.dtype, TOLERANCES[np.dtype(np.float64)])
    assert_close(got, expected, rtol=default_rtol if rtol is None else rtol,
                 atol=default_atol if atol is None else atol, what=what)


def check_equal(got, expected, *, what="the result"):
    """``got`` equals ``expected`` exactly (boolean masks, integer indices),
    with its shape and dtype."""
    expected = np.asarray(expected)
    expect_array(got, shape=expected.shape, dtype=expected.dtype, what=what)
    differ = np.argwhere(got != expected)
    if differ.size:
        lines = [f"{what}: {len(differ)} of {expected.size} entries differ; "
                 "first ones (index: got vs expected):"]
        for idx in differ[:_SHOWN]:
            i = tuple(int(k) for k in idx)
            lines.append(f"    {i}: {got[i].item()!r} vs {expected[i].item()!r}")
        raise AssertionError("\n".join(lines))


def check_scalar(got, expected, *, what="the result", rtol=1e-12, atol=0.0):
    """``got`` is a number equal to ``expected`` (an ``int`` exactly, a float within tolerance)."""
    if isinstance(got, np.ndarray) and got.ndim == 0:
        got = got[()]
    if not isinstance(got, (int, float, np.integer, np.floating)) or isinstance(got, bool):
        raise AssertionError(f"{what}: expected a number, got {_kind(got)}")
    if isinstance(expected, (int, np.integer)) and not isinstance(expected, bool):
        if not isinstance(got, (int, np.integer)) or got != expected:
            raise AssertionError(f"{what}: got {got!r}, expected {expected!r}")
        return
    if not abs(float(got) - float(expected)) <= atol + rtol * abs(float(expected)):
        raise AssertionError(f"{what}: got {float(got)!r}, expected {float(expected)!r}")
