"""A per-model margin over the local prompt-token estimate, learned from settled calls.

Providers count prompt tokens their own way (other tokenizers, chat templates, tool schemas
rendered differently), so the local tiktoken estimate can be low. A reservation must cover what
the provider will bill, so it reserves ``ceil(estimate * ratio(model))`` where the ratio is
learned from settled calls as ``reported / estimated`` prompt tokens:

* before ``min_observations`` settled calls of a model: ``max(prior_ratio, max observed *
  (1 + safety))``. The prior (1.5 by default) is deliberately generous: a foreign tokenizer or
  chat template can add tens of percent, and an over-estimate only holds budget in reserve
  until the commit returns it;
* afterwards: the largest ratio among the last ``window`` observations, times
  ``1 + safety``: the max rather than a quantile because one under-reserved call can cross the
  cap, and the window lets the margin shrink when a provider's counting changes;
* never below 1.0: the margin only ever adds to the local estimate.

The object is pure in-memory and thread-safe; :meth:`PromptMargin.to_dict` /
:meth:`PromptMargin.from_dict` round-trip it through JSON for persistence.

>>> margin = PromptMargin(min_observations=2, safety=0.0)
>>> margin.reserve_tokens("gpt-4o", 100)        # prior 1.5
150
>>> margin.observe("gpt-4o", estimated=100, reported=104)
>>> margin.observe("gpt-4o", estimated=200, reported=202)
>>> margin.reserve_tokens("gpt-4o", 100)        # learned: max(1.04, 1.01)
104
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["PromptMargin"]


def _positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class PromptMargin:
    """Learned ratio of provider-reported to locally estimated prompt tokens, per model.

    Args:
        prior_ratio: ratio used before enough observations (>= 1.0; default 1.5).
        safety: relative headroom over the largest observed ratio (>= 0; default 0.02).
        min_observations: settled calls needed before the prior is dropped (>= 1; default 5).
        window: most recent observations kept per model (>= 1; default 256).
    """

    def __init__(
        self,
        *,
        prior_ratio: float = 1.5,
        safety: float = 0.02,
        min_observations: int = 5,
        window: int = 256,
    ) -> None:
        self.prior_ratio = max(1.0, _positive("prior_ratio", prior_ratio))
        self.safety = _positive("safety", safety, allow_zero=True)
        if not _is_int(min_observations) or min_observations < 1:
            raise ValueError(f"min_observations must be an int >= 1, got {min_observations!r}")
        if not _is_int(window) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        self.min_observations = min_observations
        self.window = window
        self._ratios: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, model: str, *, estimated: int, reported: int) -> None:
        """Record one settled call: ``estimated`` local and ``reported`` provider prompt tokens.

        Both are token counts > 0 (a call with no reported usage teaches nothing: skip it).
        """
        est = _positive("estimated", estimated)
        rep = _positive("reported", reported)
        with self._lock:
            ratios = self._ratios.setdefault(model, deque(maxlen=self.window))
            ratios.append(rep / est)
            self._counts[model] = self._counts.get(model, 0) + 1

    def observations(self, model: str) -> int:
        """Settled calls seen for ``model`` (all time, not just the window)."""
        with self._lock:
            return self._counts.get(model, 0)

    def ratio(self, model: str) -> float:
        """The multiplier applied to ``model``'s local prompt estimate (>= 1.0)."""
        with self._lock:
            ratios = self._ratios.get(model)
            observed = max(ratios) * (1.0 + self.safety) if ratios else 0.0
            if self._counts.get(model, 0) < self.min_observations:
                observed = max(observed, self.prior_ratio)
        return max(1.0, observed)

    def reserve_tokens(self, model: str, estimated: int) -> int:
        """Prompt tokens to reserve for a call estimated locally at ``estimated`` tokens."""
        est = _positive("estimated", estimated, allow_zero=True)
        # The tiny epsilon keeps float noise (100 * 1.04 = 104.00000000000001) from
        # rounding a whole number up by one.
        return math.ceil(est * self.ratio(model) - 1e-9)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot (settings, per-model ratios in the window, counts)."""
        with self._lock:
            return {
                "prior_ratio": self.prior_ratio,
                "safety": self.safety,
                "min_observations": self.min_observations,
                "window": self.window,
                "models": {
                    model: {"ratios": list(ratios), "count": self._counts.get(model, 0)}
                    for model, ratios in self._ratios.items()
                },
            }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptMargin:
        """Rebuild from :meth:`to_dict` output (validated)."""
        margin = cls(
            prior_ratio=data.get("prior_ratio", 1.5),
            safety=data.get("safety", 0.02),
            min_observations=data.get("min_observations", 5),
            window=data.get("window", 256),
        )
        for model, state in dict(data.get("models", {})).items():
            ratios = [_positive(f"models[{model!r}].ratios[]", r) for r in state.get("ratios", [])]
            margin._ratios[model] = deque(ratios, maxlen=margin.window)
            count = state.get("count", len(ratios))
            if not _is_int(count) or count < len(ratios):
                raise ValueError(
                    f"models[{model!r}].count must be an int >= len(ratios), got {count!r}"
                )
            margin._counts[model] = count
        return margin
