"""Answers to the chapter 1 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('1.1', 'softmax without the max subtraction', 'NaN or inf', '''
def stable_softmax(x, axis=-1):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)
'''),
    ('1.1', 'one maximum for the whole array instead of one per row', "each row's own maximum", '''
def stable_softmax(x, axis=-1):
    e = np.exp(x - x.max())
    return e / e.sum(axis=axis, keepdims=True)
'''),
    ('1.1', 'the last axis whatever `axis` says', 'axis=0', '''
def stable_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
'''),
    ('1.1', 'the maximum without keepdims, re-expanded for the last axis only',
     'could not be broadcast', '''
def stable_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis)[..., None])
    return e / e.sum(axis=axis)[..., None]
'''),
    ('1.1', 'converts the input to float64', 'dtype float64, expected float32', '''
def stable_softmax(x, axis=-1):
    x = np.asarray(x, dtype=float)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
'''),
    ('1.1', 'shifts and exponentiates the caller\'s array in place', 'in place', '''
def stable_softmax(x, axis=-1):
    x -= x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x
'''),
    ('1.1', 'computes float16 input in float32 and returns float32',
     'dtype float32, expected float16', '''
def stable_softmax(x, axis=-1):
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
'''),
    ('1.1', 'hides a NaN score with np.nan_to_num', 'so it must come out NaN', '''
def stable_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return np.nan_to_num(e / e.sum(axis=axis, keepdims=True))
'''),
    ('1.2', 'masked softmax that adds -1e9', 'fully masked row', '''
def masked_softmax(x, mask, axis=-1):
    z = np.where(mask, x, -1e9)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
'''),
    ('1.2', 'masked softmax that multiplies by the mask', 'NaN', '''
def masked_softmax(x, mask, axis=-1):
    e = np.exp(x - np.nanmax(np.where(mask, x, -np.inf), axis=axis, keepdims=True)) * mask
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s > 0, s, 1)
'''),
    ('1.2', '-inf for masked entries but no care for the empty row', 'fully masked row gave NaN',
     '''
def masked_softmax(x, mask, axis=-1):
    z = np.where(mask, x, -np.inf)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
'''),
    ('1.2', 'the maximum taken over the masked entries too', 'under the mask', '''
def masked_softmax(x, mask, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    e = np.where(mask, np.exp(x - m), 0)
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s > 0, s, 1)
'''),
    ('1.2', 'normalises along the last axis whatever `axis` says', 'axis=1', '''
def masked_softmax(x, mask, axis=-1):
    z = np.where(mask, x, -np.inf)
    m = z.max(axis=-1, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(m), m, 0))
    s = e.sum(axis=-1, keepdims=True)
    return e / np.where(s > 0, s, 1)
'''),
    ('1.2', 'computes in float64', 'dtype float64, expected float32', '''
def masked_softmax(x, mask, axis=-1):
    z = np.where(mask, x.astype(np.float64), -np.inf)
    m = z.max(axis=axis, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(m), m, 0))
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s > 0, s, 1)
'''),
    ('1.2', 'turns a NaN in a kept entry into weight 0 with np.nan_to_num',
     'so it must come out NaN', '''
def masked_softmax(x, mask, axis=-1):
    h = np.where(mask, x, -np.inf).astype(x.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.exp(h - h.max(axis=axis, keepdims=True))
        out = e / e.sum(axis=axis, keepdims=True)
    return np.nan_to_num(out, nan=0.0)
'''),
    ('1.2', 'skips NaN in kept entries with nanmax and nansum', 'so it must come out NaN', '''
def masked_softmax(x, mask, axis=-1):
    h = np.where(mask, x, -np.inf).astype(x.dtype)
    m = np.nanmax(np.where(np.isnan(h), -np.inf, h), axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(h - m)
    t = np.nansum(e, axis=axis, keepdims=True)
    return np.nan_to_num(e / np.where(t > 0, t, 1))
'''),
    ('1.2', 'guards the empty row with total > 0, which a NaN total also fails',
     'so it must come out NaN', '''
def masked_softmax(x, mask, axis=-1):
    hidden = np.where(mask, x, -np.inf).astype(x.dtype)
    row_max = hidden.max(axis=axis, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0)
    exps = np.exp(hidden - row_max)
    total = exps.sum(axis=axis, keepdims=True)
    return exps / np.where(total > 0, total, 1)
'''),
    ('1.3', 'logsumexp that overflows', 'exp(1000) overflowed', '''
def stable_logsumexp(x, axis=-1):
    return np.log(np.exp(x).sum(axis=axis))
'''),
    ('1.3', 'one maximum for the whole array', 'not of the whole array', '''
def stable_logsumexp(x, axis=-1):
    m = x.max()
    return m + np.log(np.exp(x - m).sum(axis=axis))
'''),
    ('1.3', 'no care for rows whose maximum is infinite', 'gave NaN', '''
def stable_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)
'''),
    ('1.3', 'squeeze() removes every axis of size 1', 'wrong shape: got (3,), expected (1, 3)', '''
def stable_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze()
'''),
    ('1.3', 'forgets to add the maximum back', 'entries differ', '''
def stable_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return np.log(np.exp(x - m).sum(axis=axis))
'''),
    ('1.3', 'sums in float64 and returns float64', 'dtype float64, expected float32', '''
def stable_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    total = np.sum(np.exp(x - m), axis=axis, keepdims=True, dtype=np.float64)
    return (m + np.log(total)).squeeze(axis)
'''),
    ('1.3', 'a 1-D input gives a Python float, losing float32', 'returned a Python float', '''
def stable_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        r = (np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis)
    return float(r) if r.ndim == 0 else r
'''),
    ('1.4', 'VJP with the row sum over the wrong axis', 'entries differ', '''
def softmax_vjp(grad_out, probs, axis=-1):
    return probs * (grad_out - (grad_out * probs).sum(axis=0, keepdims=True))
'''),
    ('1.4', 'VJP that forgets the probabilities inside the sum', 'entries differ', '''
def softmax_vjp(grad_out, probs, axis=-1):
    return probs * (grad_out - grad_out.sum(axis=axis, keepdims=True))
'''),
    ('1.4', 'the row sum always along the last axis', 'must run along axis 0', '''
def softmax_vjp(grad_out, probs, axis=-1):
    return probs * (grad_out - (grad_out * probs).sum(axis=-1, keepdims=True))
'''),
    ('1.4', 'the sign of the Jacobian flipped', 'diag(p) - p pᵀ', '''
def softmax_vjp(grad_out, probs, axis=-1):
    return probs * ((grad_out * probs).sum(axis=axis, keepdims=True) - grad_out)
'''),
    ('1.4', 'updates grad_out in place', 'changed its argument `grad_out` in place', '''
def softmax_vjp(grad_out, probs, axis=-1):
    grad_out -= (grad_out * probs).sum(axis=axis, keepdims=True)
    grad_out *= probs
    return grad_out
'''),
    ('1.4', 'divides the dot by sum(p): NaN on a fully masked row', 'do not divide by sum(p)', '''
def softmax_vjp(grad_out, probs, axis=-1):
    dot = (grad_out * probs).sum(axis=axis, keepdims=True) / probs.sum(axis=axis, keepdims=True)
    return probs * (grad_out - dot)
'''),
    ('1.5', 'one-sided differences', 'O(eps²)', '''
def numerical_gradient(f, x, eps=1e-6):
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    base = f(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        grad[i] = (f(x) - base) / eps
        x[i] = old
    return grad
'''),
    ('1.5', 'central differences that forget to restore x[i]', 'entries differ', '''
def numerical_gradient(f, x, eps=1e-6):
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        grad[i] = (up - f(x)) / (2 * eps)
    return grad
'''),
    ('1.5', 'a fixed step instead of the eps argument', 'use the eps given', '''
def numerical_gradient(f, x, eps=1e-6):
    x = np.array(x, dtype=np.float64)
    h = 1e-6
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad
'''),
    ('1.5', 'calls f with the flattened x', "x's own shape", '''
def numerical_gradient(f, x, eps=1e-6):
    flat = np.array(x, dtype=np.float64).ravel()
    grad = np.zeros_like(flat)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f(flat)
        flat[i] = old - eps
        down = f(flat)
        flat[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad.reshape(np.shape(x))
'''),
    ('1.5', 'a copy that keeps the dtype of x (integer, float32)', 'float64 copy', '''
def numerical_gradient(f, x, eps=1e-6):
    x = x.copy()
    grad = np.zeros(x.shape)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad
'''),
    ('1.5', "perturbs the caller's x itself, restoring it afterwards", 'float64 copy', '''
def numerical_gradient(f, x, eps=1e-6):
    grad = np.zeros(np.shape(x))
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad
'''),
    ('1.5', 'the wrong default eps (1e-4)', 'the default eps is 1e-6', '''
def numerical_gradient(f, x, eps=1e-4):
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    fx, fg = x.reshape(-1), grad.reshape(-1)
    for i in range(fx.size):
        o = fx[i]
        fx[i] = o + eps
        a = float(f(x))
        fx[i] = o - eps
        b = float(f(x))
        fx[i] = o
        fg[i] = (a - b) / (2 * eps)
    return grad
'''),
]

VALID = [
    ('1.1', 'one row at a time, with Python loops', '''
def stable_softmax(x, axis=-1):
    rows = np.moveaxis(x, axis, -1)
    out = np.empty_like(rows)
    for idx in np.ndindex(rows.shape[:-1]):
        row = rows[idx]
        exps = np.exp(row - max(row))
        out[idx] = exps / exps.sum()
    return np.moveaxis(out, -1, axis)
'''),
    ('1.1', 'exp(x - logsumexp(x))', '''
def stable_softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    lse = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return np.exp(x - lse)
'''),
    ('1.2', 'one row at a time, with Python loops', '''
def masked_softmax(x, mask, axis=-1):
    keep = np.moveaxis(np.broadcast_to(mask, x.shape), axis, -1)
    rows = np.moveaxis(x, axis, -1)
    out = np.zeros_like(rows)
    for idx in np.ndindex(rows.shape[:-1]):
        live = [j for j in range(rows.shape[-1]) if keep[idx][j] and rows[idx][j] != -np.inf]
        if live:
            top = max(rows[idx][j] for j in live)
            for j in live:
                out[idx][j] = np.exp(rows[idx][j] - top)
            out[idx] /= out[idx].sum()
    return np.moveaxis(out, -1, axis)
'''),
    ('1.2', "the where= arguments of NumPy's reductions and ufuncs", '''
def masked_softmax(x, mask, axis=-1):
    keep = np.broadcast_to(mask, x.shape)
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf, where=keep)
    m = np.where(np.isneginf(m), 0, m)
    e = np.exp(x - m, out=np.zeros_like(x), where=keep)
    s = e.sum(axis=axis, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s != 0)
'''),
    ('1.3', "NumPy's logaddexp, reduced along the axis", '''
def stable_logsumexp(x, axis=-1):
    return np.logaddexp.reduce(x, axis=axis)
'''),
    ('1.3', 'one row at a time, with Python loops', '''
def stable_logsumexp(x, axis=-1):
    rows = np.moveaxis(x, axis, -1)
    out = np.empty(rows.shape[:-1], dtype=x.dtype)
    for idx in np.ndindex(out.shape):
        m = rows[idx].max()
        if np.isinf(m):
            out[idx] = m
        else:
            out[idx] = m + np.log(np.sum(np.exp(rows[idx] - m)))
    return out
'''),
    ('1.4', 'einsum over the axis moved last', '''
def softmax_vjp(grad_out, probs, axis=-1):
    g = np.moveaxis(grad_out, axis, -1)
    p = np.moveaxis(probs, axis, -1)
    dot = np.einsum("...n,...n->...", g, p)[..., None]
    return np.moveaxis(p * (g - dot), -1, axis)
'''),
    ('1.4', 'p ∘ g minus p times the row sum, expanded', '''
def softmax_vjp(grad_out, probs, axis=-1):
    pg = probs * grad_out
    return pg - probs * pg.sum(axis=axis, keepdims=True)
'''),
    ('1.5', 'a fresh perturbed copy for every evaluation', '''
def numerical_gradient(f, x, eps=1e-6):
    x = np.asarray(x, dtype=np.float64)
    grad = np.empty(x.shape)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        grad[i] = (f(up) - f(down)) / (2 * eps)
    return grad
'''),
    ('1.5', 'steps built from the rows of an identity matrix', '''
def numerical_gradient(f, x, eps=1e-6):
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros(x.size)
    for k, unit in enumerate(np.eye(x.size)):
        step = eps * unit.reshape(x.shape)
        grad[k] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad.reshape(x.shape)
'''),
]
