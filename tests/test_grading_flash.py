"""Plausible wrong answers to the exercises of chapters 8-11 lose their points, with a message that says why.

Same procedure as tests/test_grading.py (whose helper is reused): a solutions file
with one function swapped for a common mistake must be graded "failing" for that
exercise only, with a message naming the mistake.
"""

import re

import pytest
from test_grading import assert_wrong_answer_loses_points

from attention_scratch.exercise_tools import REPO_DIR

CH08, CH09 = "ch08_online_softmax", "ch09_flash_forward"
CH10, CH11 = "ch10_flash_backward", "ch11_decoding_and_distribution"


def with_mistake(stem, function, right, wrong):
    """The solution of ``function`` with the one line ``right`` replaced by ``wrong``."""
    text = (REPO_DIR / "solutions" / f"{stem}.py").read_text()
    source = re.search(rf"^def {function}\(.*?(?=^# Exercise |\Z)", text, re.S | re.M).group(0)
    assert source.count(right) == 1, f"{right!r} is not one line of the solution of {function}"
    return source.replace(right, wrong)


WRONG_ANSWERS = {
    "online update that does not rescale the old sum": (CH08, "online_update", "8.1", '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    shift = np.where(np.isneginf(m_new), 0.0, m_new)
    return m_new, s + np.exp(x - shift[..., None]).sum(axis=-1)
''', "exp(m_old - m_new)"),
    "online update that subtracts -inf from -inf": (CH08, "online_update", "8.1", '''
def online_update(m, s, x):
    m_new = np.maximum(m, x.max(axis=-1, initial=-np.inf))
    return m_new, s * np.exp(m - m_new) + np.exp(x - m_new[..., None]).sum(axis=-1)
''', "shift by 0 when the new maximum is -inf"),
    "merge that rescales only one part": (CH08, "merge_stats", "8.2", '''
def merge_stats(m_a, s_a, m_b, s_b):
    m = np.maximum(m_a, m_b)
    shift = np.where(np.isneginf(m), 0.0, m)
    return m, s_a * np.exp(m_a - shift) + s_b
''', "common maximum"),
    "attention merge that treats lse = +inf as a real mass": (CH08, "merge_attention", "8.3", '''
def merge_attention(out_a, lse_a, out_b, lse_b):
    lse = np.logaddexp(lse_a, lse_b)
    out = np.exp(lse_a - lse)[..., None] * out_a + np.exp(lse_b - lse)[..., None] * out_b
    return out, lse
''', "treat lse=+inf as zero mass"),
    "forward tile that normalises inside the loop": (CH09, "forward_tile", "9.1", with_mistake(
        CH09, "forward_tile", "acc_new = alpha[..., None] * acc + p @ v_blk",
        "acc_new = (alpha[..., None] * acc + p @ v_blk) / np.where(l_new > 0, l_new, 1.0)[..., None]"),
        "do not divide by l"),
    "forward tile that forgets to rescale the accumulator": (CH09, "forward_tile", "9.1", with_mistake(
        CH09, "forward_tile", "acc_new = alpha[..., None] * acc + p @ v_blk", "acc_new = acc + p @ v_blk"),
        "exp(m_old - m_new)"),
    "finalize without a guard for empty rows": (CH09, "finalize_rows", "9.2", '''
def finalize_rows(m, l, acc):
    return acc / l[..., None], m + np.log(l)
''', "an empty row (l = 0)"),
    "finalize that forgets the maximum in the lse": (CH09, "finalize_rows", "9.2", '''
def finalize_rows(m, l, acc):
    safe_l = np.where(l > 0, l, 1.0)
    return acc / safe_l[..., None], np.where(l > 0, np.log(safe_l), np.inf)
''', "lse = m + log(l)"),
    "tile classification with an off-by-one corner": (CH09, "tile_kind", "9.3", '''
def tile_kind(i0, i1, j0, j1, band):
    lo, hi = band
    d_min, d_max = j0 - i1, j1 - i0
    if (hi is not None and d_min > hi) or (lo is not None and d_max < lo):
        return "skip"
    if (hi is None or d_max <= hi) and (lo is None or d_min >= lo):
        return "full"
    return "partial"
''', "expected 'full'"),
    "D summed over the wrong axis": (CH10, "d_term", "10.1", '''
def d_term(grad_out, out):
    return (grad_out * out).sum(axis=-2)
''', "wrong shape"),
    "recomputed weights that ignore the tile mask": (CH10, "recompute_probs", "10.2", '''
def recompute_probs(scores, lse, keep=None):
    return np.exp(scores - lse[..., None])
''', "masked entries set to 0"),
    "dS that forgets to multiply D by P": (CH10, "dscores", "10.3", '''
def dscores(p, dp, d):
    return p * dp - d[..., None]
''', "subtract D inside, then multiply by P"),
    "split-KV combine without subtracting the largest lse": (CH11, "combine_splits", "11.1", '''
def combine_splits(outs, lses):
    weights = np.where(np.isposinf(lses), 0.0, np.exp(np.where(np.isposinf(lses), 0.0, lses)))
    total = weights.sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    out = (weights[..., None] * outs).sum(axis=0) / safe[..., None]
    return out, np.where(total > 0, np.log(safe), np.inf)
''', "exp(900) overflowed: subtract the largest lse"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ANSWERS))
def test_a_plausible_wrong_answer_loses_points_with_an_actionable_message(case, tmp_path):
    done = assert_wrong_answer_loses_points(*WRONG_ANSWERS[case], tmp_path)
    assert "failing" in done.stdout
