"""The ``"numba"`` backend: flash attention as parallel Numba kernels on the CPU (chapter 12).

:mod:`.cpu` is the backend (the public signatures); :mod:`.forward` and :mod:`.backward` are
the kernels, :mod:`.tiles` the per-tile loops and block arithmetic, :mod:`.exp` the
vectorisable exponential. Nothing here imports Numba until a kernel is first used.
"""
