import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clear_middleware import POLICIES, EmpiricalCurve, ShiftedSurge, allocate
from tests.strategies import empirical_batches, surge_batches

budgets = st.integers(0, 20_000)
curve_batches = st.one_of(surge_batches(), empirical_batches())


def test_docstring_example_and_rational_abandonment():
    curves = ShiftedSurge(ceiling=0.9, threshold=[300, 800, 6000], rate=1 / 250)
    result = allocate(curves, budget=3000)
    # The query with threshold 6000 cannot be solved within the budget: it is abandoned and
    # its share funds the two solvable ones; the allocation is the exact optimum.
    assert result.tokens.tolist() == [1250, 1750, 0]
    assert result.funded.tolist() == [True, True, False]
    oracle = allocate(curves, 3000, policy="oracle", granularity=10)
    assert result.expected_utility == pytest.approx(oracle.expected_utility, abs=1e-6)
    assert result.expected_utility <= result.upper_bound + 1e-12
    assert result.gap < 1e-4


def test_identical_curves_are_partly_funded():
    # Without the leftover step a batch of one task kind gets nothing at all: every query
    # turns insolvent at the same price.
    curves = ShiftedSurge(0.8, np.full(50, 2000.0), 1 / 300)
    result = allocate(curves, 30_000, granularity=16)
    assert result.spent == 30_000
    assert 8 <= result.n_funded <= 10
    assert np.all(result.tokens[result.funded] >= 2000)
    oracle = allocate(curves, 30_000, policy="oracle", granularity=16)
    assert result.expected_utility >= 0.99 * oracle.expected_utility


def test_slack_budget_gives_everyone_its_cap_at_price_zero():
    curves = ShiftedSurge([0.5, 0.9, 0.0], [100.0, 400.0, 50.0], 1 / 200)
    result = allocate(curves, 1_000_000, max_tokens=5000)
    assert result.price == 0.0
    # The curve with a zero ceiling is worth nothing even when tokens are free.
    assert result.tokens.tolist() == [5000, 5000, 0]
    default_cap = allocate(curves, 1_000_000)
    np.testing.assert_array_equal(default_cap.tokens[:2],
                                  np.floor(curves.saturation_tokens()[:2]).astype(int))


def test_zero_budget_and_empty_batch():
    curves = ShiftedSurge(0.9, [10.0, 20.0], 0.01)
    for policy in POLICIES:
        result = allocate(curves, 0, policy=policy)
        assert result.tokens.tolist() == [0, 0]
        assert result.expected_utility == 0.0
        assert result.upper_bound == pytest.approx(0.0, abs=1e-12)
    empty = allocate(ShiftedSurge([], [], []), 1000)
    assert len(empty) == 0 and empty.spent == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": -1}, r"budget must be finite and in \[0, inf\)"),
        ({"budget": float("nan")}, "budget must be finite"),
        ({"budget": 100, "policy": "fair"}, "policy must be one of"),
        ({"budget": 100, "granularity": 0}, "granularity must be an integer >= 1"),
        ({"budget": 100, "granularity": 2.5}, "granularity must be an integer >= 1"),
        ({"budget": 100, "min_tokens": -5}, "min_tokens must be finite and in"),
        ({"budget": 100, "max_tokens": [10, 20, 30]}, r"max_tokens must be a scalar or have "
                                                       r"shape \(2,\)"),
        ({"budget": 100, "min_tokens": 50, "max_tokens": 40}, "max_tokens must be >= min_tokens"),
    ],
)
def test_bad_input_names_the_field(kwargs, message):
    curves = ShiftedSurge(0.9, [10.0, 20.0], 0.01)
    with pytest.raises(ValueError, match=message):
        allocate(curves, **kwargs)


def test_oracle_refuses_problems_too_large_and_says_what_would_fit():
    curves = ShiftedSurge(0.9, np.linspace(0, 5000, 2000), 0.001)
    with pytest.raises(ValueError, match="use granularity >= "):
        allocate(curves, 10_000_000, policy="oracle", max_tokens=20_000)


def test_baselines_exact():
    curves = EmpiricalCurve([0, 100, 200, 300, 400],
                            [[0.0, 0.0, 0.5, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.5],
                             [0.0, 0.0, 0.0, 0.0, 0.0]])
    uniform = allocate(curves, 900, policy="uniform", max_tokens=400)
    assert uniform.tokens.tolist() == [300, 300, 300]
    assert uniform.expected_utility == pytest.approx(1.0)
    # Thresholds 100 and 300; the zero curve has none and gets nothing.
    proportional = allocate(curves, 800, policy="proportional", max_tokens=400)
    assert proportional.tokens.tolist() == [200, 400, 0]
    greedy = allocate(curves, 800, policy="greedy", granularity=100, max_tokens=400)
    assert greedy.spent <= 800
    oracle = allocate(curves, 800, policy="oracle", granularity=100, max_tokens=400)
    assert oracle.tokens.tolist() == [300, 400, 0]
    assert oracle.expected_utility == pytest.approx(1.5)
    clear = allocate(curves, 800, max_tokens=400)
    assert clear.expected_utility == pytest.approx(1.5)


@given(curve_batches, budgets, st.sampled_from(POLICIES[:-1]), st.sampled_from([1, 16, 50]),
       st.sampled_from([0, 120]), st.sampled_from([None, 3000]))
def test_every_policy_respects_budget_bounds_and_grid(curves, budget, policy, granularity,
                                                      min_tokens, max_tokens):
    result = allocate(curves, budget, policy=policy, granularity=granularity,
                      min_tokens=min_tokens, max_tokens=max_tokens)
    tokens = result.tokens
    assert tokens.dtype == np.int64
    assert result.spent <= budget
    assert np.all(tokens % granularity == 0)
    funded = tokens > 0
    assert np.all(tokens[funded] >= min_tokens)
    if max_tokens is not None:
        assert np.all(tokens <= max_tokens)
    np.testing.assert_array_equal(result.funded, funded)
    assert result.expected_utility == pytest.approx(float(curves.value(tokens.astype(float))
                                                          [funded].sum()))
    assert result.expected_utility <= result.upper_bound + 1e-9


@given(curve_batches, budgets)
def test_clear_is_within_one_ceiling_of_the_oracle(curves, budget):
    cap = 4000
    clear = allocate(curves, budget, max_tokens=cap)
    oracle = allocate(curves, budget, policy="oracle", granularity=25, max_tokens=cap)
    # Weak duality: the oracle cannot beat the bound, and CLEAR is within one query's ceiling of
    # it (the tokens left at the final jump), plus at most one token's rounding per query.
    assert oracle.expected_utility <= clear.upper_bound + 1e-9
    slack = float(curves.ceiling.max()) + len(curves) * float(curves.marginal(
        np.arange(0, cap + 1, 10.0)[None, :]).max())
    assert clear.expected_utility >= oracle.expected_utility - slack - 1e-9


@given(curve_batches, budgets, st.integers(1, 5000))
def test_more_budget_never_costs_more_than_one_ceiling(curves, budget, extra):
    low = allocate(curves, budget, max_tokens=5000)
    high = allocate(curves, budget + extra, max_tokens=5000)
    rounding = len(curves) * float(curves.marginal(np.arange(0, 5001, 10.0)[None, :]).max())
    assert high.expected_utility >= low.expected_utility - float(curves.ceiling.max()) - rounding


@given(surge_batches(min_size=2, max_size=6), st.integers(200, 15_000))
def test_clear_matches_the_oracle_on_small_batches(curves, budget):
    clear = allocate(curves, budget, granularity=25, max_tokens=6000)
    oracle = allocate(curves, budget, policy="oracle", granularity=25, max_tokens=6000)
    assert clear.expected_utility >= oracle.expected_utility - float(curves.ceiling.max()) - 1e-9
    assert clear.expected_utility <= oracle.expected_utility + 1e-9


def test_large_batch_certificate_is_tight():
    rng = np.random.default_rng(0)
    n = 20_000
    curves = ShiftedSurge(rng.uniform(0.3, 1, n), rng.lognormal(7, 0.8, n),
                          1 / rng.uniform(200, 2000, n))
    for per_item in (300, 2000, 8000):
        result = allocate(curves, per_item * n)
        assert result.spent <= per_item * n
        assert result.spent >= per_item * n - n  # at most one token per query unspent
        # Relative duality gap under 1e-5: CLEAR is optimal up to rounding.
        assert result.gap <= 1e-5 * result.upper_bound


def test_idle_tokens_fund_a_priced_out_subtask_at_a_smaller_cap():
    # One hard subtask whose most efficient cap (about 8,000 tokens) exceeds the budget: the
    # price alone funds nothing, but the budget still buys it a chance.
    curves = ShiftedSurge(0.35, 1500.0, 1 / 2500)
    result = allocate(curves, 4492)
    assert result.tokens.tolist() == [4492]
    assert result.expected_utility == pytest.approx(float(curves.value([4492.0])[0]))
    # Never at the expense of the budget or the bounds.
    bounded = allocate(curves, 4492, min_tokens=5000)
    assert bounded.tokens.tolist() == [0]


def test_small_fan_outs_get_the_exact_split():
    # Two identical subtasks, 5,000 tokens: the price alone funds one at its efficient cap
    # (utility 0.516); splitting the budget solves more (0.605), and a fan-out this small gets
    # the exact search.
    curves = ShiftedSurge(0.6, [130.0, 130.0], 1 / 1400)
    result = allocate(curves, 5000)
    assert result.tokens.tolist() == [2500, 2500]
    assert result.expected_utility == pytest.approx(2 * float(curves.value([2500.0])[0]))
    assert result.expected_utility <= result.upper_bound
