"""Layers of nn.py / rnn.py / optim.py: gradient checks for every layer, Adam,
clipping, save/load."""
import numpy as np
import pytest

from attention_scratch.nn import Embedding, Linear, Module, cross_entropy, sigmoid
from attention_scratch.optim import Adam, clip_grad_norm, load_params, save_params
from attention_scratch.rnn import GRU, BiGRUEncoder, GRUCell
from attention_scratch.testing import assert_close, grad_check, numerical_gradient


def check_param_grads(module, loss_fn, rtol=1e-6, atol=1e-8):
    """Compare module.grads (filled by a backward pass) with central differences of loss_fn()."""
    for name, p in module.parameters().items():
        analytic = module.gradients()[name].copy()

        def f(value, p=p):
            saved = p.copy()
            p[...] = value
            out = loss_fn()
            p[...] = saved
            return out

        numeric = numerical_gradient(f, p.copy())
        assert_close(analytic, numeric, rtol=rtol, atol=atol, what=f"gradient of parameter {name}")


def test_sigmoid_is_stable_and_correct():
    x = np.array([-1000.0, -3.0, 0.0, 2.0, 1000.0])
    assert_close(sigmoid(x), np.array([0.0, 1 / (1 + np.exp(3)), 0.5, 1 / (1 + np.exp(-2)), 1.0]))


def test_linear_grad_check(rng):
    lin = Linear(4, 3, rng)
    x = rng.standard_normal((2, 5, 4))
    g = rng.standard_normal((2, 5, 3))

    def fwd(x, W, b):
        lin.params["W"][...], lin.params["b"][...] = W, b
        return lin.forward(x)[0]

    def bwd(g, x, W, b):
        lin.params["W"][...], lin.params["b"][...] = W, b
        lin.zero_grad()
        dx = lin.backward(g, lin.forward(x)[1])
        return dx, lin.grads["W"].copy(), lin.grads["b"].copy()

    grad_check(fwd, bwd, [x, lin.params["W"].copy(), lin.params["b"].copy()], rng=rng)
    assert_close(lin.forward(x)[0], x @ lin.params["W"] + lin.params["b"])
    del g


def test_embedding_gradient_accumulates_repeated_ids_and_skips_padding(rng):
    emb = Embedding(6, 3, rng, padding_idx=0)
    assert np.all(emb.params["W"][0] == 0)
    ids = np.array([[1, 2, 1, 0], [5, 0, 0, 0]])
    out, cache = emb.forward(ids)
    assert_close(out, emb.params["W"][ids])
    g = rng.standard_normal(out.shape)
    emb.zero_grad()
    emb.backward(g, cache)

    def loss(W):
        return float(np.sum(W[ids] * g))

    expected = numerical_gradient(loss, emb.params["W"].copy())
    expected[0] = 0
    assert_close(emb.grads["W"], expected, rtol=1e-6, atol=1e-8, what="embedding gradient")
    with pytest.raises(ValueError, match="ids must lie"):
        emb.forward(np.array([6]))


def test_cross_entropy_matches_numerical_gradient_and_ignores_padding(rng):
    logits = rng.standard_normal((3, 4, 7))
    targets = rng.integers(1, 7, size=(3, 4))
    targets[0, 2:] = 0
    targets[2, 1:] = 0
    loss, grad = cross_entropy(logits, targets, ignore_index=0)
    keep = targets != 0
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, targets[..., None], -1)[..., 0][keep].mean()
    assert abs(loss - expected) < 1e-12
    numeric = numerical_gradient(lambda z: cross_entropy(z, targets, ignore_index=0)[0], logits)
    assert_close(grad, numeric, rtol=1e-6, atol=1e-9, what="cross-entropy gradient")
    assert np.all(grad[~keep] == 0), "padded positions must get zero gradient"
    # large logits stay finite
    loss_big, _ = cross_entropy(logits * 1e4, targets, ignore_index=0)
    assert np.isfinite(loss_big)
    with pytest.raises(ValueError, match="targets of shape"):
        cross_entropy(logits, targets[:, :2])


def test_gru_cell_grad_check(rng):
    cell = GRUCell(3, 4, rng)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    g = rng.standard_normal((2, 4))

    grad_check(lambda x, h: cell.forward(x, h)[0],
               lambda g, x, h: cell.backward(g, cell.forward(x, h)[1]), [x, h], rng=rng)
    cell.zero_grad()
    cell.backward(g, cell.forward(x, h)[1])
    check_param_grads(cell, lambda: float(np.sum(cell.forward(x, h)[0] * g)))


def test_gru_cell_matches_torch(rng, torch):
    cell = GRUCell(3, 5, rng)
    ref = torch.nn.GRUCell(3, 5).double()
    with torch.no_grad():
        ref.weight_ih.copy_(torch.from_numpy(cell.params["W_x"].T.copy()))
        ref.weight_hh.copy_(torch.from_numpy(cell.params["W_h"].T.copy()))
        ref.bias_ih.copy_(torch.from_numpy(cell.params["b_x"]))
        ref.bias_hh.copy_(torch.from_numpy(cell.params["b_h"]))
    x, h = rng.standard_normal((4, 3)), rng.standard_normal((4, 5))
    expected = ref(torch.from_numpy(x), torch.from_numpy(h)).detach().numpy()
    assert_close(cell.forward(x, h)[0], expected, what="GRU step against torch.nn.GRUCell")


@pytest.mark.parametrize("reverse", [False, True])
def test_masked_gru_grad_check_and_padding_keeps_state(rng, reverse):
    gru = GRU(3, 4, rng)
    x = rng.standard_normal((2, 5, 3))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=bool)
    hs, _ = gru.forward(x, mask, reverse=reverse)
    if not reverse:
        assert_close(hs[1, 3], hs[1, 2], what="state at a padded step")
        assert_close(hs[1, 4], hs[1, 2], what="state at a padded step")
    else:
        assert np.all(hs[1, 3:] == 0), "right-to-left: padding comes first and keeps h0 = 0"
        # the real part equals running the unpadded sequence alone
        alone, _ = gru.forward(x[1:2, :3], None, reverse=True)
        assert_close(hs[1, :3], alone[0], what="reverse GRU on a padded row vs the row alone")
    g = rng.standard_normal(hs.shape)
    grad_check(lambda x: gru.forward(x, mask, reverse=reverse)[0],
               lambda g, x: (gru.backward(g, gru.forward(x, mask, reverse=reverse)[1])[0],),
               [x], rng=rng)
    gru.zero_grad()
    gru.backward(g, gru.forward(x, mask, reverse=reverse)[1])
    check_param_grads(gru, lambda: float(np.sum(gru.forward(x, mask, reverse=reverse)[0] * g)))


def test_bigru_encoder_grad_check(rng):
    enc = BiGRUEncoder(3, 2, rng)
    x = rng.standard_normal((2, 4, 3))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=bool)
    out, final, _ = enc.forward(x, mask)
    assert out.shape == (2, 4, 4) and final.shape == (2, 4)
    assert_close(final[1, :2], out[1, 1, :2], what="forward final state = last real position")
    assert_close(final[1, 2:], out[1, 0, 2:], what="backward final state = first position")
    go, gf = rng.standard_normal(out.shape), rng.standard_normal(final.shape)

    def loss():
        o, f, _ = enc.forward(x, mask)
        return float(np.sum(o * go) + np.sum(f * gf))

    enc.zero_grad()
    dx = enc.backward(go, gf, enc.forward(x, mask)[2])

    def loss_x(xx):
        o, f, _ = enc.forward(xx, mask)
        return float(np.sum(o * go) + np.sum(f * gf))

    assert_close(dx, numerical_gradient(loss_x, x), rtol=1e-6, atol=1e-8, what="encoder dx")
    check_param_grads(enc, loss)
    assert "fwd.cell.W_h" in enc.parameters() and "bwd.cell.b_x" in enc.parameters()


def test_adam_minimises_a_quadratic_and_matches_torch(rng, torch):
    params = {"w": rng.standard_normal(5)}
    grads = {"w": np.zeros(5)}
    opt = Adam(params, grads, lr=0.1)
    tp = torch.tensor(params["w"].copy(), requires_grad=True)
    topt = torch.optim.Adam([tp], lr=0.1)
    for _ in range(20):
        grads["w"][...] = 2 * (params["w"] - 3.0)
        opt.step()
        topt.zero_grad()
        ((tp - 3.0) ** 2).sum().backward()
        topt.step()
    assert_close(params["w"], tp.detach().numpy(), rtol=1e-10, atol=1e-12,
                 what="Adam vs torch.optim.Adam")
    for _ in range(300):
        grads["w"][...] = 2 * (params["w"] - 3.0)
        opt.step()
    assert np.allclose(params["w"], 3.0, atol=1e-2)


def test_clip_grad_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    assert_close(grads["a"], np.array([0.6, 0.0]))
    assert_close(grads["b"], np.array([[0.8]]))
    small = {"a": np.array([0.1])}
    clip_grad_norm(small, 1.0)
    assert small["a"][0] == 0.1


def test_save_and_load_roundtrip(tmp_path, rng):
    class Net(Module):
        def __init__(self, rng):
            super().__init__()
            self.emb = Embedding(5, 2, rng)
            self.out = Linear(2, 3, rng)

    a, b = Net(rng), Net(np.random.default_rng(99))
    save_params(tmp_path / "w.npz", a, hidden=2, note="test")
    params, meta = load_params(tmp_path / "w.npz")
    assert meta == {"hidden": 2, "note": "test"}
    assert set(params) == {"emb.W", "out.W", "out.b"}
    b.load_state(params)
    for k, v in a.parameters().items():
        assert_close(b.parameters()[k], v)
    params["out.W"] = params["out.W"][:1]
    with pytest.raises(ValueError, match=r"out\.W"):
        b.load_state(params)


def test_module_zero_grad_and_counts(rng):
    enc = BiGRUEncoder(3, 2, rng)
    for g in enc.gradients().values():
        g += 1
    enc.zero_grad()
    assert all(np.all(g == 0) for g in enc.gradients().values())
    assert enc.num_parameters() == 2 * (3 * 6 + 2 * 6 + 6 + 6)


def test_gru_step_function_matches_the_equations(rng):
    from attention_scratch.rnn import gru_step
    H = 3
    x_proj, h = rng.standard_normal((2, 3 * H)), rng.standard_normal((2, H))
    W_h, b_h = rng.standard_normal((H, 3 * H)), rng.standard_normal(3 * H)
    h_new, r, z, n, hn = gru_step(x_proj, h, W_h, b_h)
    hh = h @ W_h + b_h
    r_ref = 1 / (1 + np.exp(-(x_proj[:, :H] + hh[:, :H])))
    z_ref = 1 / (1 + np.exp(-(x_proj[:, H:2 * H] + hh[:, H:2 * H])))
    n_ref = np.tanh(x_proj[:, 2 * H:] + r_ref * hh[:, 2 * H:])
    assert_close(h_new, (1 - z_ref) * n_ref + z_ref * h)
    assert_close(r, r_ref)
    assert_close(z, z_ref)
    assert_close(n, n_ref)
    assert_close(hn, hh[:, 2 * H:])
