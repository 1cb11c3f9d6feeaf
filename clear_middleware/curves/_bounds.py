"""Per-curve token bounds, checked once for every curve family."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import batch_shape, float_array


def token_bounds(
    n: int, min_tokens: ArrayLike, max_tokens: ArrayLike | None, saturation: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(lower, upper)`` arrays of shape ``(n,)``.

    ``min_tokens`` must be >= 0 and ``max_tokens`` >= 0 (both tokens, scalars or one per curve).
    ``max_tokens=None`` means the saturation point, or ``min_tokens`` where that is larger (a
    curve saturated below the smallest cap worth sending is still worth that cap). A curve
    whose explicit ``upper`` falls below ``lower`` cannot be funded.
    """
    lower = batch_shape("min_tokens", float_array("min_tokens", min_tokens, low=0.0), n)
    if max_tokens is None:
        upper = np.maximum(saturation, lower)
    else:
        upper = batch_shape("max_tokens", float_array("max_tokens", max_tokens, low=0.0), n)
    return lower, upper
