"""Backend dispatch for the flash attention kernels: ``"numpy" | "numba" | "cupy" | "auto"``.

The NumPy reference lives in :mod:`attention_scratch.flash`. Each accelerated backend is a
module that can be imported without its optional dependency and follows
:class:`~attention_scratch.backends.protocol.FlashBackend`:

* ``"numba"``: :mod:`attention_scratch.backends.numba.cpu` (kernels in ``backends/numba/``);
* ``"cupy"``: :mod:`attention_scratch.backends.cuda.gpu` (kernels, launch planning, the CPU
  emulation and the compile checks in ``backends/cuda/``).

Modules are imported on first use: ``import attention_scratch`` never imports Numba or CuPy.
Backends take their arguments from :mod:`attention_scratch.contract` and never import the
chapter modules, so the dispatch cannot form an import cycle.

Errors: an unknown name raises ``ValueError``; a known backend that cannot run
here raises :class:`BackendUnavailable` (a ``RuntimeError``: the name is right,
the machine lacks something) with the reason. ``"auto"`` never raises it: it
picks CuPy for CuPy arrays when CuPy is usable, otherwise Numba when usable,
otherwise NumPy.
"""
import importlib

from ..contract import DEFAULT_BLOCK, attention_args

BACKENDS = ("numpy", "numba", "cupy", "auto")
MODULES = {"numba": "attention_scratch.backends.numba.cpu",
           "cupy": "attention_scratch.backends.cuda.gpu"}
_MISSING_MODULE_REASONS = {
    "numba": "the Numba backend module attention_scratch/backends/numba/cpu.py is missing",
    "cupy": "the 'cupy' backend needs CuPy and a CUDA GPU, and this build has no CuPy kernels "
            "(attention_scratch/backends/cuda/gpu.py is missing)",
}


class BackendUnavailable(RuntimeError):
    """A known backend cannot run on this machine;
    the message says why (missing package, no GPU)."""


def check_backend_name(backend):
    """Raise ``ValueError`` unless ``backend`` is one of :data:`BACKENDS`."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; "
                         f"got {backend!r}")


def _import(name):
    """The backend module for ``name``, or a :class:`BackendUnavailable` if its file is missing."""
    full = MODULES[name]
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as err:
        if err.name == full:
            raise BackendUnavailable(f"backend {name!r} is unavailable: "
                                     f"{_MISSING_MODULE_REASONS[name]}") from None
        raise


def unavailable_reason(name):
    """``None`` when backend ``name`` can run here, else a sentence saying why not."""
    check_backend_name(name)
    if name in ("numpy", "auto"):
        return None
    try:
        module = _import(name)
    except BackendUnavailable as err:
        return str(err)
    return module.unavailable_reason()


def available_backends():
    """``{name: reason or None}`` for the three concrete backends."""
    return {name: unavailable_reason(name) for name in ("numpy", "numba", "cupy")}


def _is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def get_backend(backend, *arrays):
    """The module that implements ``backend`` for these input arrays, or ``None`` for NumPy.

    ``"auto"`` looks at ``arrays``: CuPy arrays go to the CuPy backend when it is
    usable; otherwise Numba is used when usable, else NumPy.
    """
    check_backend_name(backend)
    if backend == "numpy":
        return None
    if backend == "auto":
        if any(_is_cupy(a) for a in arrays):
            return _import("cupy") if unavailable_reason("cupy") is None else None
        return _import("numba") if unavailable_reason("numba") is None else None
    module = _import(backend)
    reason = module.unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"backend {backend!r} is unavailable: {reason}")
    return module


def resolve_name(backend, *arrays):
    """The concrete backend name ``get_backend`` would run:
    ``"numpy"``, ``"numba"`` or ``"cupy"``."""
    module = get_backend(backend, *arrays)
    if module is None:
        return "numpy"
    return next(name for name, full in MODULES.items() if module.__name__ == full)


def tile_plan(query, key, value, is_causal=False, scale=None, enable_gqa=False, *,
              causal_align="top_left", window=None, block_q=DEFAULT_BLOCK, block_k=DEFAULT_BLOCK,
              backward=False, backend="numpy"):
    """The :class:`~attention_scratch.contract.TilePlan` that ``backend`` runs for these arguments.

    The NumPy and Numba backends run the tiles requested; the CUDA backend treats
    ``block_q`` and ``block_k`` as requests (see :func:`attention_scratch.flash_attention`).
    ``backward=True`` asks about :func:`attention_scratch.flash_attention_backward`.
    """
    impl = get_backend(backend, query, key, value)
    kw = dict(causal_align=causal_align, window=window, block_q=block_q, block_k=block_k)
    if impl is None:
        return attention_args(query, key, value, is_causal, scale, enable_gqa, **kw).plan
    return impl.tile_plan(query, key, value, is_causal, scale, enable_gqa, backward=backward, **kw)
