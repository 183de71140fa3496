"""Answers to the chapter 4 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('4.1', 'scores without the scale', '(q_i · k_j) · scale', '''
def scaled_scores(query, key, scale):
    return query @ np.swapaxes(key, -1, -2)
'''),
    ('4.1', 'the scale argument ignored: always 1/sqrt(E)', 'not always 1/sqrt(E)', '''
def scaled_scores(query, key, scale):
    return query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-1])
'''),
    ('4.1', 'divided by the scale instead of multiplied', 'with scale=0.5', '''
def scaled_scores(query, key, scale):
    return query @ np.swapaxes(key, -1, -2) / scale
'''),
    ('4.1', 'key.T, which reverses every axis of a stacked key', 'matmul', '''
def scaled_scores(query, key, scale):
    return query @ key.T * scale
'''),
    ('4.1', 'a transpose written for 4-D inputs only', "axes don't match array", '''
def scaled_scores(query, key, scale):
    return query @ np.transpose(key, (0, 1, 3, 2)) * scale
'''),
    ('4.1', 'float32 scores computed and returned in float64', 'dtype float64, expected float32',
     '''
def scaled_scores(query, key, scale):
    q = np.asarray(query, dtype=np.float64)
    return q @ np.swapaxes(key, -1, -2) * scale
'''),
    ('4.1', 'einsum with the output letters swapped: (..., S, L)', 'wrong shape', '''
def scaled_scores(query, key, scale):
    return np.einsum("...le,...se->...sl", query, key) * scale
'''),
    ('4.2', 'dropout survivors not rescaled', 'divided by (1 - p)', '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.shape) >= p
    return np.where(keep, weights, 0.0).astype(weights.dtype), keep
'''),
    ('4.2', 'keeps the entries below p: the polarity turned around',
     'rng.random(weights.shape) >= p', '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.shape) < p
    return np.where(keep, weights / (1 - p), 0.0), keep
'''),
    ('4.2', 'survivors multiplied by (1 - p) instead of divided', 'divided by (1 - p)', '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.shape) >= p
    return np.where(keep, weights * (1 - p), 0.0), keep
'''),
    ('4.2', 'the mask drawn from a binomial, not one rng.random draw', 'one draw', '''
def dropout_weights(weights, p, rng):
    keep = rng.binomial(1, 1 - p, size=weights.shape).astype(bool)
    return np.where(keep, weights / (1 - p), 0.0), keep
'''),
    ('4.2', 'a second draw for the dropped weights', 'dropped weights with p=0.3', '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.shape) >= p
    return np.where(rng.random(weights.shape) >= p, weights / (1 - p), 0.0), keep
'''),
    ('4.2', "a private copy of the generator: the caller's never advances", 'exactly one', '''
import copy

def dropout_weights(weights, p, rng):
    keep = copy.deepcopy(rng).random(weights.shape) >= p
    return np.where(keep, weights / (1 - p), 0.0), keep
'''),
    ('4.2', 'keep returned as numbers (0.0 and 1.0)', 'expected bool', '''
def dropout_weights(weights, p, rng):
    keep = (rng.random(weights.shape) >= p).astype(weights.dtype)
    return np.where(keep == 1, weights / (1 - p), 0.0), keep
'''),
    ('4.2', 'the mask divided by (1 - p) first: float64 for float32 weights',
     'dtype float64, expected float32', '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.shape) >= p
    if p >= 1:
        return np.zeros_like(weights), keep
    return keep / (1 - p) * weights, keep
'''),
    ('4.2', 'weights * keep / (1 - p): NaN when p = 1', 'not NaN', '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.shape) >= p
    return weights * keep / (1 - p), keep
'''),
    ('4.2', "dropout applied to the caller's weights in place",
     'changed its argument `weights` in place', '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.shape) >= p
    weights[~keep] = 0
    if p < 1:
        weights /= 1 - p
    return weights, keep
'''),
    ('4.2', 'returns early without drawing when p = 0',
     'must draw exactly one rng.random(weights.shape), even when', '''
def dropout_weights(weights, p, rng):
    if p == 0:
        return weights.copy(), np.ones(weights.shape, dtype=bool)
    keep = rng.random(weights.shape) >= p
    factor = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    return np.where(keep, weights * factor, 0.0).astype(weights.dtype), keep
'''),
    ('4.2', 'returns early without drawing when p = 1',
     'must draw exactly one rng.random(weights.shape), even when', '''
def dropout_weights(weights, p, rng):
    if p >= 1:
        return np.zeros_like(weights), np.zeros(weights.shape, dtype=bool)
    keep = rng.random(weights.shape) >= p
    return np.where(keep, weights / (1.0 - p), 0.0).astype(weights.dtype), keep
'''),
    ('4.3', 'dS without the row-sum term', 'rowsum', '''
def scores_gradient(grad_out, value, probs):
    return probs * (grad_out @ np.swapaxes(value, -1, -2))
'''),
    ('4.3', 'the row sum without keepdims (silently wrong when L == S)', 'keep its axis', '''
def scores_gradient(grad_out, value, probs):
    d_probs = grad_out @ np.swapaxes(value, -1, -2)
    return probs * (d_probs - (d_probs * probs).sum(axis=-1))
'''),
    ('4.3', 'the row sum taken over the query axis', 'along the key axis', '''
def scores_gradient(grad_out, value, probs):
    d_probs = grad_out @ np.swapaxes(value, -1, -2)
    return probs * (d_probs - (d_probs * probs).sum(axis=-2, keepdims=True))
'''),
    ('4.3', 'rowsum(dP) instead of rowsum(dP ∘ P)', 'rowsum(dP ∘ P)', '''
def scores_gradient(grad_out, value, probs):
    d_probs = grad_out @ np.swapaxes(value, -1, -2)
    return probs * (d_probs - d_probs.sum(axis=-1, keepdims=True))
'''),
    ('4.3', 'the outer P forgotten', 'P ∘ (dP - rowsum(dP ∘ P))', '''
def scores_gradient(grad_out, value, probs):
    d_probs = grad_out @ np.swapaxes(value, -1, -2)
    return d_probs - (d_probs * probs).sum(axis=-1, keepdims=True)
'''),
    ('4.3', 'value.T on stacked values', 'matmul', '''
def scores_gradient(grad_out, value, probs):
    d_probs = grad_out @ value.T
    return probs * (d_probs - (d_probs * probs).sum(axis=-1, keepdims=True))
'''),
    ('4.3', 'float32 inputs computed and returned in float64', 'dtype float64, expected float32',
     '''
def scores_gradient(grad_out, value, probs):
    g, v, p = (np.asarray(a, dtype=np.float64) for a in (grad_out, value, probs))
    d_probs = g @ np.swapaxes(v, -1, -2)
    return p * (d_probs - (d_probs * p).sum(axis=-1, keepdims=True))
'''),
]

VALID = [
    ('4.1', 'einsum with broadcasting leading axes', '''
def scaled_scores(query, key, scale):
    return np.einsum("...le,...se->...ls", query, key) * scale
'''),
    ('4.1', 'the scale applied to the queries first, moveaxis for the transpose', '''
def scaled_scores(query, key, scale):
    return np.matmul(query * scale, np.moveaxis(key, -1, -2))
'''),
    ('4.1', 'explicit loops over the broadcast leading axes, queries and keys', '''
def scaled_scores(query, key, scale):
    lead = np.broadcast_shapes(query.shape[:-2], key.shape[:-2])
    q = np.broadcast_to(query, lead + query.shape[-2:])
    k = np.broadcast_to(key, lead + key.shape[-2:])
    out = np.empty(lead + (q.shape[-2], k.shape[-2]), dtype=np.result_type(query, key))
    for idx in np.ndindex(*lead):
        for i in range(q.shape[-2]):
            for j in range(k.shape[-2]):
                out[idx + (i, j)] = np.dot(q[idx + (i,)], k[idx + (j,)]) * scale
    return out
'''),
    ('4.2', 'one scalar draw per weight, in order, and a multiplication by the mask', '''
def dropout_weights(weights, p, rng):
    u = np.array([rng.random() for _ in range(weights.size)]).reshape(weights.shape)
    keep = ~(u < p)
    if p == 1:
        return np.zeros_like(weights), keep
    return weights * keep / (1 - p), keep
'''),
    ('4.2', "a flat draw reshaped, survivors scaled with a float of the weights' dtype", '''
def dropout_weights(weights, p, rng):
    keep = rng.random(weights.size).reshape(weights.shape) >= p
    factor = weights.dtype.type(0 if p >= 1 else 1 / (1 - p))
    out = np.zeros_like(weights)
    out[keep] = weights[keep] * factor
    return out, keep
'''),
    ('4.3', 'einsum, with the row sum as a contraction', '''
def scores_gradient(grad_out, value, probs):
    d_probs = np.einsum("...le,...se->...ls", grad_out, value)
    row = np.einsum("...ls,...ls->...l", d_probs, probs)
    return probs * (d_probs - row[..., None])
'''),
    ('4.3', 'the softmax Jacobian diag(p) - p pᵀ of every row, applied to dP', '''
def scores_gradient(grad_out, value, probs):
    d_probs = grad_out @ np.swapaxes(value, -1, -2)
    eye = np.eye(probs.shape[-1], dtype=probs.dtype)
    jacobian = probs[..., :, None] * eye - probs[..., :, None] * probs[..., None, :]
    return np.einsum("...ij,...j->...i", jacobian, d_probs)
'''),
    ('4.3', 'loops over rows, following the equation', '''
def scores_gradient(grad_out, value, probs):
    lead = np.broadcast_shapes(grad_out.shape[:-2], value.shape[:-2], probs.shape[:-2])
    g = np.broadcast_to(grad_out, lead + grad_out.shape[-2:])
    v = np.broadcast_to(value, lead + value.shape[-2:])
    p = np.broadcast_to(probs, lead + probs.shape[-2:])
    out = np.zeros(p.shape, dtype=np.result_type(grad_out, value, probs))
    for idx in np.ndindex(*lead):
        for i in range(p.shape[-2]):
            d_row = np.array([g[idx + (i,)] @ v[idx + (j,)] for j in range(v.shape[-2])])
            out[idx + (i,)] = p[idx + (i,)] * (d_row - d_row @ p[idx + (i,)])
    return out
'''),
]
