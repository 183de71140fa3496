"""Luong attention: every score, global and local, gradients (through p_t too), oracle agreement."""
import numpy as np
import pytest
from test_additive import check_attention_gradients

from attention_scratch.luong import (
    AttentionalState,
    LuongAttention,
    concat_score,
    general_score,
    local_window,
)
from attention_scratch.testing import assert_close, attention_oracle, grad_check

VARIANTS = [(s, None) for s in ("dot", "general", "concat")] + [(s, loc)
                                                                for s in ("dot", "general",
                                                                          "concat")
                                                                for loc in ("m", "p")]


def make(rng, score, local, D=2):
    B, S, D_model = 3, 7, 4
    attn = LuongAttention(D_model, D_model, rng, score=score, local=local, D=D, attn_dim=5)
    keys = rng.standard_normal((B, S, D_model))
    keep = np.ones((B, S), dtype=bool)
    keep[1, 5:] = False
    keep[2, 3:] = False
    return attn, keys, keep


@pytest.mark.parametrize("score,local", VARIANTS)
def test_luong_gradients(rng, score, local):
    attn, keys, keep = make(rng, score, local)
    queries = [rng.standard_normal((3, 4)) for _ in range(3)]
    check_attention_gradients(attn, queries, keys, keep, rng, step_kw=lambda t: {"t": 2 * t})


def test_local_p_gradient_flows_through_the_position(rng):
    attn, keys, keep = make(rng, "dot", "p")
    q = rng.standard_normal((3, 4))
    memory = attn.prepare(keys, keep)
    _, _, cache = attn.forward(q, memory)
    attn.zero_grad()
    attn.backward(rng.standard_normal((3, 4)), cache, attn.zero_memory_grads(memory))
    assert np.abs(attn.grads["v_p"]).sum() > 0 and np.abs(attn.grads["W_p"]).sum() > 0, \
        "the position network got no gradient"


def test_dot_score_with_scale_one_is_scaled_dot_product_attention(rng):
    attn, keys, keep = make(rng, "dot", None)
    q = rng.standard_normal((3, 4))
    context, weights, _ = attn.forward(q, attn.prepare(keys, keep))
    # one query per batch row: (B, 1 head, L=1, E) against (B, 1, S, E), padding as a bool mask
    ref, _, probs = attention_oracle(q[:, None, None], keys[:, None], keys[:, None],
                                     attn_mask=keep[:, None, None, :], scale=1.0)
    assert_close(context, ref[:, 0, 0], what="Luong dot context vs the oracle with scale=1")
    assert_close(weights, probs[:, 0, 0], what="Luong dot weights vs the oracle with scale=1")


def test_dot_score_with_scale_one_equals_the_library_sdpa(rng):
    import attention_scratch as at
    attn, keys, keep = make(rng, "dot", None)
    q = rng.standard_normal((3, 4))
    memory = attn.prepare(keys, keep)
    context, weights, cache = attn.forward(q, memory)
    out, w = at.scaled_dot_product_attention(q[:, None, None], keys[:, None], keys[:, None],
                                             attn_mask=keep[:, None, None, :], scale=1.0,
                                             return_weights=True)  # (B, 1, 1, D), (B, 1, 1, S)
    assert_close(context, out[:, 0, 0],
                 what="Luong dot context vs scaled_dot_product_attention(scale=1)")
    assert_close(weights, w[:, 0, 0],
                 what="Luong dot weights vs scaled_dot_product_attention(scale=1)")
    # and the backward passes agree: d(query) and d(keys), with keys serving as the values too
    g = rng.standard_normal(context.shape)
    grad_memory = attn.zero_memory_grads(memory)
    d_q = attn.backward(g, cache, grad_memory)
    d_keys = attn.prepare_backward(grad_memory, memory)
    gq, gk, gv = at.scaled_dot_product_attention_backward(
        g[:, None, None], q[:, None, None], keys[:, None], keys[:, None],
        attn_mask=keep[:, None, None, :], scale=1.0)
    assert_close(d_q, gq[:, 0, 0], what="d(query) vs the sdpa backward")
    assert_close(d_keys, (gk + gv)[:, 0],
                 what="d(keys) vs the sdpa backward (keys are also the values)")


def test_general_score_with_identity_is_dot(rng):
    attn, keys, keep = make(rng, "general", None)
    attn.params["W_a"][...] = np.eye(4)
    dot = LuongAttention(4, 4, rng, score="dot")
    q = rng.standard_normal((3, 4))
    assert_close(attn.forward(q, attn.prepare(keys, keep))[0],
                 dot.forward(q, dot.prepare(keys, keep))[0])


def test_score_functions(rng):
    q, k = rng.standard_normal((2, 3)), rng.standard_normal((2, 5, 4))
    W = rng.standard_normal((3, 4))
    assert_close(general_score(q, k, W), np.array([[q[b] @ W @ k[b, s] for s in range(5)]
                                                   for b in range(2)]))
    Wa, va = rng.standard_normal((7, 6)), rng.standard_normal(6)
    expected = np.array([[va @ np.tanh(Wa.T @ np.concatenate([q[b], k[b, s]])) for s in range(5)]
                         for b in range(2)])
    assert_close(concat_score(q, k, Wa, va), expected,
                 what="concat score against the literal formula")
    # the library's split form equals the literal concatenation
    attn = LuongAttention(3, 4, rng, score="concat", attn_dim=6)
    attn.params["W_a"][...], attn.params["v_a"][...] = Wa, va
    assert_close(attn._scores(q, attn.prepare(k))[0], expected)


def test_local_window_clips_and_masks(rng):
    keep, gauss = local_window(np.array([0.4, 6.0, 2.5]), np.array([7, 7, 4]), 8, 2)
    assert keep.tolist()[0] == [True, True, True, False, False, False, False, False]
    # clipped at the end, padding 7 masked
    assert keep.tolist()[1] == [False] * 4 + [True] * 3 + [False]
    assert keep.tolist()[2] == [False, True, True, True, False, False, False, False]
    assert_close(gauss[2], np.exp(-(np.arange(8) - 2.5) ** 2 / 2.0))


@pytest.mark.parametrize("local", ["m", "p"])
def test_local_attention_only_reads_its_window(rng, local):
    attn, keys, keep = make(rng, "general", local, D=1)
    q = rng.standard_normal((3, 4))
    memory = attn.prepare(keys, keep)
    _, weights, cache = attn.forward(q, memory, t=1)
    p = cache["p"]
    s = np.arange(7)
    outside = (np.abs(s[None] - p[:, None]) > 1) | ~keep
    assert np.all(weights[outside] == 0), "weight outside the window or on padding"
    if local == "m":
        assert_close(p, np.array([1.0, 1.0, 1.0]))
        assert_close(weights.sum(-1), np.ones(3))
    else:
        assert np.all((p > 0) & (p < keep.sum(1))), "p_t must lie inside (0, S)"
        assert np.all(weights.sum(-1) <= 1 + 1e-12), "the Gaussian only shrinks the weights"


@pytest.mark.parametrize("score,local", VARIANTS)
def test_float32_stays_float32(rng, score, local):
    """The position p_t and the Gaussian of local-p come from integer lengths; they must not
    turn a float32 model's weights and context into float64."""
    attn, keys, keep = make(rng, score, local)
    attn.params = {name: value.astype(np.float32) for name, value in attn.params.items()}
    memory = attn.prepare(keys.astype(np.float32), keep)
    context, weights, _ = attn.forward(rng.standard_normal((3, 4)).astype(np.float32), memory, t=1)
    assert context.dtype == np.float32 and weights.dtype == np.float32, (context.dtype,
                                                                         weights.dtype)


def test_local_m_past_the_end_stays_inside_the_sentence(rng):
    attn, keys, keep = make(rng, "dot", "m")
    _, weights, cache = attn.forward(rng.standard_normal((3, 4)), attn.prepare(keys, keep), t=20)
    assert_close(cache["p"], keep.sum(1) - 1.0)
    assert_close(weights.sum(-1), np.ones(3),
                 what="a window at the last real position is never empty")


def test_attentional_state_grad_check(rng):
    layer = AttentionalState(3, 4, 5, rng)
    c, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    grad_check(lambda c, h: layer.forward(c, h)[0],
               lambda g, c, h: layer.backward(g, layer.forward(c, h)[1]), [c, h], rng=rng)
    assert_close(layer.forward(c, h)[0], np.tanh(np.concatenate([c, h], 1) @ layer.W_c.params["W"]))


def test_bad_arguments(rng):
    with pytest.raises(ValueError, match="score must be"):
        LuongAttention(4, 4, rng, score="cosine")
    with pytest.raises(ValueError, match="query_dim == key_dim"):
        LuongAttention(4, 5, rng, score="dot")
    attn, keys, keep = make(rng, "dot", None)
    with pytest.raises(ValueError, match="query must have shape"):
        attn.forward(rng.standard_normal((3, 5)), attn.prepare(keys, keep))
