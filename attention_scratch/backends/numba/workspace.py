"""Scratch arrays of the Numba entry points, kept from one call to the next (chapter 12).

A call packs its operands for the register tiles (:mod:`.register_tile`) into fresh arrays:
at N = 2048 with eight heads the backward pass packs five of 4 MiB and sums its ``dQ`` in
8 MiB more. The first write to each fresh 4 KiB page is a page fault, which on the
virtual machine of chapter 12 costs microseconds: packing took 14 ms of a 175 ms backward
call, where the same packing into memory already written took under 2 ms. So the entry points
write their scratch into arrays kept here, one set per thread, reused while they are large
enough (what PyTorch's caching allocator does for its tensors). Nothing kept here is ever
returned to the caller. :func:`release` gives the memory back.
"""
import threading

import numpy as np

_local = threading.local()


def scratch(name, shape, dtype):
    """An array of ``shape`` and ``dtype``, its contents undefined: this thread's scratch
    ``name``, in the memory of the last call's when that is large enough."""
    pool = _local.__dict__.setdefault("pool", {})
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    held = pool.get(name)
    if held is None or held.nbytes < nbytes:
        held = pool[name] = np.empty(max(nbytes, dtype.itemsize), dtype=np.uint8)
    return held[:nbytes].view(dtype).reshape(shape)


def held_bytes():
    """Bytes of scratch this thread holds."""
    return sum(a.nbytes for a in _local.__dict__.get("pool", {}).values())


def release():
    """Let this thread's scratch go (the next call allocates afresh)."""
    _local.__dict__.pop("pool", None)
