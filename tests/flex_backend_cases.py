"""Test bodies shared by every flex_attention backend (NumPy, Numba).

Each ``case_*`` function takes a :class:`Backend`; :class:`SharedFlexTests` runs them all, and
each backend's test file subclasses it (tests/test_flex.py, tests/test_flex_numba.py). The
oracles: PyTorch's own ``flex_attention`` (CPU, eager: forward and lse) and dense PyTorch
autograd in float64 (gradients), with every mask and score function written a second time in
PyTorch, and the library's float64 oracle where a mask is one the dedicated paths know.
"""
import dataclasses
import warnings
from collections.abc import Callable

import numpy as np
import pytest

import attention_scratch as at
from attention_scratch import flex_mods
from attention_scratch.testing import assert_close, attention_oracle, attention_oracle_backward

TOL = {"rtol": 1e-10, "atol": 1e-10}


@dataclasses.dataclass
class Backend:
    """``forward``/``backward``: flex_attention(_backward) without ``backend``."""

    name: str
    forward: Callable
    backward: Callable


@dataclasses.dataclass
class Pattern:
    """One mask (and score function) written for the library and again for PyTorch."""

    name: str
    mask: Callable  # NumPy mask_mod, or None
    torch_mask: Callable  # the same in PyTorch, or None
    score: Callable = None  # the library's score_mod (a ScoreMod)
    torch_score: Callable = None


def patterns(torch, rng, L, S, H):
    """The issue's cases with parameters drawn from ``rng`` (a new draw for every test)."""
    shift = S - L
    left, right = int(rng.integers(0, 6)), int(rng.integers(0, 4))
    n = max(L, S)
    cuts = np.sort(rng.choice(np.arange(1, n), size=3, replace=False))
    doc = np.searchsorted(cuts, np.arange(n), side="right")  # (n,) document of each position
    tdoc = torch.from_numpy(doc)
    prefix = int(rng.integers(1, L))
    slopes = at.alibi_slopes(H)
    tslopes = torch.from_numpy(slopes)
    cap = float(rng.uniform(0.5, 3.0))
    table = rng.standard_normal((H, 2 * 4 + 1))
    ttable = torch.from_numpy(table)
    n_global, width = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    return [
        Pattern("causal-top-left", flex_mods.causal(), lambda b, h, q, kv: kv <= q),
        Pattern("causal-bottom-right", flex_mods.causal(L, S, "bottom_right"),
                lambda b, h, q, kv: kv <= q + shift),
        Pattern(f"window({left},{right})", flex_mods.sliding_window(L, S, left, right),
                lambda b, h, q, kv: (kv - q - shift >= -left) & (kv - q - shift <= right)),
        Pattern("documents", flex_mods.document(doc),
                lambda b, h, q, kv: (tdoc[q] == tdoc[kv]) & (kv <= q)),
        Pattern(f"prefix-lm({prefix})", flex_mods.prefix_lm(prefix),
                lambda b, h, q, kv: (kv <= q) | (kv < prefix)),
        Pattern("longformer", flex_mods.longformer(width, n_global),
                lambda b, h, q, kv: ((kv - q).abs() <= width) | (q < n_global) | (kv < n_global)),
        Pattern("alibi+causal-br", flex_mods.causal(L, S, "bottom_right"),
                lambda b, h, q, kv: kv <= q + shift, flex_mods.alibi(slopes, L, S),
                lambda s, b, h, q, kv: s - tslopes[h] * (q + shift - kv).abs()),
        Pattern(f"soft-cap({cap:.2f})+documents", flex_mods.document(doc, is_causal=False),
                lambda b, h, q, kv: tdoc[q] == tdoc[kv], flex_mods.soft_cap(cap),
                lambda s, b, h, q, kv: cap * torch.tanh(s / cap)),
        Pattern("relative-bias, no mask", None, None, flex_mods.relative_bias(table, 4),
                lambda s, b, h, q, kv: s + ttable[h, (kv - q).clamp(-4, 4) + 4]),
    ]


def make_inputs(rng, B=2, hq=4, hkv=2, L=37, S=45, E=8, Ev=6):
    q = rng.standard_normal((B, hq, L, E))
    k = rng.standard_normal((B, hkv, S, E))
    v = rng.standard_normal((B, hkv, S, Ev))
    g = rng.standard_normal((B, hq, L, Ev))
    return q, k, v, g


def torch_flex(torch, q, k, v, pattern, block):
    """PyTorch's flex_attention (eager, CPU): out and lse, lse of empty rows as +inf."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    L, S = q.shape[-2], k.shape[-2]
    bm = None
    if pattern.torch_mask is not None:
        bm = create_block_mask(pattern.torch_mask, None, None, L, S, device="cpu",
                               BLOCK_SIZE=block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "called without torch.compile", "return_lse deprecated"
        out, lse = flex_attention(*(torch.from_numpy(a) for a in (q, k, v)),
                                  score_mod=pattern.torch_score, block_mask=bm,
                                  enable_gqa=q.shape[1] != k.shape[1], return_lse=True)
    lse = lse.numpy()
    return out.numpy(), np.where(np.isneginf(lse), np.inf, lse)


def torch_dense_grads(torch, q, k, v, g, pattern):
    """Dense attention with the pattern in PyTorch float64, and its autograd gradients."""
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    B, H, L, S = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    rep = H // k.shape[1]
    kk, vv = tk.repeat_interleave(rep, dim=1), tv.repeat_interleave(rep, dim=1)
    scores = tq @ kk.transpose(-1, -2) / np.sqrt(q.shape[-1])  # (B, H, L, S)
    b = torch.arange(B).view(B, 1, 1, 1)
    h = torch.arange(H).view(1, H, 1, 1)
    qi, kv = torch.arange(L).view(L, 1), torch.arange(S).view(1, S)
    if pattern.torch_score is not None:
        scores = pattern.torch_score(scores, b, h, qi, kv)
    if pattern.torch_mask is not None:
        keep = pattern.torch_mask(b, h, qi, kv).expand(B, H, L, S)
        scores = scores.masked_fill(~keep, -float("inf"))
    p = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # an empty row: weights 0
    (p @ vv).backward(torch.from_numpy(g))
    return tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


def run(backend, q, k, v, g, pattern, block):
    L, S = q.shape[-2], k.shape[-2]
    bm = None
    if pattern.mask is not None:
        bm = at.create_block_mask(pattern.mask, None, None, L, S, BLOCK_SIZE=block)
    kw = {"score_mod": pattern.score, "block_mask": bm, "enable_gqa": q.shape[1] != k.shape[1]}
    out, lse = backend.forward(q, k, v, return_lse=True, **kw)
    return out, lse, backend.backward(g, q, k, v, out, lse, **kw)


def case_patterns_against_pytorch(backend, torch, rng, L, S, block):
    """Forward and lse against PyTorch's flex_attention, gradients against dense autograd, 1e-10."""
    q, k, v, g = make_inputs(rng, L=L, S=S)
    for pattern in patterns(torch, rng, L, S, q.shape[1]):
        where = f"{backend.name}, {pattern.name}, L={L}, S={S}, block={block}"
        out, lse, grads = run(backend, q, k, v, g, pattern, block)
        ref_out, ref_lse = torch_flex(torch, q, k, v, pattern, block)
        assert_close(out, ref_out, what=f"output ({where})", **TOL)
        assert_close(lse, ref_lse, what=f"lse ({where})", **TOL)
        for name, got, ref in zip(("dQ", "dK", "dV"), grads,
                                  torch_dense_grads(torch, q, k, v, g, pattern), strict=True):
            assert_close(got, ref, what=f"{name} ({where})", **TOL)


def band_mod(L, S, causal, align, window):
    """causal and window as one mask_mod: ``lo <= kv - q <= hi``, written out by hand."""
    hi = (0 if align == "top_left" else S - L) if causal else S
    lo = -L
    if window is not None:
        lo, hi = S - L - window[0], min(hi, S - L + window[1])

    def mod(b, h, q_idx, kv_idx):
        return (kv_idx - q_idx >= lo) & (kv_idx - q_idx <= hi)

    return mod


def case_masks_equal_the_dedicated_paths(backend, rng):
    """causal (both alignments), a window and causal+window as mask_mods give the numbers of
    at.flash_attention's own masks (same tiles); padding those of SDPA with a padding mask."""
    for L, S in ((29, 29), (23, 41), (41, 23)):
        q, k, v, g = make_inputs(rng, L=L, S=S)
        for causal, align, window in ((True, "top_left", None), (True, "bottom_right", None),
                                      (False, "top_left", (5, 2)), (True, "bottom_right", (7, 0))):
            bm = at.create_block_mask(band_mod(L, S, causal, align, window), None, None, L, S,
                                      BLOCK_SIZE=8)
            kw = {"enable_gqa": True, "causal_align": align, "window": window, "block_q": 8,
                  "block_k": 8}
            ref_out, ref_lse = at.flash_attention(q, k, v, causal, return_lse=True, **kw)
            ref_grads = at.flash_attention_backward(g, q, k, v, ref_out, ref_lse, causal, **kw)
            out, lse = backend.forward(q, k, v, block_mask=bm, enable_gqa=True, return_lse=True)
            grads = backend.backward(g, q, k, v, out, lse, block_mask=bm, enable_gqa=True)
            where = f"{backend.name}: mask_mod vs flash_attention({causal}, {align}, {window})"
            for name, got, ref in zip(("out", "lse", "dQ", "dK", "dV"), (out, lse, *grads),
                                      (ref_out, ref_lse, *ref_grads), strict=True):
                assert_close(got, ref, rtol=1e-13, atol=1e-13, what=f"{name} ({where})")
    q, k, v, g = make_inputs(rng, L=12, S=17)
    lengths = np.array([5, 17])
    bm = at.create_block_mask(flex_mods.padding(lengths), 2, None, 12, 17, BLOCK_SIZE=4)
    out, lse = backend.forward(q, k, v, block_mask=bm, enable_gqa=True, return_lse=True)
    grads = backend.backward(g, q, k, v, out, lse, block_mask=bm, enable_gqa=True)
    keep = at.padding_mask(lengths, 17)  # (B, 1, 1, S)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, attn_mask=keep)
    assert_close(out, ref_out, **TOL, what=f"{backend.name}: padding as mask_mod")
    assert_close(lse, ref_lse, **TOL, what=f"{backend.name}: padding lse")
    for name, got, ref in zip(("dQ", "dK", "dV"), grads,
                              attention_oracle_backward(g, q, k, v, attn_mask=keep), strict=True):
        assert_close(got, ref, **TOL, what=f"{backend.name}: padding {name}")


def case_empty_rows(backend, rng):
    """Rows with nothing to attend to: output 0, lse +inf, gradient 0, no NaN anywhere."""
    q, k, v, g = make_inputs(rng, L=20, S=16)

    def late(b, h, qi, kv):  # rows 0..5 see nothing; row i >= 6 sees keys <= i - 6
        return kv <= qi - 6

    bm = at.create_block_mask(late, None, None, 20, 16, BLOCK_SIZE=4)
    out, lse = backend.forward(q, k, v, block_mask=bm, enable_gqa=True, return_lse=True)
    dq, dk, dv = backend.backward(g, q, k, v, out, lse, block_mask=bm, enable_gqa=True)
    assert not any(np.isnan(a).any() for a in (out, lse, dq, dk, dv)), backend.name
    assert np.all(out[..., :6, :] == 0) and np.all(np.isposinf(lse[..., :6]))
    assert np.all(np.isfinite(lse[..., 6:])) and np.all(dq[..., :6, :] == 0)
    ref_out, _ref_lse, _ = attention_oracle(q, k, v, attn_mask=late(0, 0, np.arange(20)[:, None],
                                                                    np.arange(16)[None, :]))
    assert_close(out, ref_out, **TOL, what=f"{backend.name}: empty rows")
    # a score_mod that sends every score to -inf empties every row the same way
    out, lse = backend.forward(q, k, v, score_mod=lambda s, b, h, qi, kv: s * 0 - np.inf,
                               enable_gqa=True, return_lse=True)
    assert np.all(out == 0) and np.all(np.isposinf(lse)), backend.name


def case_batch_and_head_dependent_masks(backend, rng):
    """A mask that depends on b and h (B, H given) equals the broadcast-free dense oracle."""
    q, k, v, g = make_inputs(rng, B=3, hq=4, hkv=1, L=19, S=23)
    lengths = np.array([23, 7, 15])
    reach = np.array([0, 3, 7, 30])

    def mod(b, h, qi, kv):
        return (kv < lengths[b]) & (kv >= qi - reach[h])

    bm = at.create_block_mask(mod, 3, 4, 19, 23, BLOCK_SIZE=(4, 8))
    assert bm.kinds.shape == (3, 4, 5, 3)
    out, lse = backend.forward(q, k, v, block_mask=bm, enable_gqa=True, return_lse=True)
    grads = backend.backward(g, q, k, v, out, lse, block_mask=bm, enable_gqa=True)
    keep = mod(np.arange(3)[:, None, None, None], np.arange(4)[None, :, None, None],
               np.arange(19)[:, None], np.arange(23)[None, :])  # (B, H, L, S)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, attn_mask=keep)
    assert_close(out, ref_out, **TOL, what=f"{backend.name}: b, h dependent mask")
    assert_close(lse, ref_lse, **TOL, what=f"{backend.name}: b, h dependent lse")
    for name, got, ref in zip(("dQ", "dK", "dV"), grads,
                              attention_oracle_backward(g, q, k, v, attn_mask=keep), strict=True):
        assert_close(got, ref, **TOL, what=f"{backend.name}: b, h dependent {name}")


def case_three_dim_input_and_scale(backend, rng):
    """(H, L, E) input without a batch axis, an explicit scale, GQA: against the dense oracle."""
    q, k, v, g = (a[0] for a in make_inputs(rng, hq=6, hkv=3, L=10, S=14))
    mod = flex_mods.causal(10, 14, "bottom_right")
    bm = at.create_block_mask(mod, None, None, 10, 14, BLOCK_SIZE=3)
    out, lse = backend.forward(q, k, v, block_mask=bm, scale=0.3, enable_gqa=True,
                               return_lse=True)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=True, causal_align="bottom_right",
                                           scale=0.3)
    assert out.shape == (6, 10, 6) and lse.shape == (6, 10)
    assert_close(out, ref_out, **TOL, what=f"{backend.name}: 3-d input, scale 0.3")
    assert_close(lse, ref_lse, **TOL, what=f"{backend.name}: 3-d lse")
    grads = backend.backward(g, q, k, v, out, lse, block_mask=bm, scale=0.3, enable_gqa=True)
    ref_grads = attention_oracle_backward(g, q, k, v, is_causal=True, causal_align="bottom_right",
                                          scale=0.3)
    for name, got, ref in zip(("dQ", "dK", "dV"), grads, ref_grads, strict=True):
        assert_close(got, ref, **TOL, what=f"{backend.name}: 3-d {name}")


def case_float32(backend, rng):
    """float32 in, float32 out, close to the float64 result."""
    q, k, v, g = make_inputs(rng, L=21, S=21)
    bm = at.create_block_mask(flex_mods.causal(), None, None, 21, 21, BLOCK_SIZE=8)
    kw = {"block_mask": bm, "score_mod": flex_mods.soft_cap(2.0), "enable_gqa": True}
    out64, lse64 = backend.forward(q, k, v, return_lse=True, **kw)
    q32, k32, v32, g32 = (a.astype(np.float32) for a in (q, k, v, g))
    out, lse = backend.forward(q32, k32, v32, return_lse=True, **kw)
    grads = backend.backward(g32, q32, k32, v32, out, lse, **kw)
    assert out.dtype == np.float32 and all(a.dtype == np.float32 for a in grads)
    assert_close(out, out64, rtol=1e-5, atol=1e-5, what=f"{backend.name}: float32 output")
    for got, ref in zip(grads, backend.backward(g, q, k, v, out64, lse64, **kw), strict=True):
        assert_close(got, ref, rtol=1e-4, atol=1e-4, what=f"{backend.name}: float32 gradient")


def case_nan_hidden_by_the_mask_does_not_leak(backend, rng):
    """NaN in keys and values that the block mask hides (skipped and partial tiles) reaches no
    output and no gradient."""
    q, k, v, g = make_inputs(rng, L=16, S=16)
    clean = [k.copy(), v.copy()]
    k[..., 13, :] = v[..., 13, :] = np.nan  # causal: only rows 13.. see key 13
    q, g = q[..., :12, :], g[..., :12, :]  # rows 0..11: key 13 hidden (tile 3 skipped for 0..7)
    bm = at.create_block_mask(flex_mods.causal(12, 16, "top_left"), None, None, 12, 16,
                              BLOCK_SIZE=4)
    out, lse = backend.forward(q, k, v, block_mask=bm, enable_gqa=True, return_lse=True)
    grads = backend.backward(g, q, k, v, out, lse, block_mask=bm, enable_gqa=True)
    ref_out, _, _ = attention_oracle(q, *clean, is_causal=True)
    assert_close(out, ref_out, **TOL, what=f"{backend.name}: NaN hidden by the mask")
    for name, got, ref in zip(("dQ", "dK", "dV"), grads,
                              attention_oracle_backward(g, q, *clean, is_causal=True),
                              strict=True):
        assert_close(got, ref, **TOL, what=f"{backend.name}: NaN hidden, {name}")


def case_nan_in_a_partial_tile_follows_the_rule(backend, rng):
    """NaN in key 10 and value 9 under a causal block mask of 4 x 4 tiles: rows that see them are
    NaN (forward and backward), the others exact, as the float64 oracle's rule says."""
    q, k, v, g = make_inputs(rng, L=16, S=16)
    k[..., 10, 2] = np.nan
    v[..., 9, 1] = np.nan
    bm = at.create_block_mask(flex_mods.causal(), None, None, 16, 16, BLOCK_SIZE=4)
    out, lse = backend.forward(q, k, v, block_mask=bm, enable_gqa=True, return_lse=True)
    grads = backend.backward(g, q, k, v, out, lse, block_mask=bm, enable_gqa=True)
    ref_out, ref_lse, _ = attention_oracle(q, k, v, is_causal=True)
    assert np.isnan(out[..., 9:, :]).all() and np.isfinite(out[..., :9, :]).all()
    assert_close(out, ref_out, **TOL, what=f"{backend.name}: NaN in a partial tile")
    assert_close(lse, ref_lse, **TOL, what=f"{backend.name}: NaN in a partial tile, lse")
    for name, got, ref in zip(("dQ", "dK", "dV"), grads,
                              attention_oracle_backward(g, q, k, v, is_causal=True), strict=True):
        assert_close(got, ref, **TOL, what=f"{backend.name}: NaN in a partial tile, {name}")


def case_empty_dimensions(backend, rng):
    """B, H or L = 0 give empty results; S = 0 leaves every row empty (0, lse +inf, gradient 0)."""
    for lead, hq, hkv, L, S in (((0,), 2, 2, 5, 6), ((1,), 2, 1, 0, 6), ((1,), 2, 1, 5, 0),
                                ((2,), 0, 0, 5, 6), ((), 2, 2, 0, 0)):
        q, k = rng.standard_normal((*lead, hq, L, 4)), rng.standard_normal((*lead, hkv, S, 4))
        v, g = rng.standard_normal((*lead, hkv, S, 3)), rng.standard_normal((*lead, hq, L, 3))
        bm = at.create_block_mask(flex_mods.causal(), None, None, L, S, BLOCK_SIZE=4)
        out, lse = backend.forward(q, k, v, block_mask=bm, enable_gqa=True, return_lse=True)
        grads = backend.backward(g, q, k, v, out, lse, block_mask=bm, enable_gqa=True)
        where = f"{backend.name}, q {q.shape}, k {k.shape}"
        assert out.shape == (*lead, hq, L, 3) and lse.shape == (*lead, hq, L), where
        assert [a.shape for a in grads] == [q.shape, k.shape, v.shape], where
        if S == 0:
            assert np.all(out == 0) and np.all(np.isposinf(lse)), where
            assert all(np.all(a == 0) for a in grads), where


def case_bad_arguments(backend, rng):
    """Clear errors naming the argument."""
    q, k, v, g = make_inputs(rng, L=8, S=8)
    bm = at.create_block_mask(flex_mods.causal(), None, None, 8, 8, BLOCK_SIZE=4)
    with pytest.raises(ValueError, match="Q_LEN, KV_LEN"):
        backend.forward(q, k, v, block_mask=at.create_block_mask(flex_mods.causal(), None, None,
                                                                 8, 9), enable_gqa=True)
    with pytest.raises(ValueError, match="block_mask has B, H"):
        backend.forward(q, k, v, block_mask=at.create_block_mask(flex_mods.causal(), 5, None, 8,
                                                                 8), enable_gqa=True)
    with pytest.raises(TypeError, match="block_mask must be a BlockMask"):
        backend.forward(q, k, v, block_mask=np.ones((8, 8), bool), enable_gqa=True)
    with pytest.raises(TypeError, match="score_mod must be None or a function"):
        backend.forward(q, k, v, score_mod=3.0, enable_gqa=True)
    with pytest.raises(ValueError, match="enable_gqa"):
        backend.forward(q, k, v, block_mask=bm)
    out, lse = backend.forward(q, k, v, block_mask=bm, enable_gqa=True, return_lse=True)
    with pytest.raises(ValueError, match="derivative of score_mod"):
        backend.backward(g, q, k, v, out, lse, score_mod=lambda s, b, h, qi, kv: s * 2,
                         block_mask=bm, enable_gqa=True)
    with pytest.raises(ValueError, match="lse must have shape"):
        backend.backward(g, q, k, v, out, lse[..., :3], block_mask=bm, enable_gqa=True)


class SharedFlexTests:
    """The bodies above, run on ``backend`` (set by the subclass)."""

    backend: Backend

    @pytest.mark.parametrize("L,S,block", [(37, 45, 8), (45, 37, 16), (33, 33, 5), (1, 20, 4)])
    def test_patterns_against_pytorch(self, torch, rng, L, S, block):
        if L == 1:  # prefix-LM draws a prefix in 1..L-1: give it room
            L = 2
        case_patterns_against_pytorch(self.backend, torch, rng, L, S, block)

    def test_masks_equal_the_dedicated_paths(self, rng):
        case_masks_equal_the_dedicated_paths(self.backend, rng)

    def test_empty_rows(self, rng):
        case_empty_rows(self.backend, rng)

    def test_batch_and_head_dependent_masks(self, rng):
        case_batch_and_head_dependent_masks(self.backend, rng)

    def test_three_dim_input_and_scale(self, rng):
        case_three_dim_input_and_scale(self.backend, rng)

    def test_float32(self, rng):
        case_float32(self.backend, rng)

    def test_nan_hidden_by_the_mask_does_not_leak(self, rng):
        case_nan_hidden_by_the_mask_does_not_leak(self.backend, rng)

    def test_nan_in_a_partial_tile_follows_the_rule(self, rng):
        case_nan_in_a_partial_tile_follows_the_rule(self.backend, rng)

    def test_empty_dimensions(self, rng):
        case_empty_dimensions(self.backend, rng)

    def test_bad_arguments(self, rng):
        case_bad_arguments(self.backend, rng)
