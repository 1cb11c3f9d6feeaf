"""``plan`` is a dry run a user can print; ``on_unfunded="raise"`` refuses before sending."""

from __future__ import annotations

import pytest

from clear_middleware.session import UnfundedSubtasks

from .conftest import batch

# 5,000 tokens for 6 easy and 3 hard subtasks: prompts are reserved at 42 / 41 tokens (28 / 27
# counted locally, times the 1.5 prior margin); CLEAR funds five easy ones, total caps in
# multiples of 16 tokens (1008 = 42 + 966, 992 = 42 + 950), and prices out the rest.
CAPS_AT_5000 = [966, 966, 950, 950, 950, 0, 0, 0, 0]


def test_plan_is_a_dry_run(sim, make_session) -> None:
    session = make_session(budget_tokens=5000)
    plan = session.plan(batch(easy=6, hard=3))

    assert [r.output_tokens for r in plan.rows] == CAPS_AT_5000
    assert [r.prompt_tokens for r in plan.rows] == [42] * 6 + [41] * 3
    assert plan.funded == [0, 1, 2, 3, 4] and plan.abandoned == [5, 6, 7, 8]
    assert sum(r.prompt_tokens + r.output_tokens for r in plan.rows if r.funded) == 4992
    assert plan.budget_tokens == 5000 and plan.price > 0
    assert plan.expected_utility == pytest.approx(
        sum(r.expected_utility for r in plan.rows)) and plan.expected_utility <= plan.upper_bound
    # Nothing was called and nothing was reserved.
    assert sim.requests == [] and not sim.wait_for_arrivals(1, timeout_s=0.05)
    assert session.statement() == []
    balance = session.remaining()
    assert (balance.spent_tokens, balance.reserved_tokens, balance.available_tokens) == (
        0, 0, 5000)


def test_plan_prints_as_a_table(make_session) -> None:
    text = str(make_session(budget_tokens=5000).plan(batch(easy=6, hard=3)))
    lines = text.splitlines()
    assert lines[0].split() == ["#", "id", "kind", "prompt", "output", "cap", "E[utility]",
                                "status", "curve"]
    assert lines[2].split()[:7] == ["0", "math500/test", "easy", "42", "966", "0.651", "funded"]
    assert lines[10].split()[:7] == ["8", "aime24/2024-", "hard", "41", "0", "0.000",
                                     "abandoned"]
    assert "surge(a=0.50, tau=6000, width=3000)" in lines[10]
    assert lines[-1].startswith("clear on openai/deepscaler-1.5b: 5/9 funded")
    assert lines[-1].endswith("budget 5000 tokens")


def test_more_budget_funds_more(make_session) -> None:
    plans = {budget: make_session(budget_tokens=budget).plan(batch(easy=6, hard=3))
             for budget in (3000, 5000, 8000)}
    assert [len(p.funded) for p in plans.values()] == [3, 5, 6]
    assert plans[3000].price >= plans[5000].price >= plans[8000].price


def test_on_unfunded_raise_refuses_before_sending(sim, make_session) -> None:
    session = make_session(budget_tokens=5000, on_unfunded="raise")
    with pytest.raises(UnfundedSubtasks, match=r"4 of 9 subtasks cannot be funded") as refused:
        session.run(batch(easy=6, hard=3), seed=0)
    assert refused.value.indices == [5, 6, 7, 8]
    assert refused.value.plan.price > 0
    assert sim.requests == [] and session.statement() == []


def test_plan_rejects_a_single_subtask_not_in_a_list(make_session) -> None:
    with pytest.raises(TypeError, match="wrap a single one in a list"):
        make_session(budget_tokens=5000).plan("just one prompt")
