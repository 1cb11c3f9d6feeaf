"""LangChain adapters: put code you already have on a :class:`BudgetSession` in a few lines.

- :class:`ClearBudgetCallbackHandler` / :class:`AsyncClearBudgetCallbackHandler`: attach to
  any chain or agent; every chat model call is reserved, settled and (when unfundable)
  refused.
- :func:`with_budget`: wrap a chain or model; ``batch`` plans all inputs together and runs
  each with its own output cap; unfunded inputs come back as ``unfunded`` results in place.
  With a progressive session it spends the batch in rounds, continuing cut inputs where the
  provider can (``ChatClear`` models) or restarting them with larger caps, and dispatches
  ``clear_progress`` custom events.
- :class:`ChatClear`: a chat model over the session's LiteLLM dispatch (any provider).
- :class:`ClearBudgetMiddleware`: for LangChain v1 ``create_agent``; prices each step against
  what is left and ends the run gracefully when the budget is spent; with a progressive
  session each call is spent in steps, re-sent with a larger cap while it is cut.

All of them raise (or return) the same typed refusal, :class:`BudgetExhaustedError`, and share
one budget scope (:func:`budget_scope`) through which a planned cap reaches nested model calls.
"""

from .callback import AsyncClearBudgetCallbackHandler, ClearBudgetCallbackHandler
from .chat_model import ChatClear
from .middleware import ClearBudgetMiddleware
from .runnable import CAP_CONFIG_KEY, PROGRESS_EVENT, BudgetedRunnable, budget_aware, with_budget
from .scope import (
    BudgetExhaustedError,
    BudgetScope,
    CallOutcome,
    PartialAnswer,
    budget_scope,
    current_scope,
)

__all__ = [
    "CAP_CONFIG_KEY",
    "PROGRESS_EVENT",
    "AsyncClearBudgetCallbackHandler",
    "BudgetExhaustedError",
    "BudgetScope",
    "BudgetedRunnable",
    "CallOutcome",
    "ChatClear",
    "ClearBudgetCallbackHandler",
    "ClearBudgetMiddleware",
    "PartialAnswer",
    "budget_aware",
    "budget_scope",
    "current_scope",
    "with_budget",
]
