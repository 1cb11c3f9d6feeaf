"""A LiteLLM proxy hook: enforce and allocate a budget per agent session, for teams that run
the proxy.

Clients name their session in the request metadata (``{"metadata": {"clear_session_id":
"run-42"}}``, with the OpenAI SDK: ``extra_body={"metadata": {...}}``). Before the call,
:meth:`ClearProxyBudget.async_pre_call_hook` prices it at the session's current price (the
client may say how many calls its agent still expects: ``"clear_expected_calls"``), reserves
prompt plus cap in the ledger, and rewrites the request's output settings to the cap
(:func:`~clear_middleware.dispatch.provider_settings`: ``max_tokens``, or
``max_completion_tokens`` and ``reasoning_effort``, or a thinking budget). A call the session
cannot fund is refused with HTTP 429 before it reaches a provider. The success and failure
logging events settle the reservation from the provider's usage or release it.

A session belongs to the authenticated key, or to its team when the key has one, that named
it: the ledger id is derived from a hash of that owner and the session name, so another tenant
naming the same session id gets a separate session and never draws on this one's budget.
Requests without a session id pass through untouched; a request that names one but carries
no authenticated owner is refused.

Use one hook per process: LiteLLM registers a logger only once per class and settings, so a
second ``ClearProxyBudget`` with the same settings would never see its settle events.

Install in the proxy's ``config.yaml``::

    litellm_settings:
      callbacks: my_hooks.budget   # my_hooks.py: budget = ClearProxyBudget(...)

with ``my_hooks.py``::

    from clear_middleware.integrations.litellm_proxy import ClearProxyBudget
    budget = ClearProxyBudget(budget_tokens=200_000, store="redis://127.0.0.1:6379/0")
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any

from clear_middleware.dispatch import provider_settings
from clear_middleware.dispatch.client import import_litellm
from clear_middleware.estimators import CurveEstimator
from clear_middleware.ledger import BudgetExceeded, Ledger
from clear_middleware.session import BudgetSession, CallTicket, Subtask
from clear_middleware.usage import Usage

import_litellm()  # offline cost map before LiteLLM's modules load
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

__all__ = ["ClearBudgetRefused", "ClearProxyBudget"]

_CAP_KEYS = ("max_tokens", "max_completion_tokens")
_CHAT_CALLS = ("completion", "acompletion")


class ClearBudgetRefused(Exception):
    """The proxy refuses a request: unfundable (HTTP 429) or without an owner (HTTP 401).

    Attributes:
        status_code: the HTTP status the proxy answers with.
        session: the client's session name.
        price: the shadow price that priced the call out, if it was priced.
    """

    def __init__(self, message: str, *, status_code: int = 429, session: str | None = None,
                 price: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.session = session
        self.price = price


def _owner(user_api_key_dict: Any) -> str | None:
    """Who a request's budget belongs to: its key's team, else the key, else the user."""
    for kind, field in (("team", "team_id"), ("key", "token"), ("key", "api_key"),
                        ("user", "user_id")):
        value = getattr(user_api_key_dict, field, None)
        if value:
            return f"{kind}:{value}"
    return None


def _metadata(data: Mapping[str, Any]) -> dict[str, Any]:
    for key in ("metadata", "litellm_metadata"):
        value = data.get(key)
        if isinstance(value, Mapping):
            return dict(value)
    return {}


class ClearProxyBudget(CustomLogger):
    """LiteLLM proxy hook: per-session budgets, owned by the key or team that opened them.

    Args:
        budget_tokens: each session's token cap (``None`` = no token cap).
        budget_usd: each session's USD cap (``None`` = no USD cap; needs model prices).
        store: where budgets live: a :class:`~clear_middleware.ledger.Ledger` or a store URI
            (share one across proxy workers: ``"redis://127.0.0.1:6379/0"``); default memory.
        estimator: the curve estimator shared by all sessions.
        router: the proxy's ``model_list`` (or a ``litellm.Router``), so a model group name
            resolves to its provider model for output settings.
        session_key: the metadata key naming the client's session.
        expected_calls_key: the metadata key with the calls the client still expects (>= 1).
        **session_kwargs: further :class:`BudgetSession` arguments (``min_output_tokens``,
            ``max_output_tokens``, ``prices``, ...).

    Example:
        >>> hook = ClearProxyBudget(budget_tokens=100_000)
        >>> hook.session_key
        'clear_session_id'
    """

    def __init__(
        self,
        *,
        budget_tokens: int | None = None,
        budget_usd: float | None = None,
        store: Ledger | str | None = None,
        estimator: CurveEstimator | None = None,
        router: Any = None,
        session_key: str = "clear_session_id",
        expected_calls_key: str = "clear_expected_calls",
        **session_kwargs: Any,
    ) -> None:
        super().__init__()
        self.budget_tokens = budget_tokens
        self.budget_usd = budget_usd
        self.ledger = store if isinstance(store, Ledger) else Ledger(store or "memory://")
        self.estimator = estimator
        self.router = router
        self.session_key = session_key
        self.expected_calls_key = expected_calls_key
        self.session_kwargs = session_kwargs
        self._sessions: dict[tuple[str, str], BudgetSession] = {}
        self._open: dict[str, tuple[BudgetSession, CallTicket]] = {}
        self._lock = threading.Lock()

    # -- sessions -----------------------------------------------------------------------------
    @staticmethod
    def ledger_session_id(owner: str, session: str) -> str:
        """The ledger id of ``owner``'s session ``session``: no key material, and distinct
        for distinct owners."""
        digest = hashlib.sha256(f"{owner}\x00{session}".encode()).hexdigest()[:32]
        return f"proxy-{digest}"

    def session_for(self, owner: str, session: str, model: str) -> BudgetSession:
        """The :class:`BudgetSession` of ``owner``'s ``session`` for calls to ``model``."""
        if not isinstance(session, str) or not 0 < len(session) <= 200 or (
                not session.isprintable()):
            raise ClearBudgetRefused(f"{self.session_key} must be 1 to 200 printable characters",
                                     status_code=400)
        key = (self.ledger_session_id(owner, session), model)
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                found = BudgetSession(
                    self.budget_tokens, self.budget_usd, model, store=self.ledger,
                    estimator=self.estimator, session_id=key[0], router=self.router,
                    **self.session_kwargs)
                self._sessions[key] = found
            return found

    # -- before the call ----------------------------------------------------------------------
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any
    ) -> dict:
        """Price, reserve and cap a chat call that names a session; refuse it if unfundable.

        Raises:
            ClearBudgetRefused: 429 when the session cannot fund the call, 401 when the
                request has no authenticated owner, 400 for a malformed session name.
        """
        if call_type not in _CHAT_CALLS:
            return data
        metadata = _metadata(data)
        name = metadata.get(self.session_key)
        if name is None:
            return data
        owner = _owner(user_api_key_dict)
        if owner is None:
            raise ClearBudgetRefused("a budgeted session needs an authenticated key",
                                     status_code=401, session=str(name))
        session = self.session_for(owner, name, str(data.get("model")))
        messages = list(data.get("messages") or [])
        tools = data.get("tools") or None
        expected = metadata.get(self.expected_calls_key, 1)
        if isinstance(expected, bool) or not isinstance(expected, int) or expected < 1:
            raise ClearBudgetRefused(f"{self.expected_calls_key} must be an int >= 1",
                                     status_code=400, session=name)
        subtask = Subtask.of(messages, id=str(data.get("litellm_call_id") or "proxy"))
        quote = await session.aquote(subtask, tools=tools, expected_calls=expected)
        if not quote.funded:
            raise ClearBudgetRefused(
                f"session {name!r} cannot fund this call at its current price "
                f"({quote.price:.3g}/token)", session=name, price=quote.price)
        asked = [data[k] for k in _CAP_KEYS if isinstance(data.get(k), int) and data[k] > 0]
        cap = min([quote.output_tokens, *asked])
        try:
            ticket = await session.areserve_call(subtask, output_tokens=cap, tools=tools)
        except BudgetExceeded as error:
            raise ClearBudgetRefused(f"session {name!r} is out of budget: {error}",
                                     session=name, price=quote.price) from error
        for key in _CAP_KEYS:
            data.pop(key, None)
        data.update(provider_settings(session.provider_model, cap).kwargs)
        data["metadata"] = {**metadata, "clear_call_id": ticket.call_id}
        with self._lock:
            self._open[ticket.call_id] = (session, ticket)
        return data

    # -- after the call -----------------------------------------------------------------------
    def _take(self, kwargs: Mapping[str, Any]) -> tuple[BudgetSession, CallTicket] | None:
        params = kwargs.get("litellm_params") or {}
        metadata = params.get("metadata") or kwargs.get("metadata") or {}
        call_id = metadata.get("clear_call_id") if isinstance(metadata, Mapping) else None
        if call_id is None:
            return None
        with self._lock:
            return self._open.pop(call_id, None)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        """Settle the call from the provider's usage (its whole reservation if none)."""
        taken = self._take(kwargs)
        if taken is None:
            return
        session, ticket = taken
        choices = getattr(response_obj, "choices", None) or []
        finish = getattr(choices[0], "finish_reason", None) if choices else None
        await session.asettle_call(ticket, Usage.from_response(response_obj),
                                   finish_reason=finish)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        """Release a failed call's reservation."""
        taken = self._take(kwargs)
        if taken is not None:
            await taken[0].arelease_call(taken[1])

    async def async_post_call_failure_hook(self, request_data, original_exception,
                                           user_api_key_dict, traceback_str=None):
        """Release the reservation of a request that failed after the pre-call hook."""
        taken = self._take({"metadata": _metadata(request_data)})
        if taken is not None:
            await taken[0].arelease_call(taken[1])
        return None

    @property
    def open_calls(self) -> int:
        """Calls reserved and not yet settled or released."""
        with self._lock:
            return len(self._open)
