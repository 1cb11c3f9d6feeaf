"""200 concurrent subtasks through LiteLLM under one token budget: what the server saw never
exceeds it, and the ledger charged exactly what the server reported."""

from __future__ import annotations

from collections import Counter

from clear_middleware.estimators import StaticEstimator
from clear_middleware.session import Subtask
from clear_middleware.simulator import item_marker

from .conftest import served_ok, server_tokens

N = 200
BUDGET = 200_000  # tokens: 1,000 per subtask, where the prior is convex: some are priced out


def _subtasks(sim) -> list[Subtask]:
    items = sim.catalog.items("deepscaler-1.5b")  # 160 items: 40 are asked twice
    return [
        Subtask.of(f"{item_marker(items[i % len(items)])} Problem {i}: solve it.",
                   kind=items[i % len(items)].split("/")[0], id=f"task-{i}")
        for i in range(N)
    ]


async def test_200_concurrent_subtasks_never_exceed_the_budget(sim, make_session) -> None:
    sim.tokens_per_second = 20_000  # replies take 0.1-0.15 s: the first wave overlaps
    session = make_session(budget_tokens=BUDGET, max_concurrency=N, estimator=StaticEstimator())
    results = await session.arun(_subtasks(sim), seed=0)

    statuses = Counter(r.status for r in results)
    assert set(statuses) == {"ok", "unfunded"} and statuses["ok"] > 50
    served = served_ok(sim)
    assert len(sim.requests) == len(served) == statuses["ok"]  # abandoned ones were not sent
    seen = server_tokens(served)
    assert 0.95 * BUDGET <= seen <= BUDGET  # the budget binds, and holds
    balance = session.remaining()
    assert balance.spent_tokens == seen and balance.reserved_tokens == 0
    assert sum(r.usage.total_tokens for r in results) == seen
    # Every call was held to the cap it was funded with.
    caps = {r.subtask_id: r.tokens_allocated for r in results if r.ok}
    assert all(0 < q.completion_tokens <= q.requested_cap for q in served)
    assert sorted(q.requested_cap for q in served) == sorted(caps.values())
    kinds = Counter(e.kind for e in session.statement())
    assert kinds == {"reserve": statuses["ok"], "commit": statuses["ok"]}
