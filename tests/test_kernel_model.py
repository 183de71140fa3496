"""The NumPy model of the CUDA forward kernel (backends/cuda/kernel_model.py) against the oracle.

model_forward puts the kernel's steps together (row groups of threads, butterfly sums, the
online softmax over chunks of FLASH_KC keys in log2 units); chapter 13 runs it on three masks.
Here it runs on every kind of mask, ragged chunk tails, head dims of several buckets and rows
that see no key.
"""
import numpy as np
import pytest

from attention_scratch.backends.cuda.constants import FLASH_KC
from attention_scratch.backends.cuda.kernel_model import model_forward
from attention_scratch.bands import integer_band, mask_band
from attention_scratch.testing import assert_close, attention_oracle

MASKS = [(False, "top_left", None), (True, "top_left", None), (True, "bottom_right", None),
         (False, "top_left", (3, 1)), (True, "bottom_right", (4, None)),
         (False, "top_left", (0, 0))]


@pytest.mark.parametrize("causal,align,window", MASKS)
@pytest.mark.parametrize("L,S,E,Ev", [(7, 2 * FLASH_KC + 3, 5, 3), (FLASH_KC + 1, 9, 40, 24),
                                      (3, 1, 100, 7)])
def test_model_forward_is_attention(rng, L, S, E, Ev, causal, align, window):
    q, k, v = rng.standard_normal((L, E)), rng.standard_normal((S, E)), rng.standard_normal((S, Ev))
    band = mask_band(L, S, causal, align, window)
    out, lse = model_forward(q, k, v, band=band)
    ref_out, ref_lse, _ = attention_oracle(q[None], k[None], v[None], is_causal=causal,
                                           causal_align=align, window=window)
    where = f"L={L}, S={S}, E={E}, mask=({causal}, {align}, {window})"
    assert out.shape == (L, Ev) and lse.shape == (L,)
    assert_close(out, ref_out[0], rtol=1e-9, atol=1e-12, what=f"output ({where})")
    # +inf on empty rows
    assert_close(lse, ref_lse[0], rtol=1e-9, atol=1e-12, what=f"lse ({where})")
    assert np.all(out[np.isposinf(ref_lse[0])] == 0), "a row that sees no key has output 0"


def test_model_forward_takes_the_scale_and_an_integer_band(rng):
    q, k, v = rng.standard_normal((6, 8)), rng.standard_normal((11, 8)), rng.standard_normal((11,
                                                                                              4))
    band = integer_band(mask_band(6, 11, True, "bottom_right", (2, None)), 6, 11)
    out, lse = model_forward(q, k, v, scale=0.3, band=band)
    ref_out, ref_lse, _ = attention_oracle(q[None], k[None], v[None], is_causal=True, scale=0.3,
                                           causal_align="bottom_right", window=(2, None))
    assert_close(out, ref_out[0], rtol=1e-9, atol=1e-12, what="output, scale 0.3")
    assert_close(lse, ref_lse[0], rtol=1e-9, atol=1e-12, what="lse, scale 0.3")
