"""Plausible wrong answers to the exercises of chapters 14 and 15 lose their points.

Same mechanism as ``test_grading.py``: a solutions file with one function
replaced by a common mistake; the grader must mark exactly that exercise
"failing", with a message a student can act on.
"""

import pytest

from test_grading import assert_wrong_answer_loses_points

CH14 = "ch14_efficient_variants"
CH15 = "ch15_tiny_transformer"
WRONG_ANSWERS = {
    "elu + 1 that exponentiates large positive inputs": (CH14, "elu_feature_map", "14.1", '''
def elu_feature_map(x):
    return np.where(x > 0, x + 1, np.exp(x))
''', "warned"),
    "a linear-attention step that forgets the normalizer": (CH14, "linear_attention_step", "14.2", '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    state = state + phi_k[..., :, None] * v[..., None, :]
    return np.einsum("...f,...fv->...v", phi_q, state), state, normalizer + phi_k
''', "entries differ"),
    "positive random features divided by m": (CH14, "positive_random_features", "14.3", '''
def positive_random_features(x, omega, stabilize=None):
    e = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)
    if stabilize == "row":
        e = e - e.max(axis=-1, keepdims=True)
    elif stabilize == "all":
        e = e - e.max(axis=(-2, -1), keepdims=True)
    return np.exp(e) / omega.shape[0]
''', "sqrt(m)"),
    "layer norm with the unbiased variance": (CH15, "layer_norm", "15.1", '''
def layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(x.var(axis=-1, ddof=1, keepdims=True) + eps)
    x_hat = (x - mu) * inv_std
    return gamma * x_hat + beta, (x_hat, inv_std)
''', "biased variance"),
    "layer norm backward that treats the mean and variance as constants": (CH15, "layer_norm_backward", "15.2", '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    flat = grad_out.reshape(-1, D)
    return grad_out * gamma * inv_std, (flat * x_hat.reshape(-1, D)).sum(0), flat.sum(0)
''', "depend on x too"),
    "a decoding step that restarts the positions at 0": (CH15, "decode_step", "15.3", '''
def decode_step(model, ids, caches):
    x = model.embed(ids)
    for block, cache in zip(model.blocks, caches):
        x, _ = block.forward(x, cache=cache)
    logits, _ = model.output(x)
    return logits[:, -1]
''', "position offset"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ANSWERS))
def test_a_plausible_wrong_answer_loses_points(case, tmp_path):
    assert_wrong_answer_loses_points(*WRONG_ANSWERS[case], tmp_path)
