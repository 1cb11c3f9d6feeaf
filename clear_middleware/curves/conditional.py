"""Conditioning curves on a run that has used some tokens without finishing (progressive CLEAR)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .._validation import batch_shape, float_array
from .base import UtilityCurves
from .empirical import EmpiricalCurve

DEFAULT_STEP_TOKENS = 32.0


def conditional_curve(
    curves: UtilityCurves,
    used_tokens: ArrayLike,
    *,
    finish: UtilityCurves | None = None,
    grid: ArrayLike | None = None,
) -> EmpiricalCurve:
    """``V_i(r) = (U_i(s_i + r) - U_i(s_i)) / (1 - F_i(s_i))`` on a grid of remaining tokens.

    Args:
        curves: ``U``, one per run.
        used_tokens: ``s``, tokens each run already generated (>= 0).
        finish: ``F``, probability that a run has finished (right or wrong) by ``b`` tokens;
            default ``U`` (only correct answers end a run early).
        grid: remaining-token grid of the result (default: every 32 tokens up to the largest
            remaining saturation point).
    """
    n = len(curves)
    s = batch_shape("used_tokens", float_array("used_tokens", used_tokens, low=0.0), n)
    if finish is not None and len(finish) != n:
        raise ValueError(f"finish must hold {n} curves; got {len(finish)}")
    if grid is None:
        top = float(np.max(curves.saturation_tokens() - s, initial=DEFAULT_STEP_TOKENS))
        grid = np.arange(0.0, max(top, DEFAULT_STEP_TOKENS) + DEFAULT_STEP_TOKENS,
                         DEFAULT_STEP_TOKENS)
    r = float_array("grid", grid, low=0.0)
    at_s = curves.value(s)
    finished = at_s if finish is None else finish.value(s)
    alive = np.clip(1.0 - finished, 0.0, 1.0)
    ahead = curves.value(s[:, None] + r[None, :]) - at_s[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(alive[:, None] > 1e-12, ahead / alive[:, None], 0.0)
    values = np.clip(values, 0.0, 1.0) if finish is not None else np.maximum(values, 0.0)
    values[:, 0] = 0.0
    return EmpiricalCurve(r, np.maximum.accumulate(values, axis=1))
