"""Choose a ledger store by URI, as the ``limits`` library chooses its storage.

>>> type(store_from_uri("memory://")).__name__
'MemoryStore'

* ``memory://``: :class:`~clear_middleware.ledger.memory.MemoryStore` (this process only);
* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's slashes):
  :class:`~clear_middleware.ledger.sqlite.SQLiteStore`;
* ``redis://host:port/db``, ``rediss://...`` (TLS), ``unix:///path/redis.sock``:
  :class:`~clear_middleware.ledger.redis_store.RedisStore`.

Keyword options go to the store's constructor (e.g. ``namespace=`` for Redis).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from clear_middleware.ledger.store import LedgerStore

__all__ = ["store_from_uri"]


def store_from_uri(uri: str, **options: Any) -> LedgerStore:
    """A new store for ``uri``; see the module docstring for the accepted schemes.

    Raises:
        ValueError: unknown scheme or a malformed path.
    """
    if not isinstance(uri, str):
        raise TypeError(f"uri must be a str like 'memory://', got {type(uri).__name__}")
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "memory":
        from clear_middleware.ledger.memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "sqlite":
        prefix = "sqlite:///"
        if not uri.lower().startswith(prefix) or len(uri) == len(prefix):
            raise ValueError(
                "sqlite URI must be 'sqlite:///relative.db' or 'sqlite:////abs/path.db', "
                f"got {uri!r}"
            )
        from clear_middleware.ledger.sqlite import SQLiteStore

        return SQLiteStore(uri[len(prefix):], **options)
    if scheme in ("redis", "rediss", "unix"):
        from clear_middleware.ledger.redis_store import RedisStore

        return RedisStore(uri, **options)
    raise ValueError(
        f"unknown ledger store URI {uri!r}: use 'memory://', 'sqlite:///path.db' or "
        "'redis://host:port/db'"
    )
