"""Training utilities: gradient clipping, the Adam optimiser, saving parameters to ``.npz``.

They work on plain ``{name: array}`` dictionaries, such as
:meth:`attention_scratch.nn.Module.parameters` and ``.gradients()`` return, so
any model built from :mod:`attention_scratch.nn` layers can use them.

Public, stable names: ``clip_grad_norm``, ``Adam``, ``save_params``, ``load_params``,
``load_weights``, ``WeightFileError``.

Every weight file is read by :func:`load_params` (``allow_pickle=False``: a file cannot
run code), and a model is rebuilt from one by :func:`load_weights`. A file that cannot
be used raises :class:`WeightFileError`, naming the file and what is wrong.
"""
import json
import zipfile

import numpy as np


def _dicts(params, grads):
    if hasattr(params, "parameters") and grads is None:
        return params.parameters(), params.gradients()
    if grads is None:
        raise TypeError("pass a Module, or a params dict together with a grads dict")
    if set(params) != set(grads):
        raise ValueError(f"params and grads must have the same names; got {sorted(params)} "
                         f"and {sorted(grads)}")
    return dict(params), dict(grads)


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so that their joint L2 norm is at most ``max_norm``.

    Parameters
    ----------
    grads : dict of ndarray
        ``{name: gradient}`` (for example ``model.gradients()``).
    max_norm : float

    Returns
    -------
    float
        The norm before clipping (useful to log).
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive; got {max_norm}")
    total = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values())))
    if total > max_norm:
        scale = max_norm / (total + 1e-12)
        for g in grads.values():
            g *= scale
    return total


class Adam:
    """Adam (Kingma & Ba, ICLR 2015) with bias correction, updating the parameters in place.

    ``m ← β1 m + (1 - β1) g``; ``v ← β2 v + (1 - β2) g²``;
    ``p ← p - lr · m̂ / (sqrt(v̂) + eps)`` with ``m̂ = m / (1 - β1^t)``, ``v̂ = v / (1 - β2^t)``.

    Parameters
    ----------
    params : Module or dict of ndarray
        A :class:`~attention_scratch.nn.Module`, or ``{name: parameter}`` (then pass ``grads``).
    grads : dict of ndarray, optional
        ``{name: gradient}``, the same names; read at every :meth:`step`.
    lr : float
    betas : (float, float)
    eps : float
    weight_decay : float
        Decoupled weight decay (AdamW): ``p ← p - lr · weight_decay · p``.
    """

    def __init__(self, params, grads=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params, self.grads = _dicts(params, grads)
        if lr <= 0:
            raise ValueError(f"lr must be positive; got {lr}")
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.t = 0

    def step(self):
        """Apply one update from the current gradients."""
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for k, p in self.params.items():
            g = self.grads[k]
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            if self.weight_decay:
                p -= self.lr * self.weight_decay * p
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)


def save_params(path, params, **meta):
    """Save ``{name: array}`` (and JSON-serialisable ``meta``) to a compressed ``.npz`` file.

    Parameters
    ----------
    path : str or Path
    params : Module or dict of ndarray
    **meta
        Extra information, such as the configuration needed to rebuild the model;
        stored as JSON under the key ``"__meta__"``.
    """
    if hasattr(params, "parameters"):
        params = params.parameters()
    if "__meta__" in params:
        raise ValueError("a parameter may not be named '__meta__'")
    np.savez_compressed(path, __meta__=np.array(json.dumps(meta)), **params)


class WeightFileError(ValueError):
    """A weight file cannot be used: not a ``.npz`` file, damaged, pickled arrays, bad metadata,
    or arrays and configuration that do not fit the model. The message names the file."""


def load_params(path):
    """Load what :func:`save_params` wrote. Returns ``(params dict, meta dict)``.

    Use ``model.load_state(params)`` to copy the arrays into a model, or
    :func:`load_weights` to rebuild the model as well.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    WeightFileError
        The file is not a ``.npz`` (zip) archive, a member is damaged or holds pickled
        objects (never loaded: ``allow_pickle=False``), or the metadata is not a JSON object.
    """
    with open(path, "rb"):  # FileNotFoundError (or PermissionError) names the file
        pass
    if not zipfile.is_zipfile(path):
        raise WeightFileError(f"{path}: not a .npz file of weights "
                              "(no zip archive: empty, truncated or another kind of file)")
    try:
        with np.load(path, allow_pickle=False) as data:
            params = {}
            for name in data.files:
                try:
                    params[name] = data[name]
                except ValueError as err:
                    what = ("holds pickled objects, which are never loaded" if "pickle" in str(err)
                            else "is damaged")
                    raise WeightFileError(f"{path}: array {name!r} {what} ({err})") from None
                except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
                    raise WeightFileError(f"{path}: array {name!r} is damaged "
                                          f"({type(err).__name__}: {err})") from None
    except FileNotFoundError:
        raise
    except WeightFileError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise WeightFileError(f"{path}: not a .npz file of weights, or a damaged one "
                              f"({type(err).__name__}: {err})") from None
    meta = params.pop("__meta__", None)
    if meta is None:
        return params, {}
    try:
        meta = json.loads(str(meta))
    except json.JSONDecodeError as err:
        raise WeightFileError(f"{path}: the metadata (__meta__) is not valid JSON "
                              f"({err})") from None
    if not isinstance(meta, dict):
        raise WeightFileError(f"{path}: the metadata (__meta__) must be a JSON object; "
                              f"got {type(meta).__name__}")
    return params, meta


def load_weights(path, build):
    """Rebuild a model from a weight file: ``build(meta)`` makes it, then the arrays are copied in.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save_params` with the configuration in its metadata.
    build : callable
        ``build(meta) -> model`` (a :class:`attention_scratch.nn.Module`); it reads
        ``meta["config"]``.

    Returns
    -------
    (model, meta)

    Raises
    ------
    WeightFileError
        Everything :func:`load_params` raises, and: no configuration or one the model
        rejects, missing or unexpected arrays, arrays of the wrong shape.
    """
    params, meta = load_params(path)
    if not isinstance(meta.get("config"), dict):
        raise WeightFileError(f"{path}: no model configuration in the metadata (meta['config']); "
                              f"got keys {sorted(meta)}")
    try:
        model = build(meta)
    except (TypeError, ValueError, KeyError) as err:
        raise WeightFileError(f"{path}: wrong config {meta['config']!r}: "
                              f"{type(err).__name__}: {err}") from None
    expected = model.parameters()
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        raise WeightFileError(f"{path}: the arrays do not fit the model: missing {missing}, "
                              f"unexpected {extra}")
    for name, p in expected.items():
        if params[name].shape != p.shape:
            raise WeightFileError(f"{path}: array {name!r} has shape {params[name].shape}; "
                                  f"the model's has shape {p.shape}")
    model.load_state(params)
    return model, meta
