"""assert_close treats infinities strictly
(the flash kernels' lse = +inf convention depends on it)."""
import numpy as np
import pytest

from attention_scratch.testing import assert_close


@pytest.mark.parametrize("actual,expected", [([-np.inf], [np.inf]), ([1.0], [np.inf]),
                                             ([np.inf], [1.0]), ([np.nan], [np.inf])])
def test_assert_close_rejects_a_mismatched_infinity(actual, expected):
    with pytest.raises(AssertionError):
        assert_close(np.array(actual), np.array(expected))


def test_assert_close_accepts_matching_infinities():
    assert_close(np.array([np.inf, -np.inf, 1.0]), np.array([np.inf, -np.inf, 1.0 + 1e-13]))
