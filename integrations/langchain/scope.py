"""The contract the LangChain adapters share: a budget scope in a context variable, and the
typed refusal.

An adapter that decides a call's output cap (``with_budget`` for each input of a batch, the
agent middleware for each step, the LangGraph helpers for each branch) opens a
:class:`BudgetScope`. The model call inside, however deeply nested in chains, prompts and
parsers, reads it: :class:`~.chat_model.ChatClear` sends the cap, the callback handler reserves
it for any other chat model. A context variable is what LangChain itself uses to carry a run's
config across nested runnables, threads of a batch and asyncio tasks, so the scope follows the
same paths.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from clear_middleware.ledger import BudgetExceeded
from clear_middleware.session import BudgetSession, CallTicket, Subtask
from clear_middleware.usage import Usage

__all__ = [
    "BudgetExhaustedError",
    "BudgetScope",
    "CallOutcome",
    "PartialAnswer",
    "areserve_call",
    "budget_scope",
    "current_scope",
    "reserve_call",
]


class BudgetExhaustedError(Exception):
    """A model call the session cannot fund was refused before it was sent.

    Attributes:
        session_id: the session that refused it.
        requested_tokens: what the call would have reserved (prompt plus output cap, tokens);
            0 when the price abandoned it before any reservation was tried.
        available_tokens: tokens the session still had (``None`` = no token cap).
        price: the shadow price that priced it out (expected utility per token), if known.
    """

    def __init__(
        self,
        session_id: str,
        *,
        requested_tokens: int = 0,
        available_tokens: int | None = None,
        price: float | None = None,
        reason: str = "",
    ) -> None:
        self.session_id = session_id
        self.requested_tokens = requested_tokens
        self.available_tokens = available_tokens
        self.price = price
        detail = reason or (
            f"requested {requested_tokens} tokens, available {available_tokens}"
            if requested_tokens else "not worth funding at the current price"
        )
        price_text = "" if price is None else f" (price {price:.3g}/token)"
        super().__init__(f"budget of session {session_id!r} exhausted: {detail}{price_text}")

    @classmethod
    def from_refusal(cls, session: BudgetSession, error: BudgetExceeded) -> BudgetExhaustedError:
        """The ledger refused the reservation (another caller took the tokens first)."""
        return cls(session.session_id, requested_tokens=error.requested_tokens,
                   available_tokens=error.available_tokens, price=session.current_price,
                   reason=str(error))

    def __reduce__(self):  # keyword-only arguments: keep it picklable (process pools)
        return (_rebuild, (self.session_id, self.requested_tokens, self.available_tokens,
                           self.price, str(self)))


def _rebuild(session_id, requested, available, price, message) -> BudgetExhaustedError:
    error = BudgetExhaustedError(session_id, requested_tokens=requested,
                                 available_tokens=available, price=price)
    error.args = (message,)
    return error


@dataclass
class BudgetScope:
    """The budget of the model calls made while it is open.

    Attributes:
        session: the session that pays for them.
        output_tokens: the output cap (tokens, reasoning included) planned for the first model
            call in the scope; ``None`` = price each call at the session's current price.
            Later calls in the same scope are priced at the current price too.
        subtask_id: names the calls in the ledger statement (e.g. the input's index).
        kind: the task kind given to the curve estimator.
        managed: an outer adapter (the agent middleware) already reserved the call and will
            settle it: the model only applies ``output_tokens`` and does no accounting.
        outcomes: what each model call in the scope ended with, in the order they settled
            (:class:`CallOutcome`), recorded by :class:`~.chat_model.ChatClear` and the
            callback handlers; ``with_budget`` reads it in progressive mode to tell an input
            cut at its cap from one that finished.
        resume: a partial answer the first model call in the scope should *continue* rather
            than start over (``with_budget``'s progressive batches set it for an input cut in
            an earlier round, when the session's provider can continue). Only
            :class:`~.chat_model.ChatClear` honours it: it sends the continuation request with
            ``output_tokens`` as the new tokens' cap and answers with the whole text.
    """

    session: BudgetSession
    output_tokens: int | None = None
    subtask_id: str | None = None
    kind: str | None = None
    managed: bool = False
    calls: int = 0
    outcomes: list[CallOutcome] = field(default_factory=list)
    resume: PartialAnswer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take_output_tokens(self) -> int | None:
        """The planned cap for the first call in the scope, ``None`` for the calls after it."""
        return self.take_call()[0]

    def take_call(self) -> tuple[int | None, PartialAnswer | None]:
        """The planned cap and the partial answer to continue (:attr:`resume`) for the first
        call in the scope; ``(None, None)`` for the calls after it."""
        with self._lock:
            self.calls += 1
            first = self.calls == 1
            return (self.output_tokens if first or self.managed else None,
                    self.resume if first else None)

    def record(self, usage: Usage | None, finish_reason: str | None, output_cap: int | None,
               *, answer: PartialAnswer | None = None, continued: bool = False) -> None:
        """Note a settled model call: its provider usage (``None`` if it reported none; then
        its ``output_cap`` is taken as used), finish reason (``"length"`` = cut at its cap),
        and, for a call cut at its cap, the partial ``answer`` it leaves (the whole answer so
        far when it ``continued`` one).
        """
        used = usage.completion_tokens if usage is not None else (output_cap or 0)
        with self._lock:
            self.outcomes.append(CallOutcome(used, finish_reason, answer, continued))

    @property
    def cut(self) -> bool:
        """A model call in the scope stopped at its output cap (finish reason ``"length"``)."""
        return any(o.cut for o in self.outcomes)

    @property
    def output_tokens_used(self) -> int:
        """Output tokens (reasoning included) the scope's settled model calls generated."""
        return sum(o.output_tokens for o in self.outcomes)


@dataclass(frozen=True)
class PartialAnswer:
    """A partial answer left by a call cut at its cap: its visible ``text``, the
    ``reasoning`` returned separately (empty if none), and the output ``tokens`` generated so
    far (as the provider reported them)."""

    text: str = ""
    reasoning: str = ""
    tokens: int = 0


@dataclass(frozen=True)
class CallOutcome:
    """How one model call in a budget scope ended.

    Attributes:
        output_tokens: output tokens it generated (reasoning included, as the provider
            reported; its cap when it reported none).
        finish_reason: the provider's finish reason (``"length"``: cut at its cap).
        answer: the partial answer a call cut at its cap leaves, when the model records it
            (:class:`~.chat_model.ChatClear` does; the callback handlers do not): the whole
            answer so far, the continued part included.
        continued: the call continued the scope's :attr:`BudgetScope.resume` (its
            ``output_tokens`` are the new tokens only).
    """

    output_tokens: int
    finish_reason: str | None
    answer: PartialAnswer | None = None
    continued: bool = False

    @property
    def cut(self) -> bool:
        return self.finish_reason == "length"


_SCOPE: ContextVar[BudgetScope | None] = ContextVar("clear_budget_scope", default=None)


def current_scope() -> BudgetScope | None:
    """The innermost open budget scope of this thread / task, or ``None``."""
    return _SCOPE.get()


@contextmanager
def budget_scope(scope: BudgetScope) -> Iterator[BudgetScope]:
    """Open ``scope`` for the model calls made inside the ``with`` block.

    Example:
        >>> from clear_middleware.session import BudgetSession
        >>> session = BudgetSession(budget_tokens=10_000, model="openai/o4-mini")
        >>> with budget_scope(BudgetScope(session, output_tokens=512)) as scope:
        ...     current_scope() is scope
        True
    """
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def reserve_call(
    session: BudgetSession,
    subtask: Subtask,
    *,
    tools: list[dict[str, Any]] | None = None,
    output_tokens: int | None = None,
) -> CallTicket:
    """Reserve one model call: at ``output_tokens`` if given, else at the session's quote.

    Raises:
        BudgetExhaustedError: the quote abandons the call, or the ledger refuses it.
    """
    if output_tokens is None:
        quote = session.quote(subtask, tools=tools)
        if not quote.funded:
            raise BudgetExhaustedError(session.session_id, price=quote.price)
        output_tokens = quote.output_tokens
    try:
        return session.reserve_call(subtask, output_tokens=output_tokens, tools=tools)
    except BudgetExceeded as error:
        raise BudgetExhaustedError.from_refusal(session, error) from error


async def areserve_call(
    session: BudgetSession,
    subtask: Subtask,
    *,
    tools: list[dict[str, Any]] | None = None,
    output_tokens: int | None = None,
) -> CallTicket:
    """Async :func:`reserve_call`."""
    if output_tokens is None:
        quote = await session.aquote(subtask, tools=tools)
        if not quote.funded:
            raise BudgetExhaustedError(session.session_id, price=quote.price)
        output_tokens = quote.output_tokens
    try:
        return await session.areserve_call(subtask, output_tokens=output_tokens, tools=tools)
    except BudgetExceeded as error:
        raise BudgetExhaustedError.from_refusal(session, error) from error
