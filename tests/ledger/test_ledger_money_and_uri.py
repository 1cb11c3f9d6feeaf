"""Amounts from prices and usage, and choosing a store by URI."""

from __future__ import annotations

import pytest

from clear_middleware.ledger import (
    Amount,
    BudgetExceeded,
    Caps,
    Ledger,
    MemoryStore,
    SQLiteStore,
    store_from_uri,
    usd_to_nano,
)
from clear_middleware.ledger.redis_store import RedisStore
from clear_middleware.pricing import MissingPriceError, ModelPrice, PriceBook
from clear_middleware.usage import Usage

PRICE = ModelPrice(input_usd_per_token=2.5e-06, output_usd_per_token=1e-05)


def test_worst_case_amount_of_a_call():
    amount = Amount.for_call(prompt_tokens=1_200, max_output_tokens=4_000, price=PRICE)
    assert amount.tokens == 5_200
    assert amount.nano_usd == 1_200 * 2_500 + 4_000 * 10_000  # exact, no float drift


def test_settled_amount_charges_reasoning_once():
    usage = Usage(prompt_tokens=1_000, completion_tokens=3_000, reasoning_tokens=2_800)
    amount = Amount.of_usage(usage, PRICE)
    assert amount.tokens == 4_000
    assert amount.nano_usd == 1_000 * 2_500 + 3_000 * 10_000


def test_unpriced_amounts():
    assert Amount.for_call(10, 10).usd is None
    assert Amount.of_usage(Usage(1, 1)).nano_usd is None


def test_nano_usd_rounding_is_against_the_spender():
    assert usd_to_nano(2.5e-06) == 2500  # float noise does not add a nano-USD
    assert usd_to_nano(1.0000000001e-09) == 1
    assert usd_to_nano(1.5e-09) == 2  # charges round up
    assert Caps(usd=1.5e-09).nano_usd == 1  # caps round down


def test_full_flow_with_a_price_book_and_a_usd_cap():
    ledger = Ledger()
    ledger.open_session("run", Caps(usd=0.05))
    price = PriceBook().price("gpt-4o")
    worst = Amount.for_call(prompt_tokens=1_000, max_output_tokens=4_000, price=price)
    ledger.reserve("run", "call-1", worst)  # 0.0025 + 0.04 = 0.0425 USD held
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("run", "call-2", worst)
    assert info.value.dimension == "usd"
    assert info.value.available_nano_usd == 50_000_000 - 42_500_000
    usage = Usage.from_response({"usage": {"prompt_tokens": 1_003, "completion_tokens": 900,
                                           "completion_tokens_details": {"reasoning_tokens": 700}}})
    settled = ledger.commit("run", "call-1", Amount.of_usage(usage, price))
    assert settled.charged_nano_usd == 1_003 * 2_500 + 900 * 10_000
    assert ledger.remaining("run").available_nano_usd == 50_000_000 - settled.charged_nano_usd
    with pytest.raises(MissingPriceError, match="unknown-model"):
        PriceBook().price("unknown-model")  # so no Amount, hence no $0 charge, can be built


def test_store_from_uri(tmp_path, redis_server):
    assert isinstance(store_from_uri("memory://"), MemoryStore)
    sqlite_store = store_from_uri(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(sqlite_store, SQLiteStore) and sqlite_store.path == tmp_path / "x.db"
    sqlite_store.close()
    redis_store = store_from_uri(redis_server.url, namespace="uri-test")
    assert isinstance(redis_store, RedisStore)
    redis_store.close()
    with Ledger(f"sqlite:///{tmp_path / 'y.db'}") as ledger:
        ledger.open_session("s", Caps(tokens=1))
        assert isinstance(ledger.store, SQLiteStore)


@pytest.mark.parametrize(
    ("uri", "error", "match"),
    [
        ("postgres://db", ValueError, "unknown ledger store URI"),
        ("sqlite://relative.db", ValueError, "sqlite URI must be"),
        ("sqlite:///", ValueError, "sqlite URI must be"),
        ("sqlite:///:memory:", ValueError, "MemoryStore"),
        (None, TypeError, "uri must be a str"),
    ],
)
def test_bad_uris(uri, error, match):
    with pytest.raises(error, match=match):
        store_from_uri(uri)


def test_bad_redis_namespace():
    with pytest.raises(ValueError, match="namespace"):
        RedisStore("redis://127.0.0.1:1/0", namespace="has space")
    with pytest.raises(ValueError, match="namespace"):
        RedisStore("redis://127.0.0.1:1/0", namespace="x'); redis.call('FLUSHALL') --")


def test_redis_down_fails_clearly_and_fast():
    import socket
    import time

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ledger = Ledger(RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout_seconds=1.0))
    started = time.monotonic()
    with pytest.raises(Exception, match="unavailable") as info:
        ledger.open_session("s", Caps(tokens=1))
    assert type(info.value).__name__ == "StoreUnavailable"
    assert time.monotonic() - started < 10
