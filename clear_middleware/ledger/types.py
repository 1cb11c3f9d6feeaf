"""Shared contracts of the session budget ledger: caps, amounts, results, errors.

Units: tokens are ints; money is USD at the public boundary and exact integer nano-USD
(1e-9 USD) inside stores, so SQLite arithmetic and Redis Lua never drift. Conversion rounds
against the spender: an amount charged or reserved rounds UP to the next nano-USD, a cap rounds
DOWN. Stores hold at most :data:`MAX_UNITS` of either unit (2**53 - 1, what a Lua double holds
exactly: ~9 million USD in nano-USD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from clear_middleware.pricing import ModelPrice
    from clear_middleware.usage import Usage

__all__ = [
    "MAX_UNITS",
    "NANO_PER_USD",
    "Amount",
    "Balance",
    "BudgetExceeded",
    "CallStateError",
    "Caps",
    "EntryKind",
    "LedgerError",
    "Reservation",
    "SessionConflict",
    "SessionInfo",
    "Settlement",
    "StatementEntry",
    "StoreUnavailable",
    "UnknownCall",
    "UnknownSession",
    "nano_to_usd",
    "usd_to_nano",
]

NANO_PER_USD = 1_000_000_000
MAX_UNITS = 2**53 - 1
_MAX_USD = MAX_UNITS / NANO_PER_USD

EntryKind = Literal["reserve", "commit", "release", "refuse", "expire"]


def _check_tokens(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in [0, {MAX_UNITS}] (tokens), got {value!r}")
    if not 0 <= value <= MAX_UNITS:
        raise ValueError(f"{name} must be an int in [0, {MAX_UNITS}] (tokens), got {value!r}")
    return value


def _check_usd(name: str, value: object) -> float:
    bound = MAX_UNITS / NANO_PER_USD
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float in [0, {bound:.0f}] (USD), got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= bound:
        raise ValueError(f"{name} must be a finite float in [0, {bound:.0f}] (USD), got {value!r}")
    return float(value)


def usd_to_nano(usd: float, *, round_up: bool = True) -> int:
    """USD -> integer nano-USD; rounds up (charges) or down (caps) after removing float noise."""
    # round(..., 3) first: 2.5e-06 * 1e9 is 2500.0000000000005 in binary floating point, and
    # must not become 2501 nano-USD.
    scaled = round(usd * NANO_PER_USD, 3)
    return math.ceil(scaled) if round_up else math.floor(scaled)


def nano_to_usd(nano: int) -> float:
    """Integer nano-USD -> USD."""
    return nano / NANO_PER_USD


@dataclass(frozen=True, slots=True)
class Caps:
    """Spending caps of one session; ``None`` means no limit in that unit.

    Attributes:
        tokens: most tokens (prompt + completion, reasoning included) the session may spend.
        usd: most USD the session may spend. Every amount reserved or committed in a session
            whose chain has a USD cap must then carry a USD price.
    """

    tokens: int | None = None
    usd: float | None = None

    def __post_init__(self) -> None:
        if self.tokens is not None:
            _check_tokens("caps.tokens", self.tokens)
        if self.usd is not None:
            _check_usd("caps.usd", self.usd)

    @property
    def nano_usd(self) -> int | None:
        """The USD cap in nano-USD, rounded down (a cap never grows by rounding)."""
        return None if self.usd is None else usd_to_nano(self.usd, round_up=False)


@dataclass(frozen=True, slots=True)
class Amount:
    """Tokens and USD of one reservation or one settled call.

    Attributes:
        tokens: tokens (>= 0), reasoning included.
        usd: USD (>= 0, finite), or ``None`` when the model is not priced. ``None`` is refused
            wherever a USD cap applies: an unpriced call never counts as $0 against a USD cap.
    """

    tokens: int = 0
    usd: float | None = None

    def __post_init__(self) -> None:
        # Inline fast path (amounts are built once per call); the helpers explain failures.
        tokens, usd = self.tokens, self.usd
        if type(tokens) is not int or not 0 <= tokens <= MAX_UNITS:
            _check_tokens("amount.tokens", tokens)
        if usd is not None and not (type(usd) is float and 0.0 <= usd <= _MAX_USD):
            _check_usd("amount.usd", usd)

    @property
    def nano_usd(self) -> int | None:
        """USD in nano-USD, rounded up (never under-charges), or ``None`` if unpriced."""
        usd = self.usd
        return None if usd is None else math.ceil(round(usd * NANO_PER_USD, 3))

    @classmethod
    def for_call(
        cls, prompt_tokens: int, max_output_tokens: int, price: ModelPrice | None = None
    ) -> Amount:
        """The worst case of a call: its prompt plus the whole output cap, priced if given.

        ``max_output_tokens`` is the completion cap sent to the provider (reasoning included).
        """
        _check_tokens("prompt_tokens", prompt_tokens)
        _check_tokens("max_output_tokens", max_output_tokens)
        usd = None if price is None else price.cost_usd(prompt_tokens, max_output_tokens)
        return cls(prompt_tokens + max_output_tokens, usd)

    @classmethod
    def of_usage(cls, usage: Usage, price: ModelPrice | None = None) -> Amount:
        """What a settled call cost: ``usage.total_tokens`` and, if priced, its USD."""
        from clear_middleware.pricing import cost_usd

        return cls(usage.total_tokens, None if price is None else cost_usd(usage, price))


class SessionInfo(NamedTuple):
    """A session's fixed settings: caps, parent (whose caps also bind), default lease."""

    session_id: str
    caps: Caps
    parent: str | None
    lease_seconds: float


class Reservation(NamedTuple):
    """Budget held for one call until it is committed, released, or its lease expires.

    ``expires_at`` is the lease end in epoch seconds (the store's clock). ``replayed`` is True
    when the same reserve was sent again and the existing reservation is returned.
    """

    session_id: str
    call_id: str
    tokens: int
    nano_usd: int
    expires_at: float
    replayed: bool = False

    @property
    def usd(self) -> float:
        """Reserved USD."""
        return nano_to_usd(self.nano_usd)


class Settlement(NamedTuple):
    """Outcome of a commit or release.

    Attributes:
        kind: "commit" (spend charged) or "release" (nothing charged).
        charged_tokens / charged_nano_usd: spend added to the session (0 for a release).
        reserved_tokens / reserved_nano_usd: reservation settled now and returned to the
            pool (0 when the lease had already expired and returned it).
        over_reservation: a commit charged more than was reserved, in tokens or USD.
        reason: comma-separated flags: "no_usage" (charged at its reservation),
            "after_expiry" (lease had expired), "already_released", "expired".
        replayed: the call was already settled; this returns its outcome, nothing changed.
    """

    session_id: str
    call_id: str
    kind: Literal["commit", "release"]
    charged_tokens: int
    charged_nano_usd: int
    reserved_tokens: int
    reserved_nano_usd: int
    over_reservation: bool = False
    reason: str = ""
    replayed: bool = False

    @property
    def charged_usd(self) -> float:
        """Charged USD."""
        return nano_to_usd(self.charged_nano_usd)

    @property
    def returned_tokens(self) -> int:
        """Reserved tokens that went back to the pool (never negative)."""
        return max(0, self.reserved_tokens - self.charged_tokens)


class StatementEntry(NamedTuple):
    """One recorded decision. Ids and counts only: never keys, prompts or answers.

    ``tokens`` / ``nano_usd``: the amount of the decision (reserved, charged, released,
    expired, or requested for a refusal). ``reserved_tokens`` / ``reserved_nano_usd``: how much
    reservation it took from (commit, release, expire) or added to (reserve) the pool, so
    ``reserved now == sum(reserve) - sum(reserved of commit, release, expire)`` and
    ``spent == sum(tokens of commit)``. ``seq`` orders entries across the whole store;
    ``time`` is epoch seconds.
    """

    seq: int
    session_id: str
    call_id: str
    kind: EntryKind
    tokens: int
    nano_usd: int
    reserved_tokens: int
    reserved_nano_usd: int
    time: float
    over_reservation: bool = False
    reason: str = ""

    @property
    def usd(self) -> float:
        """The entry's amount in USD."""
        return nano_to_usd(self.nano_usd)


class Balance(NamedTuple):
    """A session's counters and what it may still reserve (its caps and every ancestor's).

    ``available_*`` is ``None`` when no cap applies in that unit, and negative when a commit
    larger than its reservation pushed spend over a cap (further reservations are refused).
    Spent and reserved counters include the session's sub-sessions.
    """

    session_id: str
    caps: Caps
    parent: str | None
    spent_tokens: int
    spent_nano_usd: int
    reserved_tokens: int
    reserved_nano_usd: int
    available_tokens: int | None
    available_nano_usd: int | None

    @property
    def spent_usd(self) -> float:
        """Committed USD."""
        return nano_to_usd(self.spent_nano_usd)

    @property
    def reserved_usd(self) -> float:
        """USD held by open reservations."""
        return nano_to_usd(self.reserved_nano_usd)

    @property
    def available_usd(self) -> float | None:
        """USD that may still be reserved (``None`` = no USD cap)."""
        return None if self.available_nano_usd is None else nano_to_usd(self.available_nano_usd)

    @property
    def over_cap(self) -> bool:
        """True when committed + reserved spend exceeds a cap of this session or an ancestor."""
        return (self.available_tokens is not None and self.available_tokens < 0) or (
            self.available_nano_usd is not None and self.available_nano_usd < 0
        )


class LedgerError(Exception):
    """Base of the ledger's errors."""


class BudgetExceeded(LedgerError):
    """A reservation does not fit in the session or one of its ancestors; nothing was held.

    Attributes:
        session_id, call_id: the refused call.
        binding_session_id: the session (the call's own or an ancestor) whose cap refused it.
        dimension: "tokens" or "usd".
        requested_tokens, requested_nano_usd: what was asked.
        available_tokens, available_nano_usd: what the binding chain had left (``None`` =
            unlimited in that unit; may be negative when already over cap).
    """

    def __init__(
        self,
        *,
        session_id: str,
        call_id: str,
        binding_session_id: str,
        dimension: Literal["tokens", "usd"],
        requested_tokens: int,
        requested_nano_usd: int,
        available_tokens: int | None,
        available_nano_usd: int | None,
    ) -> None:
        self.session_id = session_id
        self.call_id = call_id
        self.binding_session_id = binding_session_id
        self.dimension = dimension
        self.requested_tokens = requested_tokens
        self.requested_nano_usd = requested_nano_usd
        self.available_tokens = available_tokens
        self.available_nano_usd = available_nano_usd
        if dimension == "tokens":
            detail = f"requested {requested_tokens} tokens, available {available_tokens}"
        else:
            available = None if available_nano_usd is None else nano_to_usd(available_nano_usd)
            detail = (
                f"requested {nano_to_usd(requested_nano_usd):.9f} USD, "
                f"available {available if available is None else f'{available:.9f}'}"
            )
        super().__init__(
            f"call {call_id!r} refused: {dimension} cap of session {binding_session_id!r}: "
            f"{detail}"
        )

    @property
    def requested(self) -> Amount:
        """What the refused call asked for."""
        return Amount(self.requested_tokens, nano_to_usd(self.requested_nano_usd))

    def __reduce__(self):  # keyword-only __init__: keep exceptions picklable across processes
        return (_rebuild_budget_exceeded, (self.__dict__.copy(),))


def _rebuild_budget_exceeded(state: dict) -> BudgetExceeded:
    return BudgetExceeded(**state)


class UnknownSession(LedgerError, LookupError):
    """No session with this id was opened in the store (or its retention expired)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"unknown session {session_id!r}: open it first with open_session()")

    def __reduce__(self):
        return (type(self), (self.session_id,))


class UnknownCall(LedgerError, LookupError):
    """Commit or release of a call id that was never reserved in this session."""

    def __init__(self, session_id: str, call_id: str) -> None:
        self.session_id = session_id
        self.call_id = call_id
        super().__init__(f"unknown call {call_id!r} in session {session_id!r}: reserve it first")

    def __reduce__(self):
        return (type(self), (self.session_id, self.call_id))


class CallStateError(LedgerError, ValueError):
    """The call id is in a state that forbids the operation (e.g. commit after release)."""


class SessionConflict(LedgerError, ValueError):
    """open_session() of an existing id with different caps or parent."""


class StoreUnavailable(LedgerError, ConnectionError):
    """The store cannot be reached (Redis down, SQLite locked past its timeout).

    The operation may or may not have been applied: retry it with the same call id, which is
    safe because every operation is idempotent by call id.
    """
