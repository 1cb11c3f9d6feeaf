"""What a session returns: the plan of a batch, and one result per subtask."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..allocator.result import Allocation
from ..usage import Usage

Status = Literal["ok", "unfunded", "error"]


@dataclass(frozen=True)
class PlannedSubtask:
    """One row of a plan.

    Attributes:
        index: position in the batch. ``subtask_id``, ``kind``: from the subtask.
        prompt_tokens: prompt tokens reserved (local estimate plus the learned margin).
        curve: the predicted curve, described.
        output_tokens: the output cap funded (tokens, reasoning included); 0 if abandoned.
        expected_utility: the curve's value at that cap (0 if abandoned).
        funded: False when the subtask is rationally abandoned at this price.
    """

    index: int
    subtask_id: str
    kind: str | None
    prompt_tokens: int
    curve: str
    output_tokens: int
    expected_utility: float
    funded: bool


@dataclass(frozen=True)
class Plan:
    """A dry run: the allocation of a batch without calling anything.

    Attributes:
        model: the model the calls would go to. ``policy``: the allocation policy.
        price: shadow price, expected utility per token (0 when the budget is slack).
        budget_tokens: tokens the batch could spend (prompts included), or ``None`` when the
            session has no cap.
        rows: one :class:`PlannedSubtask` per subtask, in order.
        expected_utility, upper_bound: totals (the bound holds for any allocation).
        allocation: the raw allocation over total tokens (prompt + output) per subtask.
    """

    model: str
    policy: str
    price: float
    budget_tokens: int | None
    rows: tuple[PlannedSubtask, ...]
    expected_utility: float
    upper_bound: float
    allocation: Allocation

    @property
    def funded(self) -> list[int]:
        return [r.index for r in self.rows if r.funded]

    @property
    def abandoned(self) -> list[int]:
        return [r.index for r in self.rows if not r.funded]

    def table(self) -> str:
        """The plan as a fixed-width table a user can print."""
        head = (f"{'#':>3}  {'id':<12} {'kind':<10} {'prompt':>6} {'output cap':>10} "
                f"{'E[utility]':>10}  {'status':<9} curve")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            status = "funded" if r.funded else "abandoned"
            lines.append(
                f"{r.index:>3}  {r.subtask_id[:12]:<12} {(r.kind or '-')[:10]:<10} "
                f"{r.prompt_tokens:>6} {r.output_tokens:>10} {r.expected_utility:>10.3f}  "
                f"{status:<9} {r.curve}"
            )
        budget = "no cap" if self.budget_tokens is None else f"{self.budget_tokens} tokens"
        lines.append(
            f"{self.policy} on {self.model}: {len(self.funded)}/{len(self.rows)} funded, "
            f"expected utility {self.expected_utility:.3f} (bound {self.upper_bound:.3f}), "
            f"price {self.price:.3g}/token, budget {budget}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


@dataclass(frozen=True)
class SubtaskResult:
    """The outcome of one subtask of a run.

    Attributes:
        index, subtask_id: which subtask.
        status: ``"ok"`` (answered), ``"unfunded"`` (not sent: priced out at ``price``), or
            ``"error"`` (the provider failed after retries; its reservations were released).
        text: the answer text (``None`` unless ok).
        usage: tokens the provider reported, summed over attempts (zeros if never sent).
        cost_usd: what it cost at the model's price (``None`` if the model has no price).
        tokens_allocated: the output cap it was funded with (0 if unfunded).
        finish_reason: the provider's (``"stop"``, ``"length"``, ...).
        price: for unfunded subtasks, the shadow price that priced them out.
        model: the model that answered (the fallback model, for a fallback).
        attempts: provider calls made. ``call_ids``: their ledger call ids.
        error: the error's type and message, for ``"error"``.
        fallback: answered by the configured fallback model instead of being unfunded.
    """

    index: int
    subtask_id: str
    status: Status
    text: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    tokens_allocated: int = 0
    finish_reason: str | None = None
    price: float | None = None
    model: str | None = None
    attempts: int = 0
    call_ids: tuple[str, ...] = ()
    error: str | None = None
    fallback: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class CallQuote:
    """What one call made outside ``run`` may spend, priced at the session's current price.

    Returned by :meth:`BudgetSession.quote`; nothing is reserved.

    Attributes:
        output_tokens: the output cap the call is funded with (tokens, reasoning included);
            0 when the call cannot be funded at this price.
        prompt_tokens: tokens its prompt would be reserved at (local estimate plus the learned
            margin).
        price: the shadow price of the plan that priced it (expected utility per token).
        expected_calls: calls like this one planned together, this one included.
        held_tokens: tokens kept back for a final call (prompt plus its output cap) and not
            offered to this one; 0 when none was asked for.
        settings: provider keyword arguments that cap the session's model at
            ``output_tokens`` (``{}`` when unfunded).
    """

    output_tokens: int
    prompt_tokens: int
    price: float
    expected_calls: int = 1
    held_tokens: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def funded(self) -> bool:
        return self.output_tokens > 0


@dataclass(frozen=True)
class CallTicket:
    """One call reserved with :meth:`BudgetSession.reserve_call`, to settle or release.

    Attributes:
        call_id: the ledger call id of the reservation.
        prompt_estimate: the local prompt-token estimate (tokens).
        prompt_tokens: prompt tokens reserved (the estimate plus the learned margin).
        output_tokens: the output cap reserved (tokens, reasoning included).
        kind, hint: from the call's subtask, for the curve estimator.
        digest: the subtask's :attr:`~clear_middleware.subtask.Subtask.digest` (per-prompt
            estimators match the settled call to their prediction with it).
        already_tokens: output tokens the run generated in earlier calls that this call
            continues (>= 0): the estimator learns from the whole run, ``already_tokens``
            plus this call's, under a cap of ``already_tokens + output_tokens``.
    """

    call_id: str
    prompt_estimate: int
    prompt_tokens: int
    output_tokens: int
    kind: str | None = None
    hint: str | None = None
    digest: str | None = None
    already_tokens: int = 0

    @property
    def reserved_tokens(self) -> int:
        """Tokens held for the call: prompt plus output cap."""
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True)
class StepQuote(CallQuote):
    """What the next step of a call spent in steps (progressive mode) may spend.

    Returned by :meth:`BudgetSession.quote_step`; nothing is reserved. ``output_tokens`` is
    the cap of the call to send now (0 = stop: priced out, or at its limit).

    Attributes:
        used_tokens: output tokens the call already generated without finishing (>= 0).
        step_tokens: new output tokens this step may generate (>= 0; 0 = stop). When the
            call restarts, ``output_tokens = used_tokens + step_tokens``; when it continues
            the partial answer, ``output_tokens = step_tokens``.
        limit_tokens: the call's largest total output (tokens): ``max_output_tokens``, else
            its curve's saturation point, never above the model's limit.
        at_limit: the call has no room left to advance (``limit_tokens - used_tokens`` is
            less than the session's granularity): a stop here is not a refusal.
    """

    used_tokens: int = 0
    step_tokens: int = 0
    limit_tokens: int = 0
    at_limit: bool = False


@dataclass(frozen=True)
class StepPlan:
    """One progressive round for subtasks that used some tokens each without finishing.

    Returned by :meth:`BudgetSession.plan_steps`; nothing is reserved. Every tuple has one
    entry per subtask, in the order given.

    Attributes:
        price: the round's shadow price (expected utility per token, >= 0; 0 when the budget
            is slack).
        used_tokens: output tokens each had generated (as given, >= 0).
        steps: new output tokens each may generate this round (>= 0; 0 = stop it now).
        output_caps: the output cap of each one's next call (tokens; 0 = stop): ``steps``
            when the call continues the partial answer, ``used_tokens + steps`` when it
            restarts.
        targets: output tokens still ahead of each at this price (>= 0): where CLEAR would
            take it, of which ``steps`` is this round's share.
        limits: the largest total output of each (tokens): ``max_output_tokens``, else its
            curve's saturation point, never above the model's limit.
        cost: tokens each one's call may spend this round: its prompt and partial answer (a
            prompt when continued, output again when restarted) plus its step (0 = stop).
        continuation: the calls continue partial answers (``False``: they restart).
        expected_utility: expected utility of the targets, conditional on what was seen.
    """

    price: float
    used_tokens: tuple[int, ...]
    steps: tuple[int, ...]
    output_caps: tuple[int, ...]
    targets: tuple[int, ...]
    limits: tuple[int, ...]
    cost: tuple[int, ...]
    continuation: bool
    expected_utility: float

    @property
    def funded(self) -> list[int]:
        """Positions of the subtasks that advance this round."""
        return [k for k, step in enumerate(self.steps) if step > 0]

    @property
    def stopped(self) -> list[int]:
        """Positions of the subtasks that stop here (priced out or at their limit)."""
        return [k for k, step in enumerate(self.steps) if step == 0]
