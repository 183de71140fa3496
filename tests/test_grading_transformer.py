"""Plausible wrong answers to the exercises of chapters 4-7 lose their points, with a message that says why.

Same procedure as tests/test_grading.py (whose helpers are reused): a solutions file
with one function swapped for a common mistake must be graded "failing" for that
exercise only.
"""

import pytest
from test_grading import assert_wrong_answer_loses_points

WRONG_ANSWERS = {
    "scores without the scale": ("ch04_scaled_dot_product", "scaled_scores", "4.1", '''
def scaled_scores(query, key, scale):
    return query @ np.swapaxes(key, -1, -2)
''', "(q · k) · scale"),
    "dS without the row-sum term": ("ch04_scaled_dot_product", "scores_gradient", "4.3", '''
def scores_gradient(grad_out, value, probs):
    return probs * (grad_out @ np.swapaxes(value, -1, -2))
''', "rowsum"),
    "causal mask that hides the diagonal": ("ch05_masks", "causal_keep", "5.1", '''
def causal_keep(L, S, align="top_left"):
    offset = 0 if align == "top_left" else S - L
    return np.arange(S)[None, :] < np.arange(L)[:, None] + offset
''', "entries differ"),
    "bottom-right alignment ignored": ("ch05_masks", "causal_keep", "5.1", '''
def causal_keep(L, S, align="top_left"):
    return np.tril(np.ones((L, S), dtype=bool))
''', "bottom-right"),
    "key heads tiled instead of repeated": ("ch06_multi_head", "repeat_kv", "6.3", '''
def repeat_kv(x, num_q_heads):
    return np.tile(x, (1,) * (x.ndim - 3) + (num_q_heads // x.shape[-3], 1, 1))
''', "must read key head"),
    "ALiBi bias aligned top-left": ("ch07_positions", "alibi_bias", "7.4", '''
def alibi_bias(slopes, L, S):
    i, j = np.arange(L)[:, None], np.arange(S)[None, :]
    return -np.asarray(slopes, dtype=np.float64)[:, None, None] * np.abs(i - j)
''', "i' = i + S - L"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ANSWERS))
def test_a_plausible_wrong_answer_loses_points(case, tmp_path):
    assert_wrong_answer_loses_points(*WRONG_ANSWERS[case], tmp_path)
