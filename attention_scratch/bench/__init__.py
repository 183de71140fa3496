"""Benchmarks: every attention path timed against PyTorch, after a check against the oracle.

* :mod:`.cpu`: naive NumPy, flash NumPy, flash Numba and PyTorch SDPA in one process
  (chapter 12; ``python -m attention_scratch.bench``, ``make bench``);
* :mod:`.gpu`: the CUDA kernels against PyTorch's flash and math SDPA on one GPU
  (chapter 13; ``python -m attention_scratch.bench --gpu``);
* :mod:`.methods`: the CPU contenders and the reference they are checked against;
* :mod:`.common`: the one timer, FLOP count, relative error and commit helper both use.
"""
