"""Plausible wrong answers to the chapter 13 exercises lose their points, with a message to act on."""

import pytest

from test_grading import assert_wrong_answer_loses_points

STEM = "ch13_cupy_gpu"
WRONG = {
    "contiguous dims instead of interleaved": ("thread_slice", "13.1", '''
def thread_slice(thread, D):
    tpr = D // 16
    row, t = divmod(thread, tpr)
    return row, np.arange(16 * t, 16 * t + 16)
''', "interleaved"),
    "shared memory without the padding column": ("forward_smem_bytes", "13.2", '''
def forward_smem_bytes(block_k, D, acc_bytes):
    return 2 * block_k * D * acc_bytes
''', "D + 1"),
    "natural exponentials on log2 scores": ("chunk_update", "13.3", '''
def chunk_update(m, l, o, s, v):
    mx = np.maximum(m, s.max(axis=-1))
    live = mx > -np.inf
    base = np.where(live, mx, 0.0)
    alpha = np.where(live, np.exp(m - base), 1.0)
    p = np.exp(s - base[:, None])
    return (np.where(live, mx, m), np.where(live, alpha * l + p.sum(-1), l),
            np.where(live[:, None], alpha[:, None] * o + p @ v, o))
''', "exp2"),
    "offsets in increasing order": ("butterfly_steps", "13.4", '''
def butterfly_steps(partials):
    x = np.asarray(partials)
    steps, off, lanes = [], 1, np.arange(x.shape[-1])
    while off < x.shape[-1]:
        x = x + x[..., lanes ^ off]
        steps.append(x)
        off *= 2
    return steps
''', "offset 4"),
    "A registers in row-major order": ("fragment_entry", "13.5", '''
def fragment_entry(operand, lane, i):
    g, t = divmod(lane, 4)
    if operand == "a":
        return g + 8 * (i >= 4), 2 * t + i % 2 + 8 * (i % 4 >= 2)
    if operand == "b":
        return 2 * t + i % 2 + 8 * (i >= 2), g
    if operand == "c":
        return g + 8 * (i >= 2), 2 * t + i % 2
    raise ValueError(f"operand must be 'a', 'b' or 'c'; got {operand!r}")
''', "rows g + 8"),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_wrong_answer_loses_its_points(case, tmp_path):
    assert_wrong_answer_loses_points(STEM, *WRONG[case], tmp_path)
