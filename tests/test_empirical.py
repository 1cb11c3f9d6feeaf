import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clear_middleware import EmpiricalCurve
from clear_middleware.curves.empirical import finish_masses
from tests.strategies import empirical_batches


def test_linear_between_grid_points_and_flat_after():
    curve = EmpiricalCurve([0, 1000, 2000], [[0.0, 0.2, 0.8], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(curve.value([1500.0, 1500.0]), [0.5, 0.5])
    np.testing.assert_allclose(curve.value(5000.0), [0.8, 0.5])
    np.testing.assert_allclose(curve.marginal([1500.0, 500.0]), [0.0006, 0.0005])
    np.testing.assert_allclose(curve.marginal(2500.0), [0.0, 0.0])
    assert curve.value(np.array([[0.0, 250.0, 3000.0]])).shape == (2, 3)


def test_grid_not_starting_at_zero_rises_from_the_origin():
    curve = EmpiricalCurve([1024, 2048], [[0.4, 0.6]])
    assert curve.grid.tolist() == [0.0, 1024.0, 2048.0]
    assert curve.value([512.0])[0] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("grid", "values", "message"),
    [
        ([0, 100, 200], [[0.0, 0.5, 0.4]], r"values must be non-decreasing.*values\[0, 2\]"),
        ([0, 100, 200], [[0.0, np.nan, 0.4]], "values must be finite"),
        ([0, 100, 200], [[0.0, -0.1, 0.4]], r"values must be finite and in \[0, inf\)"),
        ([0, 100, 100], [[0.0, 0.1, 0.4]], "grid must be strictly increasing"),
        ([0, -5, 100], [[0.0, 0.1, 0.4]], "grid must be finite"),
        ([0, 100], [[0.0, 0.1, 0.4]], r"values must have shape \(n, 2\)"),
        ([0, 100], [[0.3, 0.4]], "values at grid point 0 must be 0"),
    ],
)
def test_bad_input_names_the_field(grid, values, message):
    with pytest.raises(ValueError, match=message):
        EmpiricalCurve(grid, values)


def test_from_rollouts_without_censoring_is_the_solved_fraction():
    lengths = [[100, 300, 400, 50]]
    correct = [[True, True, False, False]]
    curve = EmpiricalCurve.from_rollouts(lengths, correct, [0, 100, 200, 300, 400])
    np.testing.assert_allclose(curve.values[0], [0.0, 0.25, 0.25, 0.5, 0.5])


def test_from_rollouts_with_censoring_aalen_johansen():
    # A run cut at 200 stays at risk up to 200 and drops out after: the run solved at 300
    # then carries 3/4 * 1/2 of the probability mass instead of 1/4.
    lengths = [[100, 200, 300, 400]]
    correct = [[True, False, True, False]]
    censored = [[False, True, False, False]]
    curve = EmpiricalCurve.from_rollouts(lengths, correct, [0, 100, 200, 300, 400],
                                         censored=censored)
    np.testing.assert_allclose(curve.values[0], [0.0, 0.25, 0.25, 0.625, 0.625])


def test_from_rollouts_ignores_padding():
    lengths = [[100, 200, 0], [100, 0, 0]]
    correct = [[True, True, True], [True, True, True]]
    valid = [[True, True, False], [True, False, False]]
    curve = EmpiricalCurve.from_rollouts(lengths, correct, [0, 150, 250], valid=valid)
    np.testing.assert_allclose(curve.values, [[0.0, 0.5, 1.0], [0.0, 1.0, 1.0]])


def test_finish_masses_redistribute_cut_runs_to_the_right_and_keep_the_rest():
    # Row 1 in input order: 3000 finished, 1024 cut, 8192 cut, 500 finished. By length: 500
    # takes 1/4; the cut 1024 passes its share on; 3000 takes half of the 3/4 left; the run
    # cut at 8192 is the longest, so 3/8 is left over (still running after it).
    # Row 2: padding takes nothing; the last run finishing leaves nothing over.
    lengths = np.array([[3000.0, 1024.0, 8192.0, 500.0], [10.0, 20.0, 0.0, 0.0]])
    cut = np.array([[False, True, True, False], [True, False, False, False]])
    valid = np.array([[True, True, True, True], [True, True, False, False]])
    mass, residual = finish_masses(lengths, cut, valid)
    np.testing.assert_array_equal(mass, [[0.375, 0.0, 0.0, 0.25], [0.0, 1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(residual, [0.375, 0.0])


def test_threshold_and_saturation():
    curve = EmpiricalCurve([0, 100, 200, 300], [[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert curve.threshold.tolist() == [100.0, np.inf]
    np.testing.assert_allclose(curve.saturation_tokens(), [299.8, 0.0])


@given(empirical_batches(), st.floats(1e-5, 3e-3), st.sampled_from([0.0, 300.0]),
       st.sampled_from([None, 1100.0]))
def test_envelope_best_response_matches_brute_force(curves, price, min_tokens, max_tokens):
    response = curves.responder(min_tokens, max_tokens)
    tokens = response.demand(price)
    ours = np.where(tokens > 0, curves.value(tokens) - price * tokens, 0.0)
    grid = np.linspace(0.0, float(curves.grid[-1]), 20_001)[None, :]
    b = np.clip(grid, response.lower[:, None], response.upper[:, None])
    brute = np.maximum((curves.value(b) - price * b).max(axis=1), 0.0)
    # Vertices are exact; the brute-force grid can only miss the optimum.
    assert np.all(ours >= brute - 1e-12)
    funded = tokens > 0
    assert np.all(price < response.break_even[funded])
