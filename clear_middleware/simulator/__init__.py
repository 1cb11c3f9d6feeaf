"""A local reasoning model for tests and benchmarks, replaying real runs of small reasoning LLMs.

``SimulatorServer`` is an OpenAI-compatible HTTP server on 127.0.0.1. Each request names a model
of the budget sweep and one of its items; the server replays one of that item's measured runs:
its length in tokens, cut at the request's cap, and its answer (the gold answer in
``\\boxed{...}`` when the run was correct). Usage is honest: the reply text has exactly the
reported number of tokens (tiktoken), reasoning included and reported as ``reasoning_tokens``.

    >>> from clear_middleware.simulator import SimulatorServer
    >>> with SimulatorServer() as sim:                  # doctest: +SKIP
    ...     litellm.completion(model="openai/deepscaler-1.5b", api_base=sim.base_url,
    ...         api_key="sim", max_tokens=4096,
    ...         messages=[{"role": "user", "content": "[[item:aime24/2024-I-1]] Solve it."}])

Besides the sweep models it serves synthetic *probe models* (default ``probe-oracle``) that
estimate an item's needed tokens with a configured log-normal noise, for measuring the probe
estimator (``clear_middleware.simulator.probe``). How items are named, how a run is chosen and
how censored runs are handled: see ``clear_middleware.simulator.protocol`` and
``clear_middleware.simulator.catalog``.

Data: "Reasoning Budget Sweep" v1.0.0 by Samir Hossain (Texas Tech University), CC-BY-4.0,
github.com/SamirHossain099/reasoning-budget-sweep (commit 3792659c); the bundled copy holds the
runs of ten of its twelve models.
"""

from clear_middleware.simulator.catalog import ReplayPlan, RunCatalog, SweepRun, load_catalog
from clear_middleware.simulator.probe import target_marker
from clear_middleware.simulator.protocol import ITEM_MARKER, SimRequest
from clear_middleware.simulator.server import ServedRequest, SimulatorServer

__all__ = [
    "ITEM_MARKER",
    "ReplayPlan",
    "RunCatalog",
    "ServedRequest",
    "SimRequest",
    "SimulatorServer",
    "SweepRun",
    "item_marker",
    "load_catalog",
    "target_marker",
]


def item_marker(item: str) -> str:
    """The marker that names an item in a prompt, e.g. ``[[item:aime24/2024-I-1]]``."""
    return f"[[item:{item}]]"
