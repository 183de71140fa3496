"""Chapter 11 exercises: Decoding and distribution.

Replace each `raise NotImplementedError(...)` with your code, then grade:

    make grade CHAPTER=11
    python -m attention_scratch.grade --chapter 11

This file was written by `make exercises` from the library; your edits are
never overwritten. The answers are in solutions/ and in the book.
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
    raise NotImplementedError("Exercise 11.1: the split-KV combine")
