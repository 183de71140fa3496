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
    ('2.2', 'pooling VJP without the softmax Jacobian', 'softmax VJP', '''
def attention_pooling_backward(grad_context, weights, values):
    grad_values = weights[..., :, None] * grad_context[..., None, :]
    return np.einsum("...sv,...v->...s", values, grad_context), grad_values
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
]

VALID = [
]
