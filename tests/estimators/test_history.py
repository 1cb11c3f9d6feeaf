"""HistoryEstimator: learns per-kind curves from censored outcomes, shrinks, persists."""

from __future__ import annotations

import numpy as np
import pytest

from clear_middleware import EmpiricalCurve, ShiftedSurge
from clear_middleware.estimators import (
    CallObservation,
    HistoryEstimator,
    MemoryObservationLog,
    Observation,
    SQLiteObservationLog,
    StaticEstimator,
    population_finished,
    population_prior,
)
from clear_middleware.estimators.history import CURVE_GRID, PACES
from clear_middleware.estimators.prior import smooth
from clear_middleware.subtask import Subtask
from tests.redis_server import RedisServer

TRUE = ShiftedSurge(0.7, 1200.0, 1 / 800)


def feed(estimator, n, *, kind="k", hint=None, report=True, seed=0, truth=TRUE, start=0):
    """``n`` calls of a kind drawn from ``truth`` under varied caps, outcomes reported."""
    rng = np.random.default_rng(seed)
    for i in range(start, start + n):
        cap = int(rng.choice([512, 1024, 2048, 4096, 8192]))
        solving = rng.random() < truth.ceiling[0]
        length = (truth.threshold[0] + rng.gamma(2.0, 1 / truth.rate[0]) if solving
                  else rng.uniform(100.0, 9000.0))
        finished = length <= cap
        call_id = f"{kind}-{hint}-{i}"
        estimator.observe(CallObservation(call_id, kind, "m", cap, int(min(length, cap)),
                                          finished, hint=hint))
        if report:
            estimator.record_outcome(call_id, bool(solving and finished), model="m", kind=kind,
                                     hint=hint)


def curve_error(estimator, kind="k", truth=TRUE):
    grid = CURVE_GRID[CURVE_GRID <= 8192]
    learned = EmpiricalCurve(CURVE_GRID, estimator.group("m", kind).values[None, :])
    return float(np.max(np.abs(learned.value(grid[None, :]) - truth.value(grid[None, :]))))


def test_starts_from_the_prior_and_converges():
    est = HistoryEstimator()
    prior = est.group("m", "k")
    assert prior.calls == 0
    # The prior is the documented population curve.
    np.testing.assert_array_equal(prior.values, population_prior().values[0])
    errors = []
    for n in (20, 200, 2000):
        feed(est, n - est.group("m", "k").calls, start=est.group("m", "k").calls)
        errors.append(curve_error(est))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_without_correctness_it_learns_lengths_and_scales_by_the_prior_accuracy():
    est = HistoryEstimator(prior_weight=1.0)
    feed(est, 2000, report=False)
    values = est.group("m", "k").values
    # Finishing is the event, and 80% of finished answers are taken as correct. By 8192
    # tokens 97.2% of runs finish: 0.7 * G(8192 - 1200 over 800) + 0.3 * (8092 / 8900).
    at_8192 = np.searchsorted(CURVE_GRID, 8192.0)
    finished = 0.7 * float(ShiftedSurge(1.0, 1200.0, 1 / 800).value([8192.0])[0]) + 0.3 * (
        8092 / 8900)
    assert values[at_8192] == pytest.approx(0.8 * finished, abs=0.02)


def test_hints_are_shrunk_toward_their_kind():
    # The hazards' shrinkage alone (pacing off: three calls can set a different pace, which
    # the pacing tests below cover).
    est = HistoryEstimator(prior_weight=30.0, pace_sigma=0.0)
    feed(est, 600, hint="easy", truth=ShiftedSurge(0.95, 200.0, 1 / 300), seed=1)
    feed(est, 600, hint="hard", truth=ShiftedSurge(0.4, 3000.0, 1 / 1500), seed=2)
    feed(est, 3, hint="rare", seed=3)
    kind = est.group("m", "k").values
    easy, hard, rare = (est.group("m", "k", h).values for h in ("easy", "hard", "rare"))
    at_1500 = np.searchsorted(CURVE_GRID, 1500.0)
    assert easy[at_1500] > kind[at_1500] > hard[at_1500]
    # Three calls barely move a hint group off its kind.
    assert np.max(np.abs(rare - kind)) < 0.15
    estimated = est.estimate([Subtask.of("a", kind="k", hint="easy"),
                              Subtask.of("b", kind="k", hint="hard"),
                              Subtask.of("c", kind="k")], "m")
    np.testing.assert_allclose(estimated.values, [easy, hard, kind])


def test_censored_only_traffic_pushes_the_curve_right():
    est = HistoryEstimator(prior_weight=10.0)
    for i in range(40):  # every call cut at 600 tokens
        est.observe(CallObservation(f"c{i}", "k", "m", 600, 600, False))
    learned, prior = est.group("m", "k").values, est.prior.values
    at_600 = np.searchsorted(CURVE_GRID, 600.0)
    assert learned[at_600] < prior[at_600]


def test_sqlite_log_survives_restarts_and_is_shared(tmp_path):
    uri = f"sqlite:///{tmp_path / 'budget.db'}"
    first = HistoryEstimator(uri)
    feed(first, 100)
    second = HistoryEstimator(uri)  # another worker, or the same one after a restart
    np.testing.assert_allclose(second.group("m", "k").values, first.group("m", "k").values)
    feed(second, 10, start=100, seed=9)
    assert first.group("m", "k").calls == 110


def test_redis_log_is_shared_across_instances(tmp_path):
    server = RedisServer(tmp_path, appendfsync="everysec")
    server.start()
    try:
        a, b = HistoryEstimator(server.url), HistoryEstimator(server.url)
        feed(a, 50)
        assert b.group("m", "k").calls == 50
        np.testing.assert_allclose(a.group("m", "k").values, b.group("m", "k").values)
    finally:
        server.stop()


@pytest.mark.parametrize("make", [lambda p: MemoryObservationLog(window=5),
                                  lambda p: SQLiteObservationLog(p / "w.db", window=5)])
def test_logs_keep_a_bounded_window(tmp_path, make):
    log = make(tmp_path)
    for i in range(12):
        log.append("k", Observation(f"c{i}", cap=100, tokens=i))
    assert [o.tokens for o in log.read("k")] == [7, 8, 9, 10, 11]
    assert log.read("other") == []


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="prior_weight must be > 0"):
        HistoryEstimator(prior_weight=0)
    with pytest.raises(ValueError, match=r"pace_sigma must be >= 0 \(log-tokens\)"):
        HistoryEstimator(pace_sigma=-0.5)
    with pytest.raises(ValueError, match=r"own_tail_calls must be > 0 calls, or None \(off\)"):
        HistoryEstimator(own_tail_calls=0)
    with pytest.raises(ValueError, match="prior must be a ShiftedSurge or EmpiricalCurve"):
        HistoryEstimator(prior=ShiftedSurge(0.5, [1.0, 2.0], 0.1))
    with pytest.raises(ValueError, match="prior_finished must be an EmpiricalCurve holding one"):
        HistoryEstimator(prior_finished=TRUE)
    with pytest.raises(ValueError, match="correct must be True or False"):
        HistoryEstimator().record_outcome("c", 1, model="m", kind="k")
    with pytest.raises(ValueError, match=r"kinds\['x'\] must be a ShiftedSurge or Empirical"):
        StaticEstimator({"x": "fast"})


def test_population_prior_is_the_documented_curve():
    prior = population_prior()
    at = {b: float(prior.value(np.array([[b]]))[0, 0]) for b in (512, 1024, 2048, 4096, 8192)}
    assert at[512] == pytest.approx(0.03, abs=0.01)
    assert at[1024] == pytest.approx(0.08, abs=0.01)
    assert at[2048] == pytest.approx(0.27, abs=0.01)
    assert at[4096] == pytest.approx(0.44, abs=0.01)
    assert at[8192] == pytest.approx(0.51, abs=0.01)
    # Leaving models out changes it (evaluations on a model exclude that model's runs).
    assert not np.allclose(population_prior(["deepscaler-1.5b"]).values, prior.values)
    # How long those runs are: the share finished (right or wrong) within b tokens.
    finished = population_finished()
    documented = {1024: 0.12, 2048: 0.33, 4096: 0.51, 8192: 0.61, 16384: 0.62}
    for b, share in documented.items():
        assert float(finished.value(np.array([[b]]))[0, 0]) == pytest.approx(share, abs=0.01)
        assert finished.value(np.array([[b]]))[0, 0] >= prior.value(np.array([[b]]))[0, 0]


def test_past_its_largest_cap_a_group_runs_on_as_its_parent_does():
    # A parent whose runs finish at a constant hazard (mean 4,000 tokens), half of them right.
    grid = CURVE_GRID
    finished = 1.0 - np.exp(-grid / 4000.0)
    est = HistoryEstimator(prior=EmpiricalCurve(grid, 0.5 * finished), prior_weight=3.0,
                           prior_finished=EmpiricalCurve(grid, finished), pace_sigma=0.0,
                           own_tail_calls=None)
    # Every call cut at 2,048 tokens (pacing off: the parent's own pace; the own tail off).
    for i in range(97):
        est.observe(CallObservation(f"c{i}", "k", "m", 2048, 2048, False))
    at = est.group("m", "k")
    # Up to 2,048 tokens the parent's hazard counts for 3 calls against 97 watched ones that
    # did not finish: still running at 2,048 exp(-0.03 * 2048 / 4000) = 0.9848, and
    # 0.5 * (1 - 0.9848) = 0.0076 right. Past it nothing was watched and the still-running
    # share finishes at the parent's rate: at 8,192 still running 0.9848 * exp(-6144 / 4000)
    # = 0.2120, right 0.0076 + 0.5 * (0.9848 - 0.2120) = 0.394 (the parent: 0.436).
    still = np.exp(-0.03 * np.minimum(grid, 2048.0) / 4000.0
                   - np.maximum(grid - 2048.0, 0.0) / 4000.0)
    assert np.interp(8192.0, grid, still) == pytest.approx(0.2120, abs=1e-4)
    # Both curves are then smoothed (15% in log-tokens), as every learned curve is.
    expected_running = 1.0 - smooth((1.0 - still)[None, :])[0]
    expected_value = smooth(0.5 * (1.0 - still)[None, :])[0]
    np.testing.assert_allclose(at.running, expected_running, atol=2e-3)
    np.testing.assert_allclose(at.values, expected_value, atol=2e-3)
    assert np.interp(8192.0, grid, at.values) == pytest.approx(0.394, abs=0.01)


def _exponential_parent(mean_tokens, **options):
    """An estimator whose prior runs finish at a constant hazard, half of them right."""
    finished = 1.0 - np.exp(-CURVE_GRID / mean_tokens)
    return HistoryEstimator(prior=EmpiricalCurve(CURVE_GRID, 0.5 * finished),
                            prior_finished=EmpiricalCurve(CURVE_GRID, finished), **options)


def test_a_slow_kind_runs_past_its_caps_at_its_own_pace():
    # The parent's runs take 1,000 tokens on average; the kind's take 4,000 (pace 4, on the
    # grid of paces: 0.25 * 2^(48/12)). 2,000 calls, all capped at 2,048 tokens, at the
    # quantiles of that length, every other finished one right.
    lengths = -4000.0 * np.log1p(-(np.arange(2000) + 0.5) / 2000)
    # The own tail off: past the caps the parent's hazards alone, at the group's pace.
    paced = _exponential_parent(1000.0, own_tail_calls=None)
    unpaced = _exponential_parent(1000.0, pace_sigma=0.0, own_tail_calls=None)
    for est in (paced, unpaced):
        for i, length in enumerate(lengths):
            done = bool(length <= 2048)
            est.observe(CallObservation(f"c{i}", "k", "m", 2048, int(min(length, 2048)), done,
                                        correct=done and i % 2 == 0))
    group = paced.group("m", "k")
    assert group.pace == pytest.approx(4.0, rel=0.03)
    assert unpaced.group("m", "k").pace == 1.0
    # At its pace the kind is what it is: 0.5 * (1 - exp(-4096 / 4000)) = 0.320 right within
    # 4,096 tokens. Continued at the parent's pace past 2,048, its still-running share
    # exp(-2048 / 4000) = 0.599 would finish with mean 1,000 tokens: 0.5 * (1 - 0.599) +
    # 0.5 * 0.599 * (1 - exp(-2048 / 1000)) = 0.461, overvalued by 14 points.
    truth = smooth(0.5 * (1.0 - np.exp(-CURVE_GRID / 4000.0))[None, :])[0]
    assert np.interp(4096.0, CURVE_GRID, truth) == pytest.approx(0.320, abs=0.005)
    np.testing.assert_allclose(group.values[CURVE_GRID <= 16384], truth[CURVE_GRID <= 16384],
                               atol=0.01)
    assert np.interp(4096.0, CURVE_GRID, unpaced.group("m", "k").values) == pytest.approx(
        0.461, abs=0.01)


def _capped_at_2048(lengths, **options):
    """The learned curve of a kind whose runs have ``lengths`` (4 in 5 right), every call capped
    at 2,048 tokens, pacing off, under a parent whose runs take 1,000 tokens on average and only
    1 in 10 is right."""
    finished = 1.0 - np.exp(-CURVE_GRID / 1000.0)
    est = HistoryEstimator(prior=EmpiricalCurve(CURVE_GRID, 0.1 * finished),
                           prior_finished=EmpiricalCurve(CURVE_GRID, finished),
                           pace_sigma=0.0, **options)
    for i, length in enumerate(lengths):
        done = bool(length <= 2048)
        est.observe(CallObservation(f"c{i}", "k", "m", 2048, int(min(length, 2048)), done,
                                    correct=done and i % 5 != 0))
    return est.group("m", "k").values


def test_own_tail_continues_a_group_at_its_own_rate_past_its_caps():
    # The parent's runs take 1,000 tokens on average and only 1 in 10 is right (like a
    # population whose long runs are mostly hopeless). The kind's runs finish at a constant
    # rate per log-token (S(b) = 256 / b past 256 tokens: half of those still going at b finish
    # by 2b) and 4 in 5 are right. 2,000 calls, all capped at 2,048 tokens, at the quantiles.
    lengths = 256.0 / (1.0 - (np.arange(2000) + 0.5) / 2000)

    # Within 2,048 tokens: 0.8 * (1 - 256 / 2048) = 0.700 right. Past it, at the kind's own
    # rate per octave: 0.8 * (1 - 256 / 8192) = 0.775 within 8,192 tokens. At the parent's
    # hazards alone the 0.125 still going finish within about 2,000 tokens, 1 in 10 right:
    # 0.7125.
    own = _capped_at_2048(lengths, own_tail_calls=30.0, own_tail_scale="log-tokens")
    parents = _capped_at_2048(lengths, own_tail_calls=None)
    assert np.interp(2048.0, CURVE_GRID, own) == pytest.approx(0.700, abs=0.01)
    assert np.interp(8192.0, CURVE_GRID, parents) == pytest.approx(0.7125, abs=0.005)
    # The kind's own hazards weigh n / (n + 30) = 0.943, with n = 500 calls watched at 1,024
    # tokens; the parent's 0.057 of hazards four times as high finish the runs a little sooner
    # (and the hazards' shrinkage takes a little more): 0.765, against 0.7125 without.
    assert np.interp(8192.0, CURVE_GRID, own) == pytest.approx(0.775, abs=0.011)
    # Within the watched range the curves are the same (the smoothing, 15% in log-tokens,
    # carries the tail's difference a little below 2,048 tokens).
    np.testing.assert_allclose(own[CURVE_GRID <= 1536], parents[CURVE_GRID <= 1536], atol=5e-4)


def test_own_tail_per_token_continues_a_constant_hazard():
    # The kind's runs have a constant hazard per token (exponential lengths, 2,000 tokens on
    # average; 4 in 5 right), 2,000 calls capped at 2,048 tokens, at the quantiles; the
    # parent as in the test above. The per-token tail is the default.
    lengths = -2000.0 * np.log1p(-(np.arange(2000) + 0.5) / 2000)

    def learned(**options):
        return np.interp(8192.0, CURVE_GRID, _capped_at_2048(lengths, **options))

    # Per token, the tail is the runs' own: 0.8 * (1 - exp(-8192 / 2000)) = 0.787 within 8,192
    # tokens. Per octave, each octave past 2,048 keeps the 1,024-2,048 octave's survival,
    # exp(-1024 / 2000) = 0.599: 0.8 * (1 - exp(-2048 / 2000) * 0.599**2) = 0.697.
    # The parent's share of the hazards, 30 / (1198 + 30) = 0.024 with 1,198 calls watched at
    # 1,024 tokens, finishes runs sooner and 1 in 10 right: both land about 0.015 lower.
    per_token, per_octave = learned(), learned(own_tail_scale="log-tokens")
    assert per_token == pytest.approx(0.787, abs=0.02)
    assert per_octave == pytest.approx(0.697, abs=0.02)
    assert per_token - per_octave == pytest.approx(0.787 - 0.697, abs=0.005)
    with pytest.raises(ValueError, match=r"own_tail_scale must be 'log-tokens' or 'tokens'"):
        HistoryEstimator(own_tail_scale="octaves")


def test_few_calls_leave_the_pace_uncertain_and_many_settle_it():
    est = _exponential_parent(1000.0)
    rng = np.random.default_rng(5)
    paces = []
    for n in (0, 5, 50, 500):
        for i in range(est.group("m", "k").calls, n):  # runs twice as long as the parent's
            length = rng.exponential(2000.0)
            done = bool(length <= 1024)
            est.observe(CallObservation(f"c{i}", "k", "m", 1024, int(min(length, 1024)),
                                        done, correct=done))
        paces.append(est.group("m", "k").pace)
    # No calls: the parent as it is; then the pace moves toward 2 as calls arrive.
    assert paces[0] == 1.0
    assert 1.0 < paces[1] < paces[3]
    assert paces[3] == pytest.approx(2.0, rel=0.1)


def test_pace_exploration_draws_the_pace_from_its_posterior():
    def paces(calls, seed):
        est = _exponential_parent(1000.0, exploration="pace", seed=seed)
        rng = np.random.default_rng(2)
        for i in range(calls):  # runs twice as long as the parent's, cut at 1,024 tokens
            length = rng.exponential(2000.0)
            done = bool(length <= 1024)
            est.observe(CallObservation(f"c{i}", "k", "m", 1024, int(min(length, 1024)), done,
                                        correct=done))
        mean = _exponential_parent(1000.0, store=est.log).group("m", "k").pace
        return np.array([est.group("m", "k").pace for _ in range(400)]), mean

    (few, _), (many, mean) = paces(5, seed=1), paces(500, seed=1)
    # Each look at the group draws a pace: widely after 5 calls, near 2 after 500 (their
    # posterior's spreads in log-pace), centred on the posterior's (geometric) mean pace.
    assert np.std(np.log(few)) > 3 * np.std(np.log(many)) > 0
    assert mean == pytest.approx(2.0, rel=0.15)
    assert np.exp(np.mean(np.log(many))) == pytest.approx(mean, rel=0.02)
    # Every draw is one of the paces, and a seed repeats the draws.
    assert np.isin(few, PACES).all()
    np.testing.assert_array_equal(paces(5, seed=1)[0], few)


def test_one_estimate_draws_each_kind_once_for_all_its_hints():
    est = _exponential_parent(1000.0, exploration="pace", seed=4)
    for i in range(5):  # a few calls of the kind, none of the two hints below
        est.observe(CallObservation(f"c{i}", "k", "m", 1024, 1024, False))
    rows = est.estimate([Subtask.of("a", kind="k", hint="x"), Subtask.of("b", kind="k"),
                         Subtask.of("c", kind="k", hint="y")], "m").values
    # Hint groups without calls are their kind's curve: the same draw for all three rows.
    np.testing.assert_array_equal(rows[0], rows[1])
    np.testing.assert_array_equal(rows[2], rows[1])


def test_curves_are_rebuilt_only_when_a_log_they_rest_on_changes():
    est = HistoryEstimator()
    feed(est, 40, hint="x")
    first = est.group("m", "k", "x")
    assert est.group("m", "k", "x") is first  # nothing new: the curve built before
    # A call of the kind alone (no hint) changes the kind's log, not the hint's: the hint
    # group is shrunk toward the new kind curve all the same.
    est.observe(CallObservation("late", "k", "m", 8192, 8192, False))
    rebuilt = est.group("m", "k", "x")
    assert rebuilt is not first
    fresh = HistoryEstimator(est.log)  # a worker sharing the log, with nothing cached
    np.testing.assert_array_equal(rebuilt.values, fresh.group("m", "k", "x").values)
    np.testing.assert_array_equal(
        est.estimate([Subtask.of("a", kind="k", hint="x")], "m").values[0], rebuilt.values)


def _draws(est, calls, at):
    """The group's curve at ``at`` tokens after each of ``calls`` more identical calls."""
    out = []
    for i in range(calls):
        est.observe(CallObservation(f"x{i}", "k", "m", 512, 512, False))
        out.append(np.interp(at, CURVE_GRID, est.group("m", "k").values))
    return np.array(out)


def test_thompson_draws_vary_where_calls_are_few_and_repeat_for_the_same_data():
    # The own tail off: it would carry the rate of the well-watched octave below the last
    # token count ten calls reached (about 3,000 tokens) into the thinly watched range.
    est = HistoryEstimator(prior_weight=1.0, exploration="thompson", own_tail_calls=None)
    rng = np.random.default_rng(3)
    for i in range(300):  # 290 calls capped at 2048 or 3072, ten at 8192
        cap = 8192 if i % 30 == 0 else int(rng.choice([2048, 3072]))
        length = TRUE.threshold[0] + rng.gamma(2.0, 1 / TRUE.rate[0])
        est.observe(CallObservation(f"c{i}", "k", "m", cap, int(min(length, cap)),
                                    length <= cap, correct=bool(length <= cap)))
    draws = _draws(est, 15, np.array([1500.0, 2000.0, 3072.0, 6000.0]))
    # The gain from 1,500 to 2,000 tokens is seen by all 300 calls, the gain from 3,072 to
    # 6,000 by the ten long ones only: relative to its size, the second varies from draw to
    # draw several times more (measured: 6% and 22%).
    seen, thin = draws[:, 1] - draws[:, 0], draws[:, 3] - draws[:, 2]
    assert thin.std() / thin.mean() > 2 * seen.std() / seen.mean() > 0
    # The draw is a function of the group and its data: another estimator reading the same
    # log draws the same curve.
    twin = HistoryEstimator(est.log, prior_weight=1.0, exploration="thompson",
                            own_tail_calls=None)
    np.testing.assert_array_equal(twin.group("m", "k").values, est.group("m", "k").values)


def test_without_exploration_the_fit_is_the_calls_as_they_are():
    plain = HistoryEstimator(prior_weight=1.0)  # exploration="none" is the default
    feed(plain, 300)
    draws = _draws(plain, 5, np.array([6000.0]))
    # One more call cut at 512 barely moves the fit: no draw-to-draw noise.
    assert np.ptp(draws) < 1e-3
    with pytest.raises(ValueError, match="exploration must be 'thompson', 'pace' or 'none'"):
        HistoryEstimator(exploration="ucb")
