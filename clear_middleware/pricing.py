"""USD prices per token, from LiteLLM's local model cost map plus user overrides.

Prices come from ``litellm.model_cost`` (loaded from the map LiteLLM ships, never fetched:
``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set before the lazy import). Users override or add
models in the ``litellm.register_model`` convention::

    {"my-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06}}

Overrides live in a :class:`PriceBook` and do not touch LiteLLM's global map unless
:meth:`PriceBook.register_with_litellm` is called.

Reasoning tokens are priced as output. In OpenAI-shaped usage ``completion_tokens`` already
INCLUDES ``reasoning_tokens``, so :func:`cost_usd` charges ``completion_tokens`` once at the
output price and never adds reasoning on top (only a model with a distinct
``output_cost_per_reasoning_token`` prices that part of the completion differently).

A model without a price raises :class:`MissingPriceError`: an unknown price never counts as $0.

>>> price = ModelPrice(input_usd_per_token=2.5e-06, output_usd_per_token=1e-05)
>>> usage = Usage(prompt_tokens=1000, completion_tokens=500, reasoning_tokens=300)
>>> round(cost_usd(usage, price), 9)
0.0075
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clear_middleware.usage import Usage

__all__ = ["MissingPriceError", "ModelPrice", "PriceBook", "cost_usd", "litellm_model_cost"]


class MissingPriceError(ValueError):
    """No input/output price is known for ``model``; USD budgets cannot treat it as free."""

    def __init__(self, model: str, detail: str = "") -> None:
        self.model = model
        message = (
            f"no price for model {model!r}: a USD budget needs input_cost_per_token and "
            "output_cost_per_token (add them with PriceBook.register({model: {...}}) in the "
            "litellm.register_model convention)"
        )
        super().__init__(message + (f"; {detail}" if detail else ""))


def _check_price(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float >= 0 (USD per token), got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite float >= 0 (USD per token), got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Prices that apply to the whole call once its prompt exceeds ``above_prompt_tokens``."""

    above_prompt_tokens: int
    input_usd_per_token: float
    output_usd_per_token: float


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per token for one model.

    Attributes:
        input_usd_per_token: price of one prompt token (USD, >= 0).
        output_usd_per_token: price of one completion token, reasoning included (USD, >= 0).
        reasoning_usd_per_token: a distinct price for reasoning tokens, or ``None`` (the usual
            case) to price them as output.
        tiers: long-context prices (e.g. "above 200k prompt tokens"), lowest threshold first.
        model: the name the price was found under (for messages).
    """

    input_usd_per_token: float
    output_usd_per_token: float
    reasoning_usd_per_token: float | None = None
    tiers: tuple[PriceTier, ...] = ()
    model: str = ""

    def __post_init__(self) -> None:
        _check_price("input_usd_per_token", self.input_usd_per_token)
        _check_price("output_usd_per_token", self.output_usd_per_token)
        if self.reasoning_usd_per_token is not None:
            _check_price("reasoning_usd_per_token", self.reasoning_usd_per_token)

    def rates_for(self, prompt_tokens: int) -> tuple[float, float, float]:
        """(input, output, reasoning) USD per token for a call with ``prompt_tokens``."""
        rate_in, rate_out = self.input_usd_per_token, self.output_usd_per_token
        for tier in self.tiers:
            if prompt_tokens > tier.above_prompt_tokens:
                rate_in, rate_out = tier.input_usd_per_token, tier.output_usd_per_token
        reasoning = self.reasoning_usd_per_token
        return rate_in, rate_out, rate_out if reasoning is None else reasoning

    def cost_usd(
        self, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0
    ) -> float:
        """USD for a call; ``completion_tokens`` includes ``reasoning_tokens`` (not added twice)."""
        return cost_usd(Usage(prompt_tokens, completion_tokens, reasoning_tokens), self)

    @classmethod
    def from_cost_entry(cls, model: str, entry: Mapping[str, Any]) -> ModelPrice:
        """Build from a LiteLLM cost-map entry (``input_cost_per_token``, ...).

        Raises:
            MissingPriceError: the entry lacks an input or output price per token.
        """
        required = ("input_cost_per_token", "output_cost_per_token")
        missing = [k for k in required if entry.get(k) is None]
        if missing:
            raise MissingPriceError(model, f"its entry has no {' or '.join(missing)}")
        tiers = []
        for key, value in entry.items():
            found = _TIER_KEY.fullmatch(key)
            if found and value is not None:
                threshold = int(found.group(1)) * 1000
                output = entry.get(f"output_cost_per_token_above_{found.group(1)}k_tokens")
                tiers.append(
                    PriceTier(
                        threshold,
                        _check_price(key, value),
                        _check_price("output tier", output)
                        if output is not None
                        else float(entry["output_cost_per_token"]),
                    )
                )
        reasoning = entry.get("output_cost_per_reasoning_token")
        return cls(
            input_usd_per_token=_check_price(required[0], entry[required[0]]),
            output_usd_per_token=_check_price(required[1], entry[required[1]]),
            # A 0.0 reasoning price in the map means "not set", not "free reasoning".
            reasoning_usd_per_token=float(reasoning) if reasoning else None,
            tiers=tuple(sorted(tiers, key=lambda t: t.above_prompt_tokens)),
            model=model,
        )


_TIER_KEY = re.compile(r"input_cost_per_token_above_(\d+)k_tokens")


def cost_usd(usage: Usage, price: ModelPrice) -> float:
    """USD charged for ``usage`` at ``price``.

    ``prompt_tokens`` at the input rate; ``completion_tokens`` (which INCLUDES reasoning
    tokens in OpenAI usage) at the output rate; when the model has a distinct reasoning rate,
    the reasoning part of the completion is charged at that rate instead. Never charges
    reasoning tokens twice.
    """
    rate_in, rate_out, rate_reasoning = price.rates_for(usage.prompt_tokens)
    visible = usage.completion_tokens - usage.reasoning_tokens
    return (
        usage.prompt_tokens * rate_in
        + visible * rate_out
        + usage.reasoning_tokens * rate_reasoning
    )


def litellm_model_cost() -> Mapping[str, Mapping[str, Any]]:
    """LiteLLM's model cost map, from its bundled local copy (imports LiteLLM lazily)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm.model_cost


class PriceBook:
    """Model prices: user overrides first, then LiteLLM's local cost map.

    Args:
        overrides: ``{model: {"input_cost_per_token": ..., "output_cost_per_token": ...}}``,
            the ``litellm.register_model`` convention.
        use_litellm: fall back to LiteLLM's cost map (default). ``False`` = overrides only.

    >>> book = PriceBook({"my-model": {"input_cost_per_token": 1e-06,
    ...                                 "output_cost_per_token": 2e-06}}, use_litellm=False)
    >>> book.price("my-model").output_usd_per_token
    2e-06
    """

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        use_litellm: bool = True,
    ) -> None:
        self._overrides: dict[str, ModelPrice] = {}
        self._use_litellm = use_litellm
        self._raw_overrides: dict[str, dict[str, Any]] = {}
        if overrides:
            self.register(overrides)

    def register(self, model_cost: Mapping[str, Mapping[str, Any]]) -> None:
        """Add or replace prices (``litellm.register_model`` convention); validated now."""
        if not isinstance(model_cost, Mapping):
            raise TypeError("model_cost must be a dict {model: {cost fields}}")
        parsed = {m: ModelPrice.from_cost_entry(m, entry) for m, entry in model_cost.items()}
        self._overrides.update(parsed)
        self._raw_overrides.update({m: dict(e) for m, e in model_cost.items()})

    def register_with_litellm(self) -> None:
        """Also push the overrides into LiteLLM's global map (``litellm.register_model``)."""
        litellm_model_cost()
        import litellm

        litellm.register_model(dict(self._raw_overrides))

    def price(self, model: str) -> ModelPrice:
        """The price of ``model``; tries the exact name, then without its provider prefix.

        Raises:
            MissingPriceError: neither the overrides nor LiteLLM's map price ``model``.
        """
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a non-empty str, got {model!r}")
        candidates = [model]
        if "/" in model:
            candidates.append(model.split("/", 1)[1])
        for name in candidates:
            if name in self._overrides:
                return self._overrides[name]
        if self._use_litellm:
            cost_map = litellm_model_cost()
            for name in candidates:
                entry = cost_map.get(name)
                if entry is not None:
                    return ModelPrice.from_cost_entry(name, entry)
        raise MissingPriceError(model)

    def cost_usd(self, model: str, usage: Usage) -> float:
        """USD for ``usage`` of ``model`` (see :func:`cost_usd`)."""
        return cost_usd(usage, self.price(model))
