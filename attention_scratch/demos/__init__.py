"""Runnable demonstrations of the library, each a program of its own.

* :mod:`.ring`: ring attention and split-KV decoding on MPI ranks, every rank checked against
  flash attention in one process (chapter 11):
  ``mpiexec -n 4 python -m attention_scratch.demos.ring``.
"""
