"""Positions: sinusoidal and learned encodings, RoPE and its backward, ALiBi."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import attention_scratch as at
from attention_scratch.positional import rope_angles
from attention_scratch.testing import assert_close, attention_oracle, grad_check


def test_sinusoidal_encoding_follows_the_formula():
    pe = at.sinusoidal_encoding(7, 6)
    p, i = 5, 2  # PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)
    assert_close(pe[p, 2 * i], np.sin(p / 10000 ** (2 * i / 6)))
    assert_close(pe[p, 2 * i + 1], np.cos(p / 10000 ** (2 * i / 6)))
    assert_close(pe[0], np.tile([0.0, 1.0], 3))
    assert at.sinusoidal_encoding(3, 5).shape == (3, 5)
    with pytest.raises(ValueError, match="d_model"):
        at.sinusoidal_encoding(3, 0)


def test_sinusoidal_offsets_are_a_linear_map():
    """PE[p + k] is a fixed rotation of PE[p], the same for every p
    (Vaswani et al.'s motivation)."""
    pe = at.sinusoidal_encoding(40, 8)
    k = 3
    # least-squares map from PE[p] to PE[p + k] fitted on some rows predicts the others exactly
    m, *_ = np.linalg.lstsq(pe[:20], pe[k:20 + k], rcond=None)
    assert_close(pe[20:40 - k] @ m, pe[20 + k:40], rtol=1e-8, atol=1e-8)


def test_learned_embedding_forward_backward(rng):
    emb = at.LearnedPositionalEmbedding(10, 4, rng=rng)
    x = rng.standard_normal((2, 3, 4))
    y = emb.forward(x, offset=2)
    assert_close(y, x + emb.params["P"][2:5])
    g = rng.standard_normal(y.shape)
    assert_close(emb.backward(g), g)
    assert_close(emb.grads["P"][2:5], g.sum(0))
    assert np.all(emb.grads["P"][[0, 1, 5]] == 0)
    with pytest.raises(ValueError, match="max_len"):
        emb.forward(rng.standard_normal((1, 11, 4)))


def test_rope_rotates_pairs_and_keeps_norms(rng):
    x = rng.standard_normal((2, 5, 6))
    y = at.apply_rope(x)
    assert_close(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1))
    assert_close(y[:, 0], x[:, 0], what="position 0 is not rotated")
    cos, sin = rope_angles(np.arange(5), 6)
    p, i = 3, 1
    assert_close(y[1, p, 2 * i], x[1, p, 2 * i] * cos[p, i] - x[1, p, 2 * i + 1] * sin[p, i])
    assert_close(y[1, p, 2 * i + 1], x[1, p, 2 * i] * sin[p, i] + x[1, p, 2 * i + 1] * cos[p, i])
    assert at.apply_rope(x.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="even"):
        at.apply_rope(np.ones((2, 3)))
    with pytest.raises(ValueError, match="positions"):
        at.apply_rope(np.ones((2, 4)), positions=np.arange(3))


def test_alibi_and_learned_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_heads must be a positive integer; got 0"):
        at.alibi_slopes(0)
    with pytest.raises(ValueError, match="num_heads"):
        at.alibi_slopes(2.5)
    with pytest.raises(ValueError, match=r"slopes must have shape \(H,\).*\(2, 2\)"):
        at.alibi_bias(np.ones((2, 2)), 3, 3)
    table = at.LearnedPositionalEmbedding(4, 3, rng=np.random.default_rng(0))
    table.forward(np.ones((1, 2, 3)))
    with pytest.raises(ValueError,
                       match=r"grad_out must have the shape of the last forward input \(1, 2, 3\); "
                             r"got \(1, 3, 3\)"):
        table.backward(np.ones((1, 3, 3)))


@given(seed=st.integers(0, 2**16), m=st.integers(0, 500), n=st.integers(0, 500),
       shift=st.integers(-200, 200))
def test_rope_scores_depend_only_on_the_position_difference(seed, m, n, shift):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((1, 8)), rng.standard_normal((1, 8))
    score = at.apply_rope(q, [m]) @ at.apply_rope(k, [n]).T
    shifted = at.apply_rope(q, [m + shift]) @ at.apply_rope(k, [n + shift]).T
    assert_close(shifted, score, rtol=1e-9, atol=1e-9)


def test_rope_backward_matches_finite_differences(rng):
    positions = np.array([0, 3, 7])
    grad_check(lambda x: at.apply_rope(x, positions),
               lambda g, x: (at.apply_rope_backward(g, positions),),
               [rng.standard_normal((2, 3, 4))], rng=rng)


def test_rope_through_attention_against_torch_autograd(torch, rng):
    q, k, v = rng.standard_normal((2, 6, 8)), rng.standard_normal((2, 6,
                                                                   8)), rng.standard_normal((2, 6,
                                                                                             3))
    g = rng.standard_normal((2, 6, 3))
    qr, kr = at.apply_rope(q), at.apply_rope(k)
    out = at.scaled_dot_product_attention(qr, kr, v, is_causal=True)
    dqr, dkr, _ = at.scaled_dot_product_attention_backward(g, qr, kr, v, is_causal=True)
    dq, dk = at.apply_rope_backward(dqr), at.apply_rope_backward(dkr)

    cos, sin = (torch.tensor(a) for a in rope_angles(np.arange(6), 8))

    def rope(x):
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)

    tq, tk = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    t_out = torch.nn.functional.scaled_dot_product_attention(rope(tq), rope(tk), torch.tensor(v),
                                                             is_causal=True)
    t_out.backward(torch.tensor(g))
    assert_close(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert_close(dq, tq.grad.numpy(), rtol=1e-10, atol=1e-10)
    assert_close(dk, tk.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_alibi_slopes_follow_the_paper():
    assert_close(at.alibi_slopes(8), 2.0 ** -np.arange(1, 9))  # 1/2, 1/4, ..., 1/256
    assert_close(at.alibi_slopes(4), 2.0 ** (-2.0 * np.arange(1, 5)))
    # 6 heads: the 4 slopes of 4 heads, then slopes 1 and 3 (0-based [0::2]) of 8 heads
    assert_close(at.alibi_slopes(6), np.r_[2.0 ** (-2.0 * np.arange(1, 5)), 2.0 ** -1, 2.0 ** -3])
    assert np.all(np.diff(at.alibi_slopes(16)) < 0)


def test_alibi_bias_is_linear_in_distance_and_works_as_a_float_mask(rng):
    slopes = at.alibi_slopes(2)
    bias = at.alibi_bias(slopes, 3, 5)
    assert bias.shape == (2, 3, 5)
    assert_close(bias[1, 2], -slopes[1] * np.array([4, 3, 2, 1, 0]))  # last query at key 4
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5,
                                                                   4)), rng.standard_normal((2, 5,
                                                                                             2))
    mask = at.combine_masks(bias, at.causal_mask(3, 5, "bottom_right"))
    ref = attention_oracle(q, k, v, bias, is_causal=True, causal_align="bottom_right")[0]
    assert_close(at.scaled_dot_product_attention(q, k, v, mask), ref)
