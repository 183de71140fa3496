"""The encoder-decoder: whole-model gradient check for every attention, data, smoke training."""
import dataclasses

import numpy as np
import pytest

from attention_scratch.date_task import (
    BOS,
    EOS,
    PAD,
    CharVocab,
    DateTask,
    encode_batch,
    make_example,
)
from attention_scratch.seq2seq import ATTENTIONS, Config, Seq2Seq
from attention_scratch.testing import assert_close, numerical_gradient
from attention_scratch.training.seq2seq import exact_match, predict, train


def tiny_batch(rng, V=9):
    src = rng.integers(3, V, size=(2, 5))
    src[1, 3:] = PAD
    tgt_out = rng.integers(3, V, size=(2, 4))
    tgt_out[0, 3] = EOS
    tgt_out[1, 2], tgt_out[1, 3] = EOS, PAD
    tgt_in = np.concatenate([np.full((2, 1), BOS), tgt_out[:, :-1]], axis=1)
    tgt_in[1, 3] = PAD
    return {"src": src, "src_mask": src != PAD, "tgt_in": tgt_in, "tgt_out": tgt_out}


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_whole_model_gradient(rng, attention):
    config = Config(attention=attention, vocab_size=9, emb=3, enc_hidden=2, dec_hidden=4,
                    attn_dim=3, window=1, dtype="float64", seed=5)
    model = Seq2Seq(config)
    batch = tiny_batch(rng)
    model.loss_and_backward(batch)
    analytic = {k: g.copy() for k, g in model.gradients().items()}
    for name, p in model.parameters().items():
        def loss(value, p=p):
            saved = p.copy()
            p[...] = value
            out = model.loss_and_backward(batch)
            p[...] = saved
            return out

        assert_close(analytic[name], numerical_gradient(loss, p.copy()), rtol=1e-5, atol=1e-8,
                     what=f"{attention}: gradient of {name}")


def test_padding_does_not_change_the_output(rng):
    """Extra padding on the source (holding any embedding) must not change the decoded output."""
    model = Seq2Seq(Config(attention="bahdanau", dtype="float64"))
    src = rng.integers(3, 60, size=(2, 6))
    ids, w, _ = model.greedy(src, src != PAD, 5)
    padded = np.concatenate([src, np.zeros((2, 4), dtype=src.dtype)], axis=1)
    ids2, w2, _ = model.greedy(padded, padded != PAD, 5)
    assert np.array_equal(ids, ids2)
    assert_close(w2[..., :6], w, what="attention weights with extra padding")
    assert np.all(w2[..., 6:] == 0), "padded source positions must get zero attention"


def test_data_is_deterministic_and_the_splits_are_disjoint():
    a, b = DateTask(seed=1, n_train=200, n_heldout=50), DateTask(seed=1, n_train=200, n_heldout=50)
    assert [e.source for e in a.train] == [e.source for e in b.train]
    assert [e.source for e in DateTask(seed=2, n_train=200, n_heldout=50).train] != \
        [e.source for e in a.train]
    assert not {e.target for e in a.train} & {e.target
                                              for e in a.heldout}, "a held-out date was trained on"
    for e in a.train[:50]:
        assert len(e.spans) == len(e.target)
        for ch, (s0, s1) in zip(e.target, e.spans, strict=True):
            if s0 >= 0 and ch.isdigit() and e.source[s0:s1].isdigit() and len(e.source[s0:s1]) == 4:
                assert ch in e.source[s0:s1]


def test_long_variant_lists_several_dates():
    import datetime
    rng = np.random.default_rng(0)
    e = make_example([datetime.date(2014, 3, 3), datetime.date(1999, 12, 1)], rng)
    assert e.target == "2014-03-03 1999-12-01"
    assert e.spans[10] == (-1, -1)
    task = DateTask(n_train=100, n_heldout=10, max_dates=3)
    assert max(len(x.target) for x in task.train) == 32
    vocab = CharVocab()
    batch = encode_batch(task.train[:4], vocab)
    assert batch["tgt_in"][0,
                           0] == BOS and vocab.decode(batch["tgt_out"][0]) == task.train[0].target


def test_training_smoke_on_a_small_subset(capsys):
    """A few hundred steps on a small subset must cut the loss well below its start."""
    task = DateTask(n_train=500, n_heldout=50)
    config = Config(attention="bahdanau", steps=60, batch=32)
    model, losses, _ = train(config, task, progress=False)
    assert capsys.readouterr().err == "", "progress=False must not draw a progress bar"
    assert np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.6 * losses[:10].mean(), (f"loss did not fall: {losses[:3]} "
                                                            f"... {losses[-3:]}")
    preds, weights, _ = predict(model, task.heldout[:5], task.vocab)
    assert len(preds) == 5 and weights[0].shape == (12, len(task.heldout[0].source))
    assert exact_match(model, task.heldout[:5], task.vocab).dtype == bool


def test_bad_attention_name():
    with pytest.raises(ValueError, match="attention must be one of"):
        Seq2Seq(dataclasses.replace(Config(), attention="cosine"))


def test_command_line_shows_progress_and_ends_with_the_held_out_line(tmp_path):
    import re
    import subprocess
    import sys

    from attention_scratch.training.seq2seq import load_model
    path = tmp_path / "m.npz"
    done = subprocess.run([sys.executable, "-m", "attention_scratch.seq2seq", "--attention",
                           "luong-local-p", "--steps", "3", "--n-train", "100", "--n-heldout", "20",
                           "--save-dtype", "float16", "--save", str(path)], capture_output=True,
                          text=True, timeout=120, env={"OPENBLAS_NUM_THREADS": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr, done.stderr
    # the progress bar goes to stderr, with the step count and the recent loss; stdout
    # stays the report
    assert "training luong-local-p" in done.stderr and "3/3" in done.stderr, done.stderr
    assert re.search(r"loss \d+\.\d{3}", done.stderr), done.stderr
    assert "3/3" not in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"held-out exact match: \d\.\d{3} \(n=20\)", last), last
    model, meta = load_model(path)
    assert model.config.attention == "luong-local-p" and meta["n_heldout"] == 20
