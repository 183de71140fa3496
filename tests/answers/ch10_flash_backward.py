"""Answers to the chapter 10 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    # 10.1 --------------------------------------------------------------------------------------
    ('10.1', 'D summed over the query axis', 'the sum over the last axis (Ev)', '''
def d_term(grad_out, out):
    return (grad_out * out).sum(axis=-2)
'''),
    ('10.1', 'D summed over axis 1 (right for one head only)', 'wrong shape', '''
def d_term(grad_out, out):
    return (grad_out * out).sum(axis=1)
'''),
    ('10.1', 'one number per head: summed over the queries too', 'wrong shape', '''
def d_term(grad_out, out):
    return np.sum(grad_out * out, axis=(-2, -1))
'''),
    ('10.1', 'keepdims=True leaves an axis of length 1', 'wrong shape', '''
def d_term(grad_out, out):
    return (grad_out * out).sum(axis=-1, keepdims=True)
'''),
    ('10.1', 'a matrix product dO Oᵀ instead of row sums', 'wrong shape', '''
def d_term(grad_out, out):
    return grad_out @ np.swapaxes(out, -1, -2)
'''),
    ('10.1', 'accumulated and returned in float64', 'dtype float64, expected float32', '''
def d_term(grad_out, out):
    return (grad_out * out).sum(axis=-1, dtype=np.float64)
'''),
    # 10.2 --------------------------------------------------------------------------------------
    ('10.1', 'keepdims, then np.squeeze, which drops L = 1 too', 'np.squeeze would drop L too', '''
def d_term(grad_out, out):
    return np.squeeze((grad_out * out).sum(axis=-1, keepdims=True))
'''),
    ('10.2', 'recomputed weights that ignore the tile mask', "0 where keep is False", '''
def recompute_probs(scores, lse, keep=None):
    return np.exp(scores - lse[..., None])
'''),
    ('10.2', 'weights multiplied by the mask after exp', 'masked scores hold NaN and +inf', '''
def recompute_probs(scores, lse, keep=None):
    p = np.exp(scores - lse[..., None])
    if keep is not None:
        p = p * keep
    return p
'''),
    ('10.2', 'each tile normalised on its own (a softmax of the tile)', 'need not sum to 1', '''
def recompute_probs(scores, lse, keep=None):
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    p = np.exp(scores - np.where(np.isneginf(top), 0.0, top))
    total = p.sum(axis=-1, keepdims=True)
    return p / np.where(total > 0, total, 1.0)
'''),
    ('10.2', 'lse subtracted without [..., None]', 'lse[..., None] (1, 4, 1) against scores', '''
def recompute_probs(scores, lse, keep=None):
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    return np.exp(scores - lse)
'''),
    ('10.2', 'the difference the wrong way round, exp(lse - S)',
     'P = exp(scores - lse[..., None])', '''
def recompute_probs(scores, lse, keep=None):
    if keep is not None:
        scores = np.where(keep, scores, np.inf)
    return np.exp(lse[..., None] - scores)
'''),
    ('10.2', 'a float64 array of -inf for the mask', 'dtype float64, expected float32', '''
def recompute_probs(scores, lse, keep=None):
    if keep is not None:
        scores = np.where(keep, scores, np.full(scores.shape, -np.inf))
    return np.exp(scores - lse[..., None])
'''),
    # 10.3 --------------------------------------------------------------------------------------
    ('10.2', 'exp(scores) / exp(lse), which overflows near 800',
     'exp(scores) / exp(lse) overflows', '''
def recompute_probs(scores, lse, keep=None):
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    return np.exp(scores) / np.exp(lse)[..., None]
'''),
    ('10.2', 'exp(scores) / exp(lse) with the overflow silenced and its NaN zeroed',
     'exp(scores) / exp(lse) overflows', '''
def recompute_probs(scores, lse, keep=None):
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.nan_to_num(np.exp(scores) / np.exp(lse)[..., None])
'''),
    ('10.2', 'every NaN weight zeroed, a kept NaN score too', 'never hide it', '''
def recompute_probs(scores, lse, keep=None):
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    with np.errstate(invalid="ignore"):
        p = np.exp(scores - lse[..., None])
    return np.where(np.isnan(p), 0, p).astype(scores.dtype)
'''),
    ('10.3', 'dS that forgets to multiply D by P', 'dS = P ∘ (dP - D[..., None])', '''
def dscores(p, dp, d):
    return p * dp - d[..., None]
'''),
    ('10.3', 'D recomputed from the tile instead of the given d',
     'do not recompute it from the tile', '''
def dscores(p, dp, d):
    return p * (dp - (p * dp).sum(axis=-1, keepdims=True))
'''),
    ('10.3', 'd subtracted without [..., None]', 'd[..., None] (1, 4, 1) against p', '''
def dscores(p, dp, d):
    return p * (dp - d)
'''),
    ('10.3', 'P forgotten: dP - D', 'dS = P ∘ (dP - D[..., None])', '''
def dscores(p, dp, d):
    return dp - d[..., None]
'''),
    ('10.3', 'd converted to float64 first', 'dtype float64, expected float32', '''
def dscores(p, dp, d):
    d = np.asarray(d, dtype=float)
    return p * (dp - d[..., None])
'''),
    ('10.3', 'dp changed in place', 'changed its argument `dp`', '''
def dscores(p, dp, d):
    dp -= d[..., None]
    return p * dp
'''),
    ('10.3', 'P times (dP - D): a masked P = 0 times a NaN dP is NaN', 'must not reach it', '''
def dscores(p, dp, d):
    return p * (dp - d[..., None])
'''),
    ('10.3', 'every NaN zeroed with nan_to_num, a seen one too', 'never hidden', '''
def dscores(p, dp, d):
    return np.nan_to_num(p * (dp - d[..., None]))
'''),
]

VALID = [
    # 10.1 --------------------------------------------------------------------------------------
    ('10.1', 'einsum', '''
def d_term(grad_out, out):
    return np.einsum("...lv,...lv->...l", grad_out, out)  # (..., L)
'''),
    ('10.1', 'a batch of row-by-column products', '''
def d_term(grad_out, out):
    # (..., L, 1, Ev) @ (..., L, Ev, 1) -> (..., L)
    return (grad_out[..., None, :] @ out[..., :, None])[..., 0, 0]
'''),
    # 10.2 --------------------------------------------------------------------------------------
    ('10.2', 'np.exp with where= and out=', '''
def recompute_probs(scores, lse, keep=None):
    p = np.zeros(np.broadcast_shapes(scores.shape, np.shape(keep) if keep is not None else ()),
                 dtype=scores.dtype)
    return np.exp(scores - lse[..., None], out=p,
                  where=True if keep is None else keep)  # (..., bq, bk)
'''),
    ('10.2', 'exp first, then np.where on the mask', '''
def recompute_probs(scores, lse, keep=None):
    p = np.exp(scores - np.expand_dims(lse, -1))  # (..., bq, bk)
    return p if keep is None else np.where(keep, p, 0)
'''),
    # 10.3 --------------------------------------------------------------------------------------
    ('10.3', 'two products, P·dP - P·D', '''
def dscores(p, dp, d):
    seen = p != 0  # (..., bq, bk): a masked key has P = 0, and its dP must not matter
    return np.where(seen, p * dp, 0) - np.where(seen, p * np.expand_dims(d, -1), 0)  # (..., bq, bk)
'''),
    ('10.3', 'a loop over the rows and keys, 0 where P is 0', '''
def dscores(p, dp, d):
    ds = np.empty_like(p)
    for idx in np.ndindex(d.shape):
        for j in range(p.shape[-1]):
            ds[idx][j] = 0.0 if p[idx][j] == 0 else p[idx][j] * (dp[idx][j] - d[idx])
    return ds
'''),
]
