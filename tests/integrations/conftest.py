"""Shared set-up of the adapter tests: one local simulator over HTTP, sessions that call it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from clear_middleware.session import BudgetSession
from clear_middleware.simulator import SimulatorServer, item_marker, load_catalog

MODEL = "openai/deepscaler-1.5b"  # LiteLLM's OpenAI-compatible route to the simulator
SIM_MODEL = "deepscaler-1.5b"


@pytest.fixture(scope="package")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


def items(count: int, benchmark: str = "math500") -> list[str]:
    """The first ``count`` simulator items of a benchmark (deterministic)."""
    chosen = [i for i in load_catalog().items(SIM_MODEL) if i.startswith(benchmark + "/")]
    assert len(chosen) >= count
    return list(chosen[:count])


def questions(count: int, benchmark: str = "math500") -> list[str]:
    """Prompts naming ``count`` items, as a user would write them."""
    return [f"{item_marker(item)} Solve the problem." for item in items(count, benchmark)]


def sim_session(sim: SimulatorServer, **kwargs: Any) -> BudgetSession:
    """A session whose calls go to the simulator."""
    kwargs.setdefault("model", MODEL)
    return BudgetSession(api_base=sim.base_url, api_key="sim", **kwargs)
