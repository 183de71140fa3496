"""Bahdanau (additive) attention: loops vs vectorised, padding, gradient checks."""
import numpy as np
import pytest

from attention_scratch.additive import (
    AdditiveAttention,
    additive_attention_loops,
    additive_score,
    attention_pooling_backward,
)
from attention_scratch.softmax import softmax
from attention_scratch.testing import assert_close, grad_check, numerical_gradient


def run_steps(attn, queries, keys, keep, **kw):
    """Attend with several queries (one per decoder step) against one memory;
    return contexts, caches."""
    memory = attn.prepare(keys, keep)
    outs = [attn.forward(q, memory, **kw) for q in queries]
    return memory, outs


def check_attention_gradients(attn, queries, keys, keep, rng, step_kw=lambda t: {}):
    """Grad-check d(queries), d(keys) and every parameter of an attention module used over steps."""
    gs = [rng.standard_normal(attn.forward(queries[0], attn.prepare(keys, keep),
                                           **step_kw(0))[0].shape) for _ in queries]

    def loss(qs=queries, ks=keys):
        memory = attn.prepare(ks, keep)
        return sum(float(np.sum(attn.forward(q, memory, **step_kw(t))[0] * g))
                   for t, (q, g) in enumerate(zip(qs, gs, strict=True)))

    attn.zero_grad()
    memory = attn.prepare(keys, keep)
    grad_memory = attn.zero_memory_grads(memory)
    d_queries = []
    for t, (q, g) in enumerate(zip(queries, gs, strict=True)):
        _, _, cache = attn.forward(q, memory, **step_kw(t))
        d_queries.append(attn.backward(g, cache, grad_memory))
    d_keys = attn.prepare_backward(grad_memory, memory)
    for t in range(len(queries)):
        def f(q, t=t):
            qs = list(queries)
            qs[t] = q
            return loss(qs=qs)
        assert_close(d_queries[t], numerical_gradient(f, queries[t]), rtol=1e-6, atol=1e-8,
                     what=f"gradient of query {t}")
    assert_close(d_keys, numerical_gradient(lambda k: loss(ks=k), keys), rtol=1e-6, atol=1e-8,
                 what="gradient of the keys")
    assert np.all(d_keys[~keep] == 0), "padded keys must get zero gradient"
    for name, p in attn.parameters().items():
        analytic = attn.gradients()[name].copy()

        def f(value, p=p):
            saved = p.copy()
            p[...] = value
            out = loss()
            p[...] = saved
            return out

        assert_close(analytic, numerical_gradient(f, p.copy()), rtol=1e-6, atol=1e-8,
                     what=f"gradient of parameter {name}")


@pytest.fixture
def setup(rng):
    B, S, Dq, Dk, A = 3, 6, 4, 5, 7
    attn = AdditiveAttention(Dq, Dk, A, rng)
    keys = rng.standard_normal((B, S, Dk))
    keep = np.ones((B, S), dtype=bool)
    keep[1, 4:] = False
    keep[2, 2:] = False
    return attn, keys, keep, rng.standard_normal((B, Dq))


def test_vectorised_equals_the_loops(setup):
    attn, keys, keep, query = setup
    context, weights, _ = attn.forward(query, attn.prepare(keys, keep))
    P = attn.params
    for b in range(keys.shape[0]):
        c_ref, a_ref = additive_attention_loops(query[b], keys[b], P["W"], P["U"], P["v"], keep[b])
        assert_close(context[b], c_ref, what=f"context of batch row {b}")
        assert_close(weights[b], a_ref, what=f"weights of batch row {b}")


def test_many_queries_at_once_equal_one_at_a_time(setup, rng):
    attn, keys, keep, _ = setup
    queries = rng.standard_normal((3, 5, 4))  # (B, L, Dq)
    memory = attn.prepare(keys, keep)
    ctx, w, _ = attn.forward(queries, memory)
    for i in range(5):
        c1, w1, _ = attn.forward(queries[:, i], memory)
        assert_close(ctx[:, i], c1)
        assert_close(w[:, i], w1)


def test_padding_is_masked_even_when_it_holds_garbage(setup):
    attn, keys, keep, query = setup
    context, weights, _ = attn.forward(query, attn.prepare(keys, keep))
    assert np.all(weights[~keep] == 0), "padded positions must get weight exactly 0"
    assert_close(weights.sum(-1), np.ones(3), what="weights sum to 1 over real positions")
    garbage = keys.copy()
    garbage[~keep] = 1e6
    c2, _, _ = attn.forward(query, attn.prepare(garbage, keep))
    assert_close(c2, context, what="context with huge values in the padding")
    # masking a key equals deleting it
    c3, _, _ = attn.forward(query[2:], attn.prepare(keys[2:, :2], None))
    assert_close(context[2:], c3, what="row with 2 real keys vs the same 2 keys unpadded")


def test_additive_gradients(setup, rng):
    attn, keys, keep, _ = setup
    queries = [rng.standard_normal((3, 4)) for _ in range(3)]
    check_attention_gradients(attn, queries, keys, keep, rng)


def test_additive_gradients_with_an_l_axis(setup, rng):
    attn, keys, keep, _ = setup
    check_attention_gradients(attn, [rng.standard_normal((3, 2, 4))], keys, keep, rng)


def test_additive_score_and_pooling_backward(rng):
    q, k, v = rng.standard_normal((2, 3)), rng.standard_normal((2, 5, 3)), rng.standard_normal(3)
    scores, _ = additive_score(q, k, v)
    assert_close(scores, np.einsum("bsa,a->bs", np.tanh(q[:, None] + k), v))
    values = rng.standard_normal((2, 5, 4))

    def fwd(e, vals):
        return np.einsum("bs,bsd->bd", softmax(e), vals)

    def bwd(g, e, vals):
        return attention_pooling_backward(g, softmax(e), vals)

    grad_check(fwd, bwd, [scores, values], rng=rng)
