import numpy as np
import pytest

from clear_middleware import ShiftedSurge, allocate
from clear_middleware.curves.uncertainty import spread_threshold
from clear_middleware.estimators import HistoryEstimator
from clear_middleware.session import BudgetSession, Subtask
from clear_middleware.simulator import SimulatorServer, item_marker


def test_spread_threshold_matches_at_zero_sigma_and_spreads_otherwise():
    surge = ShiftedSurge([0.8, 0.8], [1000.0, 1000.0], 1 / 500)
    grid = np.arange(0.0, 12000.0, 16.0)
    spread = spread_threshold(surge, [0.0, 600.0], grid=grid)
    np.testing.assert_allclose(spread.values[0], surge.value(grid[None, :])[0], atol=1e-12)
    # Uncertainty moves probability below the threshold, and lowers the concave part.
    assert spread.value([900.0, 900.0])[1] > 0.0 == spread.value([900.0, 900.0])[0]
    assert spread.value([3000.0, 3000.0])[1] < spread.value([3000.0, 3000.0])[0]
    assert spread.ceiling[1] == pytest.approx(0.8, abs=1e-6)
    # An uncertain subtask is worth less per token at its best: a lower break-even price.
    response = spread.responder()
    assert response.break_even[1] < response.break_even[0]
    with pytest.raises(ValueError, match="sigma_tokens must be finite and in"):
        spread_threshold(surge, -1.0)


def test_a_learned_spread_curve_still_allocates_within_budget():
    surge = ShiftedSurge(0.7, np.linspace(200, 3000, 20), 1 / 700)
    curves = spread_threshold(surge, 400.0)
    result = allocate(curves, 20_000, granularity=16)
    assert result.spent <= 20_000 and result.expected_utility <= result.upper_bound + 1e-9


def test_session_feeds_outcomes_to_a_learning_estimator():
    estimator = HistoryEstimator()
    with SimulatorServer() as sim:
        session = BudgetSession(
            budget_tokens=60_000, model="openai/deepscaler-1.5b", estimator=estimator,
            api_base=sim.base_url, api_key="sim", max_output_tokens=16384,
        )
        subtasks = [Subtask.of(f"{item_marker(item)} Solve.", kind="math500")
                    for item in ("math500/test/precalculus/807.json",
                                 "math500/test/algebra/1265.json")] * 3
        results = session.run(subtasks)
        sent = [r for r in results if r.status == "ok"]
        assert sent and estimator.group("openai/deepscaler-1.5b", "math500").calls == len(sent)
        for r in sent:
            session.record_outcome(r, correct=True)
        records = estimator.log.read(estimator.key("openai/deepscaler-1.5b", "math500"))
        assert sum(o.outcome_only for o in records) == len(sent)
        with pytest.raises(KeyError, match="was not settled by this session"):
            session.record_outcome("no-such-call", correct=False)
