"""Hypothesis strategies for batches of curves."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from clear_middleware import EmpiricalCurve, ShiftedSurge


@st.composite
def surge_batches(draw, min_size: int = 1, max_size: int = 8) -> ShiftedSurge:
    n = draw(st.integers(min_size, max_size))
    floats = st.floats
    ceiling = draw(st.lists(floats(0.05, 1.0), min_size=n, max_size=n))
    threshold = draw(st.lists(floats(0.0, 3000.0), min_size=n, max_size=n))
    width = draw(st.lists(floats(40.0, 1500.0), min_size=n, max_size=n))
    return ShiftedSurge(ceiling, threshold, 1.0 / np.asarray(width))


@st.composite
def empirical_batches(draw, min_size: int = 1, max_size: int = 6) -> EmpiricalCurve:
    n = draw(st.integers(min_size, max_size))
    m = draw(st.integers(2, 12))
    steps = draw(st.lists(st.lists(st.floats(0.0, 0.3), min_size=m, max_size=m),
                          min_size=n, max_size=n))
    values = np.cumsum(np.asarray(steps), axis=1)
    values[:, 0] = 0.0
    grid = np.arange(m) * 250.0
    return EmpiricalCurve(grid, values)
