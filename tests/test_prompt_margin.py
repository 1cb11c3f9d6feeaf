"""The learned prompt-token margin."""

import json
import math

import pytest

from clear_middleware.prompt_margin import PromptMargin


def test_prior_before_any_observation():
    margin = PromptMargin()
    assert margin.ratio("claude-x") == 1.5
    assert margin.reserve_tokens("claude-x", 1000) == 1500


def test_prior_holds_until_min_observations_then_learned_max_with_safety():
    margin = PromptMargin(min_observations=3, safety=0.1)
    margin.observe("m", estimated=100, reported=110)
    margin.observe("m", estimated=100, reported=120)
    assert margin.ratio("m") == 1.5
    margin.observe("m", estimated=200, reported=210)
    assert margin.ratio("m") == pytest.approx(1.2 * 1.1)
    assert margin.reserve_tokens("m", 1000) == 1320


def test_observed_above_prior_wins_even_early():
    margin = PromptMargin(min_observations=5, safety=0.0)
    margin.observe("m", estimated=100, reported=300)
    assert margin.ratio("m") == 3.0


def test_never_below_one():
    margin = PromptMargin(min_observations=1, safety=0.0)
    margin.observe("m", estimated=100, reported=80)
    assert margin.ratio("m") == 1.0
    assert margin.reserve_tokens("m", 77) == 77


def test_window_forgets_old_outliers():
    margin = PromptMargin(min_observations=1, safety=0.0, window=2)
    margin.observe("m", estimated=100, reported=200)
    margin.observe("m", estimated=100, reported=101)
    margin.observe("m", estimated=100, reported=102)
    assert margin.ratio("m") == pytest.approx(1.02)
    assert margin.observations("m") == 3


def test_reserve_covers_every_observed_report():
    margin = PromptMargin(min_observations=1, safety=0.0)
    pairs = [(100, 103), (57, 60), (1000, 1004), (3, 5)]
    for est, rep in pairs:
        margin.observe("m", estimated=est, reported=rep)
    for est, rep in pairs:
        assert margin.reserve_tokens("m", est) >= rep


def test_round_trip_through_json():
    margin = PromptMargin(min_observations=2, window=4)
    margin.observe("a", estimated=10, reported=12)
    margin.observe("a", estimated=10, reported=11)
    margin.observe("b", estimated=10, reported=10)
    clone = PromptMargin.from_dict(json.loads(json.dumps(margin.to_dict())))
    assert clone.to_dict() == margin.to_dict()
    assert clone.ratio("a") == margin.ratio("a")
    assert clone.ratio("b") == margin.ratio("b")


@pytest.mark.parametrize(("field", "value"), [("estimated", 0), ("estimated", -5),
                                              ("reported", math.nan), ("reported", 0)])
def test_bad_observations_rejected(field, value):
    kwargs = {"estimated": 10, "reported": 10, field: value}
    with pytest.raises(ValueError, match=field):
        PromptMargin().observe("m", **kwargs)


def test_bad_settings_rejected():
    with pytest.raises(ValueError, match="min_observations"):
        PromptMargin(min_observations=0)
    with pytest.raises(ValueError, match="safety"):
        PromptMargin(safety=-0.1)
    with pytest.raises(ValueError, match="count"):
        PromptMargin.from_dict({"models": {"m": {"ratios": [1.0, 1.1], "count": 1}}})


def test_docstring_examples_run():
    import doctest

    import clear_middleware.prompt_margin as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
