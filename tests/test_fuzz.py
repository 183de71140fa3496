"""Differential fuzz: every backend against PyTorch float64 autograd, edges included (issue #14).

Hypothesis draws a problem: batch (none, empty or not), heads (0 included, grouped-query),
L, S, E, Ev (0 included), a mask (causal in both alignments, sliding window), block sizes,
the dtype (float64, float32, float16), the size of the logits (small, ordinary, extreme in
float64), and NaN / ±inf planted at random places of Q, K, V and dO, visible or hidden.
Each backend (flash NumPy, flash Numba, the CUDA kernels in the CPU emulation, dense SDPA)
computes output, lse and the three gradients; they must equal

* NaN exactly where the rule of CONVENTIONS.md puts it (the expected pattern is computed here from
  the dense mask, independently of attention_scratch._nonfinite), and
* everywhere else PyTorch's ``scaled_dot_product_attention`` in float64 with autograd, run
  on the inputs with the non-finite entries replaced by 0 (masked means absent), within a
  tolerance of a few ulps of the dtype relative to the size of the terms (for a flash
  kernel, whose probabilities come from a rounded lse, times ``1 + |lse|``).

Under ``make test`` each backend gets 100 examples (or the profile's, if more). ``make fuzz``
runs the profile "fuzz" (tests/conftest.py) for FUZZ_SECONDS seconds and prints the number
of cases run.
"""
import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import attention_scratch as at
from attention_scratch.backends import unavailable_reason
from attention_scratch.backends.cuda import emulator as cuda_emulation
from attention_scratch.testing import reference_mask

torch = pytest.importorskip("torch",
                            reason="PyTorch (test-only oracle) is not installed; "
                                   "`make test` installs it")

SMEM = 99 * 1024
EPS = {np.dtype(np.float64): np.finfo(np.float64).eps,
       np.dtype(np.float32): np.finfo(np.float32).eps,
       np.dtype(np.float16): np.finfo(np.float16).eps}
CASES_RUN = {}


@st.composite
def problems(draw):
    dtype = np.dtype(draw(st.sampled_from([np.float64, np.float64, np.float32, np.float16])))
    lead = draw(st.sampled_from([(), (0,), (1,), (2,)]))  # () is PyTorch-style 3-D input
    hkv = draw(st.integers(0, 2))
    group = draw(st.integers(1, 2))
    L, S = draw(st.integers(0, 9)), draw(st.integers(0, 9))
    E, Ev = draw(st.integers(0, 6)), draw(st.integers(0, 5))
    causal = draw(st.booleans())
    align = draw(st.sampled_from(["top_left", "bottom_right"]))
    window = draw(st.one_of(st.none(), st.tuples(st.one_of(st.none(), st.integers(0, 4)),
                                                 st.one_of(st.none(), st.integers(0, 4)))))
    blocks = draw(st.one_of(st.just((64, 64)), st.tuples(st.integers(1, 8), st.integers(1, 8))))
    logits = draw(st.sampled_from(["ordinary", "small", "large"]
                                  + (["extreme"] if dtype == np.float64 else [])))
    scale = {"ordinary": None, "small": 1e-3, "large": 8.0,
             "extreme": 10.0 ** draw(st.integers(3, 12))}[logits]
    plants = draw(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1, exclude_max=True),
                                     st.sampled_from([np.nan, np.inf, -np.inf])), max_size=3))
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(dtype=dtype, lead=lead, hq=hkv * group, hkv=hkv, L=L, S=S, E=E, Ev=Ev,
                causal=causal, align=align, window=window, blocks=blocks, scale=scale,
                plants=plants, seed=seed)


def make_arrays(pr):
    rng = np.random.default_rng(pr["seed"])
    lead, hq, hkv, L, S, E, Ev = (pr[n] for n in ("lead", "hq", "hkv", "L", "S", "E", "Ev"))
    arrays = [rng.standard_normal(lead + shape) for shape in
              ((hq, L, E), (hkv, S, E), (hkv, S, Ev), (hq, L, Ev))]  # q, k, v, dO
    for which, where, value in pr["plants"]:
        a = arrays[which]
        if a.size:
            a.flat[int(where * a.size)] = value
    return [a.astype(pr["dtype"]) for a in arrays]


def expected(pr, q, k, v, g, scale):
    """PyTorch float64 autograd on the cleaned inputs, with NaN where docs/design.md §3 puts it."""
    q, k, v, g = (a.astype(np.float64) for a in (q, k, v, g))
    hq, hkv, L, S = pr["hq"], pr["hkv"], pr["L"], pr["S"]
    group = hq // hkv if hkv else 1
    keep = reference_mask(L, S, is_causal=pr["causal"], causal_align=pr["align"],
                          window=pr["window"])
    visible = np.broadcast_to(keep, q.shape[:-1] + (S,))  # (..., Hq, L, S)
    has_key = visible.any(axis=-1)  # (..., Hq, L)
    bad_q = ~np.isfinite(q).all(axis=-1)
    bad_kv = np.repeat(~(np.isfinite(k).all(axis=-1) & np.isfinite(v).all(axis=-1)), group,
                       axis=-2)  # (..., Hq, S)
    poisoned = has_key & (bad_q | (visible & bad_kv[..., None, :]).any(axis=-1))
    bad_g = ~np.isfinite(g).all(axis=-1)
    marked = poisoned | (has_key & bad_g)
    seen = (visible & marked[..., None]).any(axis=-2)  # (..., Hq, S)
    key_nan = seen.reshape(seen.shape[:-2] + (hkv, group,
                                              S)).any(axis=-2) if hkv else seen  # (..., Hkv, S)

    tq, tk, tv = (torch.tensor(np.where(np.isfinite(a), a, 0.0), requires_grad=True)
                  for a in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=torch.tensor(keep), scale=scale, enable_gqa=hq != hkv)
    out.backward(torch.tensor(np.where(bad_g[..., None], 0.0, g)))
    grads = [t.grad.numpy() if t.grad is not None else np.zeros(t.shape) for t in (tq, tk, tv)]
    kr = torch.repeat_interleave(tk.detach(), group, dim=-3) if hkv else tk.detach()
    scores = torch.where(torch.tensor(keep), tq.detach() @ kr.transpose(-1, -2) * scale, -torch.inf)
    lse = torch.logsumexp(scores, dim=-1).numpy() if S else np.full(q.shape[:-1], -np.inf)
    lse = np.where(has_key, lse, np.inf)  # this library: +inf on rows that see nothing

    def nan(a, rows):
        return np.where(rows[..., None], np.nan, a)

    return (nan(out.detach().numpy(), poisoned), np.where(poisoned, np.nan, lse),
            (nan(grads[0], marked), nan(grads[1], key_nan), nan(grads[2], key_nan)))


def magnitudes(q, k, v, g, scale, L, lse):
    """The size of the terms each result is a sum of (row norms), for the tolerance."""
    def norm(a):
        a = np.where(np.isfinite(a), a.astype(np.float64), 0.0)
        return float(np.sqrt((a * a).sum(axis=-1)).max(initial=0.0))
    nq, nk, nv, ng = (norm(a) for a in (q, k, v, g))
    finite_lse = np.abs(lse[np.isfinite(lse)]).max(initial=0.0)
    return {"out": nv, "lse": finite_lse + scale * nq * nk, "dq": scale * ng * nv * nk,
            "dk": scale * ng * nv * nq * max(L, 1), "dv": ng * max(L, 1)}


def run_backend(name, pr, q, k, v, g):
    """(out, lse or None, (dq, dk, dv)) of backend ``name``, NumPy arrays."""
    causal, align, window = pr["causal"], pr["align"], pr["window"]
    bq, bk = pr["blocks"]
    gqa = pr["hq"] != pr["hkv"]
    kw = dict(scale=pr["scale"], enable_gqa=gqa, causal_align=align, window=window, block_q=bq,
              block_k=bk)
    if name == "sdpa":
        keep = reference_mask(pr["L"], pr["S"], is_causal=causal, causal_align=align, window=window)
        out = at.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=pr["scale"],
                                              enable_gqa=gqa)
        return out, None, at.scaled_dot_product_attention_backward(g, q, k, v, attn_mask=keep,
                                                                   scale=pr["scale"],
                                                                   enable_gqa=gqa)
    if name == "cuda-emulation":
        out, lse = cuda_emulation.flash_attention(q, k, v, causal, return_lse=True,
                                                  tensor_cores=True, smem_limit=SMEM, **kw)
        return out, lse, cuda_emulation.flash_attention_backward(g, q, k, v, out, lse, causal,
                                                                 smem_limit=SMEM, **kw)
    backend = name.removeprefix("flash-")
    out, lse = at.flash_attention(q, k, v, causal, return_lse=True, backend=backend, **kw)
    return out, lse, at.flash_attention_backward(g, q, k, v, out, lse, causal, backend=backend,
                                                 **kw)


def check_case(name, pr):
    q, k, v, g = make_arrays(pr)
    scale = pr["scale"] if pr["scale"] is not None else (1 / np.sqrt(pr["E"]) if pr["E"] else 1.0)
    out, lse, grads = run_backend(name, pr, q, k, v, g)
    want_out, want_lse, want_grads = expected(pr, q, k, v, g, scale)
    dtype = pr["dtype"]
    eps_acc = EPS[np.dtype(np.float32 if dtype == np.float16 else dtype)]
    lse_size = 1.0 + np.abs(want_lse[np.isfinite(want_lse)]).max(initial=0.0)
    rel = 64 * eps_acc * lse_size + (4 * EPS[dtype] if dtype == np.float16 else 0.0)
    size = magnitudes(q, k, v, g, scale, pr["L"], want_lse)
    results = [("out", out, want_out), ("lse", lse, want_lse)] + list(zip(("dq", "dk", "dv"), grads,
                                                                          want_grads, strict=True))
    for part, got, want in results:
        if got is None:
            continue
        where = f"{name}: {part} of {pr}"
        got = np.asarray(got)
        assert got.shape == want.shape, f"{where}: shape {got.shape}, expected {want.shape}"
        assert got.dtype == (np.float32 if part == "lse" and dtype == np.float16 else dtype), where
        got = got.astype(np.float64)
        assert np.array_equal(np.isnan(got), np.isnan(want)), \
            f"{where}: NaN at {np.argwhere(np.isnan(got) != np.isnan(want))[:5].tolist()}"
        assert np.array_equal(np.isposinf(got), np.isposinf(want)), f"{where}: +inf differs"
        ok = np.isfinite(want)
        assert np.isfinite(got[ok]).all(), f"{where}: a finite result expected"
        err = np.abs(got[ok] - want[ok]).max(initial=0.0)
        floor = EPS[dtype] * np.abs(want[ok]).max(initial=0.0)
        assert err <= rel * (size[part] + 1e-300) + floor, \
            f"{where}: error {err:.3g} > {rel:.3g} x {size[part]:.3g}"
    CASES_RUN[name] = CASES_RUN.get(name, 0) + 1


def numba_mark():
    reason = unavailable_reason("numba")
    return pytest.mark.skipif(reason is not None, reason=str(reason))


BACKENDS = ["flash-numpy", pytest.param("flash-numba", marks=numba_mark()),
            pytest.param("cuda-emulation",
                         marks=pytest.mark.skipif(cuda_emulation.unavailable_reason() is not None,
                                                  reason=str(cuda_emulation.unavailable_reason()))),
            "sdpa"]


@pytest.fixture(params=BACKENDS)
def name(request):
    """The backend's name; the CUDA emulation's library is built in setup, not in the test."""
    if request.param == "cuda-emulation":
        request.getfixturevalue("cuda_emulation_library")
    return request.param


def test_every_backend_agrees_with_pytorch_float64(name):
    """One Hypothesis run with the active profile; FUZZ_SECONDS > 0 repeats runs until that many
    seconds have passed (``make fuzz``), each run with fresh random examples."""
    # the active profile's, at least 100 (~20 s in all)
    examples = max(settings.default.max_examples, 100)
    run = settings(settings.default,
                   max_examples=examples)(given(pr=problems())(lambda pr: check_case(name, pr)))
    budget = float(os.environ.get("FUZZ_SECONDS", "0"))
    start = time.monotonic()
    before = CASES_RUN.get(name, 0)
    run()
    while time.monotonic() - start < budget:
        run()
    if budget:
        print(f"\nfuzz {name}: {CASES_RUN.get(name, 0) - before} cases in "
              f"{time.monotonic() - start:.0f} s")


def test_the_fuzz_profile_is_registered():
    """``make fuzz`` loads it: deadline-free, many examples per run."""
    fuzz = settings.get_profile("fuzz")
    assert fuzz.deadline is None and fuzz.max_examples >= 1000
