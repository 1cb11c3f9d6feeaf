"""Progressive CLEAR: conditional curves, round planning, continuation, the session mode."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clear_middleware import EmpiricalCurve, ShiftedSurge
from clear_middleware.allocator.progressive import StepPolicy, plan_round
from clear_middleware.dispatch.continuation import continuation_for, continue_request
from clear_middleware.evaluation.frontier import kind_half_split
from clear_middleware.evaluation.progressive import Runs, one_shot, progressive
from clear_middleware.session import BudgetSession, Subtask
from clear_middleware.simulator import SimulatorServer, item_marker


def test_conditional_surge_is_the_exact_conditional():
    curve = ShiftedSurge(0.8, 1000.0, 1 / 500)
    s, r = 2000.0, np.arange(0.0, 4000.0, 32.0)
    ahead = curve.conditional([s], grid=r)
    exact = (curve.value(s + r) - curve.value([s])[0]) / (1 - curve.value([s])[0])
    np.testing.assert_allclose(ahead.values[0], exact, atol=1e-12)


def test_conditioning_a_mixture_keeps_the_runs_still_going():
    # A kind: half its items finish by 500 tokens, half need 3000; after 1000 tokens without
    # finishing, only the slow half is left, and the conditional curve is theirs.
    grid = np.arange(0.0, 8001.0, 100.0)
    fast, slow = (grid >= 500).astype(float), (grid >= 3000).astype(float)
    kind = EmpiricalCurve(grid, [(fast + slow) / 2])
    ahead = kind.conditional([1000.0], grid=np.arange(0.0, 7001.0, 100.0))
    assert ahead.value([1900.0])[0] == pytest.approx(0.0)
    assert ahead.value([2000.0])[0] == pytest.approx(1.0)
    # With separate finish curves, wrong answers that stop early also leave the pool.
    finish = EmpiricalCurve(grid, [np.minimum(1.0, (fast + slow) / 2 + 0.25 * (grid >= 200))])
    ahead = kind.conditional([1000.0], finish=finish, grid=np.arange(0.0, 7001.0, 100.0))
    assert ahead.value([2000.0])[0] == pytest.approx(1.0)


def test_plan_round_prices_restarts_higher():
    curves = ShiftedSurge(0.9, np.full(6, 800.0), 1 / 400)
    used = np.array([0.0, 0.0, 1500.0, 1500.0, 3000.0, 3000.0])
    cont = plan_round(curves, used, 8000, continuation=True, max_tokens=8000)
    restart = plan_round(curves, used, 8000, continuation=False, max_tokens=8000)
    assert cont.cost.sum() <= 8000 and restart.cost.sum() <= 8000
    # A restarted run pays its sunk tokens again: the call cap and the cost include them.
    moving = restart.steps > 0
    np.testing.assert_array_equal(restart.new_caps[moving], used[moving] + restart.steps[moving])
    # Sunk tokens count against a restart, so it funds no more runs than continuation does.
    assert (restart.steps > 0).sum() <= (cont.steps > 0).sum()


def test_step_policies():
    targets = np.array([0, 100, 1000, 5000])
    assert StepPolicy().steps(targets, 16).tolist() == [0, 100, 512, 2512]
    assert StepPolicy(kind="chunk", chunk_tokens=700).steps(targets, 16).tolist() == [
        0, 100, 704, 704]
    with pytest.raises(ValueError, match="fraction must be in"):
        StepPolicy(fraction=0.0)
    with pytest.raises(ValueError, match="kind must be"):
        StepPolicy(kind="greedy")


def test_progressive_finds_the_easy_runs_one_shot_cannot_tell_apart():
    # Ten subtasks of one kind, half solved at 300 tokens, half needing 5000: with 8,000 tokens
    # one-shot CLEAR on the kind curve can only fund some at one cap; progressive probes,
    # keeps the fast ones' leftovers and stops the slow ones.
    grid = np.arange(0.0, 6001.0, 50.0)
    kind_curve = 0.5 * (grid >= 300) + 0.5 * (grid >= 5000)
    curves = EmpiricalCurve(grid, np.repeat(kind_curve[None, :], 10, axis=0))
    runs = Runs(np.array([300.0, 5000.0] * 5), np.ones(10, dtype=bool))
    one_shot_acc, _ = one_shot(np.full(10, 800), runs)
    acc, spent, rounds = progressive(curves, curves, runs, 8000, continuation=True,
                                     policy=StepPolicy(min_tokens=64), max_tokens=6000,
                                     granularity=50)
    assert one_shot_acc == 0.5
    assert acc >= 0.5 and spent * 10 <= 8000 and rounds >= 2


@pytest.mark.parametrize(("model", "api_base", "thinking", "family"), [
    ("hosted_vllm/qwen3", None, False, "continue_final"),
    ("openai/deepscaler-1.5b", "http://127.0.0.1:9000/v1", False, "continue_final"),
    ("openai/o4-mini", None, False, "restart"),
    ("deepseek/deepseek-chat", None, False, "deepseek_prefix"),
    ("deepseek/deepseek-reasoner", None, False, "restart"),
    ("anthropic/claude-sonnet-4-5", None, False, "anthropic_prefill"),
    ("anthropic/claude-sonnet-4-5", None, True, "restart"),
    ("gemini/gemini-2.5-flash", None, False, "restart"),
])
def test_continuation_table(model, api_base, thinking, family):
    assert continuation_for(model, api_base=api_base, thinking=thinking) == family


def test_continue_request_shapes():
    msgs = [{"role": "user", "content": "q"}]
    req = continue_request("continue_final", msgs, "partial", "thinking")
    assert req.messages[-1] == {"role": "assistant", "content": "partial",
                                "reasoning_content": "thinking"}
    assert req.extra == {"extra_body": {"continue_final_message": True,
                                        "add_generation_prompt": False}}
    assert continue_request("deepseek_prefix", msgs, "p").messages[-1]["prefix"] is True
    assert continue_request("restart", msgs, "p").messages == msgs


def test_session_progressive_continues_the_same_run_within_budget():
    item = "math500/test/counting_and_probability/377.json"  # runs of 2,761-4,515 tokens
    grid = np.arange(0.0, 16385.0, 64.0)
    # A kind curve that rises slowly: progressive takes several steps on one subtask.
    from clear_middleware.estimators import StaticEstimator

    kind = EmpiricalCurve(grid, [np.clip((grid - 500) / 8000, 0, 0.9)])

    class Recording(StaticEstimator):
        def observe(self, observation):
            seen.append(observation)

    seen = []
    with SimulatorServer() as sim:
        session = BudgetSession(
            budget_tokens=30_000, model="openai/deepscaler-1.5b", mode="progressive",
            estimator=Recording(default=kind), max_output_tokens=16384,
            step_policy=StepPolicy(kind="chunk", chunk_tokens=1024, min_tokens=256),
            api_base=sim.base_url, api_key="sim")
        assert session.continuation == "continue_final"
        steps: list[tuple[int, int, bool]] = []
        [result] = session.run([Subtask.of(f"{item_marker(item)} Solve.", kind="m")],
                               on_progress=lambda i, used, done: steps.append((i, used, done)))
        served = sim.requests
        assert len(served) >= 2 and len({r.run_id for r in served}) == 1  # one run continued
        assert all(r.already_tokens > 0 for r in served[1:])
        balance = session.remaining()
        assert balance.spent_tokens == sum(r.prompt_tokens + r.completion_tokens for r in served)
        assert balance.spent_tokens <= 30_000
        assert result.usage.completion_tokens == sum(r.completion_tokens for r in served)
        assert steps[-1][1] == sum(r.completion_tokens for r in served)
        # The estimator learns the run as a whole: each observation is the run so far, under
        # the total cap reached; only the last one finished.
        totals = np.cumsum([r.completion_tokens for r in served]).tolist()
        caps = np.cumsum([r.requested_cap for r in served]).tolist()
        assert [(o.completion_tokens, o.cap, o.finished) for o in seen] == [
            (t, c, k == len(served) - 1) for k, (t, c) in enumerate(zip(totals, caps, strict=True))]
        # A continued call's prompt re-reads the partial answer: the prompt margin compares
        # the reported prompt with the prompt plus that answer, so it keeps its prior (1.5x
        # before 5 calls); taking the re-read answer for an estimation error would multiply it.
        assert served[-1].prompt_tokens > 1000
        assert session.prompt_margin.reserve_tokens(session.model, 100) == 150


def test_progressive_mode_needs_a_token_budget():
    with pytest.raises(ValueError, match="budget_tokens is required"):
        BudgetSession(budget_usd=1.0, model="openai/gpt-4o-mini", mode="progressive")
    with pytest.raises(ValueError, match="mode must be"):
        BudgetSession(budget_tokens=10, model="openai/gpt-4o-mini", mode="rounds")


def test_kind_half_split_trains_each_kind_on_its_other_half():
    kinds = np.array(["a"] * 4 + ["b"] * 2)
    grid = np.array([0.0, 100.0])
    util = EmpiricalCurve(grid, np.array([[0, v] for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.9)]))
    finish = EmpiricalCurve(grid, np.array([[0, v] for v in (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)]))
    held, (kind_u, kind_f) = kind_half_split(kinds, [util, finish], np.random.default_rng(0))
    assert sorted(kinds[held].tolist()) == ["a", "a", "b"]
    for row, item in enumerate(held):
        train = np.setdiff1d(np.flatnonzero(kinds == kinds[item]), held)
        # smooth() moves a 2-point curve's last value by nothing: the mean of the other half.
        assert kind_u.values[row, -1] == pytest.approx(util.values[train, -1].mean())
        assert kind_f.values[row, -1] == pytest.approx(finish.values[train, -1].mean())


def test_leave_one_out_curves_forget_the_drawn_run_and_foresight_bounds():
    from clear_middleware.datasets.reasoning_sweep import ItemRollouts
    from clear_middleware.evaluation.progressive import leave_one_out, perfect_foresight

    length = np.array([[100.0, 300.0], [200.0, 400.0]])
    rollouts = ItemRollouts(
        item_id=np.array(["i0", "i1"]), benchmark=np.array(["k", "k"]), length=length,
        correct=np.array([[True, False], [True, True]]),
        censored=np.zeros((2, 2), dtype=bool), cap=np.full((2, 2), 512.0),
        valid=np.ones((2, 2), dtype=bool))
    runs = Runs(np.array([100.0, 400.0]), np.array([True, True]), np.array([0, 1]))
    loo = leave_one_out(rollouts, runs, np.array([0.0, 150.0, 350.0, 500.0]))
    # Item 0 keeps only its wrong run at 300; item 1 only its right run at 200.
    assert loo.values.tolist() == [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
    # Correct runs 100 and 400: 450 tokens fund the shorter only.
    assert perfect_foresight(runs, 450) == (0.5, 50.0)
    assert perfect_foresight(runs, 500) == (1.0, 250.0)


def test_plan_steps_is_plan_round_on_the_sessions_curves_and_ledger():
    from clear_middleware.estimators import StaticEstimator

    curve = ShiftedSurge(0.9, 800.0, 1 / 400)
    session = BudgetSession(budget_tokens=6_000, model="openai/o4-mini", mode="progressive",
                            estimator=StaticEstimator({"m": curve}), max_output_tokens=4096)
    subtasks = [Subtask.of(f"problem {k}", kind="m") for k in range(4)]
    used = [0, 0, 1024, 2048]
    plan = session.plan_steps(subtasks, used, continuation=False)
    prompts = [session._items(subtasks)[k].prompt_reserve for k in range(4)]
    direct = plan_round(ShiftedSurge(0.9, np.full(4, 800.0), 1 / 400), used, 6_000,
                        continuation=False, max_tokens=np.full(4, 4096.0), granularity=16,
                        fees=np.add(prompts, used))
    assert plan.steps == tuple(direct.steps) and plan.price == direct.price
    assert plan.limits == (4096,) * 4 and plan.continuation is False
    # Restarting: the cap is the tokens used plus the step.
    assert all(cap == (u + s if s else 0)
               for cap, u, s in zip(plan.output_caps, used, plan.steps, strict=True))
    assert plan.funded == [k for k in range(4) if plan.steps[k]]
    assert sorted(plan.funded + plan.stopped) == [0, 1, 2, 3]
    assert session.current_price == plan.price
    # Continuing: the cap is the step alone.
    cont = session.plan_steps(subtasks, used, continuation=True)
    assert all(cap == s for cap, s in zip(cont.output_caps, cont.steps, strict=True))


def test_quote_step_restarts_with_larger_caps_and_stops_at_the_limit():
    session = BudgetSession(budget_tokens=20_000, model="openai/o4-mini", mode="progressive",
                            max_output_tokens=2048,
                            step_policy=StepPolicy(kind="chunk", chunk_tokens=512))
    first = session.quote_step("What is 2 + 2?")
    assert (first.output_tokens, first.step_tokens, first.used_tokens) == (512, 512, 0)
    assert first.limit_tokens == 2048 and not first.at_limit and first.funded
    second = session.quote_step("What is 2 + 2?", used_tokens=1536)
    # 512 tokens of room (a multiple of the 16-token granularity): the last chunk, up to the
    # limit.
    assert second.prompt_tokens == 23
    assert (second.output_tokens, second.step_tokens) == (2048, 512)
    assert second.settings  # the provider settings of the cap
    last = session.quote_step("What is 2 + 2?", used_tokens=2040)
    assert last.at_limit and not last.funded and last.output_tokens == 0
    # Held back for a final answer, and shared with the calls still expected: never more.
    held = session.quote_step("What is 2 + 2?", used_tokens=1024, expected_calls=3,
                              final_answer_tokens=256)
    assert held.held_tokens > 256
    # A restart regenerating 1,024 tokens steps at least as far as it regenerates (fee_ratio
    # 1: the 512-token chunk would pay twice its size in fees): to the limit.
    assert (held.step_tokens, held.output_tokens) == (1024, 2048)
    small = BudgetSession(budget_tokens=20_000, model="openai/o4-mini", mode="progressive",
                          max_output_tokens=4096,
                          step_policy=StepPolicy(kind="chunk", chunk_tokens=512, fee_ratio=0))
    assert small.quote_step("What is 2 + 2?", used_tokens=1024).step_tokens == 512
    with pytest.raises(ValueError, match="fee_ratio must be a finite number >= 0"):
        StepPolicy(fee_ratio=-1)


def test_expected_spend_pricing_funds_runs_that_usually_finish_early():
    # Half of a kind's runs finish right at 100 tokens, 40% right at 1000, the rest never.
    # Taking a run to 1000 tokens costs 1000 at its full cap but 100 + 0.5 * 900 = 550 in
    # expectation: priced at expected spend, 12,000 tokens take every run past 1000 (in
    # steps whose full caps fit), priced at caps only half of them.
    grid = np.arange(0.0, 4001.0, 50.0)
    util = 0.5 * (grid >= 100) + 0.4 * (grid >= 1000)
    done = util + 0.1 * (grid >= 4000)
    curves = EmpiricalCurve(grid, np.repeat(util[None, :], 20, axis=0))
    finish = EmpiricalCurve(grid, np.repeat(done[None, :], 20, axis=0))
    plans = {p: plan_round(curves, np.zeros(20), 12_000, finish=finish, max_tokens=4000,
                           granularity=50, pricing=p) for p in ("expected", "cap")}
    assert (plans["expected"].targets >= 1000).sum() == 20
    assert (plans["cap"].targets >= 1000).sum() == 10
    assert plans["expected"].price < plans["cap"].price
    for plan in plans.values():
        assert plan.cost.sum() <= 12_000
    # The full caps of all 20 steps would not fit: the runs buying least per expected token
    # (here the ones with the largest steps) wait a round.
    moving = plans["expected"].steps > 0
    assert moving.sum() == 17 and plans["expected"].cost.sum() == 17 * 650


def test_restarts_priced_at_expected_spend_beat_full_caps_on_real_runs():
    from clear_middleware.evaluation.progressive import evaluate

    rows = {p: evaluate("qwen3-1.7b", [2048], draws=12, seed=3, pricing=p)[0]
            for p in ("expected", "cap")}
    key = "progressive (per kind, restart)|acc"
    assert rows["expected"][key] > rows["cap"][key] + 0.02
    assert rows["expected"]["perfect foresight|acc"] == rows["cap"]["perfect foresight|acc"]


def test_interp_rows_is_np_interp_per_row():
    from clear_middleware.allocator.progressive import _interp_rows

    rng = np.random.default_rng(1)
    xp = np.sort(rng.uniform(0, 100, (5, 7)), axis=1)
    xp[2, 3] = xp[2, 4]  # a flat stretch
    fp = np.cumsum(rng.uniform(0, 1, (5, 7)), axis=1)
    x = rng.uniform(-10, 120, (5, 9))
    expected = np.array([np.interp(x[i], xp[i], fp[i]) for i in range(5)])
    np.testing.assert_allclose(_interp_rows(x, xp, fp), expected, atol=1e-12)


def test_plan_round_rejects_unknown_pricing():
    with pytest.raises(ValueError, match="pricing must be 'expected' or 'cap'"):
        plan_round(ShiftedSurge(0.9, [800.0], 1 / 400), [0.0], 1000, pricing="mean")


@given(
    thresholds=st.lists(st.floats(100, 3000), min_size=1, max_size=8),
    used=st.floats(0, 2000),
    budget=st.floats(0, 20_000),
    continuation=st.booleans(),
    pricing=st.sampled_from(["expected", "cap"]),
)
@settings(max_examples=60, deadline=None)
def test_a_round_never_plans_past_its_budget_or_room(thresholds, used, budget, continuation,
                                                     pricing):
    n = len(thresholds)
    curves = ShiftedSurge(0.8, np.array(thresholds), 1 / 300)
    used_tokens = np.full(n, round(used / 16) * 16.0)
    plan = plan_round(curves, used_tokens, budget, continuation=continuation, max_tokens=4096,
                      pricing=pricing)
    assert plan.cost.sum() <= budget
    assert np.all(plan.steps % 16 == 0)
    assert np.all(used_tokens + plan.steps <= 4096)
    assert np.all((plan.steps == 0) == (plan.new_caps == 0))


def test_per_kind_stops_in_hindsight_pick_the_best_stop_per_kind():
    from clear_middleware.evaluation.progressive import per_kind_stops

    # Kind a: right runs of 100 and 300; kind b: a right run of 200 and one never finishing.
    runs = Runs(np.array([100.0, 300.0, 200.0, np.inf]), np.array([True, True, True, False]))
    kinds = np.array(["a", "a", "b", "b"])
    stops = np.array([0.0, 100.0, 200.0, 300.0])
    # 800 tokens: a stops at 300 (400 spent, 2 solved), b at 200 (400 spent, 1 solved).
    assert per_kind_stops(runs, kinds, 800, stops) == (0.75, 200.0)
    # 500 tokens: a at 300 (400) and b at 0 beats a at 100 (200) and b at 100 (200).
    assert per_kind_stops(runs, kinds, 500, stops) == (0.5, 100.0)
