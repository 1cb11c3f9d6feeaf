"""Shared set-up of the session tests: one simulator per module, reset between tests.

Every test talks to the simulator over real HTTP through LiteLLM (``openai/<sweep model>`` with
``api_base=sim.base_url``), so what the ledger charges can be checked against what the server
reports it served. The simulator is deterministic given the item, the seed and the cap.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from clear_middleware.curves import ShiftedSurge
from clear_middleware.estimators import StaticEstimator
from clear_middleware.session import BudgetSession, Subtask
from clear_middleware.simulator import ServedRequest, SimulatorServer, item_marker

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "openai/deepscaler-1.5b"  # LiteLLM's OpenAI-compatible route to the sweep model
API_KEY = "sim-key-do-not-log-7f3a"

# Two task kinds with very different curves: "easy" pays its way at almost any price, "hard"
# (emergence at 6,000 tokens) is the first to be priced out when tokens are scarce.
EASY = ShiftedSurge(ceiling=0.9, threshold=200.0, rate=1 / 300)
HARD = ShiftedSurge(ceiling=0.5, threshold=6000.0, rate=1 / 3000)
KINDS = {"easy": EASY, "hard": HARD}

# Items of the bundled sweep (deepscaler-1.5b), by the kind the tests give them.
EASY_ITEMS = (
    "math500/test/algebra/1004.json",
    "math500/test/algebra/1082.json",
    "math500/test/algebra/1265.json",
    "math500/test/algebra/1338.json",
    "math500/test/algebra/1934.json",
    "math500/test/algebra/1936.json",
)
HARD_ITEMS = ("aime24/2024-I-1", "aime24/2024-I-10", "aime24/2024-I-11")


def subtask(item: str, kind: str | None = None, **fields: Any) -> Subtask:
    """A subtask naming a sweep item (the simulator replays that item's runs)."""
    return Subtask.of(f"{item_marker(item)} Solve the problem; box the answer.", kind=kind,
                      id=fields.pop("id", item), **fields)


def batch(easy: int = 0, hard: int = 0) -> list[Subtask]:
    """``easy`` easy subtasks then ``hard`` hard ones (items from the lists above, in order)."""
    return ([subtask(i, "easy") for i in EASY_ITEMS[:easy]]
            + [subtask(i, "hard") for i in HARD_ITEMS[:hard]])


def served_ok(sim: SimulatorServer) -> list[ServedRequest]:
    """Requests the server answered with a reply (HTTP 200)."""
    return [r for r in sim.requests if r.status == 200]


def server_tokens(requests: Sequence[ServedRequest]) -> int:
    """Prompt plus completion tokens the server reported for these requests."""
    return sum(r.prompt_tokens + r.completion_tokens for r in requests)


def logged(sim: SimulatorServer, count: int, timeout_s: float = 5.0) -> list[ServedRequest]:
    """The server's log once it holds ``count`` entries (delayed and hung requests are logged
    when they end, after the client has moved on). Blocks: use :func:`alogged` in async tests,
    where the client's sockets close only while the event loop runs."""
    deadline = time.monotonic() + timeout_s
    while len(sim.requests) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return _exactly(sim, count)


async def alogged(sim: SimulatorServer, count: int, timeout_s: float = 5.0
                  ) -> list[ServedRequest]:
    """:func:`logged` for async tests."""
    deadline = time.monotonic() + timeout_s
    while len(sim.requests) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return _exactly(sim, count)


def _exactly(sim: SimulatorServer, count: int) -> list[ServedRequest]:
    requests = sim.requests
    assert len(requests) == count, f"expected {count} logged requests, got {len(requests)}"
    return requests


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_sim(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with an empty log, no faults and no pacing."""
    if "sim" not in request.fixturenames:
        yield
        return
    server: SimulatorServer = request.getfixturevalue("sim")
    server.clear_faults()
    server.clear_log()
    server.tokens_per_second = None
    yield
    server.clear_faults()
    server.release_hung()
    server.tokens_per_second = None


@pytest.fixture
def make_session(sim: SimulatorServer):
    """``make_session(budget_tokens=..., **options)``: a session on the simulator."""

    def make(**options: Any) -> BudgetSession:
        options.setdefault("model", MODEL)
        options.setdefault("estimator", StaticEstimator(KINDS))
        options.setdefault("api_base", sim.base_url)
        options.setdefault("api_key", API_KEY)
        return BudgetSession(**options)

    return make
