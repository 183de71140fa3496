"""Plausible wrong answers to the exercises of chapters 2 and 3 lose their points."""
import json

import pytest

from attention_scratch.exercise_tools import REPO_DIR

from test_grading import replace_function, run_grader

CH02, CH03 = "ch02_bahdanau", "ch03_luong"
WRONG_ANSWERS = {
    "additive score that forgets the tanh": (CH02, "additive_score", "2.1", '''
def additive_score(query_proj, keys_proj, v):
    hidden = query_proj[..., None, :] + keys_proj
    return hidden @ v, hidden
''', "entries differ"),
    "pooling VJP without the softmax Jacobian": (CH02, "attention_pooling_backward", "2.2", '''
def attention_pooling_backward(grad_context, weights, values):
    grad_values = weights[..., :, None] * grad_context[..., None, :]
    return np.einsum("...sv,...v->...s", values, grad_context), grad_values
''', "softmax VJP"),
    "GRU step with the update gate the wrong way round": (CH02, "gru_step", "2.3", '''
def gru_step(x_proj, h, W_h, b_h):
    H = h.shape[-1]
    hh = h @ W_h + b_h
    r = sigmoid(x_proj[:, :H] + hh[:, :H])
    z = sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])
    n = np.tanh(x_proj[:, 2 * H:] + r * hh[:, 2 * H:])
    return z * n + (1 - z) * h, r, z, n, hh[:, 2 * H:]
''', "entries differ"),
    "concat score with the key first": (CH03, "concat_score", "3.2", '''
def concat_score(query, keys, W_a, v_a):
    B, S, _ = keys.shape
    q = np.broadcast_to(query[:, None, :], (B, S, query.shape[-1]))
    return np.tanh(np.concatenate([keys, q], axis=-1) @ W_a) @ v_a
''', "query first"),
    "local window that forgets the padding": (CH03, "local_window", "3.3", '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    return np.abs(offset) <= D, np.exp(-offset ** 2 / (2 * (D / 2) ** 2))
''', "s < length"),
    "local window with sigma = D": (CH03, "local_window", "3.3", '''
def local_window(p, lengths, S, D):
    s = np.arange(S)[None, :]
    offset = s - p[:, None]
    keep = (np.abs(offset) <= D) & (s < lengths[:, None])
    return keep, np.exp(-offset ** 2 / (2 * D ** 2))
''', "σ = D/2"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ANSWERS))
def test_a_plausible_wrong_answer_loses_points(case, tmp_path):
    stem, function, exercise_id, source, expected_words = WRONG_ANSWERS[case]
    chapter = int(exercise_id.split(".")[0])
    text = (REPO_DIR / "solutions" / f"{stem}.py").read_text()
    (tmp_path / f"{stem}.py").write_text(replace_function(text, function, source))
    done = run_grader("--target", str(tmp_path), "--chapter", str(chapter), json_path=tmp_path / "r.json")
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["id"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert results[exercise_id]["status"] == "failing", results[exercise_id]
    assert results[exercise_id]["earned"] == 0
    assert expected_words in results[exercise_id]["message"], results[exercise_id]["message"]
    others = [r for i, r in results.items() if i != exercise_id]
    assert all(r["status"] == "passed" for r in others), others
