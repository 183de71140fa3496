"""Answers to the chapter 2 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('2.1', 'additive score that forgets the tanh', 'entries differ', '''
def additive_score(query_proj, keys_proj, v):
    hidden = query_proj[..., None, :] + keys_proj
    return hidden @ v, hidden
'''),
    ('2.1', 'returns the hidden layer before the tanh', 'the hidden layer tanh(q + k_j)', '''
def additive_score(query_proj, keys_proj, v):
    pre = query_proj[..., None, :] + keys_proj
    return np.tanh(pre) @ v, pre
'''),
    ('2.1', 'sums the hidden units instead of weighting them by v',
     'contract the hidden layer with v', '''
def additive_score(query_proj, keys_proj, v):
    hidden = np.tanh(query_proj[..., None, :] + keys_proj)
    return hidden.sum(axis=-1), hidden
'''),
    ('2.1', 'written for a (B, A) query only', 'could not be broadcast', '''
def additive_score(query_proj, keys_proj, v):
    hidden = np.tanh(query_proj[:, None, :] + keys_proj)
    return np.einsum("bsa,a->bs", hidden, v), hidden
'''),
    ('2.2', 'pooling VJP without the softmax Jacobian', 'the softmax VJP', '''
def attention_pooling_backward(grad_context, weights, values):
    grad_values = weights[..., :, None] * grad_context[..., None, :]
    return np.einsum("...sv,...v->...s", values, grad_context), grad_values
'''),
    ('2.2', 'the softmax VJP without its row-sum term', 'Σ_j α_j dL/dα_j', '''
def attention_pooling_backward(grad_context, weights, values):
    grad_values = weights[..., :, None] * grad_context[..., None, :]
    grad_weights = np.einsum("...sv,...v->...s", values, grad_context)
    return weights * grad_weights, grad_values
'''),
    ('2.2', 'the row sum of the softmax VJP over the batch axis', 'dL/dscores', '''
def attention_pooling_backward(grad_context, weights, values):
    grad_values = weights[..., :, None] * grad_context[..., None, :]
    grad_weights = np.einsum("...sv,...v->...s", values, grad_context)
    dot = (grad_weights * weights).sum(axis=0, keepdims=True)
    return weights * (grad_weights - dot), grad_values
'''),
    ('2.2', 'dL/dvalues without the weights', 'α_j · dL/dc', '''
def attention_pooling_backward(grad_context, weights, values):
    grad_values = np.broadcast_to(grad_context[..., None, :], values.shape).copy()
    grad_weights = np.einsum("...sv,...v->...s", values, grad_context)
    dot = (grad_weights * weights).sum(axis=-1, keepdims=True)
    return weights * (grad_weights - dot), grad_values
'''),
    ('2.2', 'divides the dot by the sum of the weights: NaN on a fully masked row',
     'do not divide by the sum of the weights', '''
def attention_pooling_backward(grad_context, weights, values):
    gv = weights[..., :, None] * grad_context[..., None, :]
    gw = np.einsum("...sv,...v->...s", values, grad_context)
    dot = (gw * weights).sum(-1, keepdims=True) / weights.sum(-1, keepdims=True)
    return weights * (gw - dot), gv
'''),
    ('2.2', 'zeroes the gradient of every small weight, not only of the masked ones',
     'tiny weight 1e-4', '''
def attention_pooling_backward(grad_context, weights, values):
    gv = weights[..., :, None] * grad_context[..., None, :]
    gw = (values * grad_context[..., None, :]).sum(-1)
    dot = (gw * weights).sum(-1, keepdims=True)
    gs = weights * gw - weights * dot
    gs[weights < 1e-3] = 0
    return gs, gv
'''),
    ('2.2', 'the two gradients returned in the wrong order', 'wrong shape', '''
def attention_pooling_backward(grad_context, weights, values):
    grad_values = weights[..., :, None] * grad_context[..., None, :]
    grad_weights = np.einsum("...sv,...v->...s", values, grad_context)
    dot = (grad_weights * weights).sum(axis=-1, keepdims=True)
    return grad_values, weights * (grad_weights - dot)
'''),
    ('2.3', 'GRU step with the update gate the wrong way round', 'entries differ', '''
def gru_step(x_proj, h, W_h, b_h):
    H = h.shape[-1]
    hh = h @ W_h + b_h
    r = sigmoid(x_proj[:, :H] + hh[:, :H])
    z = sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])
    n = np.tanh(x_proj[:, 2 * H:] + r * hh[:, 2 * H:])
    return z * n + (1 - z) * h, r, z, n, hh[:, 2 * H:]
'''),
    ('2.3', 'the reset and update blocks swapped', 'r (reset gate, the first block', '''
def gru_step(x_proj, h, W_h, b_h):
    H = h.shape[-1]
    hh = h @ W_h + b_h
    z = sigmoid(x_proj[:, :H] + hh[:, :H])
    r = sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])
    n = np.tanh(x_proj[:, 2 * H:] + r * hh[:, 2 * H:])
    return (1 - z) * n + z * h, r, z, n, hh[:, 2 * H:]
'''),
    ('2.3', 'the reset gate leaves the bias b_hn out', 'the bias inside hh_n', '''
def gru_step(x_proj, h, W_h, b_h):
    H = h.shape[-1]
    hh = h @ W_h + b_h
    r = sigmoid(x_proj[:, :H] + hh[:, :H])
    z = sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])
    n = np.tanh(x_proj[:, 2 * H:] + r * (h @ W_h[:, 2 * H:]) + b_h[2 * H:])
    return (1 - z) * n + z * h, r, z, n, hh[:, 2 * H:]
'''),
    ('2.3', 'the reset gate applied to h before the product (the 2014 paper, not this layout)',
     'before the reset gate multiplies it', '''
def gru_step(x_proj, h, W_h, b_h):
    H = h.shape[-1]
    hh = h @ W_h + b_h
    r = sigmoid(x_proj[:, :H] + hh[:, :H])
    z = sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])
    hh_n = (r * h) @ W_h[:, 2 * H:] + b_h[2 * H:]
    n = np.tanh(x_proj[:, 2 * H:] + hh_n)
    return (1 - z) * n + z * h, r, z, n, hh_n
'''),
    ('2.3', 'hh_n returned without its bias', 'hh_n = h W_hn + b_hn', '''
def gru_step(x_proj, h, W_h, b_h):
    H = h.shape[-1]
    hh = h @ W_h + b_h
    r = sigmoid(x_proj[:, :H] + hh[:, :H])
    z = sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])
    n = np.tanh(x_proj[:, 2 * H:] + r * hh[:, 2 * H:])
    return (1 - z) * n + z * h, r, z, n, h @ W_h[:, 2 * H:]
'''),
]

VALID = [
    ('2.1', 'expand_dims and einsum', '''
def additive_score(query_proj, keys_proj, v):
    hidden = np.tanh(np.expand_dims(query_proj, -2) + keys_proj)
    return np.einsum("...sa,a->...s", hidden, v), hidden
'''),
    ('2.1', 'loops over every leading index and key', '''
def additive_score(query_proj, keys_proj, v):
    q, k = np.broadcast_arrays(query_proj[..., None, :], keys_proj)
    hidden = np.empty(q.shape, dtype=np.result_type(q, k))
    scores = np.empty(q.shape[:-1], dtype=hidden.dtype)
    for idx in np.ndindex(q.shape[:-1]):
        hidden[idx] = np.tanh(q[idx] + k[idx])
        scores[idx] = hidden[idx] @ v
    return scores, hidden
'''),
    ('2.2', 'loops over rows and keys', '''
def attention_pooling_backward(grad_context, weights, values):
    grad_scores = np.empty_like(weights)
    grad_values = np.empty_like(values)
    for idx in np.ndindex(weights.shape[:-1]):
        alpha, h, g = weights[idx], values[idx], grad_context[idx]
        d_alpha = np.array([h[j] @ g for j in range(len(alpha))])
        total = sum(alpha[j] * d_alpha[j] for j in range(len(alpha)))
        for j in range(len(alpha)):
            grad_values[idx][j] = alpha[j] * g
            grad_scores[idx][j] = alpha[j] * (d_alpha[j] - total)
    return grad_scores, grad_values
'''),
    ('2.2', 'matrix products, and the softmax VJP of chapter 1', '''
from attention_scratch.softmax import softmax_vjp


def attention_pooling_backward(grad_context, weights, values):
    grad_values = weights[..., :, None] @ grad_context[..., None, :]
    grad_weights = (values @ grad_context[..., :, None])[..., 0]
    return softmax_vjp(grad_weights, weights), grad_values
'''),
    ('2.3', 'np.split, a hand-written sigmoid, (1 - z) n + z h', '''
def gru_step(x_proj, h, W_h, b_h):
    x_r, x_z, x_n = np.split(x_proj, 3, axis=1)
    hh_r, hh_z, hh_n = np.split(h @ W_h + b_h, 3, axis=1)
    r = 1 / (1 + np.exp(-(x_r + hh_r)))
    z = 1 / (1 + np.exp(-(x_z + hh_z)))
    n = np.tanh(x_n + r * hh_n)
    return (1 - z) * n + z * h, r, z, n, hh_n
'''),
]
