"""The ``Ledger`` facade: session budgets that are never overspent.

The rest of the package talks to budgets only through this class. It validates input (ids,
amounts, leases), converts USD to the stores' exact nano-USD, refuses unpriced amounts where a
USD cap applies, logs decisions (ids and counts only), and delegates each operation to one
atomic store step.

Flow of one LLM call::

    ledger = Ledger("sqlite:///budget.db")
    ledger.open_session("run-1", Caps(tokens=200_000, usd=2.0))
    price = PriceBook().price("gpt-4o")
    worst = Amount.for_call(prompt_tokens=1_200, max_output_tokens=4_000, price=price)
    ledger.reserve("run-1", "call-7", worst)          # BudgetExceeded if it does not fit
    try:
        response = call_the_model(max_completion_tokens=4_000)
    except Exception:
        ledger.release("run-1", "call-7")               # failed call: everything returns
        raise
    usage = Usage.from_response(response)               # None if the provider sent none
    spent = None if usage is None else Amount.of_usage(usage, price)
    ledger.commit("run-1", "call-7", spent)             # None: charged at its reservation

A crash between reserve and commit loses nothing: the reservation's lease ends and its
budget returns to the pool (an ``expire`` entry in the statement).

>>> ledger = Ledger()
>>> _ = ledger.open_session("s", Caps(tokens=1_000))
>>> ledger.reserve("s", "c1", Amount(tokens=600)).tokens
600
>>> ledger.reserve("s", "c2", Amount(tokens=600))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
clear_middleware.ledger.types.BudgetExceeded: call 'c2' refused: ... available 400
>>> ledger.commit("s", "c1", Amount(tokens=250)).charged_tokens
250
>>> ledger.remaining("s").available_tokens
750
"""

from __future__ import annotations

import logging
import math

from clear_middleware.ledger.store import LedgerStore
from clear_middleware.ledger.types import (
    Amount,
    Balance,
    BudgetExceeded,
    Caps,
    Reservation,
    SessionInfo,
    Settlement,
    StatementEntry,
)
from clear_middleware.ledger.uri import store_from_uri

__all__ = ["Ledger"]

logger = logging.getLogger("clear_middleware.ledger")

#: Longest accepted session / call id (characters).
MAX_ID_LENGTH = 256
#: Longest lease: 30 days (seconds).
MAX_LEASE_SECONDS = 30 * 24 * 3600.0

# Ids end up in statements and logs, which must never hold credentials: refuse strings shaped
# like the common API key formats (OpenAI/Anthropic "sk-", Stripe-style "sk_live", Google
# "AIza", Slack "xox?-", GitHub "ghp_").
_SECRET_PREFIXES = (
    "sk-", "sk_", "rk_", "AIza", "xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-", "ghp_",
    "github_pat_", "Bearer ",
)


def _check_id(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_LENGTH or not value.isprintable():
        raise ValueError(
            f"{name} must be 1 to {MAX_ID_LENGTH} printable characters, got {value[:40]!r}"
        )
    if value.startswith(_SECRET_PREFIXES):
        raise ValueError(f"{name} looks like an API key; ids are recorded in statements and logs")
    return value


def _lease_ms(name: str, seconds: object) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {seconds!r}")
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_LEASE_SECONDS):
        raise ValueError(f"{name} must be in (0, {MAX_LEASE_SECONDS:.0f}] seconds, got {seconds!r}")
    return max(1, round(seconds * 1000))


class Ledger:
    """Session budgets with reserve -> commit / release, over a pluggable store.

    Args:
        store: a :class:`~clear_middleware.ledger.store.LedgerStore` or a URI
            (``"memory://"`` default, ``"sqlite:///budget.db"``, ``"redis://host:6379/0"``).
        default_lease_seconds: lease of a reservation when neither the session nor the call
            sets one (> 0; default 600 s): how long a crashed caller can hold budget.
    """

    def __init__(
        self, store: LedgerStore | str = "memory://", *, default_lease_seconds: float = 600.0
    ) -> None:
        self.store: LedgerStore = store_from_uri(store) if isinstance(store, str) else store
        self._default_lease_ms = _lease_ms("default_lease_seconds", default_lease_seconds)
        # session id -> whether it or an ancestor has a USD cap. Caps never change once a
        # session exists, so this is safe to cache for the life of the Ledger.
        self._usd_capped: dict[str, bool] = {}

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- validation -------------------------------------------------------------------------
    def _open_args(
        self, session_id: str, caps: Caps | None, parent: str | None, lease_seconds: float | None
    ) -> tuple[str, int | None, int | None, str | None, int]:
        _check_id("session_id", session_id)
        if caps is None:
            caps = Caps()
        if not isinstance(caps, Caps):
            raise TypeError(f"caps must be a Caps, got {type(caps).__name__}")
        if parent is not None:
            _check_id("parent", parent)
            if parent == session_id:
                raise ValueError("parent must differ from session_id")
        lease = (
            self._default_lease_ms
            if lease_seconds is None
            else _lease_ms("lease_seconds", lease_seconds)
        )
        return session_id, caps.tokens, caps.nano_usd, parent, lease

    @staticmethod
    def _amount(amount: object, *, reservation: bool) -> Amount:
        if type(amount) is Amount and (amount.tokens >= 1 or not reservation):
            return amount  # the hot path: one check instead of three
        if not isinstance(amount, Amount):
            raise TypeError(f"amount must be an Amount(tokens, usd), got {type(amount).__name__}")
        if reservation and amount.tokens < 1:
            raise ValueError(
                "amount.tokens must be >= 1 for a reservation (a call reads at least one prompt "
                f"token), got {amount.tokens}"
            )
        return amount

    def _require_usd(self, session_id: str, amount: Amount, capped: bool) -> None:
        if capped and amount.usd is None:
            raise ValueError(
                f"amount.usd is required: session {session_id!r} or an ancestor has a USD cap, "
                "and an unpriced call never counts as $0 (price it with "
                "clear_middleware.pricing, or register a price for the model)"
            )

    def _usd_capped_sync(self, session_id: str) -> bool:
        known = self._usd_capped.get(session_id)
        if known is None:
            _check_id("session_id", session_id)
            info = self.store.session_info(session_id)
            known = info.caps.usd is not None or (
                info.parent is not None and self._usd_capped_sync(info.parent)
            )
            self._usd_capped[session_id] = known
        return known

    async def _usd_capped_async(self, session_id: str) -> bool:
        known = self._usd_capped.get(session_id)
        if known is None:
            _check_id("session_id", session_id)
            info = await self.store.asession_info(session_id)
            known = info.caps.usd is not None or (
                info.parent is not None and await self._usd_capped_async(info.parent)
            )
            self._usd_capped[session_id] = known
        return known

    # --- logging (ids and counts only) -----------------------------------------------------
    @staticmethod
    def _log_refusal(error: BudgetExceeded) -> None:
        logger.info(
            "ledger refuse session=%s call=%s dimension=%s binding=%s requested_tokens=%d "
            "requested_nano_usd=%d available_tokens=%s available_nano_usd=%s",
            error.session_id, error.call_id, error.dimension, error.binding_session_id,
            error.requested_tokens, error.requested_nano_usd, error.available_tokens,
            error.available_nano_usd,
        )

    @staticmethod
    def _log_settlement(settlement: Settlement) -> Settlement:
        if settlement.replayed:
            logger.debug("ledger replay session=%s call=%s", settlement.session_id,
                         settlement.call_id)
        elif "no_usage" in settlement.reason or settlement.over_reservation:
            logger.warning(
                "ledger commit session=%s call=%s charged_tokens=%d charged_nano_usd=%d "
                "reserved_tokens=%d over_reservation=%s reason=%s",
                settlement.session_id, settlement.call_id, settlement.charged_tokens,
                settlement.charged_nano_usd, settlement.reserved_tokens,
                settlement.over_reservation, settlement.reason or "-",
            )
        return settlement

    # --- sync API ---------------------------------------------------------------------------
    def open_session(
        self,
        session_id: str,
        caps: Caps | None = None,
        *,
        parent: str | None = None,
        lease_seconds: float | None = None,
    ) -> SessionInfo:
        """Create a budgeted session, or return it unchanged if it exists with the same caps.

        Args:
            session_id: 1-256 printable characters.
            caps: token and/or USD caps (``None`` = unlimited; an unlimited sub-session is
                still bound by its parent).
            parent: an existing session whose caps (and its ancestors') also bind this one.
            lease_seconds: default lease of this session's reservations (> 0, <= 30 days).

        Raises:
            UnknownSession: ``parent`` does not exist.
            SessionConflict: the id exists with other caps or another parent.
        """
        return self.store.open_session(*self._open_args(session_id, caps, parent, lease_seconds))

    def reserve(
        self, session_id: str, call_id: str, amount: Amount, *, lease_seconds: float | None = None
    ) -> Reservation:
        """Hold ``amount`` (the call's worst case: prompt estimate + output cap) for ``call_id``.

        Atomic over the session and all its ancestors. Sending the same reserve again returns
        the existing reservation (``replayed=True``).

        Raises:
            BudgetExceeded: it does not fit (recorded as a ``refuse`` entry; nothing held).
            UnknownSession, CallStateError (call id already used), ValueError / TypeError
            (bad input), StoreUnavailable.
        """
        # session_id is validated by _usd_capped_* the first time it is seen.
        _check_id("call_id", call_id)
        self._amount(amount, reservation=True)
        lease = None if lease_seconds is None else _lease_ms("lease_seconds", lease_seconds)
        self._require_usd(session_id, amount, self._usd_capped_sync(session_id))
        try:
            return self.store.reserve(
                session_id, call_id, amount.tokens, amount.nano_usd or 0, lease
            )
        except BudgetExceeded as error:
            self._log_refusal(error)
            raise

    def commit(self, session_id: str, call_id: str, usage: Amount | None) -> Settlement:
        """Charge what the call actually used and return the rest of its reservation.

        Args:
            usage: the provider-reported amount (``Amount.of_usage(usage, price)``), or
                ``None`` when the provider reported no usage: the call is then charged its
                full reservation (flag ``no_usage``), never zero.

        A commit larger than the reservation is charged in full (``over_reservation``), even
        past the cap; so is a commit after the lease expired (``after_expiry``). Replaying a
        commit returns the first outcome and charges nothing.

        Raises:
            UnknownCall, CallStateError (the call was released), UnknownSession, bad input,
            StoreUnavailable.
        """
        capped = self._usd_capped_sync(session_id)  # also validates session_id
        _check_id("call_id", call_id)
        if usage is None:
            return self._log_settlement(self.store.commit(session_id, call_id, None, 0))
        self._amount(usage, reservation=False)
        self._require_usd(session_id, usage, capped)
        settlement = self.store.commit(session_id, call_id, usage.tokens, usage.nano_usd or 0)
        return self._log_settlement(settlement)

    def release(self, session_id: str, call_id: str) -> Settlement:
        """Return the whole reservation of a call that failed (no-op if already settled)."""
        _check_id("session_id", session_id)
        _check_id("call_id", call_id)
        return self.store.release(session_id, call_id)

    def remaining(self, session_id: str) -> Balance:
        """Spent, reserved and still-available budget of the session (ancestors' caps applied)."""
        _check_id("session_id", session_id)
        return self.store.balance(session_id)

    def statement(
        self, session_id: str, *, include_children: bool = False
    ) -> list[StatementEntry]:
        """Every decision recorded for the session, in order (sub-sessions' too if asked)."""
        _check_id("session_id", session_id)
        return self.store.statement(session_id, include_children)

    def reclaim_expired(self) -> int:
        """Expire every reservation whose lease has ended; returns how many."""
        return self.store.reclaim_expired(None)

    def close(self) -> None:
        """Close the store's connections."""
        self.store.close()

    # --- async API --------------------------------------------------------------------------
    async def aopen_session(
        self,
        session_id: str,
        caps: Caps | None = None,
        *,
        parent: str | None = None,
        lease_seconds: float | None = None,
    ) -> SessionInfo:
        """Async :meth:`open_session`."""
        args = self._open_args(session_id, caps, parent, lease_seconds)
        return await self.store.aopen_session(*args)

    async def areserve(
        self, session_id: str, call_id: str, amount: Amount, *, lease_seconds: float | None = None
    ) -> Reservation:
        """Async :meth:`reserve`."""
        # session_id is validated by _usd_capped_* the first time it is seen.
        _check_id("call_id", call_id)
        self._amount(amount, reservation=True)
        lease = None if lease_seconds is None else _lease_ms("lease_seconds", lease_seconds)
        self._require_usd(session_id, amount, await self._usd_capped_async(session_id))
        try:
            return await self.store.areserve(
                session_id, call_id, amount.tokens, amount.nano_usd or 0, lease
            )
        except BudgetExceeded as error:
            self._log_refusal(error)
            raise

    async def acommit(self, session_id: str, call_id: str, usage: Amount | None) -> Settlement:
        """Async :meth:`commit`."""
        capped = await self._usd_capped_async(session_id)  # also validates session_id
        _check_id("call_id", call_id)
        if usage is None:
            return self._log_settlement(await self.store.acommit(session_id, call_id, None, 0))
        self._amount(usage, reservation=False)
        self._require_usd(session_id, usage, capped)
        settlement = await self.store.acommit(
            session_id, call_id, usage.tokens, usage.nano_usd or 0
        )
        return self._log_settlement(settlement)

    async def arelease(self, session_id: str, call_id: str) -> Settlement:
        """Async :meth:`release`."""
        _check_id("session_id", session_id)
        _check_id("call_id", call_id)
        return await self.store.arelease(session_id, call_id)

    async def aremaining(self, session_id: str) -> Balance:
        """Async :meth:`remaining`."""
        _check_id("session_id", session_id)
        return await self.store.abalance(session_id)

    async def astatement(
        self, session_id: str, *, include_children: bool = False
    ) -> list[StatementEntry]:
        """Async :meth:`statement`."""
        _check_id("session_id", session_id)
        return await self.store.astatement(session_id, include_children)

    async def areclaim_expired(self) -> int:
        """Async :meth:`reclaim_expired`."""
        return await self.store.areclaim_expired(None)

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        await self.store.aclose()

    def __repr__(self) -> str:
        return f"Ledger(store={type(self.store).__name__})"
