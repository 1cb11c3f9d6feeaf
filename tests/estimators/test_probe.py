"""ProbeEstimator without a server: parsing, curve construction, learning the probe's error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clear_middleware.curves import EmpiricalCurve, ShiftedSurge
from clear_middleware.estimators import (
    CallObservation,
    ProbeEstimator,
    StaticEstimator,
    parse_estimate,
    probe_curves,
)
from clear_middleware.estimators.probe import WITHIN_SIGMA, fit_log_error
from clear_middleware.subtask import Subtask

MODEL = "openai/target"


@pytest.mark.parametrize(("text", "expected"), [
    ("1200", 1200.0),
    ("1,200 tokens", 1200.0),
    ("About 850.", 850.0),
    ("1.5k", 1500.0),
    ("2 thousand", 2000.0),
    ("800-1200", math.sqrt(800 * 1200)),
    ("between 500 to 2000 tokens", 1000.0),
    ("<think>maybe 99999</think> 640", 640.0),
    ("4_096", 4096.0),
])
def test_parse_estimate_reads_the_first_number(text: str, expected: float) -> None:
    assert parse_estimate(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [None, "", "I cannot tell.", "0", "0.5", "99999999999",
                                  "<think>1000"])
def test_parse_estimate_rejects_what_is_not_a_usable_count(text) -> None:
    assert parse_estimate(text) is None


def _lognormal_kind(median: float = 1000.0, spread: float = 0.8, ceiling: float = 0.6
                    ) -> EmpiricalCurve:
    """A kind curve whose normalised shape is a log-normal CDF (median, log-sd ``spread``)."""
    grid = np.arange(0.0, 40_001.0, 8.0)
    z = (np.log(np.maximum(grid, 1e-9)) - math.log(median)) / spread
    cdf = 0.5 * np.array([math.erfc(-v / math.sqrt(2)) for v in z])
    cdf[0] = 0.0
    return EmpiricalCurve(grid, ceiling * cdf[None, :])


def _log_spread(curve: EmpiricalCurve) -> np.ndarray:
    lo, hi = curve.saturation_tokens(0.158655), curve.saturation_tokens(0.841345)
    return (np.log(hi) - np.log(lo)) / 2


def test_the_median_moves_to_the_posterior_and_the_spread_narrows_to_the_item() -> None:
    kind = _lognormal_kind(median=1000.0, spread=0.8)
    sigma_p = 0.25
    out = probe_curves(kind.take([0, 0]), np.array([3000.0, 400.0]), probe_sigma=sigma_p)
    var_a = 0.8**2 - WITHIN_SIGMA**2
    var_post = 1 / (1 / var_a + 1 / sigma_p**2)
    for row, est in enumerate((3000.0, 400.0)):
        mu = var_post * (math.log(1000.0) / var_a + math.log(est) / sigma_p**2)
        assert out.saturation_tokens(0.5)[row] == pytest.approx(math.exp(mu), rel=0.01)
    # Log-spread of the item: sqrt(within^2 + posterior variance); the ceiling is the kind's.
    assert _log_spread(out) == pytest.approx(math.sqrt(WITHIN_SIGMA**2 + var_post), rel=0.02)
    assert out.ceiling == pytest.approx(kind.ceiling[[0, 0]], abs=1e-5)


def test_an_uncertain_probe_spreads_the_curve_and_a_useless_one_gives_the_kind_back() -> None:
    kind = _lognormal_kind(median=1000.0, spread=0.8)
    est = np.full(1, 3000.0)
    spreads = [float(_log_spread(probe_curves(kind, est, probe_sigma=s))[0])
               for s in (0.1, 0.3, 1.0, 3.0)]
    assert spreads == sorted(spreads) and spreads[0] < 0.4 and spreads[-1] > 0.75
    medians = [float(probe_curves(kind, est, probe_sigma=s).saturation_tokens(0.5)[0])
               for s in (0.1, 0.3, 1.0, 3.0)]
    assert medians == sorted(medians, reverse=True)  # pulled back toward the kind's 1,000
    useless = probe_curves(kind, est, probe_sigma=1e6)
    np.testing.assert_allclose(useless.values, kind.values, atol=1e-9)


def test_bias_scales_the_estimate_and_rows_without_a_probe_keep_their_base_curve() -> None:
    kind = _lognormal_kind()
    base = kind.take([0, 0])
    biased = probe_curves(base, np.array([1500.0, np.nan]), probe_sigma=0.05,
                          bias=math.log(2.0))
    plain = probe_curves(base, np.array([3000.0, np.nan]), probe_sigma=0.05)
    np.testing.assert_allclose(biased.values, plain.values)
    np.testing.assert_array_equal(biased.values[1], kind.values[0])


def test_shifted_surges_are_tabulated_and_a_zero_ceiling_is_left_alone() -> None:
    surge = ShiftedSurge(ceiling=[0.8, 0.0], threshold=[200.0, 200.0], rate=1 / 500)
    out = probe_curves(surge, np.array([5000.0, 5000.0]), probe_sigma=0.2)
    assert isinstance(out, EmpiricalCurve)
    assert out.saturation_tokens(0.5)[0] > 2000.0
    assert out.ceiling[1] == 0.0


def test_probe_curves_bad_input_names_the_field() -> None:
    kind = _lognormal_kind()
    with pytest.raises(ValueError, match=r"estimate must have shape \(1,\)"):
        probe_curves(kind, np.array([1.0, 2.0]), probe_sigma=0.5)
    with pytest.raises(ValueError, match=r"probe_sigma must be finite and in \(0, inf\)"):
        probe_curves(kind, np.array([1.0]), probe_sigma=0.0)
    with pytest.raises(ValueError, match=r"within_sigma must be finite and in \[0, inf\)"):
        probe_curves(kind, np.array([1.0]), probe_sigma=0.5, within_sigma=-1)


def test_fit_log_error_exact_residuals_match_the_closed_form() -> None:
    x = np.array([0.5, -0.5, 1.0, 0.0])
    mu, sigma = fit_log_error(x, np.array([]), prior_sigma=1.0, prior_weight=10.0)
    assert mu == pytest.approx(1.0 / 14.0)
    var = (((x - mu) ** 2).sum() + 10 * mu**2 + 10 * 1.0) / 14
    assert sigma == pytest.approx(math.sqrt(var))


def test_fit_log_error_uses_censored_lower_bounds() -> None:
    exact = np.zeros(20)
    mu0, _ = fit_log_error(exact, np.array([]))
    # Calls cut at caps above every exact length: the lengths were longer still.
    mu1, sigma1 = fit_log_error(exact, np.full(20, 1.0))
    assert mu0 == 0.0 and mu1 > 0.5 and sigma1 > 0.5
    # Bounds far below the mean say almost nothing beyond "one more call".
    mu2, _ = fit_log_error(exact, np.full(20, -50.0))
    assert abs(mu2) < 1e-6
    assert fit_log_error(np.array([]), np.array([])) == (0.0, 1.0)


def _subtask(i: int) -> Subtask:
    return Subtask.of(f"problem {i}", kind="k")


def _obs(call_id: str, subtask: Subtask, tokens: int, cap: int, finished: bool
         ) -> CallObservation:
    return CallObservation(call_id, "k", MODEL, cap=cap, completion_tokens=tokens,
                           finished=finished, digest=subtask.digest)


def test_the_probe_error_is_learned_from_finished_and_cut_calls() -> None:
    est = ProbeEstimator(StaticEstimator(), "openai/probe", prior_sigma=1.0, prior_weight=10)
    assert (est.bias, est.total_sigma) == (0.0, 1.0)
    assert est.probe_sigma == pytest.approx(math.sqrt(1.0 - WITHIN_SIGMA**2))
    subtasks = [_subtask(i) for i in range(4)]
    for s in subtasks:
        est.remember(s, MODEL, 1000.0)
    est.observe(_obs("a", subtasks[0], 2000, 4000, True))   # exact: log 2
    est.observe(_obs("b", subtasks[1], 500, 4000, True))    # exact: log 0.5
    est.observe(_obs("c", subtasks[2], 3000, 3000, False))  # cut: > log 3
    est.observe(_obs("d", _subtask(99), 10, 4000, True))    # never probed: ignored
    assert est.learned_calls == (2, 1)
    expected = fit_log_error(np.log([2.0, 0.5]), np.log([3.0]))
    assert (est.bias, est.total_sigma) == pytest.approx(expected)
    # A wrong answer's length is not a correct answer's.
    est.record_outcome("b", False, model=MODEL, kind="k")
    assert est.learned_calls == (1, 1)
    assert (est.bias, est.total_sigma) == pytest.approx(
        fit_log_error(np.log([2.0]), np.log([3.0])))


def test_estimate_moves_only_the_probed_subtasks_and_learning_can_be_off() -> None:
    kind = _lognormal_kind()
    est = ProbeEstimator(StaticEstimator({"k": kind}), "openai/probe", learn=False)
    a, b = _subtask(1), _subtask(2)
    base = est.base.estimate([a, b], MODEL)
    np.testing.assert_array_equal(est.estimate([a, b], MODEL).values, base.values)
    est.remember(a, MODEL, 4000.0)
    curves = est.estimate([a, b], MODEL)
    assert curves.saturation_tokens(0.5)[0] > 1500.0
    np.testing.assert_array_equal(curves.values[1], base.values[1])
    assert est.cached_estimate(a, MODEL) == 4000.0 and est.cached_estimate(b, MODEL) is None
    assert est.cached_estimate(a, "openai/other") is None  # per target model
    est.observe(_obs("x", a, 100, 1000, True))
    assert est.learned_calls == (0, 0)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_tokens", 0, r"max_tokens must be an integer >= 1"),
    ("max_tokens", 5000, r"max_tokens must be an integer in \[1, 4096\]"),
    ("max_concurrency", 0, r"max_concurrency must be an integer >= 1"),
    ("within_sigma", -0.1, r"within_sigma must be finite and in \[0, 3\]"),
    ("prior_sigma", 0.0, r"prior_sigma must be finite and in \(0, 5\]"),
    ("prior_weight", 0.0, r"prior_weight must be finite and in \(0, inf\)"),
    ("cache_size", 0, r"cache_size must be an integer >= 1"),
    ("prompt_template", "no field", r"prompt_template must be a str containing '\{prompt\}'"),
    ("prompt_template", "{prompt} {other}", r"prompt_template may only use the fields"),
])
def test_bad_arguments_name_the_field_and_the_accepted_range(field, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        ProbeEstimator(StaticEstimator(), "openai/probe", **{field: value})


def test_bad_base_model_and_remembered_tokens() -> None:
    with pytest.raises(ValueError, match="base must be a CurveEstimator"):
        ProbeEstimator(object(), "openai/probe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probe_model must be a non-empty"):
        ProbeEstimator(StaticEstimator(), "")
    est = ProbeEstimator(StaticEstimator(), "openai/probe")
    with pytest.raises(ValueError, match=r"tokens must be finite and in \(0, inf\)"):
        est.remember(_subtask(1), MODEL, 0)


def test_docstring_examples_run() -> None:
    import doctest

    from clear_middleware.estimators import probe

    assert doctest.testmod(probe).failed == 0
