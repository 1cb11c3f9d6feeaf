"""The text of a replayed run, built so that its token count is exactly the replayed length.

A finished run of length ``L`` is laid out as ``R`` reasoning tokens followed by ``A`` answer
tokens (``R + A = L``); a request cap that falls inside the answer shows part of it. A run cut at
its own cap has no known answer, so all of it is reasoning. The reasoning is cheap filler: the
run marker ``[[run:<id>]]`` followed by a repeated one-token word, so any slice has a known
token count and costs a string multiplication to build. The answer is
``The final answer is $\\boxed{...}$.`` with the gold answer when the run was correct, the
run's own (wrong) answer otherwise, or a sentence without an answer if it produced none.

Each reply's reasoning starts with the marker of the run it replays (counted in its tokens), so
a client continuing a partial answer sends the marker back and the same run is resumed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from clear_middleware.simulator._tokens import encoding
from clear_middleware.simulator.catalog import ReplayPlan, SweepRun

# One o200k/cl100k token, also when repeated: " think" * n is n tokens.
FILLER = " think"
RUN_MARKER = re.compile(r"\[\[run:(\d+)\]\]")

Part = Literal["reasoning", "answer"]


@dataclass(frozen=True)
class ReplayText:
    """The generated text of one reply and its token counts."""

    reasoning: str
    answer: str
    reasoning_tokens: int
    completion_tokens: int


def answer_text(run: SweepRun) -> str:
    """The visible answer of a finished run."""
    if run.correct:
        return f"The final answer is $\\boxed{{{run.gold}}}$."
    if run.answer:
        return f"The final answer is $\\boxed{{{run.answer}}}$."
    return "I could not reach a final answer."


def marker(run_id: int) -> str:
    return f"[[run:{run_id}]]"


def last_run_marker(text: str) -> int | None:
    """The run id of the last marker in ``text``, if any."""
    found = RUN_MARKER.findall(text)
    return int(found[-1]) if found else None


class _Layout:
    """Token layout of one run: reasoning span ``[0, R)``, answer span ``[R, R + A)``."""

    def __init__(self, plan: ReplayPlan) -> None:
        enc = encoding()
        run = plan.run
        self.marker_tokens = enc.encode(marker(run.run_id))
        if not run.censored:
            self.answer_tokens = enc.encode(answer_text(run))
            self.reasoning_length = max(run.length - len(self.answer_tokens), 0)
        else:
            # A cut run's answer lies beyond what is known: all of it is thinking.
            self.answer_tokens = []
            self.reasoning_length = plan.end

    def reasoning(self, n: int, *, with_marker: bool) -> str:
        """``n`` reasoning tokens of text, led by the run marker when asked (and room allows)."""
        if n <= 0:
            return ""
        if not with_marker:
            return FILLER * n
        m = len(self.marker_tokens)
        if n < m:
            return encoding().decode(self.marker_tokens[:n])
        return encoding().decode(self.marker_tokens) + FILLER * (n - m)

    def answer(self, start: int, end: int) -> str:
        """Answer text for run positions ``[start, end)`` (positions past the reasoning)."""
        r = self.reasoning_length
        lo, hi = max(start - r, 0), max(end - r, 0)
        return encoding().decode(self.answer_tokens[lo:hi]) if hi > lo else ""


def render(plan: ReplayPlan) -> ReplayText:
    """The whole reply of a plan, for a non-streamed response."""
    layout = _Layout(plan)
    n_reasoning = max(min(plan.end, layout.reasoning_length) - plan.start, 0)
    return ReplayText(
        reasoning=layout.reasoning(n_reasoning, with_marker=True),
        answer=layout.answer(plan.start, plan.end),
        reasoning_tokens=n_reasoning,
        completion_tokens=plan.completion_tokens,
    )


def chunks(plan: ReplayPlan, chunk_tokens: int) -> Iterator[tuple[Part, str, int]]:
    """The reply as ``(part, text, tokens)`` pieces of at most ``chunk_tokens`` tokens each."""
    layout = _Layout(plan)
    position = plan.start
    reasoning_end = min(plan.end, layout.reasoning_length)
    first = True
    while position < reasoning_end:
        n = min(chunk_tokens, reasoning_end - position)
        if first and n < len(layout.marker_tokens):
            n = min(len(layout.marker_tokens), reasoning_end - position)  # keep it whole
        yield "reasoning", layout.reasoning(n, with_marker=first), n
        position += n
        first = False
    while position < plan.end:
        n = min(chunk_tokens, plan.end - position)
        yield "answer", layout.answer(position, position + n), n
        position += n
