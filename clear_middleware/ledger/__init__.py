"""Session budget ledger: reserve -> commit / release, never overspent, on three stores.

Start with :class:`Ledger`; pick a store by URI (``"memory://"``, ``"sqlite:///budget.db"``,
``"redis://127.0.0.1:6379/0"``). See :mod:`clear_middleware.ledger.ledger` for the call flow.
The Redis store is imported lazily (it needs the optional ``redis`` extra).
"""

from clear_middleware.ledger.ledger import Ledger
from clear_middleware.ledger.memory import MemoryStore
from clear_middleware.ledger.sqlite import SQLiteStore
from clear_middleware.ledger.store import LedgerStore
from clear_middleware.ledger.types import (
    NANO_PER_USD,
    Amount,
    Balance,
    BudgetExceeded,
    CallStateError,
    Caps,
    LedgerError,
    Reservation,
    SessionConflict,
    SessionInfo,
    Settlement,
    StatementEntry,
    StoreUnavailable,
    UnknownCall,
    UnknownSession,
    nano_to_usd,
    usd_to_nano,
)
from clear_middleware.ledger.uri import store_from_uri

__all__ = [
    "NANO_PER_USD",
    "Amount",
    "Balance",
    "BudgetExceeded",
    "CallStateError",
    "Caps",
    "Ledger",
    "LedgerError",
    "LedgerStore",
    "MemoryStore",
    "RedisStore",
    "Reservation",
    "SQLiteStore",
    "SessionConflict",
    "SessionInfo",
    "Settlement",
    "StatementEntry",
    "StoreUnavailable",
    "UnknownCall",
    "UnknownSession",
    "nano_to_usd",
    "store_from_uri",
    "usd_to_nano",
]


def __getattr__(name: str) -> object:
    # redis-py is an optional extra: import RedisStore only when asked for.
    if name == "RedisStore":
        from clear_middleware.ledger.redis_store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
