"""Answers to the chapter 7 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    # 7.1 ---------------------------------------------------------------------------------------
    ('7.1', 'sine and cosine swapped', 'PE[p, 2i] = sin(p / base^(2i/d))', '''
def sinusoidal_table(length, d_model, base=10000.0):
    pos = np.arange(length, dtype=np.float64)[:, None]
    angles = pos * base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    table = np.empty((length, d_model))
    table[:, 0::2] = np.cos(angles)
    table[:, 1::2] = np.sin(angles[:, : d_model // 2])
    return table
'''),
    ('7.1', 'all sines first, then all cosines (concatenated, not interleaved)',
     'PE[p, 2i+1] = cos', '''
def sinusoidal_table(length, d_model, base=10000.0):
    pos = np.arange(length, dtype=np.float64)[:, None]
    angles = pos * base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    return np.concatenate([np.sin(angles), np.cos(angles[:, : d_model // 2])], axis=1)
'''),
    ('7.1', 'frequency exponent i/d instead of 2i/d', 'sin(p / base^(2i/d))', '''
def sinusoidal_table(length, d_model, base=10000.0):
    pos = np.arange(length, dtype=np.float64)[:, None]
    angles = pos * base ** (-np.arange((d_model + 1) // 2, dtype=np.float64) / d_model)
    table = np.empty((length, d_model))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return table
'''),
    ('7.1', 'the base argument ignored (10000 always)', 'use the base argument', '''
def sinusoidal_table(length, d_model, base=10000.0):
    pos = np.arange(length, dtype=np.float64)[:, None]
    angles = pos * 10000.0 ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    table = np.empty((length, d_model))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return table
'''),
    ('7.1', 'odd width: the last column left at 0', 'an odd d_model ends with a sine column', '''
def sinusoidal_table(length, d_model, base=10000.0):
    pos = np.arange(length, dtype=np.float64)[:, None]
    angles = pos * base ** (-np.arange(0, d_model - 1, 2, dtype=np.float64) / d_model)
    table = np.zeros((length, d_model))
    table[:, 0:2 * (d_model // 2):2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)
    return table
'''),
    ('7.1', 'positions counted from 1', 'p counted from 0', '''
def sinusoidal_table(length, d_model, base=10000.0):
    pos = np.arange(1, length + 1, dtype=np.float64)[:, None]
    angles = pos * base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    table = np.empty((length, d_model))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return table
'''),
    ('7.1', 'a float32 table', 'dtype float32, expected float64', '''
def sinusoidal_table(length, d_model, base=10000.0):
    pos = np.arange(length, dtype=np.float32)[:, None]
    angles = pos * (base ** (-np.arange(0, d_model, 2) / d_model)).astype(np.float32)
    table = np.empty((length, d_model), dtype=np.float32)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return table
'''),
    # 7.2 ---------------------------------------------------------------------------------------
    ('7.2', 'RoPE rotating the other way', 'turned by 90° is (-2, 1)', '''
def rotate_pairs(x, cos, sin):
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty(np.broadcast_shapes(x.shape, cos.shape[:-1] + (x.shape[-1],)),
                   dtype=np.result_type(x, cos))
    out[..., 0::2] = even * cos + odd * sin
    out[..., 1::2] = -even * sin + odd * cos
    return out
'''),
    ('7.2', 'pairing feature i with feature i + D/2 (the GPT-NeoX layout)',
     'pairs are features 2i and 2i+1', '''
def rotate_pairs(x, cos, sin):
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
'''),
    ('7.2', 'rotating x in place', 'changed its argument `x` in place', '''
def rotate_pairs(x, cos, sin):
    even, odd = x[..., 0::2].copy(), x[..., 1::2].copy()
    x[..., 0::2] = even * cos - odd * sin
    x[..., 1::2] = even * sin + odd * cos
    return x
'''),
    ('7.2', 'a float64 output buffer for float32 input', 'dtype float64, expected float32', '''
def rotate_pairs(x, cos, sin):
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty(x.shape)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out
'''),
    ('7.2', 'cos and sin repeated as blocks (np.tile) for interleaved pairs',
     'pairs are features 2i and 2i+1', '''
def rotate_pairs(x, cos, sin):
    cos2, sin2 = np.tile(cos, 2), np.tile(sin, 2)
    partner = np.empty_like(x)
    partner[..., 0::2], partner[..., 1::2] = -x[..., 1::2], x[..., 0::2]
    return x * cos2 + partner * sin2
'''),
    ('7.2', 'pairs sliced on axis 1 (right for one head, wrong with batch and head axes)',
     'could not be broadcast', '''
def rotate_pairs(x, cos, sin):
    even, odd = x[:, 0::2], x[:, 1::2]
    out = np.empty_like(x)
    out[:, 0::2] = even * cos - odd * sin
    out[:, 1::2] = even * sin + odd * cos
    return out
'''),
    # 7.3 ---------------------------------------------------------------------------------------
    ('7.3', 'ALiBi slopes starting at 1', '1/2, 1/4, ..., 1/256', '''
def alibi_slopes(num_heads):
    start = 2.0 ** (-8.0 / num_heads)
    return start ** np.arange(0, num_heads)
'''),
    ('7.3', 'the formula 2^(-8k/n) for every n (no rule for other head counts)',
     'every other slope', '''
def alibi_slopes(num_heads):
    return 2.0 ** (-8.0 * np.arange(1, num_heads + 1) / num_heads)
'''),
    ('7.3', 'the first n - c slopes of 2c heads, not every other one',
     'starting with its first ([0::2]', '''
def alibi_slopes(num_heads):
    def power_of_two(n):
        return 2.0 ** (-8.0 * np.arange(1, n + 1) / n)

    c = 2 ** int(math.floor(math.log2(num_heads)))
    if c == num_heads:
        return power_of_two(c)
    return np.concatenate([power_of_two(c), power_of_two(2 * c)[: num_heads - c]])
'''),
    ('7.3', 'every other slope of 2c heads starting with the second ([1::2])', "its 1st, 3rd, 5th",
     '''
def alibi_slopes(num_heads):
    def power_of_two(n):
        return 2.0 ** (-8.0 * np.arange(1, n + 1) / n)

    c = 2 ** int(math.floor(math.log2(num_heads)))
    if c == num_heads:
        return power_of_two(c)
    return np.concatenate([power_of_two(c), power_of_two(2 * c)[1::2][: num_heads - c]])
'''),
    ('7.3', "the paper's code as it is, which returns a list",
     'expected a NumPy array, got a Python list', '''
def alibi_slopes(num_heads):
    def get_slopes_power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        ratio = start
        return [start * ratio ** i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return get_slopes_power_of_2(num_heads)
    closest_power_of_2 = 2 ** math.floor(math.log2(num_heads))
    return (get_slopes_power_of_2(closest_power_of_2)
            + alibi_slopes(2 * closest_power_of_2)[0::2][: num_heads - closest_power_of_2])
'''),
    ('7.3', 'slopes in float32', 'dtype float32, expected float64', '''
def alibi_slopes(num_heads):
    def power_of_two(n):
        return np.float32(2.0) ** (-8 * np.arange(1, n + 1, dtype=np.float32) / n)

    c = 2 ** int(math.floor(math.log2(num_heads)))
    if c == num_heads:
        return power_of_two(c)
    return np.concatenate([power_of_two(c), power_of_two(2 * c)[0::2][: num_heads - c]])
'''),
    # 7.4 ---------------------------------------------------------------------------------------
    ('7.4', 'ALiBi bias aligned top-left', "i' = i + S - L", '''
def alibi_bias(slopes, L, S):
    i, j = np.arange(L)[:, None], np.arange(S)[None, :]
    return -np.asarray(slopes, dtype=np.float64)[:, None, None] * np.abs(i - j)
'''),
    ('7.4', "the paper's causal form -m·(i' - j) without the absolute value",
     'keys before and after', '''
def alibi_bias(slopes, L, S):
    slopes = np.asarray(slopes, dtype=np.float64)
    i, j = np.arange(L)[:, None] + (S - L), np.arange(S)[None, :]
    return -slopes[:, None, None] * (i - j)
'''),
    ('7.4', 'a bonus instead of a penalty (sign)', "-m_h·|i' - j|", '''
def alibi_bias(slopes, L, S):
    slopes = np.asarray(slopes, dtype=np.float64)
    i, j = np.arange(L)[:, None] + (S - L), np.arange(S)[None, :]
    return slopes[:, None, None] * np.abs(i - j)
'''),
    ('7.4', 'alignment shifted the wrong way (i + L - S)', "i' = i + S - L", '''
def alibi_bias(slopes, L, S):
    slopes = np.asarray(slopes, dtype=np.float64)
    i, j = np.arange(L)[:, None] + (L - S), np.arange(S)[None, :]
    return -slopes[:, None, None] * np.abs(i - j)
'''),
    ('7.4', 'slopes broadcast along the query axis', 'wrong shape', '''
def alibi_bias(slopes, L, S):
    slopes = np.asarray(slopes, dtype=np.float64)
    i, j = np.arange(L)[:, None] + (S - L), np.arange(S)[None, :]
    return -slopes[:, None] * np.abs(i - j)[None]
'''),
]

VALID = [
    # 7.1 ---------------------------------------------------------------------------------------
    ('7.1', 'loops over positions and pairs, with math.sin and math.cos', '''
def sinusoidal_table(length, d_model, base=10000.0):
    table = np.zeros((length, d_model))
    for p in range(length):
        for i in range(0, d_model, 2):
            angle = p / base ** (i / d_model)
            table[p, i] = math.sin(angle)
            if i + 1 < d_model:
                table[p, i + 1] = math.cos(angle)
    return table
'''),
    ('7.1', 'sines and cosines stacked on a new axis, then flattened, trimmed to an odd width', '''
def sinusoidal_table(length, d_model, base=10000.0):
    half = (d_model + 1) // 2
    angles = np.outer(np.arange(length), np.exp(-np.log(base) * 2 * np.arange(half)
                                                / d_model))  # (length, half)
    pairs = np.stack([np.sin(angles), np.cos(angles)], axis=-1)  # (length, half, 2)
    return pairs.reshape(length, 2 * half)[:, :d_model]  # (length, d_model)
'''),
    # 7.2 ---------------------------------------------------------------------------------------
    ('7.2', 'complex numbers: multiply x_2i + i·x_2i+1 by e^(iθ)', '''
def rotate_pairs(x, cos, sin):
    z = x[..., 0::2] + 1j * x[..., 1::2]  # (..., L, D/2)
    turned = z * (cos + 1j * sin)  # (..., L, D/2)
    out = np.stack([turned.real, turned.imag], axis=-1)  # (..., L, D/2, 2)
    return out.reshape(out.shape[:-2] + (-1,))  # (..., L, D)
'''),
    ('7.2', 'a 2x2 rotation matrix per pair, applied with einsum', '''
def rotate_pairs(x, cos, sin):
    rot = np.stack([np.stack([cos, -sin], axis=-1), np.stack([sin, cos], axis=-1)],
                   axis=-2)  # (..., L, D/2, 2, 2)
    pairs = x.reshape(x.shape[:-1] + (-1, 2))  # (..., L, D/2, 2)
    turned = np.einsum("...ab,...b->...a", rot, pairs)  # (..., L, D/2, 2)
    return turned.reshape(turned.shape[:-2] + (-1,))  # (..., L, D)
'''),
    ('7.2', 'x·cos + rotate_every_two(x)·sin with cos and sin repeated per feature', '''
def rotate_pairs(x, cos, sin):
    cos2, sin2 = np.repeat(cos, 2, axis=-1), np.repeat(sin, 2, axis=-1)  # (..., L, D)
    partner = np.stack([-x[..., 1::2], x[..., 0::2]],
                       axis=-1).reshape(x.shape)  # (..., L, D): (-x1, x0, -x3, x2, ...)
    return x * cos2 + partner * sin2
'''),
    # 7.3 ---------------------------------------------------------------------------------------
    ('7.3', "the paper's code, recursion included, as a NumPy array", '''
def alibi_slopes(num_heads):
    def get_slopes(n):
        def get_slopes_power_of_2(n):
            start = 2 ** (-2 ** -(math.log2(n) - 3))
            ratio = start
            return [start * ratio ** i for i in range(n)]

        if math.log2(n).is_integer():
            return get_slopes_power_of_2(n)
        closest_power_of_2 = 2 ** math.floor(math.log2(n))
        return (get_slopes_power_of_2(closest_power_of_2)
                + get_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2])

    return np.array(get_slopes(num_heads))
'''),
    ('7.3', 'the odd exponents of 2c heads written directly', '''
def alibi_slopes(num_heads):
    c = 1
    while 2 * c <= num_heads:
        c *= 2
    first = 2.0 ** (-8.0 / c * np.arange(1, c + 1))  # (c,)
    rest = 2.0 ** (-8.0 / (2 * c) * np.arange(1, 2 * (num_heads - c),
                                              2))  # (n - c,): exponents 1, 3, 5, ...
    return np.concatenate([first, rest])
'''),
    # 7.4 ---------------------------------------------------------------------------------------
    ('7.4', 'three loops', '''
def alibi_bias(slopes, L, S):
    slopes = np.asarray(slopes, dtype=np.float64)
    bias = np.zeros((len(slopes), L, S))
    for h in range(len(slopes)):
        for i in range(L):
            for j in range(S):
                bias[h, i, j] = -slopes[h] * abs(i + S - L - j)
    return bias
'''),
    ('7.4', 'np.subtract.outer and einsum', '''
def alibi_bias(slopes, L, S):
    slopes = np.asarray(slopes, dtype=np.float64)
    distance = np.abs(np.subtract.outer(np.arange(L) + S - L, np.arange(S)))  # (L, S)
    return -np.einsum("h,ls->hls", slopes, distance.astype(np.float64))  # (H, L, S)
'''),
]
