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
    "dropout survivors not rescaled": ("ch04_scaled_dot_product", "dropout_weights", "4.2", '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.shape) >= p
    return np.where(keep, weights, 0.0).astype(weights.dtype), keep
''', "divided by (1 - p)"),
    "window one key too wide": ("ch05_masks", "window_keep", "5.3", '''
def window_keep(L, S, left, right=0, align="bottom_right"):
    offset = 0 if align == "top_left" else S - L
    centre = np.arange(L)[:, None] + offset
    j = np.arange(S)[None, :]
    keep = np.ones((L, S), dtype=bool)
    if left is not None:
        keep &= j >= centre - left - 1
    if right is not None:
        keep &= j <= centre + right
    return keep
''', "first at (query, key) = (0, 2)"),
    "group gradients averaged": ("ch06_multi_head", "fold_kv_grad", "6.4", '''
def fold_kv_grad(grad, num_kv_heads):
    *lead, hq, S, D = grad.shape
    return grad.reshape(tuple(lead) + (num_kv_heads, hq // num_kv_heads, S, D)).mean(axis=-3)
''', "gets the sum"),
    "sine and cosine swapped": ("ch07_positions", "sinusoidal_table", "7.1", '''
def sinusoidal_table(length, d_model, base=10000.0):
    pos = np.arange(length, dtype=np.float64)[:, None]
    angles = pos * base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    table = np.empty((length, d_model))
    table[:, 0::2] = np.cos(angles)
    table[:, 1::2] = np.sin(angles[:, : d_model // 2])
    return table
''', "sin(0"),
    "RoPE rotating the other way": ("ch07_positions", "rotate_pairs", "7.2", '''
def rotate_pairs(x, cos, sin):
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty(np.broadcast_shapes(x.shape, cos.shape[:-1] + (x.shape[-1],)), dtype=np.result_type(x, cos))
    out[..., 0::2] = even * cos + odd * sin
    out[..., 1::2] = -even * sin + odd * cos
    return out
''', "turned by 90°"),
    "ALiBi slopes starting at 1": ("ch07_positions", "alibi_slopes", "7.3", '''
def alibi_slopes(num_heads):
    start = 2.0 ** (-8.0 / num_heads)
    return start ** np.arange(0, num_heads)
''', "1/2 ... 1/256"),
    "ALiBi bias aligned top-left": ("ch07_positions", "alibi_bias", "7.4", '''
def alibi_bias(slopes, L, S):
    i, j = np.arange(L)[:, None], np.arange(S)[None, :]
    return -np.asarray(slopes, dtype=np.float64)[:, None, None] * np.abs(i - j)
''', "i' = i + S - L"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ANSWERS))
def test_a_plausible_wrong_answer_loses_points(case, tmp_path):
    assert_wrong_answer_loses_points(*WRONG_ANSWERS[case], tmp_path)
