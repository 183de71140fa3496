"""Graded tests for chapter 16: the packed-document mask, classifying the tiles of a mask,
tanh soft-capping with its derivative.

Every returned array is checked whole against a reference written here, with the reference's
shape, dtype and tolerance (:mod:`attention_scratch.course.checks`).
"""
import numpy as np
import pytest

from attention_scratch.course.checks import check_close, check_equal, expect_tuple
from attention_scratch.testing import warnings_as_failures


@pytest.fixture(scope="module")
def ch(load_target):
    return load_target("ch16_programmable_attention")


# Exercise 16.1 ------------------------------------------------------------------------------------


def _document_keep(doc_ids, q, kv, is_causal):
    """The reference, pair by pair."""
    q, kv = np.broadcast_arrays(q, kv)
    out = np.zeros(q.shape, dtype=bool)
    for idx in np.ndindex(q.shape):
        i, j = int(q[idx]), int(kv[idx])
        out[idx] = doc_ids[i] == doc_ids[j] and (j <= i or not is_causal)
    return out


DOCS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])  # five documents packed into 12 tokens


@pytest.mark.exercise("16.1")
@pytest.mark.parametrize("is_causal", [True, False])
def test_document_keep_on_the_whole_grid(ch, is_causal):
    q, kv = np.arange(12)[:, None], np.arange(12)[None, :]
    check_equal(ch.document_keep(DOCS, q, kv, is_causal=is_causal),
                _document_keep(DOCS, q, kv, is_causal),
                what=f"document_keep on the (12, 12) grid, is_causal={is_causal} (a query sees "
                     "the keys of its own document" + (", not after itself)" if is_causal
                                                       else ", before and after it)"))


@pytest.mark.exercise("16.1")
def test_document_keep_is_causal_by_default_and_takes_one_tile(ch, rng):
    docs = np.sort(rng.integers(0, 6, size=40))
    q, kv = np.arange(16, 24)[:, None], np.arange(8, 24)[None, :]  # one 8 x 16 tile
    check_equal(ch.document_keep(docs, q, kv), _document_keep(docs, q, kv, True),
                what="document_keep on a tile of queries 16..23 and keys 8..23, default "
                     "is_causal (True)")


@pytest.mark.exercise("16.1")
def test_document_keep_does_not_assume_sorted_ids(ch):
    docs = np.array([3, 3, 1, 1, 1, 3, 0])  # document 3 appears twice: ids, not boundaries
    q, kv = np.arange(7)[:, None], np.arange(7)[None, :]
    check_equal(ch.document_keep(docs, q, kv, is_causal=False),
                _document_keep(docs, q, kv, False),
                what="document_keep where one id appears in two places (same id = same document)")


# Exercise 16.2 ------------------------------------------------------------------------------------


def _classify(keep, bq, bk):
    """The reference, tile by tile, with the padding PyTorch applies."""
    *lead, L, S = keep.shape
    nq, nk = -(-L // bq), -(-S // bk)
    out = np.zeros((*lead, nq, nk), dtype=np.int8)
    for idx in np.ndindex(*lead, nq, nk):
        *b, r, c = idx
        tile = keep[(*b, slice(r * bq, r * bq + bq), slice(c * bk, c * bk + bk))]
        n = int(tile.sum())
        out[idx] = 0 if n == 0 else (2 if n == bq * bk else 1)
    return out


@pytest.mark.exercise("16.2")
def test_classify_tiles_of_a_causal_mask(ch):
    keep = np.tril(np.ones((16, 16), dtype=bool))
    check_equal(ch.classify_tiles(keep, 4, 4), _classify(keep, 4, 4),
                what="the tiles of a 16 x 16 causal mask with 4 x 4 tiles (0 skip, 1 partial, "
                     "2 full)")


@pytest.mark.exercise("16.2")
@pytest.mark.parametrize("L,S,bq,bk", [(10, 13, 4, 5), (7, 7, 3, 2), (5, 9, 8, 16)])
def test_classify_ragged_tiles_with_leading_axes(ch, rng, L, S, bq, bk):
    keep = rng.random((2, 3, L, S)) < 0.5
    keep[0, 0] = True  # everything kept: only the whole tiles are full
    keep[0, 1] = False  # nothing kept
    check_equal(ch.classify_tiles(keep, bq, bk), _classify(keep, bq, bk),
                what=f"the tiles of a (2, 3, {L}, {S}) mask with {bq} x {bk} tiles; a short last "
                     "tile counts its missing pairs as not kept, so it is never full (2)")


# Exercise 16.3 ------------------------------------------------------------------------------------


def _soft_cap(score, cap):
    s = np.asarray(score, dtype=np.float64)
    capped = cap * np.tanh(s / cap)
    return capped, 1.0 / np.cosh(s / cap) ** 2 if np.all(np.abs(s / cap) < 300) else None


@pytest.mark.exercise("16.3")
@pytest.mark.parametrize("cap", [1.0, 2.5, 50.0])
def test_soft_cap_scores_and_derivative(ch, rng, cap):
    score = rng.standard_normal((2, 3, 4, 5)) * 3
    got = expect_tuple(ch.soft_cap_scores(score, cap), 2, what="soft_cap_scores")
    capped, derivative = _soft_cap(score, cap)
    check_close(got[0], capped, what=f"cap · tanh(score / cap), cap = {cap}")
    check_close(got[1], derivative,
                what=f"the derivative of cap · tanh(score / cap) with respect to score, cap = "
                     f"{cap}: 1 - tanh(score / cap)^2")


@pytest.mark.exercise("16.3")
def test_soft_cap_scores_against_central_differences(ch, rng):
    score = rng.uniform(-6, 6, size=50)
    eps = 1e-6
    plus = expect_tuple(ch.soft_cap_scores(score + eps, 2.0), 2)[0]
    minus = expect_tuple(ch.soft_cap_scores(score - eps, 2.0), 2)[0]
    derivative = expect_tuple(ch.soft_cap_scores(score, 2.0), 2)[1]
    check_close(derivative, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8,
                what="the derivative against central differences of your capped scores")


@pytest.mark.exercise("16.3")
def test_soft_cap_scores_keeps_float32_and_does_not_overflow(ch):
    score = np.array([[-1e30, -1e4, -1.0, 0.0], [0.5, 800.0, 1e4, 3e38]], dtype=np.float32)
    with warnings_as_failures("soft_cap_scores overflowed: tanh(x) is already bounded; "
                              "exp or cosh of a large score is not"):
        got = expect_tuple(ch.soft_cap_scores(score, 5.0), 2, what="soft_cap_scores")
    t = np.tanh(score.astype(np.float64) / 5.0)
    check_close(got[0], (5.0 * t).astype(np.float32),
                what="cap · tanh(score / cap) of float32 scores up to ±3e38 (float32 out)")
    check_close(got[1], (1.0 - t * t).astype(np.float32),
                what="the derivative of float32 scores up to ±3e38 (float32 out, 0 far out)")
