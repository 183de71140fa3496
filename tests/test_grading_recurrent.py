"""Plausible wrong answers to the exercises of chapters 2 and 3 lose their points."""

import pytest


from test_grading import assert_wrong_answer_loses_points

CH02, CH03 = "ch02_bahdanau", "ch03_luong"
WRONG_ANSWERS = {
    "additive score that forgets the tanh": (CH02, "additive_score", "2.1", '''
def additive_score(query_proj, keys_proj, v):
    hidden = query_proj[..., None, :] + keys_proj
    return hidden @ v, hidden
''', "entries differ"),
    "pooling VJP without the softmax Jacobian": (CH02, "attention_pooling_backward", "2.2", '''
def attention_pooling_backward(grad_context, weights, values):
    grad_values = weights[..., :, None] * grad_context[..., None, :]
    return np.einsum("...sv,...v->...s", values, grad_context), grad_values
''', "softmax VJP"),
    "GRU step with the update gate the wrong way round": (CH02, "gru_step", "2.3", '''
def gru_step(x_proj, h, W_h, b_h):
    H = h.shape[-1]
    hh = h @ W_h + b_h
    r = sigmoid(x_proj[:, :H] + hh[:, :H])
    z = sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])
    n = np.tanh(x_proj[:, 2 * H:] + r * hh[:, 2 * H:])
    return z * n + (1 - z) * h, r, z, n, hh[:, 2 * H:]
''', "entries differ"),
    "concat score with the key first": (CH03, "concat_score", "3.2", '''
def concat_score(query, keys, W_a, v_a):
    B, S, _ = keys.shape
    q = np.broadcast_to(query[:, None, :], (B, S, query.shape[-1]))
    return np.tanh(np.concatenate([keys, q], axis=-1) @ W_a) @ v_a
''', "query first"),
    "local window that forgets the padding": (CH03, "local_window", "3.3", '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    return np.abs(offset) <= D, np.exp(-offset ** 2 / (2 * (D / 2) ** 2))
''', "s < length"),
    "local window with sigma = D": (CH03, "local_window", "3.3", '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    keep = (np.abs(offset) <= D) & (s < lengths[:, None])
    return keep, np.exp(-offset ** 2 / (2 * D ** 2))
''', "σ = D/2"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ANSWERS))
def test_a_plausible_wrong_answer_loses_points(case, tmp_path):
    assert_wrong_answer_loses_points(*WRONG_ANSWERS[case], tmp_path)
