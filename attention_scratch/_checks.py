"""Argument validation shared by the whole library.

Every check raises ``TypeError`` or ``ValueError`` with a message that names the
argument and the shapes or dtypes it saw, so a reader never has to decode a bare
NumPy broadcasting traceback.

The scalar arguments of attention (``scale``, ``is_causal`` and the other flags, block
sizes, ``dropout_p``) are checked here and only here, by :func:`check_scale`,
:func:`check_flag`, :func:`check_positive_int` and :func:`check_dropout_p`; every entry
point calls them. A value of the wrong kind raises ``TypeError`` (a string, a bool where
a number is meant, a complex number, an array), a value out of range ``ValueError``;
nothing is coerced silently.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    CuPy is never imported here: an array is recognised by its type's module, so
    ``import attention_scratch`` works on machines without CuPy.
    """
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy

            return cupy
    return np


def to_host(x):
    """``x`` as a NumPy array: a CuPy array is copied to the host (``.get()``), anything else
    goes through ``np.asarray``."""
    return x.get() if array_module(x) is not np else np.asarray(x)


def as_float_array(x, name):
    """Return ``x`` as a floating-point array (integers and bools become float64).

    Raises ``TypeError`` for complex, object or string input.
    """
    xp = array_module(x)
    x = xp.asarray(x)
    if x.dtype.kind in "biu":
        return x.astype(xp.float64)
    # e.g. big-endian data from a file: same numbers
    if x.dtype.kind == "f" and not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must hold real floating-point numbers (float16, float32 or float64); "
            f"got dtype {x.dtype}"
        )
    return x


def check_axis(axis, ndim, name="axis"):
    """Return ``axis`` as a non-negative int, or raise if it is out of range."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{name} must be an int; got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimensions")
    return int(axis) % ndim


def check_bool_mask(mask, target_shape, name):
    """Return ``mask`` as a boolean array, checking it broadcasts to ``target_shape``."""
    xp = array_module(mask)
    mask = xp.asarray(mask)
    if mask.dtype != xp.bool_:
        raise TypeError(
            f"{name} must be a boolean array (True = may attend); got dtype {mask.dtype}"
        )
    check_broadcastable(mask.shape, target_shape, name)
    return mask


def check_broadcastable(shape, target_shape, name):
    """Raise ``ValueError`` unless ``shape`` broadcasts to exactly ``target_shape``."""
    try:
        out = np.broadcast_shapes(tuple(shape), tuple(target_shape))
    except ValueError:
        out = None
    if out != tuple(target_shape):
        raise ValueError(
            f"{name} of shape {tuple(shape)} does not broadcast to {tuple(target_shape)}"
        )


def check_ndim(x, name, min_ndim, what=""):
    """Raise ``ValueError`` if ``x`` has fewer than ``min_ndim`` dimensions."""
    if x.ndim < min_ndim:
        hint = f" ({what})" if what else ""
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions{hint}; got shape {tuple(x.shape)}"
        )


def check_positive_int(value, name):
    """Return ``value`` as an int, or raise ``ValueError`` if it is not a positive integer
    (block sizes)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_nonnegative_int(value, name):
    """Return ``value`` as an int, or raise ``ValueError`` unless it is an integer
    >= 0 (a length)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def _is_real_number(value):
    """True for Python and NumPy real scalars (ints and floats);
    False for bools, strings, arrays."""
    return (isinstance(value, (numbers.Real, np.floating, np.integer))
            and not isinstance(value, (bool, np.bool_)))


def check_scale(scale, name="scale"):
    """Return ``scale`` as a float (``None`` stays ``None``: the default ``1/sqrt(E)``).

    Raises ``TypeError`` unless it is a real number (a bool, a string, a complex number
    or an array is refused) and ``ValueError`` unless it is finite.
    """
    if scale is None:
        return None
    if not _is_real_number(scale):
        shape = f" of shape {np.shape(scale)}" if isinstance(scale, np.ndarray) else ""
        raise TypeError(f"{name} must be a real number or None (meaning 1/sqrt(E)); "
                        f"got {type(scale).__name__}{shape} {scale!r}")
    if not np.isfinite(scale):
        raise ValueError(f"{name} must be a finite real number or None "
                         f"(meaning 1/sqrt(E)); got {scale!r}")
    return float(scale)


def check_flag(value, name):
    """Return ``value`` as a bool; raise ``TypeError`` unless it is ``True``/``False``
    (or a NumPy bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False); got {value!r}")
    return bool(value)


def check_dropout_p(p, name="dropout_p"):
    """Return the dropout probability as a float: a real number in ``[0, 1]``."""
    if not _is_real_number(p):
        raise TypeError(f"{name} must be a real number in [0, 1]; got {type(p).__name__} {p!r}")
    if not 0 <= p <= 1:  # False for NaN as well
        raise ValueError(f"{name} must be a number in [0, 1]; got {p!r}")
    return float(p)
