"""Per-curve token bounds, checked once for every curve family."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import batch_shape, float_array


def token_bounds(
    n: int, min_tokens: ArrayLike, max_tokens: ArrayLike | None, saturation: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(lower, upper)`` arrays of shape ``(n,)``; ``max_tokens=None`` means the saturation point.

    ``min_tokens`` must be >= 0 and ``max_tokens`` >= 0 (both tokens, scalars or one per curve).
    A curve whose ``upper`` falls below ``lower`` simply cannot be funded.
    """
    lower = batch_shape("min_tokens", float_array("min_tokens", min_tokens, low=0.0), n)
    if max_tokens is None:
        upper = saturation.astype(np.float64, copy=True)
    else:
        upper = batch_shape("max_tokens", float_array("max_tokens", max_tokens, low=0.0), n)
    return lower, upper
