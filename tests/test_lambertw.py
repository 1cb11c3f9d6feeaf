import numpy as np
import pytest
from scipy.special import lambertw

from clear_middleware.curves._lambertw import lambertw_lower, neg_w_lower_from_log


def test_matches_scipy_across_the_whole_branch():
    # From near the branch point -1/e down to -1e-300 (log-spaced): past the table's far end.
    x = -np.logspace(np.log10(1 / np.e) - 1e-6, -300, 50_000)
    reference = lambertw(x, -1).real
    ours = lambertw_lower(x)
    away_from_branch = x > -0.3
    np.testing.assert_allclose(ours[away_from_branch], reference[away_from_branch], rtol=1e-13)
    # Near the branch point W is ill-conditioned (dW/dx is unbounded): agreement to 1e-7.
    np.testing.assert_allclose(ours, reference, rtol=1e-7)


def test_solves_its_defining_equation():
    big_l = np.concatenate((np.linspace(1.0, 70.0, 10_001), [1e3, 1e6]))
    w = neg_w_lower_from_log(big_l)
    residual = (w - np.log(w) - big_l) / big_l
    assert np.max(np.abs(residual)) < 1e-14
    assert np.all(w >= 1.0)


@pytest.mark.parametrize(("big_l", "expected"), [(1.0, 1.0), (0.3, 1.0), (np.inf, np.inf)])
def test_edges(big_l, expected):
    assert neg_w_lower_from_log(np.array([big_l]))[0] == expected


def test_known_value():
    # W_{-1}(-0.1) = -3.577152063957297 (Corless et al. 1996, Table 3).
    assert lambertw_lower(np.array([-0.1]))[0] == pytest.approx(-3.577152063957297, rel=1e-14)
