"""1,000 concurrent reservations against one cap: threads, asyncio tasks, 4 processes.

Each caller reserves 50-150 tokens, then commits at most what it reserved (or releases 10% of
the time), so demand is ~3x the cap and refusals are certain. Afterwards the statement,
replayed in the store's own order, must never show committed + reserved above the cap, and
must add up exactly to the store's counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _checks import assert_never_over, assert_statement_matches

from clear_middleware.ledger import Amount, BudgetExceeded, Caps, Ledger, store_from_uri

CALLS = 1000
CAP_TOKENS = 30_000
CAP_USD = 0.03
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def check(ledger: Ledger, session: str, successes: int) -> None:
    balance = ledger.remaining(session)
    entries = ledger.statement(session, include_children=True)
    assert balance.reserved_tokens == 0
    assert balance.spent_tokens <= CAP_TOKENS
    assert balance.spent_nano_usd <= CAP_USD * 1e9
    assert_statement_matches(balance, entries)
    peak = assert_never_over(entries, CAP_TOKENS)
    counts = {kind: sum(e.kind == kind for e in entries) for kind in
              ("reserve", "refuse", "commit", "release")}
    assert counts["reserve"] + counts["refuse"] == CALLS
    assert counts["reserve"] == successes == counts["commit"] + counts["release"]
    assert counts["refuse"] > 0, "demand exceeds the cap: some calls must be refused"
    assert peak > CAP_TOKENS - 150, "the cap was actually approached"


def one_call(ledger: Ledger, session: str, i: int) -> bool:
    rng = random.Random(i)
    tokens = rng.randint(50, 150)
    try:
        ledger.reserve(session, f"c{i}", Amount(tokens, tokens * 1e-6))
    except BudgetExceeded:
        return False
    if rng.random() < 0.1:
        ledger.release(session, f"c{i}")
    else:
        used = rng.randint(1, tokens)
        ledger.commit(session, f"c{i}", Amount(used, used * 1e-6))
    return True


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_threads(kind, make_store):
    ledger = Ledger(make_store(kind))
    ledger.open_session("s", Caps(tokens=CAP_TOKENS, usd=CAP_USD))
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: one_call(ledger, "s", i), range(CALLS)))
    check(ledger, "s", sum(results))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_asyncio_tasks(kind, make_store):
    ledger = Ledger(make_store(kind))
    await ledger.aopen_session("s", Caps(tokens=CAP_TOKENS, usd=CAP_USD))

    async def call(i: int) -> bool:
        rng = random.Random(i)
        tokens = rng.randint(50, 150)
        try:
            await ledger.areserve("s", f"c{i}", Amount(tokens, tokens * 1e-6))
        except BudgetExceeded:
            return False
        await asyncio.sleep(0)  # let other tasks in between reserve and commit
        if rng.random() < 0.1:
            await ledger.arelease("s", f"c{i}")
        else:
            used = rng.randint(1, tokens)
            await ledger.acommit("s", f"c{i}", Amount(used, used * 1e-6))
        return True

    results = await asyncio.gather(*(call(i) for i in range(CALLS)))
    check(ledger, "s", sum(results))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_sub_sessions_share_the_parent_cap(kind, make_store):
    ledger = Ledger(make_store(kind))
    ledger.open_session("s", Caps(tokens=CAP_TOKENS, usd=CAP_USD))
    for k in range(4):
        ledger.open_session(f"sub{k}", Caps(tokens=CAP_TOKENS // 2), parent="s")
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: one_call(ledger, f"sub{i % 4}", i), range(CALLS)))
    check(ledger, "s", sum(results))
    for k in range(4):
        assert ledger.remaining(f"sub{k}").spent_tokens <= CAP_TOKENS // 2


def run_workers(uri: str, options: dict, session: str, barrier: Path,
                processes: int = 4) -> list[dict]:
    per_worker = CALLS // processes
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    workers = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_worker.py"), "run", uri, json.dumps(options), session,
             f"w{w}", str(per_worker), str(w), str(barrier), str(processes)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for w in range(processes)
    ]
    summaries = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        summaries.append(json.loads(out))
    return summaries


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_four_processes(kind, tmp_path, request):
    if kind == "sqlite":
        uri, options = f"sqlite:///{tmp_path / 'shared.db'}", {}
    else:
        uri = request.getfixturevalue("redis_server").url
        options = {"namespace": f"mp-{uuid.uuid4().hex}"}
    ledger = Ledger(store_from_uri(uri, **options))
    ledger.open_session("shared", Caps(tokens=CAP_TOKENS, usd=CAP_USD))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    summaries = run_workers(uri, options, "shared", barrier)
    check(ledger, "shared", sum(s["reserved"] for s in summaries))
    assert ledger.remaining("shared").spent_tokens == sum(s["committed_tokens"] for s in summaries)
    # The workers really ran at the same time: each one's span of entries overlaps the others'.
    spans: dict[str, list[int]] = {}
    for entry in ledger.statement("shared"):
        span = spans.setdefault(entry.call_id.split("-")[0], [entry.seq, entry.seq])
        span[1] = entry.seq
    assert len(spans) == 4, spans
    for first, last in spans.values():
        assert all(first < other_last and other_first < last
                   for other_first, other_last in spans.values())
    ledger.close()
