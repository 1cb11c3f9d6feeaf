"""Optional: a per-subtask token scale predicted from features of the prompt.

Off by default. The threshold of a subtask is predicted from simple features of its request
(prompt tokens, characters, maths markup counts, digits, lines; the hint as a one-hot) by a
ridge regression of ``log(tokens a correct answer needs)`` trained on past items of the kind.
The predicted scale stretches the kind's curve along the token axis:
``U_i(b) = U_kind(b * exp(mean - predicted_i))``, so a prompt predicted to need twice the
typical length gets its kind's curve stretched to twice the tokens.

Measured in ``benchmarks/prompt_features.py`` on the only texts the dev data has (MATH-500, 100
items per model); it stays off by default unless that measurement shows it beating the
History estimator with hints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ..curves.empirical import EmpiricalCurve
from ..subtask import Subtask
from ..tokens import count_text_tokens

_MARKUP = ("$", "\\frac", "\\sqrt", "^", "_", "\\cdot", "\\pi", "[asy]", "\\begin")


def prompt_text(subtask: Subtask) -> str:
    """The text of a subtask's user messages (text parts of multi-part contents)."""
    parts = []
    for message in subtask.messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)


def text_features(text: str, model: str = "gpt-4o") -> NDArray[np.float64]:
    """Numeric features of a prompt: log tokens, log characters, markup counts, digits, lines."""
    counts = [np.log1p(text.count(m)) for m in _MARKUP]
    return np.array([
        np.log1p(count_text_tokens(text, model)),
        np.log1p(len(text)),
        *counts,
        np.log1p(len(re.findall(r"\d", text))),
        np.log1p(text.count("\n")),
    ])


class RidgeScale:
    """Ridge regression of log needed tokens on features (standardised), with a hint one-hot.

    Args:
        alpha: ridge penalty (> 0) on the standardised coefficients.
    """

    def __init__(self, alpha: float = 3.0) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0; got {alpha!r}")
        self.alpha = float(alpha)
        self._hints: list[str] = []

    def _design(self, features: NDArray[np.float64], hints: Sequence[str | None]) -> NDArray:
        one_hot = np.array([[h == k for k in self._hints] for h in hints], dtype=np.float64)
        return np.hstack([features, one_hot.reshape(len(hints), len(self._hints))])

    def fit(self, features: NDArray[np.float64], hints: Sequence[str | None],
            log_tokens: NDArray[np.float64]) -> RidgeScale:
        self._hints = sorted({h for h in hints if h is not None})
        x = self._design(features, hints)
        self._mean, self._std = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = (x - self._mean) / self._std
        self._intercept = float(log_tokens.mean())
        y = log_tokens - self._intercept
        self._coef = np.linalg.solve(z.T @ z + self.alpha * np.eye(z.shape[1]), z.T @ y)
        return self

    def predict(self, features: NDArray[np.float64], hints: Sequence[str | None]) -> NDArray:
        z = (self._design(features, hints) - self._mean) / self._std
        return self._intercept + z @ self._coef


def stretch(curve_values: NDArray[np.float64], grid: NDArray[np.float64],
            factor: NDArray[np.float64]) -> EmpiricalCurve:
    """Rows ``U(b / factor_i)`` of one curve on ``grid``: a curve needing ``factor`` times the
    tokens."""
    b = grid[None, :] / np.asarray(factor, dtype=np.float64)[:, None]
    values = np.interp(b, grid, curve_values)
    values[:, 0] = 0.0
    return EmpiricalCurve(grid, np.maximum.accumulate(values, axis=1))
