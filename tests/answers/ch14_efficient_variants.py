"""Answers to the chapter 14 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('14.1', 'elu + 1 that exponentiates large positive inputs', 'overflowed', '''
def elu_feature_map(x):
    return np.where(x > 0, x + 1, np.exp(x))
'''),
    ('14.1', 'plain elu, without the + 1', 'elu(x) + 1', '''
def elu_feature_map(x):
    return np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1)
'''),
    ('14.1', 'exp(x) + 1 on the negative side (the + 1 added twice there)', 'entries differ', '''
def elu_feature_map(x):
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)) + 1)
'''),
    ('14.1', 'the input overwritten in place', 'changed its argument `x` in place', '''
def elu_feature_map(x):
    negative = x <= 0
    x[negative] = np.exp(x[negative])
    x[~negative] += 1
    return x
'''),
    ('14.1', 'a float64 copy first, so float32 comes back as float64',
     'dtype float64, expected float32', '''
def elu_feature_map(x):
    x = np.array(x, dtype=float)
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))
'''),
    ('14.2', 'a linear-attention step that forgets the normalizer', 'entries differ', '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    state = state + phi_k[..., :, None] * v[..., None, :]
    return np.einsum("...f,...fv->...v", phi_q, state), state, normalizer + phi_k
'''),
    ('14.2', 'the output read from the state before the current token is added', 'NaN', '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    out = np.einsum("...f,...fv->...v", phi_q, state) / (
        np.einsum("...f,...f->...", phi_q, normalizer)[..., None] + eps)
    return out, state + phi_k[..., :, None] * v[..., None, :], normalizer + phi_k
'''),
    ('14.2', 'the state and the normalizer updated in place', 'in place', '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    state += phi_k[..., :, None] * v[..., None, :]
    normalizer += phi_k
    out = np.einsum("...f,...fv->...v", phi_q, state) / (
        np.einsum("...f,...f->...", phi_q, normalizer)[..., None] + eps)
    return out, state, normalizer
'''),
    ('14.2', 'eps added after the division', 'added to the denominator only', '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    state = state + phi_k[..., :, None] * v[..., None, :]
    normalizer = normalizer + phi_k
    numerator = np.einsum("...f,...fv->...v", phi_q, state)
    return numerator / np.einsum("...f,...f->...", phi_q,
                                 normalizer)[..., None] + eps, state, normalizer
'''),
    ('14.2', 'the denominator summed over the whole batch, not per sequence and head',
     'entries differ', '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    state = state + phi_k[..., :, None] * v[..., None, :]
    normalizer = normalizer + phi_k
    numerator = np.einsum("...f,...fv->...v", phi_q, state)
    return numerator / (np.sum(phi_q * normalizer) + eps), state, normalizer
'''),
    ('14.2', 'phi_q @ state, which pairs every query with every state of the batch',
     'could not be broadcast', '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    state = state + phi_k[..., :, None] * v[..., None, :]
    normalizer = normalizer + phi_k
    denominator = (phi_q * normalizer).sum(axis=-1, keepdims=True)
    return (phi_q @ state) / (denominator + eps), state, normalizer
'''),
    ('14.3', 'positive random features divided by m', 'sqrt(m)', '''
def positive_random_features(x, omega, stabilize=None):
    e = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)
    if stabilize == "row":
        e = e - e.max(axis=-1, keepdims=True)
    elif stabilize == "all":
        e = e - e.max(axis=(-2, -1), keepdims=True)
    return np.exp(e) / omega.shape[0]
'''),
    ('14.3', 'the norm term with the wrong sign', 'minus half the squared norm', '''
def positive_random_features(x, omega, stabilize=None):
    e = x @ omega.T + 0.5 * (x * x).sum(axis=-1, keepdims=True)
    if stabilize == "row":
        e = e - e.max(axis=-1, keepdims=True)
    elif stabilize == "all":
        e = e - e.max(axis=(-2, -1), keepdims=True)
    return np.exp(e) / omega.shape[0] ** 0.5
'''),
    ('14.3', "stabilize='all' with one constant for the whole batch", 'not over the leading axis',
     '''
def positive_random_features(x, omega, stabilize=None):
    e = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)
    if stabilize == "row":
        e = e - e.max(axis=-1, keepdims=True)
    elif stabilize == "all":
        e = e - e.max()
    return np.exp(e) / omega.shape[0] ** 0.5
'''),
    ('14.3', "stabilize='row' taking the maximum over the rows (axis -2)", 'over its m features',
     '''
def positive_random_features(x, omega, stabilize=None):
    e = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)
    if stabilize == "row":
        e = e - e.max(axis=-2, keepdims=True)
    elif stabilize == "all":
        e = e - e.max(axis=(-2, -1), keepdims=True)
    return np.exp(e) / omega.shape[0] ** 0.5
'''),
    ('14.3', 'the stabiliser applied after exp, dividing by the largest feature',
     'before calling exp', '''
def positive_random_features(x, omega, stabilize=None):
    f = np.exp(x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True))
    if stabilize == "row":
        f = f / f.max(axis=-1, keepdims=True)
    elif stabilize == "all":
        f = f / f.max(axis=(-2, -1), keepdims=True)
    return f / omega.shape[0] ** 0.5
'''),
    ('14.3', 'divided by np.sqrt(m), a float64 scalar that turns float32 into float64',
     'np.sqrt(m) is one', '''
def positive_random_features(x, omega, stabilize=None):
    e = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)
    if stabilize == "row":
        e = e - e.max(axis=-1, keepdims=True)
    elif stabilize == "all":
        e = e - e.max(axis=(-2, -1), keepdims=True)
    return np.exp(e) / np.sqrt(omega.shape[0])
'''),
    ('14.3', "'all' over axes (1, 2), right only for 3-d x", 'axis=(1, 2) is right only for 3-d x',
     '''
def positive_random_features(x, omega, stabilize=None):
    e = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)
    if stabilize == "row":
        e = e - e.max(axis=-1, keepdims=True)
    elif stabilize == "all":
        e = e - e.max(axis=(1, 2), keepdims=True)
    return np.exp(e) / omega.shape[0] ** 0.5
'''),
    ('14.3', "'all' with one constant per index of the first axis only", "for a 4-d x", '''
def positive_random_features(x, omega, stabilize=None):
    e = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)
    if stabilize == "row":
        e = e - e.max(axis=-1, keepdims=True)
    elif stabilize == "all":
        c = e.reshape(e.shape[0], -1).max(axis=1).reshape((e.shape[0],) + (1,) * (e.ndim - 1))
        e = e - c if e.ndim > 2 else e - e.max()
    return np.exp(e) / omega.shape[0] ** 0.5
'''),
]

VALID = [
    ('14.1', 'maximum and minimum instead of where: (x)+ + exp((x)-)', '''
def elu_feature_map(x):
    return np.maximum(x, 0) + np.exp(np.minimum(x, 0))
'''),
    ('14.1', 'a loop over every entry with math.exp', '''
import math


def elu_feature_map(x):
    out = np.empty_like(x)
    for index in np.ndindex(x.shape):
        value = x[index]
        out[index] = value + 1 if value > 0 else math.exp(value)
    return out
'''),
    ('14.2', 'loops over the leading axes with np.outer and dot', '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    new_state = state.copy()
    new_normalizer = normalizer.copy()
    out = np.empty(v.shape, dtype=np.result_type(phi_q, state))
    for i in np.ndindex(phi_q.shape[:-1]):
        new_state[i] += np.outer(phi_k[i], v[i])
        new_normalizer[i] += phi_k[i]
        out[i] = phi_q[i] @ new_state[i] / (phi_q[i] @ new_normalizer[i] + eps)
    return out, new_state, new_normalizer
'''),
    ('14.2', 'broadcast products and sums instead of einsum, matmul on an added axis', '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    state = state + phi_k[..., :, None] @ v[..., None, :]
    normalizer = normalizer + phi_k
    numerator = (phi_q[..., None, :] @ state)[..., 0, :]
    denominator = (phi_q * normalizer).sum(axis=-1, keepdims=True)
    return numerator / (denominator + eps), state, normalizer
'''),
    ('14.3', 'einsum, a maximum over one axis after the other, and math.sqrt', '''
import math


def positive_random_features(x, omega, stabilize=None):
    exponent = np.einsum("...ne,me->...nm", x, omega) - 0.5 * np.einsum("...ne,...ne->...n", x,
                                                                        x)[..., None]
    if stabilize == "row":
        exponent -= exponent.max(axis=-1)[..., None]
    elif stabilize == "all":
        exponent -= exponent.max(axis=-1, keepdims=True).max(axis=-2, keepdims=True)
    return np.exp(exponent) * (1 / math.sqrt(omega.shape[0]))
'''),
    ('14.3', 'a loop over the rows, the norm from np.linalg.norm', '''
def positive_random_features(x, omega, stabilize=None):
    m = omega.shape[0]
    exponent = np.empty(x.shape[:-1] + (m,), dtype=np.result_type(x, omega))
    for index in np.ndindex(x.shape[:-1]):
        row = x[index]
        exponent[index] = omega @ row - np.linalg.norm(row) ** 2 / 2
    if stabilize == "row":
        exponent = exponent - np.max(exponent, axis=-1, keepdims=True)
    elif stabilize == "all":
        for index in np.ndindex(x.shape[:-2]):
            exponent[index] = exponent[index] - exponent[index].max()
    return np.exp(exponent) / m ** 0.5
'''),
    ('14.1',
     'exp of every x with the overflow silenced by np.errstate (the tests see no warning; the '
     'docstring asks for none to reach the caller)', '''
def elu_feature_map(x):
    with np.errstate(over="ignore"):
        return np.where(x > 0, x + 1, np.exp(x))
'''),
]
