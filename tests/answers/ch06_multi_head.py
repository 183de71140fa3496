"""Answers to the chapter 6 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('6.1', 'a reshape without the transpose', 'move the head axis before L', '''
def split_heads(x, num_heads):
    *lead, L, width = x.shape
    return x.reshape(tuple(lead) + (num_heads, L, width // num_heads))
'''),
    ('6.1', 'heads interleaved: feature f goes to head f % H', 'feature h·D + d of token l', '''
def split_heads(x, num_heads):
    *lead, L, width = x.shape
    x = x.reshape(tuple(lead) + (L, width // num_heads, num_heads))  # (..., L, D, H)
    return np.moveaxis(x, -1, -3)  # (..., H, L, D)
'''),
    ('6.1', 'a transpose that moves the feature axis instead of the head axis', 'wrong shape', '''
def split_heads(x, num_heads):
    *lead, L, width = x.shape
    x = x.reshape(tuple(lead) + (L, num_heads, width // num_heads))
    return np.swapaxes(x, -1, -3)
'''),
    ('6.1', 'written for (B, L, H·D) inputs only', 'too many values to unpack', '''
def split_heads(x, num_heads):
    B, L, width = x.shape
    return x.reshape(B, L, num_heads, width // num_heads).transpose(0, 2, 1, 3)
'''),
    ('6.1', 'the heads stacked on axis 1 whatever the leading axes', 'the head axis just before L',
     '''
def split_heads(x, num_heads):
    return np.stack(np.split(x, num_heads, axis=-1), axis=1)
'''),
    ('6.1', 'a float64 copy of float32 input', 'dtype float64, expected float32', '''
def split_heads(x, num_heads):
    *lead, L, width = x.shape
    x = np.array(x, dtype=float).reshape(tuple(lead) + (L, num_heads, width // num_heads))
    return np.swapaxes(x, -2, -3)
'''),
    ('6.1', 'reshape with -1 for the head width, which fails when L = 0', 'cannot tell', '''
def split_heads(x, num_heads):
    *lead, L, W = x.shape
    return np.swapaxes(x.reshape(*lead, L, num_heads, -1), -2, -3)
'''),
    ('6.2', 'a reshape without the transpose', 'move the head axis after L', '''
def merge_heads(x):
    *lead, H, L, D = x.shape
    return x.reshape(tuple(lead) + (L, H * D))
'''),
    ('6.2', 'features interleaved: head h lands on features h, h + H, ...',
     'features h·D .. h·D + D - 1', '''
def merge_heads(x):
    *lead, H, L, D = x.shape
    return np.moveaxis(x, -3, -1).reshape(tuple(lead) + (L, D * H))
'''),
    ('6.2', 'the heads concatenated along the sequence axis', 'wrong shape', '''
def merge_heads(x):
    return np.concatenate([x[..., h, :, :] for h in range(x.shape[-3])], axis=-2)
'''),
    ('6.2', 'written for (B, H, L, D) inputs only', 'too many values to unpack', '''
def merge_heads(x):
    B, H, L, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, L, H * D)
'''),
    ('6.2', 'a float64 result for float32 heads', 'dtype float64, expected float32', '''
def merge_heads(x):
    x = np.swapaxes(x, -2, -3).astype(np.float64)
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))
'''),
    ('6.2', 'reshape with -1 for the model width, which fails when L = 0', 'cannot infer -1', '''
def merge_heads(x):
    *lead, H, L, D = x.shape
    return np.swapaxes(x, -2, -3).reshape(*lead, L, -1)
'''),
    ('6.3', 'key heads tiled instead of repeated', 'must read key head', '''
def repeat_kv(x, num_q_heads):
    return np.tile(x, (1,) * (x.ndim - 3) + (num_q_heads // x.shape[-3], 1, 1))
'''),
    ('6.3', 'repeated num_q_heads times instead of G times', 'wrong shape', '''
def repeat_kv(x, num_q_heads):
    return np.repeat(x, num_q_heads, axis=-3)
'''),
    ('6.3', 'repeated along the sequence axis', 'wrong shape', '''
def repeat_kv(x, num_q_heads):
    return np.repeat(x, num_q_heads // x.shape[-3], axis=-2)
'''),
    ('6.3', 'repeated along axis 1 whatever the leading axes', 'the third from the end', '''
def repeat_kv(x, num_q_heads):
    return np.repeat(x, num_q_heads // x.shape[-3], axis=1)
'''),
    ('6.3', 'a broadcast over a group axis placed before the key heads (the tiled order)',
     'must read key head', '''
def repeat_kv(x, num_q_heads):
    *lead, hkv, S, D = x.shape
    g = num_q_heads // hkv
    grouped = np.broadcast_to(x[..., None, :, :, :], tuple(lead) + (g, hkv, S, D))
    return grouped.reshape(tuple(lead) + (num_q_heads, S, D))
'''),
    ('6.4', 'group gradients averaged', 'gets the sum', '''
def fold_kv_grad(grad, num_kv_heads):
    *lead, hq, S, D = grad.shape
    return grad.reshape(tuple(lead) + (num_kv_heads, hq // num_kv_heads, S, D)).mean(axis=-3)
'''),
    ('6.4', 'groups taken in the tiled order (heads h, h + Hkv, ...)',
     'key head 0 gets the sum of query heads 0, 1, 2', '''
def fold_kv_grad(grad, num_kv_heads):
    *lead, hq, S, D = grad.shape
    return grad.reshape(tuple(lead) + (hq // num_kv_heads, num_kv_heads, S, D)).sum(axis=-4)
'''),
    ('6.4', 'only the first copy of each group kept', 'gets the sum', '''
def fold_kv_grad(grad, num_kv_heads):
    return grad[..., ::grad.shape[-3] // num_kv_heads, :, :]
'''),
    ('6.4', 'written for (B, Hq, S, D) gradients only', 'too many values to unpack', '''
def fold_kv_grad(grad, num_kv_heads):
    B, hq, S, D = grad.shape
    return grad.reshape(B, num_kv_heads, hq // num_kv_heads, S, D).sum(axis=2)
'''),
    ('6.4', 'summed in float64 and returned so', 'dtype float64, expected float32', '''
def fold_kv_grad(grad, num_kv_heads):
    *lead, hq, S, D = grad.shape
    grouped = grad.reshape(tuple(lead) + (num_kv_heads, hq // num_kv_heads, S, D))
    return grouped.sum(axis=-3, dtype=np.float64)
'''),
    ('6.5', 'a new array at every append (no spare room, never in place)',
     'return that same array', '''
def append_to_buffer(buffer, length, new):
    return np.concatenate([buffer[..., :length, :], new], axis=-2), length + new.shape[-2]
'''),
    ('6.5', 'the filled part returned, a view instead of the buffer', 'not a view of part of it',
     '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    if length + n > buffer.shape[-2]:
        grown = np.empty(buffer.shape[:-2] + (max(2 * buffer.shape[-2], length + n),
                                              buffer.shape[-1]), dtype=buffer.dtype)
        grown[..., :length, :] = buffer[..., :length, :]
        buffer = grown
    buffer[..., length:length + n, :] = new
    return buffer[..., :length + n, :], length + n
'''),
    ('6.5', 'grown when exactly full (>= instead of >)', 'still fits', '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n >= capacity:
        grown = np.empty(buffer.shape[:-2] + (max(2 * capacity, length + n), buffer.shape[-1]),
                         dtype=buffer.dtype)
        grown[..., :length, :] = buffer[..., :length, :]
        buffer = grown
    buffer[..., length:length + n, :] = new
    return buffer, length + n
'''),
    ('6.5', 'grown to exactly the length needed (no doubling)', 'capacities after each append', '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n > capacity:
        grown = np.empty(buffer.shape[:-2] + (length + n, buffer.shape[-1]), dtype=buffer.dtype)
        grown[..., :length, :] = buffer[..., :length, :]
        buffer = grown
    buffer[..., length:length + n, :] = new
    return buffer, length + n
'''),
    ('6.5', 'the history not copied into the grown buffer', 'copy them over when the buffer grows',
     '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n > capacity:
        buffer = np.zeros(buffer.shape[:-2] + (max(2 * capacity, length + n), buffer.shape[-1]),
                          dtype=buffer.dtype)
    buffer[..., length:length + n, :] = new
    return buffer, length + n
'''),
    ('6.5', 'doubled once, even when that is not enough room', 'could not broadcast', '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n > capacity:
        grown = np.empty(buffer.shape[:-2] + (2 * capacity, buffer.shape[-1]), dtype=buffer.dtype)
        grown[..., :length, :] = buffer[..., :length, :]
        buffer = grown
    buffer[..., length:length + n, :] = new
    return buffer, length + n
'''),
    ('6.5', 'a grown buffer of the default dtype, float64', 'dtype float64, expected float32', '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n > capacity:
        grown = np.zeros(buffer.shape[:-2] + (max(2 * capacity, length + n), buffer.shape[-1]))
        grown[..., :length, :] = buffer[..., :length, :]
        buffer = grown
    buffer[..., length:length + n, :] = new
    return buffer, length + n
'''),
    ('6.5', 'the new length not returned', 'must return (buffer, new length)', '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n > capacity:
        grown = np.empty(buffer.shape[:-2] + (max(2 * capacity, length + n), buffer.shape[-1]),
                         dtype=buffer.dtype)
        grown[..., :length, :] = buffer[..., :length, :]
        buffer = grown
    buffer[..., length:length + n, :] = new
    return buffer
'''),
    ('6.5', 'allocates the grown buffer in the dtype of `new`', 'allocate with dtype=buffer.dtype',
     '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    cap = buffer.shape[-2]
    if length + n > cap:
        g = np.zeros(buffer.shape[:-2] + (max(2 * cap, length + n), buffer.shape[-1]),
                     dtype=new.dtype)
        g[..., :length, :] = buffer[..., :length, :]
        buffer = g
    buffer[..., length:length + n, :] = new
    return buffer, length + n
'''),
]

VALID = [
    ('6.1', 'one slice of features per head, stacked before the sequence axis', '''
def split_heads(x, num_heads):
    D = x.shape[-1] // num_heads
    return np.stack([x[..., h * D:(h + 1) * D] for h in range(num_heads)], axis=-3)
'''),
    ('6.1', 'reshape to the head width, then moveaxis', '''
def split_heads(x, num_heads):
    return np.moveaxis(x.reshape(x.shape[:-1] + (num_heads, x.shape[-1] // num_heads)), -2, -3)
'''),
    ('6.2', 'the heads concatenated along the feature axis', '''
def merge_heads(x):
    return np.concatenate([x[..., h, :, :] for h in range(x.shape[-3])], axis=-1)
'''),
    ('6.2', 'einsum to move the head axis, then a reshape to H·D', '''
def merge_heads(x):
    moved = np.einsum("...hld->...lhd", x)
    return moved.reshape(moved.shape[:-2] + (moved.shape[-2] * moved.shape[-1],))
'''),
    ('6.3', 'fancy indexing with h // G', '''
def repeat_kv(x, num_q_heads):
    G = num_q_heads // x.shape[-3]
    return x[..., np.arange(num_q_heads) // G, :, :]
'''),
    ('6.3', 'a broadcast over a group axis after the key heads, then a reshape', '''
def repeat_kv(x, num_q_heads):
    *lead, hkv, S, D = x.shape
    grouped = np.broadcast_to(x[..., :, None, :, :], tuple(lead) + (hkv, num_q_heads // hkv, S, D))
    return grouped.reshape(tuple(lead) + (num_q_heads, S, D))
'''),
    ('6.4', 'np.add.reduceat at the first head of each group', '''
def fold_kv_grad(grad, num_kv_heads):
    G = grad.shape[-3] // num_kv_heads
    return np.add.reduceat(grad, np.arange(0, grad.shape[-3], G), axis=-3)
'''),
    ('6.4', 'a loop over groups', '''
def fold_kv_grad(grad, num_kv_heads):
    G = grad.shape[-3] // num_kv_heads
    parts = [grad[..., g * G:(g + 1) * G, :, :].sum(axis=-3) for g in range(num_kv_heads)]
    return np.stack(parts, axis=-3)
'''),
    ('6.4', 'einsum with the 0/1 matrix that maps query heads to their key head', '''
def fold_kv_grad(grad, num_kv_heads):
    hq = grad.shape[-3]
    owner = (np.arange(hq)[:, None] // (hq // num_kv_heads) == np.arange(num_kv_heads)[None, :])
    return np.einsum("...hsd,hk->...ksd", grad, owner.astype(grad.dtype))
'''),
    ('6.5', 'np.pad for the spare room, a loop over the new positions', '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n > capacity:
        extra = max(2 * capacity, length + n) - length
        pad = [(0, 0)] * (buffer.ndim - 2) + [(0, extra), (0, 0)]
        buffer = np.pad(buffer[..., :length, :], pad)
    for t in range(n):
        buffer[..., length + t, :] = new[..., t, :]
    return buffer, length + n
'''),
    ('6.5', 'the grown buffer as a concatenation of the history and zeros', '''
def append_to_buffer(buffer, length, new):
    n = new.shape[-2]
    capacity = buffer.shape[-2]
    if length + n > capacity:
        room = np.zeros(buffer.shape[:-2] + (max(2 * capacity, length + n) - length,
                                             buffer.shape[-1]), dtype=buffer.dtype)
        buffer = np.concatenate([buffer[..., :length, :], room], axis=-2)
    buffer[..., length:length + n, :] = new
    return buffer, length + n
'''),
]
