import numpy as np
import pytest

from clear_middleware import ShiftedSurge, fit_shifted_surge


def _rollouts(rng, ceiling, threshold, rate, n):
    """Rollouts from the shifted-surge model: solving runs tau + Gamma(2, 1/beta)."""
    k = len(ceiling)
    solving = rng.random((k, n)) < np.asarray(ceiling)[:, None]
    lengths_ok = np.asarray(threshold)[:, None] + rng.gamma(2.0, 1.0 / np.asarray(rate)[:, None],
                                                           (k, n))
    lengths_bad = rng.uniform(50.0, 6000.0, (k, n))
    return np.where(solving, lengths_ok, lengths_bad), solving


def test_uncensored_fit_is_the_closed_form():
    rng = np.random.default_rng(7)
    lengths, correct = _rollouts(rng, [0.7, 0.4], [800.0, 2000.0], [1 / 300, 1 / 700], 4000)
    params = fit_shifted_surge(lengths, correct)
    # a is exactly the solved fraction; beta = 2 / (mean L - tau) over the correct lengths.
    np.testing.assert_array_equal(params.ceiling, correct.mean(axis=1))
    for i in range(2):
        ok = lengths[i][correct[i]]
        assert params.rate[i] == pytest.approx(2.0 / (ok.mean() - params.threshold[i]), rel=1e-9)
    np.testing.assert_allclose(params.threshold, [800.0, 2000.0], rtol=0.03)
    np.testing.assert_allclose(params.rate, [1 / 300, 1 / 700], rtol=0.06)


def test_fit_with_caps_recovers_the_curve():
    rng = np.random.default_rng(11)
    truth = ShiftedSurge([0.8, 0.5, 0.9], [600.0, 1500.0, 100.0], [1 / 400, 1 / 500, 1 / 200])
    lengths, correct = _rollouts(rng, truth.ceiling, truth.threshold, truth.rate, 10_000)
    caps = rng.choice([800.0, 1600.0, 3200.0, 12000.0], size=lengths.shape)
    censored = lengths > caps
    observed = np.minimum(lengths, caps)
    params = fit_shifted_surge(observed, correct & ~censored, caps=caps)
    fitted = ShiftedSurge(params.ceiling, params.threshold, params.rate)
    grid = np.linspace(0.0, 8000.0, 81)[None, :]
    assert np.max(np.abs(fitted.value(grid) - truth.value(grid))) < 0.03
    # It is the maximum: the true parameters explain the sample no better.
    from clear_middleware.curves.fitting import _log_likelihood, _prepare

    data = _prepare(observed, correct & ~censored, caps, None)
    at_truth = _log_likelihood(data, truth.ceiling, truth.threshold, truth.rate)
    assert np.all(params.log_likelihood >= at_truth)
    # Ignoring the caps (cut runs counted as failures) underestimates the ceilings of the
    # queries that often need more than the smaller caps.
    naive = ShiftedSurge.fit(observed, correct & ~censored)
    assert np.all(naive.ceiling[:2] < truth.ceiling[:2] - 0.2)


def test_shared_rate():
    rng = np.random.default_rng(3)
    lengths, correct = _rollouts(rng, [0.9] * 4, [100.0, 900.0, 2500.0, 4000.0],
                                 [1 / 350] * 4, 1500)
    params = fit_shifted_surge(lengths, correct, rate="shared")
    assert np.all(params.rate == params.rate[0])
    assert params.rate[0] == pytest.approx(1 / 350, rel=0.05)
    np.testing.assert_allclose(params.threshold, [100.0, 900.0, 2500.0, 4000.0], atol=40)


def test_unidentifiable_queries_borrow_the_shared_rate():
    lengths = np.array([[1000.0, 1200.0, 1500.0, 900.0],   # identifiable
                        [700.0, 3000.0, 3000.0, 3000.0],   # one correct length
                        [500.0, 600.0, 700.0, 800.0]])     # never correct
    correct = np.array([[True, True, True, False], [True, False, False, False],
                        [False, False, False, False]])
    params = fit_shifted_surge(lengths, correct)
    shared = fit_shifted_surge(lengths, correct, rate="shared")
    assert params.rate[1] == pytest.approx(shared.rate[1])
    assert params.ceiling[1] == pytest.approx(0.25)
    # One solving run at 700 tokens: tau sits one surge width (1/beta) below it.
    assert params.threshold[1] == pytest.approx(700.0 - 1.0 / shared.rate[1])
    assert params.ceiling[2] == 0.0
    assert params.threshold[2] == 800.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lengths": [[1.0, np.nan]], "correct": [[True, True]]}, "lengths must be finite"),
        ({"lengths": [[1.0, -2.0]], "correct": [[True, True]]}, "lengths must be finite"),
        ({"lengths": [[1.0, 2.0]], "correct": [[True, True, False]]}, "correct must have"),
        ({"lengths": [[1.0, 2.0]], "correct": [[True, True]], "rate": "each"}, "rate must be"),
        ({"lengths": [[1.0, 5.0]], "correct": [[True, True]], "caps": [[4.0, 4.0]]},
         "lengths of correct rollouts must be <= their caps"),
        ({"lengths": [[1.0, 5.0]], "correct": [[True, True]], "caps": [[0.0, 8.0]]},
         r"caps must be a number \(not NaN\) and in \(0, inf\)"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_shifted_surge(**kwargs)
