"""``with_budget``: run an existing chain or model on a session's budget, one subtask per input.

``batch`` / ``abatch`` over N inputs plans all N first (one subtask per input, with CLEAR on
what the session has left), then runs each funded input with its planned output cap applied
to the model call inside, however deeply nested (prompts, parsers, sub-chains): the cap
travels in a budget scope (a context variable, see :mod:`.scope`) and, for models it can
reach, in the run's config. Once those calls have settled, the inputs the plan abandoned are
planned again on what is left (calls that stop under their cap return tokens), until a plan
funds none of them, as ``BudgetSession.run`` re-prices. Inputs still abandoned are not run:
their place in the output holds the session's ``unfunded``
:class:`~clear_middleware.session.SubtaskResult` (with the price that priced them out), and so
does an input whose model call is refused later (another caller drained the pool): nothing
is raised mid-batch. ``invoke`` / ``ainvoke`` / ``stream`` / ``astream`` price a single call
at the session's current price.

Progressive mode (``BudgetSession(..., mode="progressive")``): ``batch`` / ``abatch`` spend
the batch in rounds instead. Each round the session plans a step for every input still going
(:meth:`~clear_middleware.session.BudgetSession.plan_steps`: curves conditioned on the tokens
each used without finishing, the price re-solved on what the ledger has left). An input cut at
its cap (finish reason ``"length"``, as the model call reported it to the budget scope) goes on
next round:

- *continued*, when every chat model ``with_budget`` can reach is a
  :class:`~.chat_model.ChatClear` and the session's provider can continue a partial answer
  (``session.continuation`` is not ``"restart"``; ``with_budget(..., continuation=...)``
  overrides: ``False`` restarts, ``True`` insists). The cut call left its partial answer in the
  scope (:class:`~.scope.CallOutcome`); the next round's scope carries it
  (:attr:`~.scope.BudgetScope.resume`) and ChatClear sends the continuation request capped at
  the step, reserving the prompt, the re-read partial answer and the step, and answers with the
  partial text followed by the new text. Rounds are planned with ``continuation=True`` (the
  re-read partial answer as the step's fee); an input's used tokens are the sum of its steps.
  Should a capped call leave nothing to continue (a model hidden from the traversal), the rest
  of the batch restarts;
- otherwise *restarted* with a larger cap (the tokens it used plus its step; the step is priced
  with the regenerated tokens as its fee).

An input whose call finishes gets the chain's output; one priced out (or at its largest output)
gets the ``unfunded`` result in place, as does one whose call the ledger refuses. Every attempt
is reserved and settled like any call, so the budget holds. Progressive batches are meant for
chains with one model call per input (the planned cap, and the partial answer to continue, go
to the first call in the scope).

Progress: a progressive batch opens one chain run (named like the runnable) and dispatches a
LangChain custom event :data:`PROGRESS_EVENT` (``"clear_progress"``) after every attempt and,
at the end, for every input priced out, with data ``{"session_id", "index", "round", "status",
"output_tokens", "used_tokens", "attempts", "price"}``: ``status`` is ``"done"`` (finished: its
output is the chain's), ``"cut"`` (cut at its cap: goes on next round), ``"refused"`` (the
ledger refused it: unfunded), ``"error"`` (raised, with ``return_exceptions=True``) or
``"unfunded"`` (priced out at the end); ``output_tokens`` is the cap the attempt was sent with
(a continued attempt's step; 0 for ``"unfunded"``), ``used_tokens`` the output tokens its run
has generated so far, ``price`` the round's shadow price. Receive them with a callback
handler's ``on_custom_event`` (``config={"callbacks": [handler]}``), or as ``on_custom_event``
events of ``astream_events`` on a runnable that calls the batch.

How the cap reaches the model:

- :class:`~.chat_model.ChatClear` reads the scope and sends the cap as provider settings;
- other chat models get a :class:`~.callback.ClearBudgetCallbackHandler` in the run's config
  (every call reserved, settled from ``usage_metadata``, refused when unfunded) and, when
  ``with_budget`` can reach them (the runnable itself, or inside ``RunnableSequence``,
  ``RunnableParallel`` and ``RunnableBinding`` such as ``bind_tools``) and they have a
  ``max_tokens`` field (``ChatOpenAI``, ``ChatAnthropic``, ``ChatLiteLLM``, ...), the cap is
  bound as their ``max_tokens`` for that input (``configurable_fields``). A model hidden in a
  lambda is still reserved and enforced by the callback, but not capped at the provider.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import BasePromptTemplate
from langchain_core.runnables import (
    ConfigurableField,
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableParallel,
    RunnableSequence,
)
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    get_config_list,
    get_executor_for_config,
)

from clear_middleware.session import BudgetSession, StepPlan, Subtask, SubtaskResult
from clear_middleware.session.budget_session import SubtaskLike
from clear_middleware.session.progressive import MAX_ROUNDS

from ._convert import openai_messages
from .callback import AsyncClearBudgetCallbackHandler, ClearBudgetCallbackHandler
from .chat_model import ChatClear
from .scope import BudgetExhaustedError, BudgetScope, PartialAnswer, budget_scope

__all__ = ["CAP_CONFIG_KEY", "PROGRESS_EVENT", "BudgetedRunnable", "budget_aware", "with_budget"]

Input = TypeVar("Input")
Output = TypeVar("Output")

#: Name of the LangChain custom event a progressive batch dispatches after every attempt
#: (see the module docstring for its data).
PROGRESS_EVENT = "clear_progress"

#: The ``configurable`` key that carries an input's output cap (tokens) to the models
#: :func:`budget_aware` made configurable.
CAP_CONFIG_KEY = "clear_output_tokens"


def budget_aware(runnable: Runnable) -> Runnable:
    """``runnable`` with the ``max_tokens`` of every chat model it can reach made configurable
    under :data:`CAP_CONFIG_KEY` (a copy; the original is unchanged).

    Reaches the runnable itself and the steps of ``RunnableSequence``, ``RunnableParallel``
    and ``RunnableBinding`` (``bind``, ``bind_tools``, ``with_config``). ``ChatClear`` reads
    the budget scope instead and is left as is; models without a ``max_tokens`` field too.

    Example:
        >>> from langchain_core.language_models import GenericFakeChatModel
        >>> budget_aware(GenericFakeChatModel(messages=iter([]))).__class__.__name__
        'GenericFakeChatModel'
    """
    if isinstance(runnable, ChatClear):
        return runnable
    if isinstance(runnable, BaseChatModel):
        if "max_tokens" in type(runnable).model_fields:
            return runnable.configurable_fields(max_tokens=ConfigurableField(
                id=CAP_CONFIG_KEY, name="Output cap (tokens) from the budget"))
        return runnable
    if isinstance(runnable, RunnableSequence):
        steps = [budget_aware(step) for step in runnable.steps]
        if all(new is old for new, old in zip(steps, runnable.steps, strict=True)):
            return runnable
        return RunnableSequence(*steps, name=runnable.name)
    if isinstance(runnable, RunnableParallel):
        branches = {key: budget_aware(step) for key, step in runnable.steps__.items()}
        if all(branches[key] is step for key, step in runnable.steps__.items()):
            return runnable
        return RunnableParallel(branches)
    if isinstance(runnable, RunnableBinding):
        bound = budget_aware(runnable.bound)
        return runnable if bound is runnable.bound else runnable.model_copy(
            update={"bound": bound})
    return runnable


class BudgetedRunnable(Runnable[Input, Output | SubtaskResult]):
    """A runnable whose model calls are planned and paid for by a :class:`BudgetSession`.

    Build it with :func:`with_budget`. Outputs are the wrapped runnable's, except that an
    input that could not be funded yields the session's ``unfunded``
    :class:`~clear_middleware.session.SubtaskResult` in its place.
    """

    def __init__(
        self,
        bound: Runnable[Input, Output],
        session: BudgetSession,
        *,
        prompt: Callable[[Input], SubtaskLike] | None = None,
        kind: str | None = None,
        continuation: bool | None = None,
    ) -> None:
        if not isinstance(session, BudgetSession):
            raise TypeError(f"session must be a BudgetSession, got {type(session).__name__}")
        self.original = bound
        self.bound: Runnable[Input, Output] = budget_aware(bound)
        self.session = session
        self.prompt = prompt
        self.kind = kind
        self.name = f"with_budget({bound.get_name()})"
        models = _chat_models(bound)
        able = (session.continuation != "restart" and bool(models)
                and all(isinstance(m, ChatClear) for m in models))
        if continuation and not able:
            raise ValueError(
                "continuation=True needs a session whose provider can continue a partial "
                f"answer (its continuation is {session.continuation!r}) and a runnable whose "
                "every reachable chat model is a ChatClear")
        #: Progressive batches continue cut inputs (``True``) or restart them (``False``).
        self.continuation: bool = able if continuation is None else bool(continuation)

    # -- what to plan -------------------------------------------------------------------------
    def _subtask(self, value: Input, index: int) -> Subtask:
        raw = self.prompt(value) if self.prompt is not None else _prompt_of(self.original, value)
        fields: dict[str, Any] = {"id": str(index)}
        if self.kind is not None or not isinstance(raw, Subtask):
            fields["kind"] = self.kind  # a Subtask from ``prompt`` keeps its own kind
        return Subtask.of(raw, **fields)

    def _config(self, config: RunnableConfig | None, output_tokens: int, *,
                is_async: bool) -> RunnableConfig:
        config = ensure_config(config)
        handler_type = AsyncClearBudgetCallbackHandler if is_async else ClearBudgetCallbackHandler
        callbacks = config.get("callbacks")
        if not _has_handler(callbacks, self.session):
            handler = handler_type(self.session, kind=self.kind)
            if callbacks is None:
                callbacks = [handler]
            elif isinstance(callbacks, list):
                callbacks = [*callbacks, handler]
            else:
                callbacks = cast(BaseCallbackManager, callbacks).copy()
                callbacks.add_handler(handler, inherit=True)
        return cast(RunnableConfig, {
            **config,
            "callbacks": callbacks,
            "configurable": {**config.get("configurable", {}), CAP_CONFIG_KEY: output_tokens},
            "metadata": {**config.get("metadata", {}),
                         "clear_session_id": self.session.session_id,
                         "clear_output_tokens": output_tokens},
        })

    def _unfunded(self, index: int, price: float | None, *, attempts: int = 0) -> SubtaskResult:
        return SubtaskResult(index, str(index), "unfunded", price=price, attempts=attempts)

    def _scope(self, index: int, output_tokens: int,
               resume: PartialAnswer | None = None) -> BudgetScope:
        return BudgetScope(self.session, output_tokens=output_tokens, subtask_id=str(index),
                           kind=self.kind, resume=resume)

    # -- one input ----------------------------------------------------------------------------
    def _run(self, value: Input, config: RunnableConfig | None, index: int,
             output_tokens: int, price: float | None) -> Output | SubtaskResult:
        with budget_scope(self._scope(index, output_tokens)):
            try:
                return self.bound.invoke(value, self._config(config, output_tokens,
                                                             is_async=False))
            except BudgetExhaustedError as error:
                return self._unfunded(index, error.price if error.price is not None else price)

    async def _arun(self, value: Input, config: RunnableConfig | None, index: int,
                    output_tokens: int, price: float | None) -> Output | SubtaskResult:
        with budget_scope(self._scope(index, output_tokens)):
            try:
                return await self.bound.ainvoke(value, self._config(config, output_tokens,
                                                                    is_async=True))
            except BudgetExhaustedError as error:
                return self._unfunded(index, error.price if error.price is not None else price)

    def invoke(self, input: Input, config: RunnableConfig | None = None,
               **kwargs: Any) -> Output | SubtaskResult:
        """Run one input, priced at the session's current price (unfunded: the result)."""
        quote = self.session.quote(self._subtask(input, 0))
        if not quote.funded:
            return self._unfunded(0, quote.price)
        return self._run(input, config, 0, quote.output_tokens, quote.price)

    async def ainvoke(self, input: Input, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Output | SubtaskResult:
        """Async :meth:`invoke`."""
        quote = await self.session.aquote(self._subtask(input, 0))
        if not quote.funded:
            return self._unfunded(0, quote.price)
        return await self._arun(input, config, 0, quote.output_tokens, quote.price)

    # -- many inputs --------------------------------------------------------------------------
    def _waves(self, inputs: list[Input]):
        """Yield each wave's funded ``(index, output_tokens, price)``; return what is left.

        The first wave is the plan of all inputs; each later wave re-plans the inputs still
        abandoned on what the session has left once the previous wave settled (calls that
        stop under their cap return tokens), until a wave funds none of them.
        """
        subtasks = [self._subtask(value, i) for i, value in enumerate(inputs)]
        pending = list(range(len(inputs)))
        while pending:
            plan = self.session.plan([subtasks[i] for i in pending])
            funded = [(index, row.output_tokens, plan.price)
                      for index, row in zip(pending, plan.rows, strict=True) if row.funded]
            if not funded:
                return pending, plan.price
            yield funded
            done = {index for index, _, _ in funded}
            pending = [i for i in pending if i not in done]
        return [], None

    def batch(
        self,
        inputs: list[Input],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Output | SubtaskResult]:
        """Plan all inputs together, run the funded ones concurrently; outputs in order.

        Inputs the plan abandons are planned again once the funded ones have settled (see
        :meth:`_waves`); those still abandoned get the ``unfunded`` result. Concurrency
        follows ``config["max_concurrency"]`` as in any LangChain batch. In progressive mode
        the batch is spent in rounds, continuing cut inputs (or restarting them with larger
        caps), and dispatches
        ``clear_progress`` events (see the module docstring).
        """
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        if self.session.mode == "progressive":
            return self._batch_progressive(inputs, configs, return_exceptions)
        outputs: list[Any] = [None] * len(inputs)

        def one(job: tuple[int, int, float]) -> None:
            index, output_tokens, price = job
            try:
                outputs[index] = self._run(inputs[index], configs[index], index,
                                           output_tokens, price)
            except Exception as error:
                if not return_exceptions:
                    raise
                outputs[index] = error

        waves = self._waves(inputs)
        with get_executor_for_config(configs[0]) as executor:
            while True:
                try:
                    wave = next(waves)
                except StopIteration as end:
                    left, price = end.value
                    break
                list(executor.map(one, wave))
        for index in left:
            outputs[index] = self._unfunded(index, price)
        return outputs

    async def abatch(
        self,
        inputs: list[Input],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Output | SubtaskResult]:
        """Async :meth:`batch`."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        if self.session.mode == "progressive":
            return await self._abatch_progressive(inputs, configs, return_exceptions)
        gate = asyncio.Semaphore(configs[0].get("max_concurrency") or len(inputs))
        outputs: list[Any] = [None] * len(inputs)

        async def one(job: tuple[int, int, float]) -> None:
            index, output_tokens, price = job
            async with gate:
                try:
                    outputs[index] = await self._arun(inputs[index], configs[index], index,
                                                      output_tokens, price)
                except Exception as error:
                    if not return_exceptions:
                        raise
                    outputs[index] = error

        waves = self._waves(inputs)
        while True:
            try:
                wave = next(waves)
            except StopIteration as end:
                left, price = end.value
                break
            await asyncio.gather(*(one(job) for job in wave))
        for index in left:
            outputs[index] = self._unfunded(index, price)
        return outputs

    # -- many inputs, progressive mode ----------------------------------------------------------
    def _attempt(self, value: Input, config: RunnableConfig, job: _Job) -> _Attempt:
        index, output_tokens, resume = job
        scope = self._scope(index, output_tokens, resume)
        with budget_scope(scope):
            try:
                output = self.bound.invoke(value, self._config(config, output_tokens,
                                                               is_async=False))
            except BudgetExhaustedError as error:
                return _Attempt(index, output_tokens, scope, refused=error, resume=resume)
        return _Attempt(index, output_tokens, scope, output=output, resume=resume)

    async def _aattempt(self, value: Input, config: RunnableConfig, job: _Job) -> _Attempt:
        index, output_tokens, resume = job
        scope = self._scope(index, output_tokens, resume)
        with budget_scope(scope):
            try:
                output = await self.bound.ainvoke(value, self._config(config, output_tokens,
                                                                      is_async=True))
            except BudgetExhaustedError as error:
                return _Attempt(index, output_tokens, scope, refused=error, resume=resume)
        return _Attempt(index, output_tokens, scope, output=output, resume=resume)

    def _batch_progressive(self, inputs: list[Input], configs: list[RunnableConfig],
                           return_exceptions: bool) -> list[Output | SubtaskResult]:
        """Spend the batch in rounds (the session plans each round with ``plan_steps``);
        inputs cut at their cap are continued, or run again with a larger cap."""
        subtasks = [self._subtask(value, i) for i, value in enumerate(inputs)]
        rounds = _Rounds(self, len(inputs))
        manager = get_callback_manager_for_config(configs[0])
        run = manager.on_chain_start(None, {"inputs": inputs}, name=self.get_name())
        events = run.get_child()

        def one(job: _Job) -> None:
            index, output_tokens, resume = job
            try:
                attempt = self._attempt(inputs[index], configs[index], job)
            except Exception as error:
                if not return_exceptions:
                    raise
                attempt = _Attempt(index, output_tokens, None, error=error, resume=resume)
            events.on_custom_event(PROGRESS_EVENT, rounds.apply(attempt), run_id=run.run_id)

        try:
            with get_executor_for_config(configs[0]) as executor:
                for _ in range(MAX_ROUNDS):
                    active = rounds.active()
                    if not active:
                        break
                    plan = self.session.plan_steps([subtasks[i] for i in active],
                                                   [rounds.used[i] for i in active],
                                                   continuation=rounds.continuing)
                    if not rounds.start(active, plan):
                        break
                    list(executor.map(one, rounds.moving))
            for data in rounds.stop():
                events.on_custom_event(PROGRESS_EVENT, data, run_id=run.run_id)
        except BaseException as error:
            run.on_chain_error(error)
            raise
        run.on_chain_end({"outputs": rounds.outputs})
        return rounds.outputs

    async def _abatch_progressive(self, inputs: list[Input], configs: list[RunnableConfig],
                                  return_exceptions: bool) -> list[Output | SubtaskResult]:
        """Async :meth:`_batch_progressive`."""
        subtasks = [self._subtask(value, i) for i, value in enumerate(inputs)]
        rounds = _Rounds(self, len(inputs))
        gate = asyncio.Semaphore(configs[0].get("max_concurrency") or len(inputs))
        manager = get_async_callback_manager_for_config(configs[0])
        run = await manager.on_chain_start(None, {"inputs": inputs}, name=self.get_name())
        events = run.get_child()

        async def one(job: _Job) -> None:
            index, output_tokens, resume = job
            async with gate:
                try:
                    attempt = await self._aattempt(inputs[index], configs[index], job)
                except Exception as error:
                    if not return_exceptions:
                        raise
                    attempt = _Attempt(index, output_tokens, None, error=error,
                                       resume=resume)
            await events.on_custom_event(PROGRESS_EVENT, rounds.apply(attempt),
                                         run_id=run.run_id)

        try:
            for _ in range(MAX_ROUNDS):
                active = rounds.active()
                if not active:
                    break
                plan = await self.session.aplan_steps([subtasks[i] for i in active],
                                                      [rounds.used[i] for i in active],
                                                      continuation=rounds.continuing)
                if not rounds.start(active, plan):
                    break
                await asyncio.gather(*(one(job) for job in rounds.moving))
            for data in rounds.stop():
                await events.on_custom_event(PROGRESS_EVENT, data, run_id=run.run_id)
        except BaseException as error:
            await run.on_chain_error(error)
            raise
        await run.on_chain_end({"outputs": rounds.outputs})
        return rounds.outputs

    # -- streaming ----------------------------------------------------------------------------
    def stream(self, input: Input, config: RunnableConfig | None = None,
               **kwargs: Any) -> Iterator[Output]:
        """Stream one input, priced at the current price.

        Raises:
            BudgetExhaustedError: the input cannot be funded (nothing was sent).
        """
        quote = self.session.quote(self._subtask(input, 0))
        if not quote.funded:
            raise BudgetExhaustedError(self.session.session_id, price=quote.price)
        with budget_scope(self._scope(0, quote.output_tokens)):
            yield from self.bound.stream(
                input, self._config(config, quote.output_tokens, is_async=False), **kwargs)

    async def astream(self, input: Input, config: RunnableConfig | None = None,
                      **kwargs: Any) -> AsyncIterator[Output]:
        """Async :meth:`stream`."""
        quote = await self.session.aquote(self._subtask(input, 0))
        if not quote.funded:
            raise BudgetExhaustedError(self.session.session_id, price=quote.price)
        with budget_scope(self._scope(0, quote.output_tokens)):
            async for chunk in self.bound.astream(
                    input, self._config(config, quote.output_tokens, is_async=True), **kwargs):
                yield chunk


#: One input's run in a progressive round: its index, the cap it is sent with, and the
#: partial answer it continues (``None``: from the start).
_Job = tuple[int, int, PartialAnswer | None]


@dataclass
class _Attempt:
    """One run of one input in a progressive batch, and how it ended."""

    index: int
    output_tokens: int  # the cap it was sent with
    scope: BudgetScope | None  # what its model calls reported (None: it raised)
    output: Any = None
    refused: BudgetExhaustedError | None = None
    error: Exception | None = None
    resume: PartialAnswer | None = None  # the partial answer it was asked to continue


class _Rounds:
    """The state of a progressive batch between rounds: which inputs are still going, the
    tokens each used without finishing and, when the batch continues cut inputs, the partial
    answer each left. The session plans every round; this only records what came back."""

    def __init__(self, owner: BudgetedRunnable, count: int) -> None:
        self.owner = owner
        self.outputs: list[Any] = [None] * count
        self.used = [0] * count
        self.attempts = [0] * count
        self.going = set(range(count))
        self.moving: list[_Job] = []
        self.continuing = owner.continuation
        self.partial: list[PartialAnswer | None] = [None] * count
        self.round = -1
        self.price: float | None = None
        self._lock = threading.Lock()

    def active(self) -> list[int]:
        return sorted(self.going)

    def start(self, active: list[int], plan: StepPlan) -> bool:
        """Take a round's plan; ``False`` when it funds nobody (the batch stops)."""
        self.round += 1
        self.price = plan.price
        self.moving = [(i, cap, self.partial[i] if self.continuing else None)
                       for i, cap in zip(active, plan.output_caps, strict=True) if cap > 0]
        return bool(self.moving)

    def _event(self, index: int, status: str, output_tokens: int) -> dict[str, Any]:
        return {"session_id": self.owner.session.session_id, "index": index,
                "round": self.round, "status": status, "output_tokens": output_tokens,
                "used_tokens": self.used[index], "attempts": self.attempts[index],
                "price": self.price}

    def apply(self, attempt: _Attempt) -> dict[str, Any]:
        """Record how an attempt ended; the progress event's data."""
        i = attempt.index
        with self._lock:
            self.attempts[i] += 1
            scope = attempt.scope
            if attempt.error is not None:  # return_exceptions: the error in place
                status, self.outputs[i] = "error", attempt.error
            elif attempt.refused is not None:  # the ledger refused it: unfunded in place
                price = attempt.refused.price if attempt.refused.price is not None else (
                    self.price)
                status, self.outputs[i] = "refused", self.owner._unfunded(
                    i, price, attempts=self.attempts[i])
            elif scope is not None and scope.cut and self._goes_on(attempt, scope):
                return self._event(i, "cut", attempt.output_tokens)
            else:  # finished (or cut where a larger cap cannot help): the chain's output
                if scope is not None:
                    self.used[i] = self._total(i, scope)
                status, self.outputs[i] = "done", attempt.output
            self.going.discard(i)
            return self._event(i, status, attempt.output_tokens)

    def _total(self, i: int, scope: BudgetScope) -> int:
        """Output tokens of input ``i``'s run so far: a continued call adds to the tokens
        before it; a restart generated them all again."""
        continued = bool(scope.outcomes) and scope.outcomes[0].continued
        return (self.used[i] if continued else 0) + scope.output_tokens_used

    def _goes_on(self, attempt: _Attempt, scope: BudgetScope) -> bool:
        """Whether an input cut at its cap goes on next round (continued, or restarted with a
        larger cap); records its tokens and partial answer. Called under the lock."""
        i, total = attempt.index, self._total(attempt.index, scope)
        first = scope.outcomes[0]
        if self.continuing:
            if (first.cut and first.answer is not None and total > self.used[i]
                    and first.continued == (attempt.resume is not None)):
                self.used[i], self.partial[i] = total, first.answer
                return True
            # The call that took the planned cap left nothing to continue (a model other than
            # ChatClear, or a later call was cut): the rest of the batch restarts.
            self.continuing = False
            self.partial = [None] * len(self.partial)
            if attempt.resume is not None and not first.continued:
                # It ran from the start under a cap meant for the new tokens only: its run is
                # longer still; it goes on, restarted with a larger cap.
                self.used[i] = max(self.used[i], total)
                return True
        if total > self.used[i]:
            self.used[i] = total
            return True
        return False

    def stop(self) -> list[dict[str, Any]]:
        """End the inputs still going (priced out or at their limit): the session's
        ``unfunded`` result in place; their progress events."""
        events = []
        for i in self.active():
            self.outputs[i] = self.owner._unfunded(i, self.price, attempts=self.attempts[i])
            self.going.discard(i)
            events.append(self._event(i, "unfunded", 0))
        return events


def with_budget(
    runnable: Runnable[Input, Output],
    session: BudgetSession,
    *,
    prompt: Callable[[Input], SubtaskLike] | None = None,
    kind: str | None = None,
    continuation: bool | None = None,
) -> BudgetedRunnable[Input, Output]:
    """Put ``runnable``'s model calls on ``session``'s budget: one subtask per input.

    Args:
        runnable: any chain, agent or chat model (prompts, parsers and sub-chains included).
        session: the session that plans and pays.
        prompt: how to see an input as the prompt its model call will get, for planning
            (a string, chat messages or a :class:`Subtask`, whose ``kind`` is kept when
            ``kind`` is not given). Default: the rendered prompt
            when the runnable starts with a prompt template, else the input itself (a
            string, messages, or its JSON).
        kind: the task kind of these inputs, for the curve estimator.
        continuation: in progressive mode, whether an input cut at its cap is *continued*
            next round (its partial answer sent back for the model to go on from) rather than
            restarted with a larger cap. ``None`` (default): continued when the session's
            provider can (its ``continuation`` is not ``"restart"``) and every chat model
            ``with_budget`` can reach in ``runnable`` is a :class:`ChatClear`; ``False``:
            always restarted; ``True``: continued, or ``ValueError`` when it cannot be.

    Returns:
        A :class:`BudgetedRunnable` (``invoke``, ``batch``, ``stream`` and async twins).

    Example:
        >>> from langchain_core.prompts import ChatPromptTemplate
        >>> from clear_middleware.session import BudgetSession
        >>> session = BudgetSession(budget_tokens=100_000, model="openai/o4-mini")
        >>> chain = ChatPromptTemplate.from_template("Solve: {q}") | ChatClear(session=session)
        >>> budgeted = with_budget(chain, session)
        >>> budgeted._subtask({"q": "2+2"}, 0).messages[0]["content"]
        'Solve: 2+2'

        ``budgeted.batch([{"q": q} for q in questions])`` then plans all questions first.
    """
    return BudgetedRunnable(runnable, session, prompt=prompt, kind=kind,
                            continuation=continuation)


def _chat_models(runnable: Runnable) -> list[BaseChatModel]:
    """The chat models :func:`budget_aware` can reach in ``runnable`` (the runnable itself,
    the steps of sequences and parallels, the runnable a binding wraps)."""
    if isinstance(runnable, BaseChatModel):
        return [runnable]
    if isinstance(runnable, RunnableSequence):
        return [m for step in runnable.steps for m in _chat_models(step)]
    if isinstance(runnable, RunnableParallel):
        return [m for step in runnable.steps__.values() for m in _chat_models(step)]
    if isinstance(runnable, RunnableBinding):
        return _chat_models(runnable.bound)
    return []


def _has_handler(callbacks: Any, session: BudgetSession) -> bool:
    handlers = callbacks if isinstance(callbacks, list) else getattr(callbacks, "handlers", [])
    return any(isinstance(h, ClearBudgetCallbackHandler | AsyncClearBudgetCallbackHandler)
               and h.session is session for h in handlers or [])


def _prompt_of(runnable: Runnable, value: Any) -> SubtaskLike:
    """What an input will look like to the model, as well as can be told before running."""
    first = runnable.steps[0] if isinstance(runnable, RunnableSequence) else runnable
    if isinstance(first, BasePromptTemplate):
        return openai_messages(first.invoke(value).to_messages())
    if isinstance(value, PromptValue):
        return openai_messages(value.to_messages())
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and value and all(
            isinstance(m, BaseMessage | tuple | dict | str) for m in value):
        try:
            return openai_messages(convert_to_messages(value))
        except (ValueError, TypeError, NotImplementedError):
            pass
    return json.dumps(value, default=str, sort_keys=True)
