"""Prices from LiteLLM's local cost map, overrides, and the cost arithmetic."""

import math
import os
import subprocess
import sys

import pytest

from clear_middleware.pricing import MissingPriceError, ModelPrice, PriceBook, cost_usd
from clear_middleware.usage import Usage


def test_gpt4o_price_from_litellm_local_map():
    price = PriceBook().price("gpt-4o")
    assert price.input_usd_per_token == 2.5e-06
    assert price.output_usd_per_token == 1e-05


def test_provider_prefix_falls_back_to_bare_name():
    assert PriceBook().price("openai/gpt-4o").input_usd_per_token == 2.5e-06


def test_reasoning_priced_as_output_and_not_double_counted():
    price = ModelPrice(input_usd_per_token=1e-06, output_usd_per_token=4e-06)
    usage = Usage(prompt_tokens=1000, completion_tokens=3000, reasoning_tokens=2500)
    # 1000 * 1e-6 + 3000 * 4e-6 (reasoning is inside the 3000) = 0.013
    assert cost_usd(usage, price) == pytest.approx(0.013, rel=1e-12)
    assert price.cost_usd(1000, 3000, 2500) == pytest.approx(0.013, rel=1e-12)


def test_distinct_reasoning_rate_replaces_output_rate_for_that_part():
    price = ModelPrice(1e-06, 4e-06, reasoning_usd_per_token=2e-06)
    usage = Usage(prompt_tokens=0, completion_tokens=100, reasoning_tokens=60)
    assert cost_usd(usage, price) == pytest.approx(40 * 4e-06 + 60 * 2e-06, rel=1e-12)


def test_long_context_tier_applies_above_threshold():
    price = PriceBook().price("gemini/gemini-2.5-pro")
    assert price.tiers and price.tiers[0].above_prompt_tokens == 200_000
    small = cost_usd(Usage(200_000, 0), price)
    large = cost_usd(Usage(200_001, 0), price)
    assert small == pytest.approx(200_000 * 1.25e-06)
    assert large == pytest.approx(200_001 * 2.5e-06)


def test_overrides_win_and_do_not_touch_litellm_global_map():
    import litellm

    book = PriceBook({"gpt-4o": {"input_cost_per_token": 1e-09, "output_cost_per_token": 2e-09},
                      "my-local-model": {"input_cost_per_token": 0.0,
                                         "output_cost_per_token": 0.0}})
    assert book.price("gpt-4o").input_usd_per_token == 1e-09
    assert book.price("my-local-model").output_usd_per_token == 0.0  # explicit, allowed
    assert litellm.model_cost["gpt-4o"]["input_cost_per_token"] == 2.5e-06
    assert "my-local-model" not in litellm.model_cost


def test_register_with_litellm_is_explicit():
    import litellm

    name = "clear-test-model-registered"
    book = PriceBook({name: {"input_cost_per_token": 3e-06, "output_cost_per_token": 5e-06}})
    assert name not in litellm.model_cost
    book.register_with_litellm()
    try:
        assert litellm.model_cost[name]["input_cost_per_token"] == 3e-06
    finally:
        litellm.model_cost.pop(name, None)


def test_unknown_model_raises_missing_price_naming_it():
    with pytest.raises(MissingPriceError, match="no-such-model-xyz") as info:
        PriceBook().price("no-such-model-xyz")
    assert info.value.model == "no-such-model-xyz"
    assert isinstance(info.value, ValueError)


def test_override_without_output_price_rejected():
    with pytest.raises(MissingPriceError, match="output_cost_per_token"):
        PriceBook({"half": {"input_cost_per_token": 1e-06}})


def test_overrides_only_book_does_not_fall_back():
    with pytest.raises(MissingPriceError):
        PriceBook(use_litellm=False).price("gpt-4o")


@pytest.mark.parametrize("bad", [-1e-06, math.nan, math.inf])
def test_bad_prices_rejected(bad):
    with pytest.raises(ValueError, match="input_usd_per_token"):
        ModelPrice(input_usd_per_token=bad, output_usd_per_token=1e-06)


def test_lookup_uses_local_map_without_network():
    code = (
        "import os\n"
        "from clear_middleware.pricing import PriceBook\n"
        "print(PriceBook().price('gpt-4o').output_usd_per_token,"
        " os.environ['LITELLM_LOCAL_MODEL_COST_MAP'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1e-05", "True"]


def test_docstring_examples_run():
    import doctest

    import clear_middleware.pricing as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
