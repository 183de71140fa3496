"""The tiny transformer of chapter 15: layers, gradients, KV-cache generation, data, training."""
import numpy as np
import pytest

from attention_scratch.tasks import IGNORE, SEP, is_held_out, make_batch, sort_sequences
from attention_scratch.testing import assert_close, grad_check, numerical_gradient
from attention_scratch.training.transformer import PRETRAINED, evaluate, load_model, train
from attention_scratch.transformer import Block, TinyTransformer, decode_step, generate
from attention_scratch.transformer_layers import MLP, LayerNorm, layer_norm, layer_norm_backward


def check_param_grads(module, run, names, rng, rtol=1e-6, atol=1e-8):
    """Compare ``module.grads`` after ``run(g)``
    (forward + backward with cotangent g) to finite differences.

    ``run(None)`` must return the forward output; ``run(g)`` must run the backward pass.
    """
    out = run(None)
    g = rng.standard_normal(out.shape)
    module.zero_grad()
    run(g)
    grads = {k: v.copy() for k, v in module.gradients().items()}
    params = module.parameters()
    for name in names:
        p = params[name]

        def loss(value, p=p):
            saved = p.copy()
            p[...] = value
            result = float(np.sum(run(None) * g))
            p[...] = saved
            return result

        assert_close(grads[name], numerical_gradient(loss, p.copy()), rtol=rtol, atol=atol,
                     what=f"gradient of {name}")


# Layers --------------------------------------------------------------------------------------


def test_layer_norm_normalises_and_matches_torch(rng, torch):
    x = rng.standard_normal((3, 5, 8)) * 4 + 2
    gamma, beta = rng.standard_normal(8), rng.standard_normal(8)
    y, (x_hat, inv_std) = layer_norm(x, gamma, beta)
    assert_close(x_hat.mean(-1), np.zeros((3, 5)), atol=1e-12, what="mean of x_hat")
    assert_close(x_hat.var(-1), 1 / (1 + 1e-5 * inv_std[..., 0] ** 2), what="variance of x_hat")
    ref = torch.nn.functional.layer_norm(torch.tensor(x), (8,), torch.tensor(gamma),
                                         torch.tensor(beta), 1e-5)
    assert_close(y, ref.numpy(), what="layer_norm against torch")


def test_layer_norm_backward_grad_check(rng):
    x, gamma, beta = rng.standard_normal((2, 3, 6)), rng.standard_normal(6), rng.standard_normal(6)
    grad_check(lambda x, g, b: layer_norm(x, g, b)[0],
               lambda dy, x, g, b: layer_norm_backward(dy, layer_norm(x, g, b)[1], g),
               [x, gamma, beta])


def test_layer_norm_and_mlp_modules_grad_check(rng):
    ln = LayerNorm(6)
    ln.params["gamma"][...] = rng.standard_normal(6)
    x = rng.standard_normal((2, 4, 6))

    def run_ln(g):
        y, c = ln.forward(x)
        return y if g is None else ln.backward(g, c)
    check_param_grads(ln, run_ln, ["gamma", "beta"], rng)
    grad_check(lambda x: ln.forward(x)[0], lambda g, x: (ln.backward(g, ln.forward(x)[1]),), [x])

    mlp = MLP(6, 10, rng)

    def run_mlp(g):
        y, c = mlp.forward(x)
        return y if g is None else mlp.backward(g, c)
    check_param_grads(mlp, run_mlp, ["fc1.W", "fc1.b", "fc2.W", "fc2.b"], rng)
    grad_check(lambda x: mlp.forward(x)[0], lambda g, x: (mlp.backward(g, mlp.forward(x)[1]),), [x])


def test_block_grad_check(rng):
    block = Block(8, 2, 12, rng)
    for p in block.parameters().values():
        p[...] += 0.1 * rng.standard_normal(p.shape)  # non-zero biases, gamma away from 1
    x = rng.standard_normal((2, 5, 8))

    def run(g):
        y, c = block.forward(x)
        return y if g is None else block.backward(g, c)
    check_param_grads(block, run, sorted(block.parameters()), rng)
    grad_check(lambda x: block.forward(x)[0], lambda g, x: (block.backward(g, block.forward(x)[1]),
                                                            ), [x])


@pytest.mark.parametrize("tie", [False, True])
def test_transformer_grad_check(rng, tie):
    model = TinyTransformer(7, d_model=8, num_heads=2, num_layers=2, hidden=12, max_len=6, rng=rng,
                            tie_weights=tie)
    for p in model.parameters().values():
        p[...] += 0.05 * rng.standard_normal(p.shape)
    ids = rng.integers(0, 7, size=(2, 6))

    def run(g):
        logits, cache = model.forward(ids)
        return logits if g is None else model.backward(g, cache)
    names = ["tok.W", "block0.attn.W_q", "block0.attn.b_k", "block1.attn.W_o", "block1.mlp.fc1.W",
             "block0.ln1.gamma", "ln_f.beta"] + ([] if tie else ["head.W"])
    check_param_grads(model, run, names, rng)


# Generation -----------------------------------------------------------------------------------


def test_decode_step_logits_equal_the_full_forward(rng):
    model = TinyTransformer(11, d_model=16, num_heads=4, num_layers=2, hidden=32, max_len=12,
                            rng=rng)
    ids = rng.integers(0, 11, size=(3, 12))
    full, _ = model.forward(ids)  # (3, 12, 11)
    caches = model.new_caches()
    steps = [decode_step(model, ids[:, :5], caches)]  # a 5-token prompt, then one token at a time
    steps += [decode_step(model, ids[:, t:t + 1], caches) for t in range(5, 12)]
    assert_close(np.stack(steps, axis=1), full[:, 4:], rtol=1e-10, atol=1e-12,
                 what="logits with the KV cache vs recomputation")
    assert caches[0].length == 12


def test_generation_with_cache_equals_recomputation(rng):
    model = TinyTransformer(11, d_model=16, num_heads=4, num_layers=2, hidden=32, max_len=17,
                            rng=rng)
    prompt = rng.integers(0, 11, size=(8, 9))
    with_cache = generate(model, prompt, 8, use_cache=True)
    assert with_cache.shape == (8, 17)
    np.testing.assert_array_equal(with_cache, generate(model, prompt, 8, use_cache=False))
    np.testing.assert_array_equal(with_cache[:, :9], prompt)


def test_positions_beyond_max_len_are_refused(rng):
    model = TinyTransformer(5, d_model=8, num_heads=2, num_layers=1, hidden=8, max_len=4, rng=rng)
    with pytest.raises(ValueError, match="max_len"):
        model.forward(np.zeros((1, 5), dtype=int))


# Data -----------------------------------------------------------------------------------------


def test_sort_task_sequences_and_splits(rng):
    seqs = sort_sequences(rng, 50, length=6)
    assert seqs.shape == (50, 13) and (seqs[:, 6] == SEP).all()
    np.testing.assert_array_equal(seqs[:, 7:], np.sort(seqs[:, :6], axis=1))
    assert not is_held_out(seqs[:, :6]).any(), "a training batch contains a held-out sequence"
    held = sort_sequences(rng, 50, length=6, split="held_out")
    assert is_held_out(held[:, :6]).all()
    frac = is_held_out(rng.integers(0, 10, (5000, 8))).mean()
    assert 0.08 < frac < 0.12, f"held-out fraction {frac}"
    inputs, targets = make_batch("sort", rng, 4, length=6)
    assert inputs.shape == targets.shape == (4, 12)
    assert (targets[:, :6] == IGNORE).all() and (targets[:, 6:] < 10).all()
    with pytest.raises(ValueError, match="task"):
        make_batch("copy", rng, 4)


# Training -------------------------------------------------------------------------------------


def test_training_smoke_loss_falls():
    model, history = train("sort", seed=1, steps=60, batch=32, length=4, d_model=32, hidden=64,
                           warmup=10, log_every=0)
    first, last = np.mean(history["loss"][:5]), np.mean(history["loss"][-5:])
    assert last < 0.6 * first, f"loss went from {first:.3f} to {last:.3f} in 60 steps"
    token_acc, _ = evaluate(model, 4, num=200)
    assert token_acc > 0.5, f"held-out token accuracy after 60 steps on 4 digits: {token_acc}"


@pytest.mark.skipif(not PRETRAINED.exists(), reason="the shipped weights are missing")
def test_shipped_weights_reproduce_the_stated_accuracy():
    model, meta = load_model()
    # the CLI's evaluation: same seed and size
    token_acc, _ = evaluate(model, meta["config"]["length"])
    assert token_acc == pytest.approx(meta["held_out_token_accuracy"], abs=1e-12), \
        "the shipped weights no longer give the accuracy stored with them"
    assert token_acc >= 0.99
    assert PRETRAINED.stat().st_size < 1_000_000


def test_command_line_shows_progress_on_stderr_and_ends_with_the_accuracy_line(capsys):
    import re

    from attention_scratch.training.transformer import main

    args = ["--steps", "3", "--length", "3", "--d-model", "8", "--num-heads", "2", "--num-layers",
            "1", "--hidden", "8", "--batch", "4", "--warmup", "1", "--eval-size", "10"]
    main(args)
    captured = capsys.readouterr()
    assert "training (sort)" in captured.err and "3/3" in captured.err, captured.err
    lines = captured.out.strip().splitlines()
    assert re.fullmatch(r"held-out token accuracy: \d\.\d{3}", lines[-1]), lines[-1]
    assert lines[0].startswith("step     0  loss") and "3/3" not in captured.out
    main(args + ["--quiet"])
    assert capsys.readouterr().err == ""
