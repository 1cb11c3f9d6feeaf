"""From subtasks and what the session can still spend to an allocation of output caps.

A call costs its prompt plus its output, so the prompt is a fixed entry fee: the curves (over
output tokens) are shifted right by each call's prompt tokens and CLEAR allocates *total*
tokens. A long prompt therefore raises a subtask's break-even price, exactly as it should.
Under a USD cap the same is done in output-token equivalents (prompt tokens weighted by
input/output price). With both caps the allocation must satisfy both: it is solved against
each and the best one that fits both is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..allocator import Allocation, Policy, allocate
from ..curves.base import UtilityCurves
from ..pricing import ModelPrice


@dataclass(frozen=True)
class Funds:
    """What the batch may spend: tokens and/or USD (``None`` = no cap in that unit)."""

    tokens: int | None
    usd: float | None


@dataclass(frozen=True)
class OutputPlan:
    """Output caps per subtask (tokens; 0 = abandoned) and the allocation that chose them."""

    output_tokens: NDArray[np.int64]
    allocation: Allocation
    budget_tokens: int | None


def plan_outputs(
    curves: UtilityCurves,
    prompt_tokens: NDArray[np.int64],
    funds: Funds,
    price: ModelPrice | None,
    *,
    policy: Policy,
    min_output_tokens: int,
    max_output_tokens: int | None,
    granularity: int,
    model_limit: int | None = None,
) -> OutputPlan:
    """Allocate output caps under the session's remaining funds.

    Args:
        curves: predicted utility over *output* tokens, one per subtask.
        prompt_tokens: tokens each call's prompt is reserved at.
        funds: remaining tokens / USD of the session (after running calls' reservations).
        price: the model's price; required when ``funds.usd`` is set.
        min_output_tokens, max_output_tokens: bounds on a funded output cap (``None`` = each
            curve's saturation point).
        model_limit: the model's own output limit (tokens), which no cap may exceed.
        granularity: total caps are multiples of it (tokens).
    """
    prompts = prompt_tokens.astype(np.float64)
    lower = prompts + min_output_tokens
    out_cap = (curves.saturation_tokens() if max_output_tokens is None
               else np.full(len(curves), float(max_output_tokens)))
    if model_limit is not None:
        out_cap = np.minimum(out_cap, model_limit)
    out_cap = np.maximum(out_cap, min_output_tokens)
    upper = prompts + out_cap
    candidates: list[tuple[Allocation, NDArray[np.float64], int | None]] = []
    if funds.tokens is not None or funds.usd is None:
        # No token cap: a budget that covers every subtask at its cap.
        budget = funds.tokens if funds.tokens is not None else int(np.ceil(upper.sum())) + 1
        alloc = allocate(curves.shifted(prompts), max(budget, 0), policy=policy,
                         min_tokens=lower, max_tokens=upper, granularity=granularity)
        candidates.append((alloc, prompts, funds.tokens))
    if funds.usd is not None:
        assert price is not None, "a USD cap needs the model's price"
        out_rate = price.output_usd_per_token
        fee = prompts * price.input_usd_per_token / out_rate  # prompt, in output tokens
        budget = int(max(funds.usd, 0.0) / out_rate)
        alloc = allocate(curves.shifted(fee), budget, policy=policy,
                         min_tokens=fee + min_output_tokens, max_tokens=fee + out_cap,
                         granularity=granularity)
        candidates.append((alloc, fee, funds.tokens))
    best = None
    for alloc, fee, budget_tokens in candidates:
        output = np.where(alloc.funded, np.floor(alloc.tokens - fee), 0).astype(np.int64)
        output = np.where(output >= min_output_tokens, output, 0)
        if _fits(output, prompt_tokens, funds, price) and (
            best is None or alloc.expected_utility > best.allocation.expected_utility
        ):
            best = OutputPlan(output, alloc, budget_tokens)
    if best is None:  # each plan fits its own cap but not the other: shrink the larger one
        alloc, fee, budget_tokens = candidates[-1]
        output = np.where(alloc.funded, np.floor(alloc.tokens - fee), 0).astype(np.int64)
        best = OutputPlan(_shrink_to_fit(output, prompt_tokens, funds, price), alloc,
                          budget_tokens)
    return best


def _fits(output, prompts, funds: Funds, price: ModelPrice | None) -> bool:
    funded = output > 0
    if funds.tokens is not None and int((output + prompts)[funded].sum()) > funds.tokens:
        return False
    if funds.usd is not None and price is not None:
        usd = price.input_usd_per_token * prompts[funded].sum() + (
            price.output_usd_per_token * output[funded].sum())
        if usd > funds.usd + 1e-12:
            return False
    return True


def _shrink_to_fit(output, prompts, funds: Funds, price: ModelPrice | None):
    """Drop the most expensive funded subtasks until both caps hold (rare: both caps bind)."""
    output = output.copy()
    for i in np.argsort(-(output + prompts)):
        if _fits(output, prompts, funds, price):
            break
        output[i] = 0
    return output
