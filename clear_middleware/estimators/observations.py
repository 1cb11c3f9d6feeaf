"""What estimators learn from, kept where the ledger keeps budgets (memory, SQLite, Redis).

Every settled call appends one :class:`Observation` (its cap, tokens generated, whether it
finished on its own) under a key such as ``"model|kind"``; a correctness report appends an
outcome record for that call id. The log is append-only (so any number of workers on SQLite or
Redis can write to it without coordination) and bounded: only the most recent ``window``
records per key are kept. Records hold ids and counts, never prompt or answer text.

Choose the backend with the ledger's URI: ``observation_log("sqlite:///budget.db")`` uses a
table of its own in the same database file, ``"redis://..."`` a list per key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

DEFAULT_WINDOW = 4000


@dataclass(frozen=True)
class Observation:
    """One settled call, or a correctness report about one.

    Attributes:
        call_id: the ledger call id.
        cap: output cap it ran under (tokens; 0 for an outcome record).
        tokens: tokens generated, reasoning included (0 for an outcome record).
        finished: it stopped on its own before the cap (else its length is censored: > cap).
        hint: the subtask's difficulty hint, if any.
        correct: correctness reported by the application (``None`` = not reported).
        outcome_only: this record only reports ``correct`` for an earlier call.
    """

    call_id: str
    cap: int = 0
    tokens: int = 0
    finished: bool = False
    hint: str | None = None
    correct: bool | None = None
    outcome_only: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Observation:
        return cls(**json.loads(text))


class ObservationLog(Protocol):
    """Append-only, bounded logs of observations per key."""

    def append(self, key: str, observation: Observation) -> None: ...

    def read(self, key: str) -> list[Observation]:
        """The key's records, oldest first (at most the window)."""
        ...

    def version(self, key: str) -> int:
        """A counter that changes whenever the key's log does (for refit caching)."""
        ...


class MemoryObservationLog:
    """In-process logs (thread-safe)."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self._logs: dict[str, deque[Observation]] = {}
        self._counts: dict[str, int] = {}
        self._window = window
        self._lock = threading.Lock()

    def append(self, key: str, observation: Observation) -> None:
        with self._lock:
            self._logs.setdefault(key, deque(maxlen=self._window)).append(observation)
            self._counts[key] = self._counts.get(key, 0) + 1

    def read(self, key: str) -> list[Observation]:
        with self._lock:
            return list(self._logs.get(key, ()))

    def version(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)


class SQLiteObservationLog:
    """Logs in a table of the ledger's SQLite file (WAL; safe across processes)."""

    def __init__(self, path: str | Path, window: int = DEFAULT_WINDOW) -> None:
        self.path = Path(path)
        self._window = window
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS estimator_observations ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, record TEXT NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS estimator_observations_key "
                         "ON estimator_observations (key, seq)")

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def append(self, key: str, observation: Observation) -> None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO estimator_observations (key, record) VALUES (?, ?)",
                         (key, observation.to_json()))
            conn.execute(
                "DELETE FROM estimator_observations WHERE key = ? AND seq <= ("
                " SELECT seq FROM estimator_observations WHERE key = ?"
                " ORDER BY seq DESC LIMIT 1 OFFSET ?)", (key, key, self._window))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def read(self, key: str) -> list[Observation]:
        rows = self._connect().execute(
            "SELECT record FROM estimator_observations WHERE key = ? ORDER BY seq", (key,))
        return [Observation.from_json(r[0]) for r in rows]

    def version(self, key: str) -> int:
        row = self._connect().execute(
            "SELECT MAX(seq) FROM estimator_observations WHERE key = ?", (key,)).fetchone()
        return int(row[0] or 0)


class RedisObservationLog:
    """A Redis list per key (``RPUSH`` + ``LTRIM`` in one transaction) and a version counter."""

    def __init__(self, url: str, window: int = DEFAULT_WINDOW,
                 namespace: str = "clear-estimator") -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._window = window
        self._namespace = namespace

    def _keys(self, key: str) -> tuple[str, str]:
        return f"{self._namespace}:{{{key}}}:log", f"{self._namespace}:{{{key}}}:version"

    def append(self, key: str, observation: Observation) -> None:
        log, version = self._keys(key)
        pipe = self._client.pipeline(transaction=True)
        pipe.rpush(log, observation.to_json())
        pipe.ltrim(log, -self._window, -1)
        pipe.incr(version)
        pipe.execute()

    def read(self, key: str) -> list[Observation]:
        log, _ = self._keys(key)
        return [Observation.from_json(r) for r in self._client.lrange(log, 0, -1)]

    def version(self, key: str) -> int:
        _, version = self._keys(key)
        return int(self._client.get(version) or 0)


def observation_log(uri: str | None = None, **options: Any) -> ObservationLog:
    """The log for a ledger store URI: ``memory://`` (default), ``sqlite:///path.db``,
    ``redis://host:port/db``."""
    if uri is None:
        return MemoryObservationLog(**options)
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "memory":
        return MemoryObservationLog(**options)
    if scheme == "sqlite":
        return SQLiteObservationLog(uri[len("sqlite:///"):], **options)
    if scheme in ("redis", "rediss", "unix"):
        return RedisObservationLog(uri, **options)
    raise ValueError(f"unknown store URI {uri!r}: use 'memory://', 'sqlite:///path.db' or "
                     "'redis://host:port/db'")
