"""Training and evaluating the tiny transformer on a synthetic task (chapter 15).

``python -m attention_scratch.transformer --task sort --seed 0`` trains from
scratch with Adam, prints the loss every 100 steps and shows a progress bar on
standard error (``--quiet``: no bar), evaluates on held-out sequences by greedy
generation with the KV cache and ends with the line
``held-out token accuracy: 0.xxx``. ``--save`` writes the weights to an ``.npz``
file that :func:`load_model` reads back.
"""
import argparse
import time
from pathlib import Path

import numpy as np

from ..nn import cross_entropy
from ..optim import Adam, clip_grad_norm, load_weights, save_params
from ..progress import printer_beside, progress_bar
from ..tasks import IGNORE, TASKS, VOCAB_SIZE, make_batch, sort_sequences
from ..transformer import TinyTransformer, generate

PRETRAINED = Path(__file__).resolve().parent.parent / "data" / "tiny_transformer_sort.npz"
DEFAULTS = dict(task="sort", seed=0, length=8, d_model=64, num_heads=4, num_layers=2, hidden=128,
                steps=1000, batch=64, lr=3e-3, warmup=100, clip=1.0, pack=1, attention="dense",
                backend="numpy")


def learning_rate(step, steps, lr, warmup):
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``lr / 10``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t)))


def train_step(model, opt, inputs, targets, clip=1.0, **forward_kw):
    """One forward, backward and Adam step;
    returns ``(loss, token accuracy on targets, grad norm)``. ``forward_kw`` go to
    ``model.forward`` (a block mask and positions for packed sequences)."""
    model.zero_grad()
    logits, cache = model.forward(inputs, **forward_kw)  # (B, L, V)
    loss, d_logits = cross_entropy(logits, targets, ignore_index=IGNORE)
    model.backward(d_logits, cache)
    norm = clip_grad_norm(model.gradients(), clip)
    opt.step()
    counted = targets != IGNORE
    acc = float((logits.argmax(-1) == targets)[counted].mean())
    return loss, acc, norm


def evaluate(model, length, num=1000, seed=12345, use_cache=True):
    """Held-out token accuracy by greedy generation: the fraction of output digits that are right.

    ``num`` sequences are drawn from the held-out split (never seen in training)
    with their own generator; the model writes ``length`` tokens after the
    separator, each conditioned on its own earlier outputs.
    """
    seqs = sort_sequences(np.random.default_rng(seed), num, length, split="held_out")  # (num, 2n+1)
    prompt, answer = seqs[:, :length + 1], seqs[:, length + 1:]  # (num, n+1), (num, n)
    out = generate(model, prompt, length, use_cache=use_cache)[:, length + 1:]  # (num, n)
    return float((out == answer).mean()), float((out == answer).all(axis=1).mean())


def build_model(cfg, rng):
    """A :class:`TinyTransformer` sized for the task in ``cfg`` (with its attention option)."""
    return TinyTransformer(VOCAB_SIZE, cfg["d_model"], cfg["num_heads"], cfg["num_layers"],
                           cfg["hidden"], max_len=2 * cfg["length"] + 1, rng=rng,
                           attention=cfg.get("attention", "dense"),
                           backend=cfg.get("backend", "numpy"))



def packed_batch(task, rng, rows, pack, length):
    """``pack`` training sequences packed into each of ``rows`` rows, for a document mask.

    Returns ``inputs``, ``targets`` (rows, pack·T), and ``positions``, ``doc_ids`` (pack·T,):
    each packed sequence restarts its positions at 0, and ``doc_ids`` says which one a token
    belongs to. Every sequence of the task has the same length ``T``, so one mask serves
    every row.
    """
    inputs, targets = make_batch(task, rng, rows * pack, length)  # (rows·pack, T)
    T = inputs.shape[1]
    return (inputs.reshape(rows, pack * T), targets.reshape(rows, pack * T),
            np.tile(np.arange(T), pack), np.repeat(np.arange(pack), T))


def packed_masks(cfg, doc_ids):
    """The forward arguments that keep packed sequences apart: a document block mask for
    ``attention="flash"`` (tiles of one sequence, so tiles across documents are skipped), or
    a boolean same-document mask, and-ed with the causal one, for dense attention."""
    from ..block_mask import create_block_mask
    from ..flex_mods import document

    n = len(doc_ids)
    if cfg.get("attention", "dense") == "flash":
        block = n // cfg["pack"]
        return {"block_mask": create_block_mask(document(doc_ids), None, None, n, n,
                                                BLOCK_SIZE=block)}
    keep = doc_ids[:, None] == doc_ids[None, :]  # (n, n): same document
    return {"attn_masks": [keep] * cfg["num_layers"]}


def train(task="sort", seed=0, *, log_every=100, time_limit=None, out=print, progress=False,
          **overrides):
    """Train from scratch; return ``(model, history)``.

    ``history`` holds per-step ``loss`` and ``acc`` (teacher-forced, on the
    training batch), the ``lr`` and elapsed ``time``. ``time_limit`` (seconds)
    stops training early if reached. Every ``log_every`` steps a line goes to
    ``out``; ``progress=True`` also shows a bar on standard error.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    cfg = dict(DEFAULTS, task=task, seed=seed, **overrides)
    rng = np.random.default_rng(seed)
    model = build_model(cfg, rng)
    data_rng = np.random.default_rng([seed, 1])
    opt = Adam(model, lr=cfg["lr"])
    pack = cfg["pack"]
    if cfg["batch"] % pack:
        raise ValueError(f"batch={cfg['batch']} must be a multiple of pack={pack}")
    forward_kw = {}
    history = {k: [] for k in ("loss", "acc", "lr", "time")}
    bar = progress_bar(cfg["steps"], desc=f"training ({task})", unit="step", enabled=progress)
    log = printer_beside(bar, out)

    start = time.perf_counter()
    with bar:
        for step in range(cfg["steps"]):
            opt.lr = learning_rate(step, cfg["steps"], cfg["lr"], cfg["warmup"])
            if pack > 1:  # the same sequences as unpacked, pack to a row
                inputs, targets, positions, doc_ids = packed_batch(
                    task, data_rng, cfg["batch"] // pack, pack, cfg["length"])
                if not forward_kw:
                    forward_kw = {**packed_masks(cfg, doc_ids), "positions": positions}
            else:
                inputs, targets = make_batch(task, data_rng, cfg["batch"], cfg["length"])
            loss, acc, _ = train_step(model, opt, inputs, targets, cfg["clip"], **forward_kw)
            elapsed = time.perf_counter() - start
            for k, v in (("loss", loss), ("acc", acc), ("lr", opt.lr), ("time", elapsed)):
                history[k].append(v)
            bar.update(1)
            if log_every and (step % log_every == 0 or step == cfg["steps"] - 1):
                log(f"step {step:5d}  loss {loss:.4f}  train acc {acc:.3f}  lr {opt.lr:.2e}  "
                    f"{elapsed:6.1f}s")
            if time_limit is not None and elapsed > time_limit:
                log(f"time limit of {time_limit}s reached after {step + 1} steps")
                break
    model.config_train = cfg
    return model, history


def load_model(path=PRETRAINED):
    """Rebuild a model saved by ``--save`` (default: the weights shipped with the package).

    A file that cannot be used raises :class:`attention_scratch.optim.WeightFileError`.
    """
    model, meta = load_weights(path, lambda meta: build_model(meta["config"],
                                                              np.random.default_rng(0)))
    model.config_train = meta["config"]
    return model, meta


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m attention_scratch.transformer",
                                     description="Train the tiny transformer of chapter "
                                                 "15 from scratch.")
    parser.add_argument("--task", default="sort", choices=TASKS)
    parser.add_argument("--seed", type=int, default=0)
    for name in ("length", "d_model", "num_heads", "num_layers", "hidden", "steps", "batch",
                 "warmup"):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=int,
                            default=DEFAULTS[name])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--pack", type=int, default=1,
                        help="sequences packed into one row, kept apart by a document mask")
    parser.add_argument("--attention", default="dense", choices=("dense", "flash"),
                        help="flash: the tiled kernels (flash_attention, flex_attention)")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "numba", "auto"),
                        help="the kernels' backend with --attention flash")
    parser.add_argument("--eval-size", type=int, default=1000,
                        help="held-out sequences to evaluate")
    parser.add_argument("--save", type=Path, help="write the trained weights to this .npz file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("length", "d_model", "num_heads", "num_layers",
                                               "hidden", "steps", "batch", "warmup", "lr", "pack",
                                               "attention", "backend")}
    start = time.perf_counter()
    model, history = train(args.task, args.seed, progress=not args.quiet, **overrides)
    token_acc, seq_acc = evaluate(model, args.length, num=args.eval_size)
    print(f"trained {len(history['loss'])} steps in {history['time'][-1]:.1f}s; "
          f"{model.num_parameters()} parameters; total {time.perf_counter() - start:.1f}s")
    print(f"held-out sequences fully correct: {seq_acc:.3f}")
    if args.save:
        save_params(args.save, model, config=model.config_train, history_loss=history["loss"],
                    history_acc=history["acc"], held_out_token_accuracy=token_acc)
        print(f"saved the weights to {args.save}")
    print(f"held-out token accuracy: {token_acc:.3f}")
    return token_acc


if __name__ == "__main__":
    main()
