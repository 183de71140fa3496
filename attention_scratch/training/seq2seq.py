"""Training, evaluation and the command line of the date-task encoder-decoder (chapters 2 and 3).

``python -m attention_scratch.seq2seq --attention bahdanau --seed 3`` trains a
model from scratch with the defaults of :class:`~attention_scratch.seq2seq.Config`
shows a progress bar on standard error while it trains (``--quiet``: none) and
ends with ``held-out exact match: 0.xxx (n=...)`` on standard output.
``--save FILE.npz`` keeps the weights; :func:`load_model` reads them back.
"""
import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from ..date_task import DateTask, encode_batch
from ..optim import Adam, clip_grad_norm, load_weights, save_params
from ..progress import progress_bar
from ..seq2seq import ATTENTIONS, Config, Seq2Seq

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def learning_rate(step, steps, lr):
    """Cosine decay from ``lr`` to ``lr / 10`` over ``steps`` steps."""
    return lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / max(steps, 1))))


def train(config, task=None, progress=True, out=None):
    """Train a :class:`Seq2Seq` from scratch. Returns ``(model, losses, seconds)``.

    Batches are drawn from ``task.train`` with ``np.random.default_rng(config.seed)``;
    the model is initialised from the same seed, so a run is reproducible.
    ``progress`` shows a bar with the mean loss of the last 10 steps on ``out``
    (default: standard error).
    """
    task = task or DateTask(config.data_seed, config.n_train, config.n_heldout, config.max_dates)
    config = dataclasses.replace(config, vocab_size=len(task.vocab))
    model = Seq2Seq(config)
    opt = Adam(model, lr=config.lr)
    rng = np.random.default_rng([config.seed, 1])
    losses = []
    bar = progress_bar(config.steps, desc=f"training {config.attention}", unit="step",
                       enabled=progress, file=out)
    start = time.perf_counter()
    with bar:
        for step in range(1, config.steps + 1):
            idx = rng.integers(len(task.train), size=config.batch)
            batch = encode_batch([task.train[i] for i in idx], task.vocab)
            losses.append(model.loss_and_backward(batch))
            clip_grad_norm(model.gradients(), config.clip)
            opt.lr = learning_rate(step - 1, config.steps, config.lr)
            opt.step()
            if progress and (step % 10 == 0 or step == config.steps):
                bar.set_postfix_str(f"loss {np.mean(losses[-10:]):.3f}", refresh=False)
            bar.update(1)
    return model, np.array(losses), time.perf_counter() - start


def predict(model, examples, vocab, batch_size=500, max_len=None):
    """Greedy predictions (strings) for ``examples``, with attention weights and local positions.

    Returns ``(predictions, weights, positions)``: lists with one entry per example;
    ``weights[k]`` is (max_len, S_k) or None, ``positions[k]`` is (max_len,) or None.
    """
    max_len = max_len or 11 * model.config.max_dates + 1
    preds, weights, positions = [], [], []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        b = encode_batch(chunk, vocab)
        ids, w, p = model.greedy(b["src"], b["src_mask"], max_len)
        for k, e in enumerate(chunk):
            preds.append(vocab.decode(ids[k]))
            weights.append(None if w is None else w[k, :, :len(e.source)])
            positions.append(None if p is None else p[k])
    return preds, weights, positions


def exact_match(model, examples, vocab, batch_size=500):
    """Per-example correctness (bool array): the greedy output equals the target exactly."""
    preds, _, _ = predict(model, examples, vocab, batch_size)
    return np.array([p == e.target for p, e in zip(preds, examples, strict=True)])


def heldout_loss(model, examples, vocab, batch_size=500):
    """Teacher-forced cross-entropy per target character (nats), averaged over ``examples``.

    Runs the training pass (and discards its gradients), so it measures exactly the
    training objective on data the model has not seen.
    """
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        b = encode_batch(examples[i:i + batch_size], vocab)
        n = int((b["tgt_out"] != 0).sum())
        total += model.loss_and_backward(b) * n
        count += n
    model.zero_grad()
    return total / count


def load_model(path):
    """Rebuild a model saved by ``--save``. Returns ``(model, meta)``; meta holds the config.

    A file that cannot be used raises :class:`attention_scratch.optim.WeightFileError`.
    """
    return load_weights(path, lambda meta: Seq2Seq(Config(**meta["config"])))


def pretrained(name):
    """A model shipped with the package: ``pretrained("bahdanau")`` reads ``data/bahdanau.npz``."""
    path = DATA_DIR / f"{name}.npz"
    if not path.exists():
        available = sorted(p.stem for p in DATA_DIR.glob("*.npz"))
        raise ValueError(f"no shipped model named {name!r}; available: {available}")
    return load_model(path)


def main(argv=None):
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m attention_scratch.seq2seq",
                                     description="Train an RNN encoder-decoder on the date task.")
    parser.add_argument("--attention", choices=ATTENTIONS, default=defaults.attention)
    for field in dataclasses.fields(Config):
        if field.name not in ("attention", "vocab_size"):
            parser.add_argument("--" + field.name.replace("_", "-"), type=field.type if
                                isinstance(field.type, type) else type(field.default),
                                default=field.default)
    parser.add_argument("--save", help="write the trained weights to this .npz file")
    parser.add_argument("--save-dtype", default="float32", choices=["float32", "float16"],
                        help="dtype of the saved weights (float16 halves the file)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    config = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                       if f.name != "vocab_size"})
    task = DateTask(config.data_seed, config.n_train, config.n_heldout, config.max_dates)
    print(f"attention={config.attention} seed={config.seed} steps={config.steps} "
          f"batch={config.batch} train={len(task.train)} held-out={len(task.heldout)} "
          f"max_dates={config.max_dates}")
    model, losses, seconds = train(config, task, progress=not args.quiet)
    print(f"{model.num_parameters()} parameters; trained {config.steps} steps in {seconds:.1f} s; "
          f"final loss {np.mean(losses[-50:]):.4f}")
    correct = exact_match(model, task.heldout, task.vocab)
    if args.save:
        meta = dict(config=dataclasses.asdict(model.config), steps=config.steps,
                    train_seconds=round(seconds, 1), heldout_exact_match=float(correct.mean()),
                    n_heldout=int(correct.size), save_dtype=args.save_dtype)
        params = model.parameters()
        if args.save_dtype != model.config.dtype:  # evaluate the weights exactly as they are saved
            for p in params.values():
                p[...] = p.astype(args.save_dtype)
            meta["saved_exact_match"] = float(exact_match(model, task.heldout, task.vocab).mean())
            print(f"weights rounded to {args.save_dtype} for saving: held-out exact match "
                  f"{meta['saved_exact_match']:.3f}")
        else:
            meta["saved_exact_match"] = meta["heldout_exact_match"]
        save_params(args.save, {k: p.astype(args.save_dtype) for k, p in params.items()}, **meta)
        print(f"saved {args.save}")
    print(f"held-out exact match: {correct.mean():.3f} (n={correct.size})")
    return float(correct.mean())


if __name__ == "__main__":
    main()
