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
    ('1.3', 'logsumexp that overflows', 'exp(1000) overflowed', '''
def stable_logsumexp(x, axis=-1):
    return np.log(np.exp(x).sum(axis=axis))
'''),
    ('1.4', 'VJP with the row sum over the wrong axis', 'entries differ', '''
def softmax_vjp(grad_out, probs, axis=-1):
    return probs * (grad_out - (grad_out * probs).sum(axis=0, keepdims=True))
'''),
    ('1.4', 'VJP that forgets the probabilities inside the sum', 'entries differ', '''
def softmax_vjp(grad_out, probs, axis=-1):
    return probs * (grad_out - grad_out.sum(axis=axis, keepdims=True))
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
]

VALID = [
]
