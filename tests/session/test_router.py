"""A LiteLLM ``Router`` (object, ``model_list``, YAML or JSON config file) in place of a model
name: switching provider is a change of configuration, not of code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clear_middleware.estimators import StaticEstimator
from clear_middleware.session import BudgetSession
from clear_middleware.usage import Usage

from .conftest import EASY_ITEMS, KINDS, alogged, served_ok, server_tokens, subtask

ITEM = EASY_ITEMS[0]  # seed 0: 28 prompt + 750 completion tokens with deepscaler-1.5b


def _deployment(sim, model: str = "openai/deepscaler-1.5b") -> dict:
    return {"model_name": "reasoner",
            "litellm_params": {"model": model, "api_base": sim.base_url, "api_key": "sim"}}


def _session(router, **options) -> BudgetSession:
    return BudgetSession(budget_tokens=3000, model="reasoner", router=router,
                         estimator=StaticEstimator(KINDS), **options)


def _check_one_call(session: BudgetSession, sim, model: str) -> None:
    [result] = session.run([subtask(ITEM, "easy")], seed=0)
    assert result.status == "ok" and result.model == "reasoner"
    [served] = sim.requests
    assert served.model == model and served.requested_cap == result.tokens_allocated
    assert session.remaining().spent_tokens == server_tokens(served_ok(sim)) == (
        result.usage.total_tokens)


def test_model_list(sim) -> None:
    session = _session([_deployment(sim)])
    assert session.provider_model == "openai/deepscaler-1.5b"  # settings and token counts
    _check_one_call(session, sim, "deepscaler-1.5b")
    assert session.statement()[-1].tokens == 28 + 750


def test_router_object(sim) -> None:
    import litellm

    _check_one_call(_session(litellm.Router(model_list=[_deployment(sim)])), sim,
                    "deepscaler-1.5b")


@pytest.mark.parametrize("model", ["openai/deepscaler-1.5b", "openai/qwen3-0.6b"])
def test_yaml_config_file_switches_provider(sim, tmp_path: Path, monkeypatch, model) -> None:
    # The key stays out of the file: LiteLLM reads "os.environ/<NAME>" from the environment.
    monkeypatch.setenv("SIM_TEST_API_KEY", "sim")
    config = tmp_path / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: reasoner\n"
        "    litellm_params:\n"
        f"      model: {model}\n"
        f"      api_base: {sim.base_url}\n"
        "      api_key: os.environ/SIM_TEST_API_KEY\n"
    )
    session = _session(str(config))
    assert session.provider_model == model
    _check_one_call(session, sim, model.removeprefix("openai/"))


def test_json_config_file(sim, tmp_path: Path) -> None:
    config = tmp_path / "litellm.json"
    config.write_text(json.dumps({"model_list": [_deployment(sim)]}))
    _check_one_call(_session(config), sim, "deepscaler-1.5b")


def test_config_file_without_model_list_is_named(tmp_path: Path) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text("general_settings: {}\n")
    with pytest.raises(ValueError, match=r"router config '.*empty\.yaml' has no model_list"):
        _session(str(config))


def test_retries_through_the_router_are_the_session_s(sim) -> None:
    sim.fail_next(1, status=500)
    session = _session([_deployment(sim)])
    [result] = session.run([subtask(ITEM, "easy")], seed=0)
    assert (result.status, result.attempts, result.usage) == ("ok", 2, Usage(28, 750, 740))
    assert [q.status for q in sim.requests] == [500, 200]  # the Router itself did not retry
    assert [e.kind for e in session.statement()] == ["reserve", "release", "reserve", "commit"]


async def test_stream_through_the_router(sim) -> None:
    session = _session([_deployment(sim)])
    text = "".join([t async for t in session.astream(subtask(ITEM, "easy"), seed=0)])
    assert text == "The final answer is $\\boxed{4}$."
    [served] = await alogged(sim, 1)
    assert served.streamed and session.remaining().spent_tokens == 28 + 750
