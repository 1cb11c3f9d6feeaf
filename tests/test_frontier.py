"""The allocation-quality claims of the benchmark, measured on the bundled real data."""

import numpy as np
import pytest

from clear_middleware.evaluation import frontier, item_curves


@pytest.fixture(scope="module")
def qwen_points():
    items = item_curves("qwen3-1.7b")
    points = frontier(items, budgets_per_item=(512, 1024, 4096, 8192), kind_splits=10)
    return {(p.variant, p.budget_per_item): p for p in points}


def test_true_curves_reach_the_oracle(qwen_points):
    for budget in (512, 1024, 4096, 8192):
        clear = qwen_points["clear (true curves)", budget].accuracy
        oracle = qwen_points["oracle", budget].accuracy
        assert clear >= 0.99 * oracle
        assert oracle <= qwen_points["oracle", budget].upper_bound + 1e-12


def test_per_kind_curves_beat_uniform_when_scarce(qwen_points):
    uniform = qwen_points["uniform", 1024].accuracy
    kind = qwen_points["clear (per kind)", 1024].accuracy
    assert uniform == pytest.approx(0.0052, abs=1e-3)
    assert kind >= 10 * uniform


def test_every_policy_spends_within_the_budget(qwen_points):
    for (_, budget), point in qwen_points.items():
        assert point.tokens_per_item <= budget + 1e-9
        assert 0.0 <= point.accuracy <= 1.0


def test_truth_curves_are_monotone_and_fitted_surges_close():
    items = item_curves("openrs1-1.5b")
    assert np.all(np.diff(items.truth.values, axis=1) >= 0)
    grid = items.grid[None, :]
    # Per-item fitted shifted surges stay close to the measured curves on average.
    mean_abs = np.abs(items.fitted.value(grid) - items.truth.values).mean()
    assert mean_abs < 0.05
