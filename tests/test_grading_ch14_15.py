"""Plausible wrong answers to the exercises of chapters 14 and 15 lose their points.

Same mechanism as ``test_grading.py``: a solutions file with one function
replaced by a common mistake; the grader must mark exactly that exercise
"failing", with a message a student can act on.
"""
import json

import pytest

from attention_scratch.exercise_tools import REPO_DIR
from test_grading import replace_function, run_grader

CH14 = "ch14_efficient_variants"
WRONG_ANSWERS = {
    "elu + 1 that exponentiates large positive inputs": (CH14, "elu_feature_map", "14.1", '''
def elu_feature_map(x):
    return np.where(x > 0, x + 1, np.exp(x))
''', "warned"),
    "a linear-attention step that forgets the normalizer": (CH14, "linear_attention_step", "14.2", '''
def linear_attention_step(phi_q, phi_k, v, state, normalizer, eps=1e-6):
    state = state + phi_k[..., :, None] * v[..., None, :]
    return np.einsum("...f,...fv->...v", phi_q, state), state, normalizer + phi_k
''', "entries differ"),
    "positive random features divided by m": (CH14, "positive_random_features", "14.3", '''
def positive_random_features(x, omega, stabilize=None):
    e = x @ omega.T - 0.5 * (x * x).sum(axis=-1, keepdims=True)
    if stabilize == "row":
        e = e - e.max(axis=-1, keepdims=True)
    elif stabilize == "all":
        e = e - e.max(axis=(-2, -1), keepdims=True)
    return np.exp(e) / omega.shape[0]
''', "sqrt(m)"),
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
