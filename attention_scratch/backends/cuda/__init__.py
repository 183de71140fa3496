"""The ``"cupy"`` backend: raw CUDA kernels for NVIDIA GPUs, and everything around them
(chapter 13).

* the kernels: ``*.cu`` and ``*.cuh`` in this folder; the numbers they share with the
  Python side in ``flash_constants.cuh``, read by :mod:`.constants`;
* :mod:`.gpu`: the backend (CuPy, NVRTC); :mod:`.emulator`: the same kernels compiled with
  ``g++`` and run on the CPU (``emulation/``), for tests without a GPU;
* :mod:`.frontend` and :mod:`.driver`: argument handling and launch planning, shared by both;
* :mod:`.compile_check`: ``nvcc`` and NVRTC compile checks;
* :mod:`.kernel_model` and :mod:`.mma_layout`: the kernels' arithmetic and the ``mma.sync``
  fragment layout in NumPy, for reading and for the exercises.

Nothing here imports CuPy at import time.
"""
