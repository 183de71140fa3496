"""Answers to the chapter 15 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('15.1', 'layer norm with the unbiased variance', 'biased variance', '''
def layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(x.var(axis=-1, ddof=1, keepdims=True) + eps)
    x_hat = (x - mu) * inv_std
    return gamma * x_hat + beta, (x_hat, inv_std)
'''),
    ('15.2', 'layer norm backward that treats the mean and variance as constants', 'depend on x too', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    flat = grad_out.reshape(-1, D)
    return grad_out * gamma * inv_std, (flat * x_hat.reshape(-1, D)).sum(0), flat.sum(0)
'''),
    ('15.3', 'a decoding step that restarts the positions at 0', 'position offset', '''
def decode_step(model, ids, caches):
    x = model.embed(ids)
    for block, cache in zip(model.blocks, caches):
        x, _ = block.forward(x, cache=cache)
    logits, _ = model.output(x)
    return logits[:, -1]
'''),
]

VALID = [
]
