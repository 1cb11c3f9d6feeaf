"""Session kwargs reach LiteLLM (and the wire); statements and logs carry ids and counts only,
never API keys or prompt text."""

from __future__ import annotations

import logging

import pytest

from clear_middleware.session import BudgetSession, Subtask
from clear_middleware.simulator import item_marker

from ..dispatch.recording_server import RecordingServer
from .conftest import API_KEY, EASY_ITEMS, HARD_ITEMS, alogged

SECRET_PROMPT = "PROMPT-SENTINEL-4e1d the launch code is 0000"


def test_session_kwargs_are_sent_by_litellm() -> None:
    key = "sk-recorded-0123456789abcdef"
    with RecordingServer() as recorder:
        session = BudgetSession(budget_tokens=5000, model="openai/gpt-4o-mini",
                                api_base=recorder.url, api_key=key, temperature=0.25,
                                user="tester-1")
        [result] = session.run(["What is 2 + 2?"], seed=7)
        [sent] = recorder.requests
    assert result.status == "ok" and result.usage.total_tokens == 6  # the canned usage
    assert sent.path.endswith("/chat/completions")
    assert {k.lower(): v for k, v in sent.headers.items()}["authorization"] == f"Bearer {key}"
    body = sent.body
    assert (body["model"], body["temperature"], body["user"], body["seed"]) == (
        "gpt-4o-mini", 0.25, "tester-1", 7)
    assert body["max_tokens"] == result.tokens_allocated > 0
    assert body["messages"] == [{"role": "user", "content": "What is 2 + 2?"}]
    assert session.remaining().spent_tokens == 6
    assert key not in repr(session.statement()) and key not in repr(session)


async def test_statements_and_logs_hold_no_keys_or_prompts(sim, make_session, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="clear_middleware")
    session = make_session(budget_tokens=5000, on_unfunded="fallback",
                           fallback_model="openai/qwen3-0.6b", fallback_max_tokens=64,
                           max_concurrency=1)
    subtasks = [
        Subtask.of(f"{item_marker(EASY_ITEMS[0])} {SECRET_PROMPT}", kind="easy", id="a",
                   metadata={"sim_item": EASY_ITEMS[0]}),
        Subtask.of([{"role": "system", "content": SECRET_PROMPT},
                    {"role": "user", "content": f"{item_marker(EASY_ITEMS[1])} solve"}],
                   kind="easy", id="b"),
        Subtask.of(f"{item_marker(HARD_ITEMS[0])} {SECRET_PROMPT}", kind="hard", id="c"),
    ]
    sim.fail_next(1, status=500)  # a released and retried call, too
    results = await session.arun(subtasks, seed=0)
    assert [(r.status, r.fallback) for r in results] == [
        ("ok", False), ("ok", False), ("ok", True)]
    async for _ in session.astream(subtasks[0], seed=0):
        pass
    await alogged(sim, 5)

    statement = session.statement()
    assert {e.kind for e in statement} == {"reserve", "release", "commit"}
    text = repr(statement) + repr(session.remaining()) + str(session.plan(subtasks))
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("clear_middleware")]
    assert ours  # the ledger did log its decisions
    for haystack in (text, *ours):
        assert API_KEY not in haystack
        assert "PROMPT-SENTINEL" not in haystack and "launch code" not in haystack
        assert "[[item:" not in haystack  # no prompt text at all, not even the marker


def test_api_key_shaped_session_ids_are_refused(sim, make_session) -> None:
    session = make_session(budget_tokens=3000, session_id="sk-live-0123456789")
    with pytest.raises(ValueError, match="session_id looks like an API key"):
        session.run([Subtask.of(f"{item_marker(EASY_ITEMS[0])} solve", kind="easy")])
    assert sim.requests == []
