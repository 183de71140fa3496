"""The weights shipped in attention_scratch/data/ reproduce the accuracy the command line reported.

Each file was written by ``python -m attention_scratch.seq2seq ... --save-dtype float16 --save``,
which evaluated the weights as saved and stored that number in the file's metadata. Here the
weights are evaluated again, from scratch, on the same held-out examples.
"""
import numpy as np
import pytest

from attention_scratch.date_task import DateTask
from attention_scratch.training.seq2seq import DATA_DIR, exact_match, load_model, pretrained

SHORT = ["none", "bahdanau", "luong-dot", "luong-general", "luong-concat", "luong-local-m",
         "luong-local-p"]
SHIPPED = SHORT + ["long-none", "long-bahdanau"]  # the date-task models of chapters 2 and 3


def evaluate(name):
    model, meta = pretrained(name)
    c = model.config
    task = DateTask(c.data_seed, n_train=0, n_heldout=meta["n_heldout"], max_dates=c.max_dates)
    return exact_match(model, task.heldout, task.vocab), meta


def test_every_variant_is_shipped_and_small():
    missing = [n for n in SHIPPED if not (DATA_DIR / f"{n}.npz").exists()]
    assert not missing, f"missing shipped weights: {missing}"
    total = sum((DATA_DIR / f"{n}.npz").stat().st_size for n in SHIPPED)
    assert total < 1.2e6, f"shipped weights take {total / 1e6:.2f} MB"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_the_reported_accuracy(name):
    correct, meta = evaluate(name)
    assert correct.size == meta["n_heldout"]
    # exact reproduction up to a tie broken differently by another BLAS (at most 2 examples in 1000)
    assert abs(correct.mean() - meta["saved_exact_match"]) <= 2 / correct.size, (
        f"{name}: evaluated {correct.mean():.3f}, "
        f"the command line reported {meta['saved_exact_match']:.3f}")


def test_bahdanau_beats_no_attention_and_reaches_95_percent():
    bahdanau, _ = evaluate("bahdanau")
    none, _ = evaluate("none")
    assert bahdanau.mean() >= 0.95, f"bahdanau held-out exact match {bahdanau.mean():.3f} < 0.95"
    assert none.mean() < bahdanau.mean()


def test_load_model_rebuilds_the_configuration(tmp_path):
    model, meta = load_model(DATA_DIR / "bahdanau.npz")
    assert model.config.attention == "bahdanau" and meta["steps"] == model.config.steps
    assert all(p.dtype == np.float32 for p in model.parameters().values())
    with pytest.raises(ValueError, match="no shipped model"):
        pretrained("transformer")
