"""Backend dispatch for :func:`attention_scratch.flex_attention`: ``"numpy" | "numba" | "auto"``.

The NumPy kernels live in :mod:`attention_scratch.flex`; the Numba ones in
:mod:`attention_scratch.backends.numba.flex`, imported (and compiled) on first use. Like the
flash backends, the Numba module takes everything it needs as arguments and imports no chapter
module, so the dispatch cannot form an import cycle.
"""
import importlib

from . import BackendUnavailable, unavailable_reason

FLEX_BACKENDS = ("numpy", "numba", "auto")
NUMBA_FLEX = "attention_scratch.backends.numba.flex"


def get_flex_backend(backend):
    """The module running flex attention for ``backend``, or ``None`` for NumPy.

    An unknown name raises ``ValueError``; ``"numba"`` without Numba raises
    :class:`BackendUnavailable`; ``"auto"`` picks Numba when it can run, else NumPy.
    """
    if not isinstance(backend, str) or backend not in FLEX_BACKENDS:
        raise ValueError(f"backend must be one of {FLEX_BACKENDS} for flex_attention; got "
                         f"{backend!r} (the 'cupy' backend has no flex kernels)")
    if backend == "numpy":
        return None
    reason = unavailable_reason("numba")
    if reason is not None:
        if backend == "auto":
            return None
        raise BackendUnavailable(f"backend 'numba' is unavailable: {reason}")
    return importlib.import_module(NUMBA_FLEX)
