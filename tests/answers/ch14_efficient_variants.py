"""Answers to the chapter 14 exercises that the grader must judge right.

WRONG: plausible mistakes, each graded alone; it must lose all the exercise's points with a
message holding the given words. VALID: right answers written another way; full points.
Entries: (exercise id, what it is, [words the message must hold,] the function's source).
"""

WRONG = [
    ('14.1', 'elu + 1 that exponentiates large positive inputs', 'warned', '''
def elu_feature_map(x):
    return np.where(x > 0, x + 1, np.exp(x))
'''),
    ('14.2', 'a linear-attention step that forgets the normalizer', 'entries differ', '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    state = state + phi_k[..., :, None] * v[..., None, :]
    return np.einsum("...f,...fv->...v", phi_q, state), state, normalizer + phi_k
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
]

VALID = [
]
