"""Replay texts: their token counts equal the reported usage, streamed or not."""

from __future__ import annotations

import pytest

from clear_middleware.simulator import RunCatalog, SweepRun, load_catalog
from clear_middleware.simulator._tokens import count_prompt_tokens, count_tokens
from clear_middleware.simulator.replay import answer_text, chunks, last_run_marker, render


def _catalog_item(length: int, *, correct: bool, answer: str | None) -> RunCatalog:
    run = SweepRun(7, "m", "b/q", 0, 4096, length, False, correct, answer, "\\frac{1}{2}")
    return RunCatalog([run])


def test_answer_texts() -> None:
    right = _catalog_item(300, correct=True, answer="1/2").run(7)
    wrong = _catalog_item(300, correct=False, answer="3").run(7)
    none = _catalog_item(300, correct=False, answer=None).run(7)
    assert answer_text(right) == "The final answer is $\\boxed{\\frac{1}{2}}$."
    assert answer_text(wrong) == "The final answer is $\\boxed{3}$."
    assert answer_text(none) == "I could not reach a final answer."


@pytest.mark.parametrize(
    ("model", "cap"),
    [("deepscaler-1.5b", 1024), ("deepscaler-1.5b", 16384), ("qwen3-1.7b", 3000)],
)
def test_text_has_exactly_the_reported_tokens(model: str, cap: int) -> None:
    catalog = load_catalog()
    for item in catalog.items(model)[:40]:
        plan = catalog.plan(model, item, cap, "seed:3")
        text = render(plan)
        assert text.completion_tokens == plan.completion_tokens
        assert count_tokens(text.reasoning) == text.reasoning_tokens
        assert count_tokens(text.reasoning) + count_tokens(text.answer) == plan.completion_tokens
        assert last_run_marker(text.reasoning) == plan.run.run_id
        if plan.finished:
            assert text.answer == answer_text(plan.run)
        else:
            assert text.answer == ""


def test_cut_inside_the_answer_shows_part_of_it() -> None:
    catalog = _catalog_item(300, correct=True, answer="1/2")
    plan = catalog.plan("m", "b/q", 298, "s")
    text = render(plan)
    full = answer_text(catalog.run(7))
    answer_tokens = count_tokens(full)
    assert text.reasoning_tokens == 300 - answer_tokens
    assert full.startswith(text.answer) and text.answer != full
    assert plan.finished is False and plan.completion_tokens == 298


def test_stream_chunks_add_up_to_the_whole_reply() -> None:
    catalog = load_catalog()
    plan = catalog.plan("deepscaler-1.5b", "aime24/2024-I-1", 4096, "seed:1")
    whole = render(plan)
    pieces = list(chunks(plan, 32))
    assert all(n <= 32 for _, _, n in pieces)
    assert sum(n for _, _, n in pieces) == plan.completion_tokens
    assert "".join(t for part, t, _ in pieces if part == "reasoning") == whole.reasoning
    assert "".join(t for part, t, _ in pieces if part == "answer") == whole.answer


def test_continued_text_resumes_with_the_same_count() -> None:
    catalog = load_catalog()
    first = catalog.plan("deepscaler-1.5b", "aime24/2024-I-1", 1024, "seed:1")
    prior = render(first).reasoning
    assert count_tokens(prior) == 1024
    rest = catalog.plan(
        "deepscaler-1.5b",
        "aime24/2024-I-1",
        8192,
        "other",
        already=1024,
        prefer_run_id=last_run_marker(prior),
    )
    text = render(rest)
    assert rest.run == first.run
    # The concatenation tokenizes to the sum of the two replies.
    joined = prior + text.reasoning
    assert count_tokens(joined) == 1024 + text.reasoning_tokens
    assert last_run_marker(joined) == first.run.run_id


def test_prompt_tokens_follow_openai_framing() -> None:
    messages = [{"role": "user", "content": "hello"}]
    # 3 (reply priming) + 3 (message) + 1 ("user") + 1 ("hello")
    assert count_prompt_tokens(messages) == 8
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}], "name": "bob"}]
    assert count_prompt_tokens(parts) == 8 + 1 + 1
