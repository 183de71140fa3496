"""Performer attention: positive orthogonal random features for the softmax kernel (chapter 14).

Choromanski et al. (2021, FAVOR+) write the softmax kernel as an expectation,

    exp(q·k) = E_{ω ~ N(0, I)} [ exp(ω·q - ‖q‖²/2) · exp(ω·k - ‖k‖²/2) ],

and estimate it with ``m`` samples ``ω_1..ω_m``: ``exp(q·k) ≈ φ(q)·φ(k)`` with
``φ(x) = exp(Ωx - ‖x‖²/2) / √m``. Plugging ``φ`` into linear attention
(:mod:`attention_scratch.variants`) gives an *unbiased estimate* of every
numerator and denominator of softmax attention, at linear cost. The features
are positive, so the estimated weights are never negative and the estimate is
most precise exactly where weights are small, unlike the sin/cos features of
Rahimi & Recht (2007). Drawing the ``ω`` orthogonal to one another lowers the
variance further.
"""
import numpy as np

from ._checks import array_module, check_flag, check_positive_int, check_scale
from ._nonfinite import nan_rows
from .contract import acc_dtype_of
from .variants import _check_qkv, absent_nonfinite, linear_attention_features


def gaussian_random_features(num_features, dim, rng, *, orthogonal=True):
    """Draw the projection ``Ω`` of shape ``(num_features, dim)``.

    ``orthogonal=False``: i.i.d. standard normal rows. ``orthogonal=True``: blocks
    of ``dim`` rows that are exactly orthogonal (the Q of a Gaussian matrix's QR
    decomposition), each row rescaled by the norm of an independent Gaussian
    vector so that every row is still marginally ``N(0, I)``.

    Shapes
    ------
    returns ``(num_features, dim)``, float64.
    """
    num_features = check_positive_int(num_features, "num_features")
    dim = check_positive_int(dim, "dim")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    if not orthogonal:
        return rng.standard_normal((num_features, dim))  # (m, E)
    blocks = []
    for _ in range(-(-num_features // dim)):
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))  # (E, E) orthogonal columns
        q = q * np.sign(np.diag(r))  # (E, E): fix the signs so q is Haar-distributed
        blocks.append(q.T)  # rows are orthonormal
    omega = np.concatenate(blocks, axis=0)[:num_features]  # (m, E)
    norms = np.linalg.norm(rng.standard_normal((num_features, dim)), axis=1)  # (m,): chi_E
    return omega * norms[:, None]  # (m, E)


# BEGIN EXERCISE 14.3 (3 points): positive random features for the softmax kernel
def positive_random_features(x, omega, stabilize=None):
    """``φ(x) = exp(Ωx - ‖x‖²/2 - c) / √m``, the positive random features of FAVOR+.

    The exponent of feature ``r`` of row ``n`` is ``x_n·ω_r - ‖x_n‖²/2``. The
    constant ``c`` keeps ``exp`` in range (for a long ``x`` every exponent is far
    below 0, and every feature of the row would underflow to 0) and cancels in
    attention's normalisation: ``stabilize=None`` uses ``c = 0``; ``"row"`` the maximum of the
    exponent over the features of each row (for queries); ``"all"`` the maximum
    over all rows and features of the last two axes (for keys, which must share
    one constant), one constant per index of the leading axes ``...``.

    The result has the dtype of ``x`` and ``omega`` (float32 in, float32 out).

    Shapes: ``x`` (..., N, E), ``omega`` (m, E); returns (..., N, m).
    """
    # BEGIN SOLUTION
    exponent = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)  # (..., N, m)
    if stabilize == "row":
        exponent = exponent - exponent.max(axis=-1, keepdims=True)  # (..., N, m)
    elif stabilize == "all":
        exponent = exponent - exponent.max(axis=(-2, -1), keepdims=True)  # (..., N, m)
    return np.exp(exponent) / omega.shape[0] ** 0.5  # (..., N, m); a Python float keeps float32
    # END SOLUTION


# END EXERCISE


def trig_random_features(x, omega):
    """The sin/cos random features of the softmax kernel: ``exp(‖x‖²/2) [sin Ωx, cos Ωx] / √m``.

    Also unbiased for ``exp(q·k)``, but the estimated weights can be negative
    and the variance is large where the true weight is small. For comparison only.

    Shapes
    ------
    ``x`` (..., N, E), ``omega`` (m, E) -> (..., N, 2m).
    """
    proj = x @ omega.T  # (..., N, m)
    scale = np.exp(0.5
                   * (x * x).sum(axis=-1, keepdims=True)) / np.sqrt(omega.shape[0])  # (..., N, 1)
    return scale * np.concatenate([np.sin(proj), np.cos(proj)], axis=-1)  # (..., N, 2m)


def performer_attention(query, key, value, num_features=128, is_causal=False, scale=None, *,
                        omega=None, rng=None, orthogonal=True, eps=0.0):
    """Softmax attention approximated with FAVOR+ positive random features, in linear time.

    Queries and keys are multiplied by ``√scale`` so that ``q'·k' = scale·q·k``;
    then ``out = φ(Q') (φ(K')ᵀ V) / (φ(Q') φ(K')ᵀ 1)``, as in linear attention.
    ``is_causal`` uses the masked (parallel) form, top-left aligned.

    Parameters
    ----------
    query, key, value : array_like
        ``(..., L, E)``, ``(..., S, E)``, ``(..., S, Ev)``.
    num_features : int
        ``m``, the number of random features (ignored when ``omega`` is given).
    is_causal : bool
        Keep ``j <= i``.
    scale : float, optional
        Default ``1/√E``.
    omega : array_like, optional
        A fixed projection ``(m, E)``, e.g. from :func:`gaussian_random_features`.
    rng : numpy.random.Generator, optional
        Draws ``omega`` when it is not given (one of the two is required).
    orthogonal : bool
        Draw orthogonal features (FAVOR+) or i.i.d. ones.
    eps : float
        Added to the normaliser. Default 0: the stabilisers shrink the features by
        an unknown constant, so an absolute ``eps`` would bias the result; rows
        whose estimated weights all underflow give 0.

    Returns
    -------
    ndarray, ``(..., L, Ev)``, the input dtype.
    """
    scale, is_causal = check_scale(scale), check_flag(is_causal, "is_causal")
    q, k, v = _check_qkv(query, key, value)
    dtype = np.result_type(q, k, v)
    acc_dtype = acc_dtype_of(dtype)
    E = q.shape[-1]
    q, k, v, rows = absent_nonfinite(q, k, v, is_causal)  # NaN/±inf: docs/design.md §3
    if q.shape[-2] == 0 or k.shape[-2] == 0 or E == 0:
        # No query or no key: empty or 0. E = 0: every score is 0, exp(0) = 1 for every pair, so the
        # one feature 1 is exact (each row averages the values it sees, as dense attention does).
        n = 1 if E == 0 and q.shape[-2] and k.shape[-2] else 0
        ones_q = array_module(q).ones(q.shape[:-1] + (n,), dtype=acc_dtype)  # (..., L, 1 or 0)
        ones_k = array_module(k).ones(k.shape[:-1] + (n,), dtype=acc_dtype)  # (..., S, 1 or 0)
        return nan_rows(linear_attention_features(ones_q, ones_k, v.astype(acc_dtype), is_causal,
                                                  eps), rows).astype(dtype)
    if omega is None:
        if rng is None:
            raise ValueError("performer_attention needs rng= (a numpy.random.Generator) or omega=")
        omega = gaussian_random_features(num_features, E, rng, orthogonal=orthogonal)
    omega = array_module(q).asarray(omega)  # drawn on the host, used where q lives
    if omega.ndim != 2 or omega.shape[1] != E:
        raise ValueError(f"omega must have shape (num_features, E={E}); got {omega.shape}")
    root = np.sqrt(1.0 / np.sqrt(E) if scale is None else scale)
    omega = omega.astype(acc_dtype)
    phi_q = positive_random_features(q.astype(acc_dtype) * root, omega, "row")  # (..., L, m)
    phi_k = positive_random_features(k.astype(acc_dtype) * root, omega, "all")  # (..., S, m)
    out = linear_attention_features(phi_q, phi_k, v.astype(acc_dtype), is_causal,
                                    eps)  # (..., L, Ev)
    return nan_rows(out, rows).astype(dtype)
