"""``BudgetSession``: one shared budget, CLEAR caps per call, every call sent through LiteLLM.

The life of a batch (``run`` / ``arun``):

1. *Plan*: each subtask's curve comes from the estimator; prompts are counted locally (plus a
   margin learned per model) and enter as a fixed cost; CLEAR allocates what the ledger says is
   still available (see :mod:`.planner`).
2. *Reserve -> call -> settle*: a funded subtask reserves its worst case (prompt + output cap)
   in the ledger, goes out with the provider settings of its cap
   (:func:`~clear_middleware.dispatch.provider_settings`), and commits the provider-reported
   usage; the unused part of the reservation returns to the pool. A failed call releases its
   reservation; retryable errors are retried for the same subtask (each attempt reserved and
   settled on its own, all charged to that subtask's result).
3. *Re-pricing*: whenever a call settles, the subtasks not yet started are planned again on
   what is left, so tokens returned by calls that finished under their cap flow to the rest.
4. Subtasks still unfunded at the end are not sent; they get an ``unfunded`` result carrying
   the price that priced them out, or go to a fallback model, or (``on_unfunded="raise"``) the
   batch is refused before anything is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._validation import float_array, non_negative_int
from ..allocator import POLICIES, Policy
from ..allocator.progressive import StepPolicy, plan_round
from ..curves.base import UtilityCurves
from ..dispatch.client import Completion, LiteLLMClient, is_retryable
from ..dispatch.continuation import CONTINUATIONS, Continuation, continuation_for
from ..dispatch.provider_settings import provider_settings
from ..estimators.base import CallObservation, CurveEstimator
from ..estimators.static import StaticEstimator
from ..ledger import Amount, BudgetExceeded, Caps, Ledger, Settlement
from ..pricing import MissingPriceError, ModelPrice, PriceBook
from ..prompt_margin import PromptMargin
from ..subtask import Message, Subtask
from ..tokens import count_message_tokens
from ..usage import Usage
from .planner import Funds, plan_outputs
from .progressive import arun_progressive
from .results import (
    CallQuote,
    CallTicket,
    Plan,
    PlannedSubtask,
    StepPlan,
    StepQuote,
    SubtaskResult,
)

logger = logging.getLogger("clear_middleware.session")

SubtaskLike = str | Sequence[Message] | Subtask
_MAX_REMEMBERED_CALLS = 100_000  # settled calls a correctness report may still refer to
OnUnfunded = Literal["result", "fallback", "raise"]


class UnfundedSubtasks(Exception):
    """Raised by ``run`` with ``on_unfunded="raise"`` when the plan abandons subtasks; nothing
    was sent. ``plan`` holds the allocation, ``indices`` the abandoned subtasks."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.indices = plan.abandoned
        super().__init__(
            f"{len(self.indices)} of {len(plan.rows)} subtasks cannot be funded at price "
            f"{plan.price:.3g}/token (indices {self.indices[:10]}); nothing was sent"
        )


@dataclass
class _Item:
    index: int
    subtask: Subtask
    subtask_id: str
    prompt_estimate: int
    prompt_reserve: int


class BudgetSession:
    """A budgeted agent session: plan, reserve, call through LiteLLM, settle.

    Args:
        budget_tokens: most tokens the session may spend (prompts and outputs, reasoning
            included); ``None`` = no token cap.
        budget_usd: most USD the session may spend; needs a price for ``model`` (LiteLLM's
            cost map or ``prices``); ``None`` = no USD cap.
        model: a LiteLLM model name (``"openai/o4-mini"``, ``"anthropic/claude-sonnet-4-5"``),
            or a model group of ``router``.
        store: where budgets live: a :class:`~clear_middleware.ledger.Ledger`, a store URI
            (``"sqlite:///budget.db"``, ``"redis://127.0.0.1:6379/0"``) or ``None`` (memory).
        estimator: predicts each subtask's curve (default: :class:`StaticEstimator` prior).
        session_id: the ledger id (default: a fresh UUID); reopening an id resumes its budget.
        parent: a parent session (or its id, in the same store) whose caps also bind.
        router: a ``litellm.Router``, its ``model_list``, or a LiteLLM config file path.
        policy: ``"clear"`` or a baseline (``"uniform"``, ...), for comparisons.
        min_output_tokens: smallest output cap worth sending (tokens, >= 1).
        max_output_tokens: largest output cap (tokens); default: the curve's saturation point,
            clipped by the model's output limit when LiteLLM knows it.
        granularity: caps are multiples of this many tokens (>= 1).
        on_unfunded: what abandoned subtasks get: ``"result"`` (an ``unfunded`` result),
            ``"fallback"`` (sent to ``fallback_model`` with ``fallback_max_tokens``), or
            ``"raise"`` (:class:`UnfundedSubtasks` before anything is sent).
        max_concurrency: calls in flight at once (>= 1).
        max_retries: retries of a retryable provider error per subtask (>= 0).
        lease_seconds: how long a crashed caller's reservation holds budget.
        prices: price overrides, ``{model: {"input_cost_per_token": ..,
            "output_cost_per_token": ..}}`` (the ``litellm.register_model`` convention).
        mode: ``"one_shot"`` (every cap fixed before the calls) or ``"progressive"`` (spend in
            rounds, re-pricing as runs reveal their lengths; needs ``budget_tokens``; see
            :mod:`clear_middleware.session.progressive`). Each continued step re-reads its
            partial answer as prompt (a restart generates it again), and a token budget
            counts those tokens in full: through the simulator progressive is ahead of or level
            with one-shot per-kind CLEAR at 2048 output tokens per item on 3 of 4 models and
            behind at 4096 (``docs/benchmarks.md``); it pays off when budgets are scarce, and
            more where prompt tokens are cheap (USD budgets, cached prompts).
        step_policy: how far a run advances per round in progressive mode.
        continuation: how progressive mode continues a cut-off run: ``"auto"`` (by provider,
            :func:`~clear_middleware.dispatch.continuation.continuation_for`), a family, or
            ``"restart"``.
        **litellm_kwargs: passed to every LiteLLM call (``api_base``, ``api_key``, ...).
    """

    def __init__(
        self,
        budget_tokens: int | None = None,
        budget_usd: float | None = None,
        model: str | None = None,
        *,
        store: Ledger | str | None = None,
        estimator: CurveEstimator | None = None,
        session_id: str | None = None,
        parent: BudgetSession | str | None = None,
        router: Any = None,
        policy: Policy = "clear",
        min_output_tokens: int = 16,
        max_output_tokens: int | None = None,
        granularity: int = 16,
        on_unfunded: OnUnfunded = "result",
        fallback_model: str | None = None,
        fallback_max_tokens: int = 256,
        max_concurrency: int = 32,
        max_retries: int = 2,
        lease_seconds: float = 600.0,
        prices: dict[str, dict[str, float]] | None = None,
        mode: Literal["one_shot", "progressive"] = "one_shot",
        step_policy: StepPolicy | None = None,
        continuation: Continuation | Literal["auto"] = "auto",
        **litellm_kwargs: Any,
    ) -> None:
        if not model or not isinstance(model, str):
            raise ValueError("model is required: a LiteLLM model name such as 'openai/o4-mini'")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {list(POLICIES)}; got {policy!r}")
        if on_unfunded not in ("result", "fallback", "raise"):
            raise ValueError(f"on_unfunded must be 'result', 'fallback' or 'raise'; got "
                             f"{on_unfunded!r}")
        if on_unfunded == "fallback" and not fallback_model:
            raise ValueError("on_unfunded='fallback' needs fallback_model")
        if mode not in ("one_shot", "progressive"):
            raise ValueError(f"mode must be 'one_shot' or 'progressive'; got {mode!r}")
        if mode == "progressive" and budget_tokens is None:
            raise ValueError("mode='progressive' plans in tokens: budget_tokens is required")
        if continuation != "auto" and continuation not in CONTINUATIONS:
            raise ValueError(f"continuation must be 'auto' or one of {list(CONTINUATIONS)}; "
                             f"got {continuation!r}")
        self.mode = mode
        self.step_policy = step_policy or StepPolicy()
        # Checked here so errors name the session's own arguments (not the ledger's caps).
        if budget_tokens is not None:
            budget_tokens = non_negative_int("budget_tokens", budget_tokens)
        if budget_usd is not None:
            budget_usd = float(float_array("budget_usd", budget_usd, low=0.0))
        self.caps = Caps(tokens=budget_tokens, usd=budget_usd)
        self.model = model
        self.policy: Policy = policy
        self.min_output_tokens = non_negative_int("min_output_tokens", min_output_tokens,
                                                  minimum=1)
        self.max_output_tokens = (None if max_output_tokens is None else non_negative_int(
            "max_output_tokens", max_output_tokens, minimum=self.min_output_tokens))
        self.granularity = non_negative_int("granularity", granularity, minimum=1)
        self.on_unfunded: OnUnfunded = on_unfunded
        self.fallback_model = fallback_model
        self.fallback_max_tokens = non_negative_int("fallback_max_tokens", fallback_max_tokens,
                                                    minimum=1)
        self.max_concurrency = non_negative_int("max_concurrency", max_concurrency, minimum=1)
        self.max_retries = non_negative_int("max_retries", max_retries)
        self.estimator: CurveEstimator = estimator or StaticEstimator()
        self.client = LiteLLMClient(router, **litellm_kwargs)
        self.provider_model = self.client.provider_model(model)
        self.continuation: Continuation = (
            continuation_for(self.provider_model, api_base=litellm_kwargs.get("api_base"))
            if continuation == "auto" else continuation)
        self.prices = PriceBook(prices)
        self.price = self._price_of(self.provider_model, required=budget_usd is not None)
        self.prompt_margin = PromptMargin()
        if isinstance(parent, BudgetSession):
            self.ledger = parent.ledger
            self.parent_id: str | None = parent.session_id
        else:
            self.ledger = store if isinstance(store, Ledger) else Ledger(store or "memory://")
            self.parent_id = parent
        self.session_id = session_id or f"session-{uuid.uuid4().hex}"
        self.lease_seconds = lease_seconds
        self._opened = False
        self._calls = itertools.count()
        self.current_price: float | None = None
        self._last_plan: Plan | None = None
        # call id -> (kind, hint) of settled calls, for correctness reports (bounded).
        self._settled_calls: dict[str, tuple[str | None, str | None]] = {}

    # -- set-up ------------------------------------------------------------------------------
    def _price_of(self, model: str, *, required: bool) -> ModelPrice | None:
        try:
            return self.prices.price(model)
        except MissingPriceError:
            if required:
                raise
            return None

    def _open(self) -> None:
        if not self._opened:
            self.ledger.open_session(self.session_id, self.caps, parent=self.parent_id,
                                     lease_seconds=self.lease_seconds)
            self._opened = True

    async def _aopen(self) -> None:
        if not self._opened:
            await self.ledger.aopen_session(self.session_id, self.caps, parent=self.parent_id,
                                            lease_seconds=self.lease_seconds)
            self._opened = True

    def _items(self, subtasks: Sequence[SubtaskLike]) -> list[_Item]:
        if isinstance(subtasks, str | Subtask):
            raise TypeError("run/plan take a list of subtasks; wrap a single one in a list")
        items = []
        for index, raw in enumerate(subtasks):
            subtask = Subtask.of(raw)
            estimate = count_message_tokens(subtask.message_list, self.provider_model)
            items.append(_Item(index, subtask, subtask.id or str(index), estimate,
                               self.prompt_margin.reserve_tokens(self.model, estimate)))
        return items

    # -- planning ----------------------------------------------------------------------------
    def _model_limit(self) -> int | None:
        """The model's own output limit (tokens) when LiteLLM knows it."""
        return provider_settings(self.provider_model, 10**9).model_max_output_tokens

    def _plan(self, items: Sequence[_Item], funds: Funds) -> Plan:
        curves: UtilityCurves = self.estimator.estimate([i.subtask for i in items],
                                                        self.provider_model)
        prompts = np.array([i.prompt_reserve for i in items], dtype=np.int64)
        outputs = plan_outputs(
            curves, prompts, funds, self.price, policy=self.policy,
            min_output_tokens=self.min_output_tokens,
            max_output_tokens=self.max_output_tokens, model_limit=self._model_limit(),
            granularity=self.granularity,
        )
        values = np.where(outputs.output_tokens > 0,
                          curves.value(outputs.output_tokens.astype(np.float64)), 0.0)
        rows = tuple(
            PlannedSubtask(
                index=item.index, subtask_id=item.subtask_id, kind=item.subtask.kind,
                prompt_tokens=int(prompts[k]), curve=_describe(curves, k),
                output_tokens=int(outputs.output_tokens[k]),
                expected_utility=float(values[k]), funded=bool(outputs.output_tokens[k] > 0),
            )
            for k, item in enumerate(items)
        )
        plan = Plan(self.model, self.policy, outputs.allocation.price, outputs.budget_tokens,
                    rows, float(values.sum()), outputs.allocation.upper_bound,
                    outputs.allocation)
        self.current_price = plan.price
        self._last_plan = plan
        return plan

    def _prepare(self, items: Sequence[_Item]) -> None:
        """Let the estimator do its charged work (probe calls) before the batch is planned."""
        prepare = getattr(self.estimator, "prepare", None)
        if prepare is not None and items:
            prepare([i.subtask for i in items], self.provider_model, session=self)

    async def _aprepare(self, items: Sequence[_Item]) -> None:
        """Async :meth:`_prepare`."""
        aprepare = getattr(self.estimator, "aprepare", None)
        if aprepare is not None and items:
            await aprepare([i.subtask for i in items], self.provider_model, session=self)

    def _funds(self) -> Funds:
        balance = self.ledger.remaining(self.session_id)
        return Funds(balance.available_tokens, balance.available_usd)

    async def _afunds(self) -> Funds:
        balance = await self.ledger.aremaining(self.session_id)
        return Funds(balance.available_tokens, balance.available_usd)

    def plan(self, subtasks: Sequence[SubtaskLike]) -> Plan:
        """The allocation of ``subtasks`` on what the session has left; nothing is called.

        ``print(session.plan(subtasks))`` shows, per subtask, the predicted curve, its output
        cap, expected utility and whether it is funded, and the price.
        """
        self._open()
        items = self._items(subtasks)
        self._prepare(items)
        return self._plan(items, self._funds())

    # -- one call at a time (framework adapters) ----------------------------------------------
    # A framework that makes its own calls (a LangChain callback, an agent middleware, a proxy
    # hook) prices each call here, reserves it, and settles it with the provider's usage. The
    # session stays the only place that plans and learns; the caller only sends the call.

    def _item(self, subtask: SubtaskLike, tools: Sequence[Message] | None = None) -> _Item:
        if isinstance(subtask, Sequence) and not isinstance(subtask, str) and not subtask:
            raise ValueError("a call needs at least one chat message")
        sub = Subtask.of(subtask)
        estimate = count_message_tokens(sub.message_list, self.provider_model,
                                        tools=list(tools) if tools else None)
        return _Item(0, sub, sub.id or "call", estimate,
                     self.prompt_margin.reserve_tokens(self.model, estimate))

    def _quote(self, item: _Item, funds: Funds, expected_calls: int,
               final_answer_tokens: int) -> CallQuote:
        expected_calls = non_negative_int("expected_calls", expected_calls, minimum=1)
        funds, held = self._hold(item, funds, final_answer_tokens)
        copies = [dataclasses.replace(item, index=k) for k in range(expected_calls)]
        plan = self._plan(copies, funds)
        # The copies are identical: CLEAR may fund only some of them, and this call is the
        # first of them to go.
        output = max(row.output_tokens for row in plan.rows)
        settings = provider_settings(self.provider_model, output).kwargs if output else {}
        return CallQuote(output, item.prompt_reserve, plan.price, expected_calls, held,
                         settings)

    def _hold(self, item: _Item, funds: Funds, final_answer_tokens: int) -> tuple[Funds, int]:
        """``funds`` minus a final call's worth (``item``'s prompt plus ``final_answer_tokens``
        of output), and the tokens held."""
        final_answer_tokens = non_negative_int("final_answer_tokens", final_answer_tokens)
        if not final_answer_tokens:
            return funds, 0
        hold = Amount.for_call(item.prompt_reserve, final_answer_tokens, self.price)
        return Funds(None if funds.tokens is None else funds.tokens - hold.tokens,
                     None if funds.usd is None else funds.usd - (hold.usd or 0.0)), hold.tokens

    def quote(
        self,
        subtask: SubtaskLike,
        *,
        tools: Sequence[Message] | None = None,
        expected_calls: int = 1,
        final_answer_tokens: int = 0,
    ) -> CallQuote:
        """Price one call at the session's current price; nothing is reserved.

        The call is planned as the first of ``expected_calls`` like it (the calls an agent
        still expects to make, this one included) on what the session has left, minus a final
        call's worth held back when ``final_answer_tokens`` > 0.

        Args:
            subtask: the call's prompt (a string, chat messages or a :class:`Subtask`).
            tools: OpenAI tool schemas sent with the call (their tokens count as prompt).
            expected_calls: calls planned together, this one included (>= 1).
            final_answer_tokens: output cap (tokens) of a final call with this prompt to hold
                back (prompt plus cap are not offered to this call); 0 = hold nothing.

        Returns:
            A :class:`CallQuote`: the output cap (0 = unfunded), the prompt reserve, the price
            and the provider settings of the cap.

        Example:
            >>> session = BudgetSession(budget_tokens=5_000, model="openai/o4-mini")
            >>> quote = session.quote("What is 2 + 2?", expected_calls=3)
            >>> quote.funded, quote.output_tokens <= 5_000
            (True, True)
        """
        self._open()
        item = self._item(subtask, tools)
        self._prepare([item])
        return self._quote(item, self._funds(), expected_calls, final_answer_tokens)

    async def aquote(
        self,
        subtask: SubtaskLike,
        *,
        tools: Sequence[Message] | None = None,
        expected_calls: int = 1,
        final_answer_tokens: int = 0,
    ) -> CallQuote:
        """Async :meth:`quote`."""
        await self._aopen()
        item = self._item(subtask, tools)
        await self._aprepare([item])
        return self._quote(item, await self._afunds(), expected_calls, final_answer_tokens)

    def _ticket_amount(self, subtask: SubtaskLike, tools: Sequence[Message] | None,
                       output_tokens: int) -> tuple[_Item, str, Amount]:
        output_tokens = non_negative_int("output_tokens", output_tokens, minimum=1)
        item = self._item(subtask, tools)
        call_id = self._call_id(item, 0)
        return item, call_id, Amount.for_call(item.prompt_reserve, output_tokens, self.price)

    @staticmethod
    def _ticket(item: _Item, call_id: str, output_tokens: int) -> CallTicket:
        return CallTicket(call_id, item.prompt_estimate, item.prompt_reserve, output_tokens,
                          item.subtask.kind, item.subtask.hint, item.subtask.digest)

    def reserve_call(
        self,
        subtask: SubtaskLike,
        *,
        output_tokens: int,
        tools: Sequence[Message] | None = None,
    ) -> CallTicket:
        """Reserve one call's worst case: its prompt (estimate plus margin) and output cap.

        Args:
            subtask: the call's prompt (a string, chat messages or a :class:`Subtask`; its
                ``id`` names the call in the ledger statement).
            output_tokens: the output cap the call is sent with (tokens, >= 1).
            tools: OpenAI tool schemas sent with the call.

        Returns:
            A :class:`CallTicket`; pass it to :meth:`settle_call` after the call, or to
            :meth:`release_call` if the call failed.

        Raises:
            BudgetExceeded: it does not fit in what the session (or a parent) has left;
                nothing is held.
        """
        self._open()
        item, call_id, amount = self._ticket_amount(subtask, tools, output_tokens)
        self.ledger.reserve(self.session_id, call_id, amount)
        return self._ticket(item, call_id, amount.tokens - item.prompt_reserve)

    async def areserve_call(
        self,
        subtask: SubtaskLike,
        *,
        output_tokens: int,
        tools: Sequence[Message] | None = None,
    ) -> CallTicket:
        """Async :meth:`reserve_call`."""
        await self._aopen()
        item, call_id, amount = self._ticket_amount(subtask, tools, output_tokens)
        await self.ledger.areserve(self.session_id, call_id, amount)
        return self._ticket(item, call_id, amount.tokens - item.prompt_reserve)

    def _observe(self, ticket: CallTicket, usage: Usage, finish_reason: str | None) -> None:
        """Learn from a settled call: the prompt margin, the curve estimator, and the call's
        kind and hint for a later correctness report."""
        if usage.prompt_tokens > 0 and ticket.prompt_estimate > 0:
            self.prompt_margin.observe(self.model, estimated=ticket.prompt_estimate,
                                       reported=usage.prompt_tokens)
        self._settled_calls[ticket.call_id] = (ticket.kind, ticket.hint)
        if len(self._settled_calls) > _MAX_REMEMBERED_CALLS:
            self._settled_calls.pop(next(iter(self._settled_calls)))
        # A call continuing a run is the run so far plus this call (the estimator's unit).
        self.estimator.observe(CallObservation(
            call_id=ticket.call_id, kind=ticket.kind, model=self.provider_model,
            cap=ticket.already_tokens + ticket.output_tokens,
            completion_tokens=ticket.already_tokens + usage.completion_tokens,
            finished=finish_reason != "length", hint=ticket.hint, digest=ticket.digest,
        ))

    def settle_call(
        self, ticket: CallTicket, usage: Usage | None, *, finish_reason: str | None = None
    ) -> Settlement:
        """Charge a reserved call what the provider reported and return the rest.

        Args:
            ticket: from :meth:`reserve_call`.
            usage: the provider-reported usage, or ``None`` when it reported none: the call is
                then charged its whole reservation (never zero).
            finish_reason: the provider's (``"length"`` tells the estimator the call was cut
                at its cap).

        Returns:
            The ledger :class:`~clear_middleware.ledger.Settlement` (tokens charged, returned).
        """
        if usage is None:
            logger.warning("call %s returned no usage: charged at its reservation",
                           ticket.call_id)
            return self.ledger.commit(self.session_id, ticket.call_id, None)
        settlement = self.ledger.commit(self.session_id, ticket.call_id,
                                        Amount.of_usage(usage, self.price))
        self._observe(ticket, usage, finish_reason)
        return settlement

    async def asettle_call(
        self, ticket: CallTicket, usage: Usage | None, *, finish_reason: str | None = None
    ) -> Settlement:
        """Async :meth:`settle_call`."""
        if usage is None:
            logger.warning("call %s returned no usage: charged at its reservation",
                           ticket.call_id)
            return await self.ledger.acommit(self.session_id, ticket.call_id, None)
        settlement = await self.ledger.acommit(self.session_id, ticket.call_id,
                                               Amount.of_usage(usage, self.price))
        self._observe(ticket, usage, finish_reason)
        return settlement

    def release_call(self, ticket: CallTicket) -> Settlement:
        """Return a failed call's whole reservation (a no-op if it was already settled)."""
        return self.ledger.release(self.session_id, ticket.call_id)

    async def arelease_call(self, ticket: CallTicket) -> Settlement:
        """Async :meth:`release_call`."""
        return await self.ledger.arelease(self.session_id, ticket.call_id)

    # -- progressive steps (one code path for arun, batches and agent calls) -----------------
    # A run spent in steps is planned round by round: its curve is conditioned on the tokens it
    # used without finishing, the price is re-solved on what the ledger has left, and it is
    # given the next step (see :mod:`clear_middleware.allocator.progressive`).

    def _output_limits(self, curves: UtilityCurves) -> np.ndarray:
        """Largest total output per subtask (tokens): ``max_output_tokens``, else the curve's
        saturation point; never above the model's own limit."""
        limits = (curves.saturation_tokens() if self.max_output_tokens is None
                  else np.full(len(curves), float(self.max_output_tokens)))
        model_limit = self._model_limit()
        return limits if model_limit is None else np.minimum(limits, model_limit)

    def _plan_steps(
        self, items: Sequence[_Item], used_tokens: Any, funds: Funds, *, continuation: bool,
        limits: np.ndarray | None = None,
    ) -> StepPlan:
        if funds.tokens is None:
            raise ValueError("progressive steps are planned in tokens: give the session "
                             "budget_tokens")
        used = np.asarray(float_array("used_tokens", used_tokens, low=0.0), dtype=np.float64)
        if used.shape != (len(items),):
            raise ValueError(f"used_tokens needs one entry per subtask ({len(items)}); got "
                             f"shape {used.shape}")
        subtasks = [i.subtask for i in items]
        curves = self.estimator.estimate(subtasks, self.provider_model)
        limits = self._output_limits(curves) if limits is None else limits
        finish_of = getattr(self.estimator, "finish_curves", None)
        finish = finish_of(subtasks, self.provider_model) if finish_of else None
        # What advancing costs besides the new tokens: the prompt, plus the partial answer
        # (re-read as prompt when continued, generated again when restarted).
        fees = np.array([i.prompt_reserve for i in items], dtype=np.float64) + used
        plan = plan_round(curves, used, max(funds.tokens, 0), finish=finish,
                          continuation=continuation, policy=self.step_policy,
                          max_tokens=limits, granularity=self.granularity, fees=fees)
        self.current_price = plan.price
        ints = lambda values: tuple(int(v) for v in values)  # noqa: E731
        return StepPlan(plan.price, ints(used), ints(plan.steps), ints(plan.new_caps),
                        ints(plan.targets), ints(np.floor(limits)), ints(plan.cost),
                        continuation, plan.expected_utility)

    def _continues(self, continuation: bool | None) -> bool:
        return self.continuation != "restart" if continuation is None else bool(continuation)

    def plan_steps(
        self,
        subtasks: Sequence[SubtaskLike],
        used_tokens: Sequence[int] | np.ndarray,
        *,
        continuation: bool | None = None,
    ) -> StepPlan:
        """Plan one progressive round for ``subtasks`` on what the session has left.

        Each subtask's curve is conditioned on the ``used_tokens`` it generated without
        finishing, the shadow price is re-solved on the ledger's available tokens, and each
        funded subtask gets a step by the session's ``step_policy``. Nothing is reserved: send
        each funded subtask with its ``output_caps`` entry (reserving prompt plus cap as any
        call), and call again with the new ``used_tokens`` for the next round.

        Args:
            subtasks: the unfinished subtasks (strings, chat messages or :class:`Subtask`).
            used_tokens: output tokens each generated so far without finishing (>= 0; 0 for a
                subtask not started), one per subtask.
            continuation: whether the next calls continue the partial answers (``True``) or
                restart them with a larger cap (``False``: a step then costs the regenerated
                ``used_tokens`` as well, and the cap is ``used + step``). Default: the
                session's ``continuation`` (``"restart"`` means ``False``).

        Returns:
            A :class:`StepPlan` (caps, steps, targets and the round's price).

        Raises:
            ValueError: the session has no token budget, or ``used_tokens`` does not match.

        Example:
            >>> session = BudgetSession(budget_tokens=20_000, model="openai/o4-mini",
            ...                         mode="progressive")
            >>> plan = session.plan_steps(["What is 2 + 2?", "Prove Fermat."], [0, 512],
            ...                           continuation=False)
            >>> all(cap == 0 or cap > used for cap, used in zip(plan.output_caps, [0, 512]))
            True
        """
        self._open()
        items = self._items(subtasks)
        self._prepare(items)
        return self._plan_steps(items, used_tokens, self._funds(),
                                continuation=self._continues(continuation))

    async def aplan_steps(
        self,
        subtasks: Sequence[SubtaskLike],
        used_tokens: Sequence[int] | np.ndarray,
        *,
        continuation: bool | None = None,
    ) -> StepPlan:
        """Async :meth:`plan_steps`."""
        await self._aopen()
        items = self._items(subtasks)
        await self._aprepare(items)
        return self._plan_steps(items, used_tokens, await self._afunds(),
                                continuation=self._continues(continuation))

    def _quote_step(self, item: _Item, funds: Funds, used_tokens: int, expected_calls: int,
                    final_answer_tokens: int, continuation: bool) -> StepQuote:
        used = non_negative_int("used_tokens", used_tokens)
        expected_calls = non_negative_int("expected_calls", expected_calls, minimum=1)
        funds, held = self._hold(item, funds, final_answer_tokens)
        # This call (used tokens so far) planned with the calls still expected after it (not
        # started): they compete for the same funds at one price.
        copies = [dataclasses.replace(item, index=k) for k in range(expected_calls)]
        plan = self._plan_steps(copies, [used] + [0] * (expected_calls - 1), funds,
                                continuation=continuation)
        # Not started, the copies are identical: CLEAR may fund only some of them, and this
        # call is the first of them to go.
        k = int(np.argmax(plan.output_caps)) if used == 0 else 0
        cap, limit = plan.output_caps[k], plan.limits[0]
        settings = provider_settings(self.provider_model, cap).kwargs if cap else {}
        return StepQuote(cap, item.prompt_reserve, plan.price, expected_calls, held, settings,
                         used_tokens=used, step_tokens=plan.steps[k], limit_tokens=limit,
                         at_limit=limit - used < self.granularity)

    def quote_step(
        self,
        subtask: SubtaskLike,
        *,
        used_tokens: int = 0,
        tools: Sequence[Message] | None = None,
        expected_calls: int = 1,
        final_answer_tokens: int = 0,
        continuation: bool = False,
    ) -> StepQuote:
        """Price the next step of one call spent in steps, at the session's current price.

        The call's curve is conditioned on the ``used_tokens`` it generated without finishing
        (its earlier attempts were cut at their caps); it is planned with the
        ``expected_calls - 1`` calls still expected after it (not started), on what the
        session has left minus a final call's worth when ``final_answer_tokens`` > 0, and
        given a step by the session's ``step_policy``. Nothing is reserved. Callers sharing
        the session re-quote at every step, so they compete at the live price.

        Args:
            subtask: the call's prompt (a string, chat messages or a :class:`Subtask`).
            used_tokens: output tokens its earlier, cut attempts generated (>= 0).
            tools: OpenAI tool schemas sent with the call (their tokens count as prompt).
            expected_calls: calls planned together, this one included (>= 1).
            final_answer_tokens: output cap (tokens) of a final call to hold back; 0 = none.
            continuation: the call continues its partial answer (``True``) or restarts with
                a larger cap (``False``, the default: the partial answer is discarded and its
                tokens are generated again, so the step costs them too).

        Returns:
            A :class:`StepQuote`: ``output_tokens`` is the cap to send (0 = stop;
            ``at_limit`` tells a call with no room left from one priced out).

        Raises:
            ValueError: the session has no token budget.

        Example:
            >>> from clear_middleware import StepPolicy
            >>> session = BudgetSession(budget_tokens=20_000, model="openai/o4-mini",
            ...                         mode="progressive",
            ...                         step_policy=StepPolicy(kind="chunk", chunk_tokens=512))
            >>> first = session.quote_step("What is 2 + 2?")
            >>> second = session.quote_step("What is 2 + 2?", used_tokens=first.output_tokens)
            >>> first.output_tokens, second.output_tokens
            (512, 1024)
        """
        self._open()
        item = self._item(subtask, tools)
        self._prepare([item])
        return self._quote_step(item, self._funds(), used_tokens, expected_calls,
                                final_answer_tokens, continuation)

    async def aquote_step(
        self,
        subtask: SubtaskLike,
        *,
        used_tokens: int = 0,
        tools: Sequence[Message] | None = None,
        expected_calls: int = 1,
        final_answer_tokens: int = 0,
        continuation: bool = False,
    ) -> StepQuote:
        """Async :meth:`quote_step`."""
        await self._aopen()
        item = self._item(subtask, tools)
        await self._aprepare([item])
        return self._quote_step(item, await self._afunds(), used_tokens, expected_calls,
                                final_answer_tokens, continuation)

    # -- running -----------------------------------------------------------------------------
    def run(self, subtasks: Sequence[SubtaskLike], **kwargs: Any) -> list[SubtaskResult]:
        """Plan, reserve, call concurrently, settle; one result per subtask, in order.

        Blocking wrapper of :meth:`arun` (use ``await session.arun(...)`` inside an event
        loop).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(subtasks, **kwargs))
        raise RuntimeError("run() was called inside a running event loop; use await arun()")

    async def arun(
        self,
        subtasks: Sequence[SubtaskLike],
        *,
        on_result: Callable[[SubtaskResult], None] | None = None,
        on_progress: Callable[[int, int, bool], None] | None = None,
        **call_kwargs: Any,
    ) -> list[SubtaskResult]:
        """Async :meth:`run`.

        Args:
            subtasks: prompt strings, chat-message lists or :class:`Subtask` objects.
            on_result: called with each result as it settles (progress bars, logging).
            on_progress: progressive mode: called after every step with (subtask index,
                tokens generated so far, finished).
            **call_kwargs: extra LiteLLM arguments for these calls (``temperature``, ``seed``).
        """
        await self._aopen()
        items = self._items(subtasks)
        await self._aprepare(items)
        if self.mode == "progressive":
            results = await arun_progressive(
                self, items, continuation=self.continuation,
                on_progress=on_progress, call_kwargs=call_kwargs)
            for result in results:
                if on_result is not None:
                    on_result(result)
            return results
        results: list[SubtaskResult | None] = [None] * len(items)
        pending = {item.index: item for item in items}
        running: dict[asyncio.Task[SubtaskResult], _Item] = {}
        plan = self._plan(items, await self._afunds())
        if self.on_unfunded == "raise" and plan.abandoned:
            raise UnfundedSubtasks(plan)
        refused: set[int] = set()

        def finish(result: SubtaskResult) -> None:
            results[result.index] = result
            if on_result is not None:
                on_result(result)

        try:
            while pending or running:
                if pending and len(running) < self.max_concurrency:
                    waiting = [pending[i] for i in sorted(pending)]
                    plan = self._plan(waiting, await self._afunds())
                    for row, item in zip(plan.rows, waiting, strict=True):
                        if len(running) >= self.max_concurrency:
                            break
                        if not row.funded or item.index in refused:
                            continue
                        reserved = await self._areserve_uncancelled(item, row.output_tokens)
                        if reserved is None:  # another caller drained the pool: re-plan
                            refused.add(item.index)
                            continue
                        del pending[item.index]
                        task = asyncio.create_task(
                            self._acall(item, row.output_tokens, reserved, call_kwargs))
                        running[task] = item
                if not running:
                    break  # nothing in flight and nothing fundable
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    del running[task]
                    finish(task.result())
                refused.clear()  # settled calls returned tokens: worth trying again
        finally:
            # Cancelled (or failed): stop the calls in flight and wait for them to release
            # their reservations, so the budget is free when arun returns, on any store.
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        price = plan.price if pending else self.current_price
        for item in (pending[i] for i in sorted(pending)):
            finish(await self._unfunded(item, price, call_kwargs))
        return [r for r in results if r is not None]

    def _call_id(self, item: _Item, attempt: int) -> str:
        suffix = "" if attempt == 0 else f"-retry{attempt}"
        return f"{self.session_id[:40]}/{next(self._calls)}/{item.subtask_id[:80]}{suffix}"

    async def _areserve_uncancelled(self, item: _Item, output_tokens: int) -> str | None:
        """Reserve; if the caller is cancelled meanwhile, the reservation (which the store may
        already hold) is released before the cancellation goes on, so no budget leaks."""
        reserving = asyncio.ensure_future(self._areserve(item, output_tokens, attempt=0))
        try:
            return await asyncio.shield(reserving)
        except asyncio.CancelledError:
            call_id = await reserving
            if call_id is not None:
                await self.ledger.arelease(self.session_id, call_id)
            raise

    async def _areserve(self, item: _Item, output_tokens: int, attempt: int) -> str | None:
        call_id = self._call_id(item, attempt)
        amount = Amount.for_call(item.prompt_reserve, output_tokens, self.price)
        try:
            await self.ledger.areserve(self.session_id, call_id, amount)
        except BudgetExceeded:
            return None
        return call_id

    async def _acall(
        self, item: _Item, output_tokens: int, call_id: str, call_kwargs: dict[str, Any]
    ) -> SubtaskResult:
        """One subtask: call, settle, retry retryable errors under a fresh reservation."""
        settings = provider_settings(self.provider_model, output_tokens).kwargs
        usage_total = Usage()
        call_ids: list[str] = []
        attempt = 0
        while True:
            call_ids.append(call_id)
            try:
                completion = await self.client.acomplete(
                    self.model, item.subtask.message_list, settings,
                    **_metadata(item), **call_kwargs)
            except asyncio.CancelledError:
                await self.ledger.arelease(self.session_id, call_id)
                raise
            except Exception as error:  # provider errors: release, maybe retry
                await self.ledger.arelease(self.session_id, call_id)
                logger.info("call %s failed: %s", call_id, type(error).__name__)
                if attempt < self.max_retries and is_retryable(error):
                    attempt += 1
                    retry_id = await self._areserve(item, output_tokens, attempt)
                    if retry_id is not None:
                        call_id = retry_id
                        continue
                return SubtaskResult(
                    item.index, item.subtask_id, "error", usage=usage_total,
                    cost_usd=self._cost(usage_total), tokens_allocated=output_tokens,
                    model=self.model, attempts=attempt + 1, call_ids=tuple(call_ids),
                    error=f"{type(error).__name__}: {error}"[:500],
                )
            usage_total = _add(usage_total, completion.usage)
            await self._asettle(item, call_id, completion, output_tokens)
            return SubtaskResult(
                item.index, item.subtask_id, "ok", text=completion.text, usage=usage_total,
                cost_usd=self._cost(usage_total), tokens_allocated=output_tokens,
                finish_reason=completion.finish_reason, model=self.model,
                attempts=attempt + 1, call_ids=tuple(call_ids),
            )

    async def _asettle(
        self, item: _Item, call_id: str, completion: Completion, output_tokens: int, *,
        already_tokens: int = 0, reread_tokens: int = 0,
    ) -> None:
        """Commit a call's reported usage and learn from it; ``already_tokens``: output of the
        run's earlier calls this one continued, ``reread_tokens``: their text re-sent as
        prompt (both tokens, >= 0)."""
        usage = completion.usage
        if usage is None:
            logger.warning("call %s returned no usage: charged at its reservation", call_id)
            await self.ledger.acommit(self.session_id, call_id, None)
            return
        await self.ledger.acommit(self.session_id, call_id, Amount.of_usage(usage, self.price))
        ticket = self._ticket(item, call_id, output_tokens)
        if already_tokens or reread_tokens:
            ticket = dataclasses.replace(
                ticket, prompt_estimate=ticket.prompt_estimate + reread_tokens,
                already_tokens=already_tokens)
        self._observe(ticket, usage, completion.finish_reason)

    async def _unfunded(
        self, item: _Item, price: float | None, call_kwargs: dict[str, Any]
    ) -> SubtaskResult:
        if self.on_unfunded == "fallback" and self.fallback_model:
            result = await self._afallback(item, call_kwargs)
            if result is not None:
                return result
        return SubtaskResult(item.index, item.subtask_id, "unfunded", price=price)

    async def _afallback(self, item: _Item, call_kwargs: dict[str, Any]) -> SubtaskResult | None:
        model = self.fallback_model
        assert model is not None
        price = self._price_of(self.client.provider_model(model),
                               required=self.caps.usd is not None)
        call_id = self._call_id(item, 0) + "-fallback"
        amount = Amount.for_call(item.prompt_reserve, self.fallback_max_tokens, price)
        try:
            await self.ledger.areserve(self.session_id, call_id, amount)
        except BudgetExceeded:
            return None
        settings = provider_settings(self.client.provider_model(model),
                                     self.fallback_max_tokens).kwargs
        try:
            completion = await self.client.acomplete(model, item.subtask.message_list, settings,
                                                     **_metadata(item), **call_kwargs)
        except Exception as error:
            await self.ledger.arelease(self.session_id, call_id)
            return SubtaskResult(item.index, item.subtask_id, "error", model=model, attempts=1,
                                 call_ids=(call_id,), error=f"{type(error).__name__}: {error}",
                                 fallback=True)
        usage = completion.usage
        await self.ledger.acommit(self.session_id, call_id,
                                  None if usage is None else Amount.of_usage(usage, price))
        return SubtaskResult(
            item.index, item.subtask_id, "ok", text=completion.text, usage=usage or Usage(),
            cost_usd=None if price is None or usage is None else price.cost_usd(
                usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens),
            tokens_allocated=self.fallback_max_tokens, finish_reason=completion.finish_reason,
            model=model, attempts=1, call_ids=(call_id,), fallback=True,
        )

    # -- one streamed call -------------------------------------------------------------------
    async def astream(self, subtask: SubtaskLike, **call_kwargs: Any) -> AsyncIterator[str]:
        """Stream one subtask's answer text, funded at the session's current price.

        The call asks the provider for a final usage chunk and settles it. A call that does
        not run to its end is charged its whole reservation (prompt + output cap, never less
        than the provider could bill): when the consumer stops early (``aclose()``, e.g. with
        ``contextlib.aclosing``, or cancellation; a bare ``break`` settles when the generator
        is garbage-collected) the provider stream is closed at once and no usage was read;
        when the stream breaks after the provider started sending (a read timeout, a dropped
        connection) the provider may bill what it generated, which is unknown. Only an error
        before the first chunk releases the reservation. Raises :class:`UnfundedSubtasks`
        when the subtask cannot be funded (nothing is sent).
        """
        await self._aopen()
        item = self._items([subtask])[0]
        await self._aprepare([item])
        plan = self._plan([item], await self._afunds())
        row = plan.rows[0]
        if not row.funded:
            raise UnfundedSubtasks(plan)
        call_id = await self._areserve(item, row.output_tokens, attempt=0)
        if call_id is None:
            raise UnfundedSubtasks(plan)
        settings = provider_settings(self.provider_model, row.output_tokens).kwargs
        usage: Usage | None = None
        finish_reason: str | None = None
        received = False  # a chunk arrived: the provider accepted the call and is generating
        chunks = self.client.astream(self.model, item.subtask.message_list, settings,
                                     **_metadata(item), **call_kwargs)
        try:
            # aclosing: an early stop must hang up the provider now, not when the inner
            # generator happens to be garbage-collected.
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    received = True
                    usage = Usage.from_response(chunk) or usage
                    for choice in getattr(chunk, "choices", None) or ():
                        finish_reason = getattr(choice, "finish_reason", None) or finish_reason
                        delta = getattr(choice, "delta", None)
                        text = getattr(delta, "content", None) if delta is not None else None
                        if text:
                            yield text
        except Exception:
            if received:  # broken mid-stream: charged at its reservation
                await self.ledger.acommit(self.session_id, call_id, None)
            else:  # refused before generating anything
                await self.ledger.arelease(self.session_id, call_id)
            raise
        except BaseException:  # the consumer stopped early (GeneratorExit / cancellation)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._asettle(
                    item, call_id, Completion("", "", usage, finish_reason), row.output_tokens))
            raise
        await self._asettle(item, call_id, Completion("", "", usage, finish_reason),
                            row.output_tokens)

    # -- feedback ----------------------------------------------------------------------------
    def record_outcome(self, call: str | SubtaskResult, *, correct: bool) -> None:
        """Tell the estimator whether a settled call's answer was correct.

        Args:
            call: a result of :meth:`run` (its last call is meant) or a ledger call id.
            correct: the application's verdict. Learning estimators use it to learn the
                curve's ceiling; static ones ignore it.

        Raises:
            KeyError: the call id is not a call this session settled.
        """
        call_id = call.call_ids[-1] if isinstance(call, SubtaskResult) and call.call_ids else call
        if not isinstance(call_id, str) or call_id not in self._settled_calls:
            raise KeyError(f"call {call_id!r} was not settled by this session")
        kind, hint = self._settled_calls[call_id]
        self.estimator.record_outcome(call_id, correct, model=self.provider_model, kind=kind,
                                      hint=hint)

    # -- accounting --------------------------------------------------------------------------
    def _cost(self, usage: Usage) -> float | None:
        if self.price is None:
            return None
        return self.price.cost_usd(usage.prompt_tokens, usage.completion_tokens,
                                   usage.reasoning_tokens)

    def remaining(self):
        """The session's balance: spent, reserved and available tokens / USD."""
        self._open()
        return self.ledger.remaining(self.session_id)

    def statement(self):
        """Every ledger decision of this session (ids and counts only), in order."""
        self._open()
        return self.ledger.statement(self.session_id)

    def __repr__(self) -> str:
        return (f"BudgetSession(model={self.model!r}, caps={self.caps}, "
                f"session_id={self.session_id!r})")


def _metadata(item: _Item) -> dict[str, Any]:
    return {"metadata": dict(item.subtask.metadata)} if item.subtask.metadata else {}


def _add(total: Usage, usage: Usage | None) -> Usage:
    if usage is None:
        return total
    return Usage(total.prompt_tokens + usage.prompt_tokens,
                 total.completion_tokens + usage.completion_tokens,
                 total.reasoning_tokens + usage.reasoning_tokens)


def _describe(curves: UtilityCurves, k: int) -> str:
    rate = getattr(curves, "rate", None)
    if rate is not None:
        return (f"surge(a={curves.ceiling[k]:.2f}, tau={curves.threshold[k]:.0f}, "
                f"width={1 / rate[k]:.0f})")
    return f"curve(ceiling={curves.ceiling[k]:.2f}, threshold={curves.threshold[k]:.0f})"
