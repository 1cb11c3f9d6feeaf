"""``BudgetSession(mode="progressive")``: a batch spent in rounds (see
:mod:`clear_middleware.allocator.progressive` for the policy).

Each round: the unfinished subtasks' curves are conditioned on the tokens each already used
without finishing, the price is re-solved on what the ledger says is left, and every funded
subtask advances by a step, through one call each (concurrently), reserved and settled like
any call. A call that ends on its own finishes its subtask; one cut at its step's cap goes on
next round, continued where the provider can (:mod:`clear_middleware.dispatch.continuation`)
or restarted with a larger cap.

The planning of a round is :meth:`BudgetSession.plan_steps` (the same code path the LangChain
``with_budget`` batch uses in progressive mode); one call's next step is
:meth:`BudgetSession.quote_step` (the agent middleware's).

Costs are planned in the ledger's units, as the provider will report them: a continued step
re-sends the partial answer as prompt tokens, a restart generates it again. In a token-capped
session both cost the same tokens (continuation still keeps the *same* run going rather than
drawing a new one, and is cheaper under a USD cap, where prompt tokens cost less).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dispatch.continuation import Continuation, continue_request, reread_tokens
from ..dispatch.provider_settings import provider_settings
from ..ledger import Amount, BudgetExceeded
from ..usage import Usage
from .results import SubtaskResult

if TYPE_CHECKING:
    from .budget_session import BudgetSession, _Item

MAX_ROUNDS = 64


@dataclass
class _Run:
    """One subtask's progress: tokens generated so far and the partial answer."""

    item: _Item
    used: int = 0
    text: str = ""
    reasoning: str = ""
    usage: Usage = field(default_factory=Usage)
    call_ids: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    done: bool = False
    error: str | None = None
    allocated: int = 0
    cap: int = 0  # largest total output tokens


async def arun_progressive(
    session: BudgetSession,
    items: list[_Item],
    *,
    continuation: Continuation,
    on_progress: Callable[[int, int, bool], None] | None,
    call_kwargs: dict[str, Any],
) -> list[SubtaskResult]:
    """Run ``items`` in rounds; one result per item, in order."""
    runs = [_Run(item) for item in items]
    # Each run's largest total output, fixed at the start: max_output_tokens, else its curve's
    # saturation point; never above the model's own limit.
    first = session.estimator.estimate([r.item.subtask for r in runs], session.provider_model)
    for run, total in zip(runs, session._output_limits(first), strict=True):
        run.cap = int(total)
    price = 0.0
    semaphore = asyncio.Semaphore(session.max_concurrency)
    for _ in range(MAX_ROUNDS):
        active = [r for r in runs if not r.done and r.error is None and r.used < r.cap]
        if not active:
            break
        plan = session._plan_steps(
            [r.item for r in active], [r.used for r in active], await session._afunds(),
            continuation=continuation != "restart",
            limits=np.array([r.cap for r in active], dtype=np.float64))
        price = plan.price
        moving = [(r, step) for r, step in zip(active, plan.steps, strict=True) if step > 0]
        if not moving:
            break
        for run, target in zip(active, plan.targets, strict=True):
            run.allocated = max(run.allocated, run.used + target)

        async def advance(run: _Run, step: int) -> None:
            async with semaphore:
                await _astep(session, run, step, continuation, call_kwargs)
            if on_progress is not None:
                on_progress(run.item.index, run.used, run.done)

        await asyncio.gather(*(advance(r, s) for r, s in moving))
    return [_result(session, r, price) for r in runs]


async def _astep(
    session: BudgetSession, run: _Run, step: int, continuation: Continuation,
    call_kwargs: dict[str, Any],
) -> None:
    """One call advancing ``run`` by ``step`` tokens; reserve, call, settle."""
    item = run.item
    restart = continuation == "restart"
    request = continue_request("restart" if restart else continuation, item.subtask.message_list,
                               run.text, run.reasoning)
    reread = 0 if restart else reread_tokens(request, item.subtask.message_list,
                                              session.provider_model)
    new_cap = run.used + step if restart else step
    call_id = session._call_id(item, len(run.call_ids))
    amount = Amount.for_call(item.prompt_reserve + reread, new_cap, session.price)
    try:
        await session.ledger.areserve(session.session_id, call_id, amount)
    except BudgetExceeded:
        return  # another caller drained the pool; the next round re-plans
    run.call_ids.append(call_id)
    settings = provider_settings(session.provider_model, new_cap).kwargs
    try:
        completion = await session.client.acomplete(
            session.model, request.messages, settings, **request.extra, **call_kwargs)
    except Exception as error:
        await session.ledger.arelease(session.session_id, call_id)
        run.error = f"{type(error).__name__}: {error}"[:500]
        return
    await session._asettle(item, call_id, completion, new_cap,
                           already_tokens=0 if restart else run.used, reread_tokens=reread)
    usage = completion.usage or Usage(0, new_cap, 0)
    run.usage = Usage(run.usage.prompt_tokens + usage.prompt_tokens,
                      run.usage.completion_tokens + usage.completion_tokens,
                      run.usage.reasoning_tokens + usage.reasoning_tokens)
    if restart:
        run.text, run.reasoning, run.used = completion.text, completion.reasoning, \
            usage.completion_tokens
    else:
        run.text += completion.text
        run.reasoning += completion.reasoning
        run.used += usage.completion_tokens
    run.finish_reason = completion.finish_reason
    run.done = completion.finish_reason != "length"


def _result(session: BudgetSession, run: _Run, price: float) -> SubtaskResult:
    item = run.item
    common = dict(usage=run.usage, cost_usd=session._cost(run.usage),
                  tokens_allocated=run.allocated, model=session.model,
                  attempts=len(run.call_ids), call_ids=tuple(run.call_ids))
    if run.error is not None:
        return SubtaskResult(item.index, item.subtask_id, "error", error=run.error, **common)
    if run.done:
        return SubtaskResult(item.index, item.subtask_id, "ok", text=run.text,
                             finish_reason=run.finish_reason, **common)
    # Stopped before finishing (priced out, or at the model's output limit): not an answer.
    return SubtaskResult(item.index, item.subtask_id, "unfunded", text=run.text or None,
                         finish_reason=run.finish_reason, price=price, **common)
