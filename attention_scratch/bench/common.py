"""What every benchmark shares: one timer, one FLOP count, one relative error, one commit.

The CPU benchmark (:mod:`~attention_scratch.bench.cpu`) and the GPU benchmark
(:mod:`~attention_scratch.bench.gpu`) both use these, so
their numbers are counted the same way.
"""
import subprocess
import time
from pathlib import Path

import numpy as np


def attention_flops(B, H, L, S, E, causal=False, backward=False):
    """FLOPs of one attention call: ``4·B·H·L·S·E``, halved if causal, ×2.5 for the backward pass.

    The count of the FlashAttention papers: two ``(L, S, E)`` matrix products forward,
    five backward (two of them recomputing the forward's), nothing for the softmax.
    """
    flops = 4.0 * B * H * L * S * E * (0.5 if causal else 1.0)
    return flops * (2.5 if backward else 1.0)


def seconds(fn, sync=None, calls=1):
    """Wall-clock seconds per call of ``calls`` back-to-back calls of ``fn()``.

    ``sync()``, if given, runs before the first call and after the last (a GPU's
    synchronisation), so that work the calls left queued on a device is counted;
    in between the host's work overlaps the device's.
    """
    if sync is not None:
        sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if sync is not None:
        sync()
    return (time.perf_counter() - start) / calls


def relative_error(got, ref):
    """``max |got - ref| / max |ref|`` in float64; for tuples of arrays, the worst of the pairs."""
    if isinstance(ref, tuple):
        return max(relative_error(a, b) for a, b in zip(got, ref))
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def git_commit():
    """The commit of this checkout, ``+dirty`` when tracked files have uncommitted changes;
    ``None`` outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=here, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=here, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None
