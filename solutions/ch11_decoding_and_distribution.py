"""Chapter 11 solutions: Decoding and distribution.

Written by `make exercises` from the library source; do not edit.
Grade them with: python -m attention_scratch.grade --solutions --chapter 11
"""


import numpy as np

from attention_scratch.online_softmax import check_partials


# Exercise 11.1 (3 points): the split-KV combine
def combine_splits(outs, lses):
    """Combine the partial results of ``R`` disjoint key chunks into attention over all keys.

    ``outs[p]`` is the normalised output over chunk ``p`` and ``lses[p]`` its
    log-sum-exp (``+inf`` where a row had no key in that chunk, output 0 there).
    With ``lse = log Σ_p exp(lses[p])`` the result is
    ``Σ_p exp(lses[p] - lse)·outs[p]``. Subtract the maximum over chunks before
    exponentiating (any chunk may hold a row's largest lse); a row with no key in
    any chunk gives output 0 and lse ``+inf``. NaN in a chunk that is not empty
    (its output or its lse) reaches the entries it feeds (a NaN lse, the whole
    row and its lse): never hide it. The results keep the dtype of the inputs
    (float32 chunks give float32).

    Shapes: ``outs`` (R, ..., Ev), ``lses`` (R, ...); returns ``out`` (..., Ev) and ``lse`` (...).
    """
    check_partials(outs=outs, lses=lses)
    # HINT: merge_attention (exercise 8.3) for R parts at once: the max and the sums run over axis 0
    logs = np.where(np.isposinf(lses), -np.inf, lses)  # (R, ...): log of each chunk's mass
    top = logs.max(axis=0)  # (...)
    shift = np.where(np.isneginf(top), 0.0, top)  # (...): finite
    weights = np.exp(logs - shift)  # (R, ...): 0 for empty chunks
    total = weights.sum(axis=0)  # (...)
    safe = np.where(total == 0, 1.0, total)  # (...): NaN stays NaN
    out = (weights[..., None] * outs).sum(axis=0) / safe[..., None]  # (..., Ev)
    return out, np.where(total == 0, np.inf, shift + np.log(safe))
