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
    ('15.1', 'eps added outside the square root', 'eps inside the square root', '''
def layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / (np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True)) + eps)
    x_hat = (x - mu) * inv_std
    return gamma * x_hat + beta, (x_hat, inv_std)
'''),
    ('15.1', 'normalised over the first axis (batch norm) instead of the last',
     'over the last axis', '''
def layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0, keepdims=True)
    inv_std = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=0, keepdims=True) + eps)
    x_hat = (x - mu) * inv_std
    return gamma * x_hat + beta, (x_hat, inv_std)
'''),
    ('15.1', 'the variance as mean(x²) - mean(x)², which cancels for rows with a large mean',
     'mean(x²) - mu²', '''
def layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = (x * x).mean(axis=-1, keepdims=True) - mu * mu
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv_std
    return gamma * x_hat + beta, (x_hat, inv_std)
'''),
    ('15.1', 'inv_std without keepdims, flattened to (..., )', 'wrong shape', '''
def layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1) + eps)
    x_hat = (x - mu) * inv_std[..., None]
    return gamma * x_hat + beta, (x_hat, inv_std)
'''),
    ('15.1', 'the standard deviation cached instead of its inverse', 'inv_std', '''
def layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    std = np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    x_hat = (x - mu) / std
    return gamma * x_hat + beta, (x_hat, std)
'''),
    ('15.1', 'x centred in place', 'changed its argument `x` in place', '''
def layer_norm(x, gamma, beta, eps=1e-5):
    x -= x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    x_hat = x * inv_std
    return gamma * x_hat + beta, (x_hat, inv_std)
'''),
    ('15.2', 'layer norm backward that treats the mean and variance as constants',
     'depend on x too', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    flat = grad_out.reshape(-1, D)
    return grad_out * gamma * inv_std, (flat * x_hat.reshape(-1, D)).sum(0), flat.sum(0)
'''),
    ('15.2', 'a backward that forgets the mean of g (only the x_hat term)', 'mean(g)', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    flat = grad_out.reshape(-1, D)
    g = grad_out * gamma
    dx = inv_std * (g - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    return dx, (flat * x_hat.reshape(-1, D)).sum(0), flat.sum(0)
'''),
    ('15.2', 'a backward that forgets the x_hat term (only the mean of g)',
     'x_hat * mean(g * x_hat)', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    flat = grad_out.reshape(-1, D)
    g = grad_out * gamma
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True))
    return dx, (flat * x_hat.reshape(-1, D)).sum(0), flat.sum(0)
'''),
    ('15.2', 'the means taken over the whole array instead of each row',
     'over the last axis of each row', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    flat = grad_out.reshape(-1, D)
    g = grad_out * gamma
    dx = inv_std * (g - g.mean() - x_hat * (g * x_hat).mean())
    return dx, (flat * x_hat.reshape(-1, D)).sum(0), flat.sum(0)
'''),
    ('15.2', 'dx without gamma: the gradient of x_hat taken to be grad_out',
     'g = grad_out * gamma', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    flat = grad_out.reshape(-1, D)
    g = grad_out
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True) - x_hat
                    * (g * x_hat).mean(axis=-1, keepdims=True))
    return dx, (flat * x_hat.reshape(-1, D)).sum(0), flat.sum(0)
'''),
    ('15.2', 'dgamma multiplied by gamma', 'gamma itself does not appear', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    g = grad_out * gamma
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True) - x_hat
                    * (g * x_hat).mean(axis=-1, keepdims=True))
    return dx, (g * x_hat).reshape(-1, D).sum(0), grad_out.reshape(-1, D).sum(0)
'''),
    ('15.2', 'the parameter gradients summed over the first axis only', 'wrong shape', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    g = grad_out * gamma
    dx = inv_std * (g - g.mean(axis=-1, keepdims=True) - x_hat
                    * (g * x_hat).mean(axis=-1, keepdims=True))
    return dx, (grad_out * x_hat).sum(axis=0), grad_out.sum(axis=0)
'''),
    ('15.3', 'a decoding step that restarts the positions at 0', 'position offset', '''
def decode_step(model, ids, caches):
    x = model.embed(ids)
    for block, cache in zip(model.blocks, caches):
        x, _ = block.forward(x, cache=cache)
    logits, _ = model.output(x)
    return logits[:, -1]
'''),
    ('15.3', 'a step that recomputes the new tokens from scratch and ignores the caches',
     'cache must hold', '''
def decode_step(model, ids, caches):
    logits, _ = model.forward(ids)
    return logits[:, -1]
'''),
    ('15.3', 'every block given caches[0]', 'its own cache', '''
def decode_step(model, ids, caches):
    x = model.embed(ids, offset=caches[0].length)
    for block in model.blocks:
        x, _ = block.forward(x, cache=caches[0])
    logits, _ = model.output(x)
    return logits[:, -1]
'''),
    ('15.3', 'the logits of the first new token instead of the last', 'the last new token', '''
def decode_step(model, ids, caches):
    x = model.embed(ids, offset=caches[0].length)
    for block, cache in zip(model.blocks, caches):
        x, _ = block.forward(x, cache=cache)
    logits, _ = model.output(x)
    return logits[:, 0]
'''),
    ('15.3', 'the offset taken from the number of new tokens', 'exceed max_len', '''
def decode_step(model, ids, caches):
    x = model.embed(ids, offset=ids.shape[1])
    for block, cache in zip(model.blocks, caches):
        x, _ = block.forward(x, cache=cache)
    logits, _ = model.output(x)
    return logits[:, -1]
'''),
    ('15.3', 'the read-out without the final layer norm', 'model.output', '''
def decode_step(model, ids, caches):
    x = model.embed(ids, offset=caches[0].length)
    for block, cache in zip(model.blocks, caches):
        x, _ = block.forward(x, cache=cache)
    logits, _ = model.head.forward(x)
    return logits[:, -1]
'''),
]

VALID = [
    ('15.1', 'np.var and a division instead of multiplying by inv_std', '''
def layer_norm(x, gamma, beta, eps=1e-5):
    std = np.sqrt(np.var(x, axis=-1, keepdims=True) + eps)
    x_hat = (x - np.mean(x, axis=-1, keepdims=True)) / std
    return x_hat * gamma + beta, (x_hat, 1 / std)
'''),
    ('15.1', 'a loop over the rows with sums divided by D', '''
def layer_norm(x, gamma, beta, eps=1e-5):
    D = x.shape[-1]
    x_hat = np.empty_like(x)
    inv_std = np.empty(x.shape[:-1] + (1,), dtype=x.dtype)
    for index in np.ndindex(x.shape[:-1]):
        row = x[index]
        centred = row - row.sum() / D
        inv_std[index] = 1 / np.sqrt((centred ** 2).sum() / D + eps)
        x_hat[index] = centred * inv_std[index]
    return gamma * x_hat + beta, (x_hat, inv_std)
'''),
    ('15.2', 'the formula multiplied out by D, parameter gradients with einsum', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    g = grad_out * gamma
    dx = inv_std / D * (D * g - g.sum(axis=-1, keepdims=True) - x_hat
                        * (g * x_hat).sum(axis=-1, keepdims=True))
    rows_g, rows_x = grad_out.reshape(-1, D), x_hat.reshape(-1, D)
    dgamma = np.einsum("nd,nd->d", rows_g, rows_x)
    dbeta = np.einsum("nd->d", rows_g)
    return dx, dgamma, dbeta
'''),
    ('15.2', 'the Jacobian of each row built and applied in a loop', '''
def layer_norm_backward(grad_out, cache, gamma):
    x_hat, inv_std = cache
    D = x_hat.shape[-1]
    dx = np.empty_like(grad_out)
    for index in np.ndindex(x_hat.shape[:-1]):
        xh = x_hat[index]
        jacobian = inv_std[index][0] * (np.eye(D, dtype=xh.dtype) - 1 / D - np.outer(xh, xh) / D)
        dx[index] = jacobian.T @ (grad_out[index] * gamma)
    axes = tuple(range(grad_out.ndim - 1))
    return dx, (grad_out * x_hat).sum(axis=axes), grad_out.sum(axis=axes)
'''),
    ('15.3', 'the new tokens fed one at a time, each through every block', '''
def decode_step(model, ids, caches):
    for t in range(ids.shape[1]):
        x = model.embed(ids[:, t:t + 1], offset=caches[-1].length)
        for i, block in enumerate(model.blocks):
            x, _ = block.forward(x, cache=caches[i])
    logits, _ = model.output(x)
    return logits[:, 0]
'''),
]
