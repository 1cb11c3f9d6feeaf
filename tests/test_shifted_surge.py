import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clear_middleware import ShiftedSurge
from tests.strategies import surge_batches


def test_value_and_marginal_exact():
    curves = ShiftedSurge(ceiling=0.9, threshold=[500.0, 2000.0], rate=1 / 400)
    # x = 1000 tokens past tau = 500: y = 2.5.
    assert curves.value([1500.0, 1500.0]) == pytest.approx(
        [0.9 * (1 - 3.5 * math.exp(-2.5)), 0.0], rel=1e-15
    )
    assert curves.marginal([1500.0, 2400.0]) == pytest.approx(
        [0.9 / 400 * 2.5 * math.exp(-2.5), 0.9 / 400 * 1.0 * math.exp(-1.0)], rel=1e-14
    )
    # The peak marginal sits one surge width past the threshold.
    assert curves.peak_marginal == pytest.approx([0.9 / 400 / math.e] * 2)


def test_marginal_is_the_derivative_of_value():
    curves = ShiftedSurge([0.7, 1.0], [300.0, 0.0], [1 / 250, 1 / 900])
    b = np.array([[350.0, 800.0, 2000.0, 9000.0]] * 2)
    h = 1e-3
    numeric = (curves.value(b + h) - curves.value(b - h)) / (2 * h)
    np.testing.assert_allclose(curves.marginal(b), numeric, rtol=1e-6, atol=1e-15)


def test_broadcasting_shapes():
    curves = ShiftedSurge(0.5, [100.0, 200.0, 300.0], 0.01)
    assert len(curves) == 3
    assert curves.value(1000.0).shape == (3,)
    assert curves.value(np.array([[100.0, 500.0]])).shape == (3, 2)
    with pytest.raises(ValueError, match="shape"):
        ShiftedSurge([0.5, 0.6], [1.0, 2.0, 3.0], 0.01)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ceiling": float("nan"), "threshold": 0, "rate": 1}, "ceiling"),
        ({"ceiling": 1.5, "threshold": 0, "rate": 1}, r"ceiling must be finite and in \[0, 1\]"),
        ({"ceiling": 0.5, "threshold": -1, "rate": 1}, "threshold"),
        ({"ceiling": 0.5, "threshold": float("inf"), "rate": 1}, "threshold"),
        ({"ceiling": 0.5, "threshold": 0, "rate": 0.0}, r"rate must be finite and in \(0, inf\)"),
        ({"ceiling": 0.5, "threshold": 0, "rate": "fast"}, "rate must be numeric"),
    ],
)
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ShiftedSurge(**kwargs)


def test_saturation_reaches_the_fraction_of_the_ceiling():
    curves = ShiftedSurge([0.4, 1.0], [1000.0, 0.0], [1 / 300, 1 / 50])
    sat = curves.saturation_tokens()
    np.testing.assert_allclose(curves.value(sat), 0.999 * curves.ceiling, rtol=1e-12)
    np.testing.assert_allclose(curves.saturation_tokens(0.5), curves.threshold
                               + 1.6783469900166608 / curves.rate, rtol=1e-12)


def _brute_force(curves, price, lower, upper, points=200_001):
    grid = np.linspace(0.0, float(np.max(upper)), points)[None, :]
    b = np.clip(grid, lower[:, None], upper[:, None])
    surplus = curves.value(b) - price * b
    best = surplus.max(axis=1)
    return np.maximum(best, 0.0)


@given(surge_batches(), st.floats(1e-6, 5e-3), st.sampled_from([0.0, 200.0, 1500.0]),
       st.sampled_from([None, 2500.0, 12000.0]))
def test_best_response_matches_brute_force(curves, price, min_tokens, max_tokens):
    response = curves.responder(min_tokens, max_tokens)
    tokens = response.demand(price)
    ours = np.where(tokens > 0, curves.value(tokens) - price * tokens, 0.0)
    brute = _brute_force(curves, price, response.lower, response.upper)
    # The grid step is at most 0.06 tokens: the brute force can only be slightly worse.
    assert np.all(ours >= brute - 1e-9)
    assert np.all(ours <= brute + price * 0.1 + 1e-9)
    funded = tokens > 0
    assert np.all(price < response.break_even[funded])
    assert np.all((tokens[funded] >= response.lower[funded] - 1e-9)
                  & (tokens[funded] <= response.upper[funded] + 1e-9))


def test_best_response_closed_form_lambert_w():
    # a = 1, beta = 1/100, tau = 50, price 0.002: z = price / (a beta) = 0.2,
    # x* = -W_{-1}(-0.2) / beta = 100 * 2.5426413577735265.
    curves = ShiftedSurge(1.0, 50.0, 0.01)
    tokens = curves.best_response(0.002, max_tokens=10_000)
    assert tokens[0] == pytest.approx(50.0 + 254.26413577735265, rel=1e-12)


def test_abandonment_at_the_break_even_price():
    curves = ShiftedSurge([0.9, 0.9], [200.0, 5000.0], 1 / 300)
    response = curves.responder()
    # The break-even price is the slope of the ray from the origin touching the curve.
    b = np.linspace(1.0, 20_000.0, 400_000)
    ratio = curves.value(np.stack([b, b])) / b
    np.testing.assert_allclose(response.break_even, ratio.max(axis=1), rtol=1e-9)
    just_below = response.break_even * (1 - 1e-9)
    assert response.demand(float(just_below[1]))[1] > 5000.0
    assert response.demand(float(response.break_even[1]))[1] == 0.0
    # The insolvent (large tau) query is dropped first as the price rises.
    assert response.break_even[1] < response.break_even[0]


def test_zero_ceiling_is_never_funded():
    curves = ShiftedSurge([0.0, 0.5], 100.0, 0.01)
    assert curves.best_response(0.0)[0] == 0.0
    assert curves.best_response(1e-5)[0] == 0.0
    assert curves.best_response(1e-5)[1] > 0.0


def test_take_selects_a_sub_batch():
    curves = ShiftedSurge([0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [0.1, 0.2, 0.3])
    sub = curves.take([2, 0])
    assert sub.ceiling.tolist() == [0.3, 0.1]
    assert sub.threshold.tolist() == [3.0, 1.0]
