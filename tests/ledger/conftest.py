"""Fixtures of the ledger tests: a private redis-server, a fake clock, stores of each kind."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clear_middleware.ledger import Ledger, MemoryStore, SQLiteStore
from clear_middleware.ledger.redis_store import RedisStore
from tests.redis_server import RedisServer

STORE_KINDS = ["memory", "sqlite", "redis"]


class FakeClock:
    """Epoch seconds that move only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendfsync="everysec")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., object]]:
    """Build a store of a kind ("memory", "sqlite", "redis"); closed after the test."""
    made: list[object] = []

    def make(kind: str, clock: Callable[[], float] | None = None, name: str = "ledger"):
        if kind == "memory":
            store = MemoryStore(**({"clock": clock} if clock else {}))
        elif kind == "sqlite":
            store = SQLiteStore(tmp_path / f"{name}.db", **({"clock": clock} if clock else {}))
        elif kind == "redis":
            server = request.getfixturevalue("redis_server")
            # A fresh namespace per test isolates tests sharing the session's server.
            store = RedisStore(server.url, namespace=f"t-{uuid.uuid4().hex}", clock=clock)
        else:
            raise ValueError(kind)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture(params=STORE_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def ledger(kind: str, make_store: Callable[..., object], clock: FakeClock) -> Ledger:
    """A Ledger on each kind of store, driven by the fake clock."""
    return Ledger(make_store(kind, clock))
