"""Usage: validation and reading OpenAI / LiteLLM / Responses-API usage shapes."""

from types import SimpleNamespace

import pytest

from clear_middleware.usage import Usage


def test_total_counts_reasoning_once():
    usage = Usage(prompt_tokens=10, completion_tokens=50, reasoning_tokens=40)
    assert usage.total_tokens == 60
    assert usage.visible_completion_tokens == 10


@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens", "reasoning_tokens"])
def test_negative_counts_rejected_naming_the_field(field):
    kwargs = {"prompt_tokens": 1, "completion_tokens": 1, "reasoning_tokens": 0, field: -1}
    with pytest.raises(ValueError, match=field):
        Usage(**kwargs)


@pytest.mark.parametrize("bad", [1.5, True, "3", None])
def test_non_int_counts_rejected(bad):
    with pytest.raises(TypeError, match="prompt_tokens"):
        Usage(prompt_tokens=bad)


def test_reasoning_larger_than_completion_rejected():
    with pytest.raises(ValueError, match="reasoning_tokens must be <= completion_tokens"):
        Usage(prompt_tokens=1, completion_tokens=2, reasoning_tokens=3)


def test_from_chat_completions_dict():
    response = {
        "id": "x",
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 300,
            "total_tokens": 420,
            "completion_tokens_details": {"reasoning_tokens": 256},
        },
    }
    assert Usage.from_response(response) == Usage(120, 300, 256)


def test_from_litellm_model_response_object():
    # Shape of litellm.ModelResponse / openai ChatCompletion: attributes, details object.
    details = SimpleNamespace(reasoning_tokens=7, audio_tokens=None)
    usage = SimpleNamespace(prompt_tokens=5, completion_tokens=9, completion_tokens_details=details)
    assert Usage.from_response(SimpleNamespace(usage=usage, choices=[])) == Usage(5, 9, 7)


def test_from_real_litellm_usage_object():
    from litellm.types.utils import ModelResponse
    from litellm.types.utils import Usage as LiteUsage

    lite = LiteUsage(
        prompt_tokens=11, completion_tokens=22, total_tokens=33,
        completion_tokens_details={"reasoning_tokens": 20},
    )
    assert Usage.from_response(ModelResponse(usage=lite)) == Usage(11, 22, 20)
    # A ModelResponse built without usage carries none: we must not read it as zero.
    assert Usage.from_response(ModelResponse()) is None


def test_from_responses_api_shape():
    response = {
        "usage": {
            "input_tokens": 40,
            "output_tokens": 90,
            "output_tokens_details": {"reasoning_tokens": 64},
        }
    }
    assert Usage.from_response(response) == Usage(40, 90, 64)


def test_usage_block_itself_and_none_details():
    block = {"prompt_tokens": 3, "completion_tokens": 4, "completion_tokens_details": None}
    assert Usage.from_response(block) == Usage(3, 4, 0)


def test_reasoning_reported_beside_completion_is_added():
    response = {"usage": {"prompt_tokens": 1, "completion_tokens": 10,
                          "completion_tokens_details": {"reasoning_tokens": 30}}}
    assert Usage.from_response(response) == Usage(1, 40, 30)


@pytest.mark.parametrize(
    "response",
    [None, {}, {"choices": []}, {"usage": None}, {"usage": {}}, SimpleNamespace(usage=None),
     {"usage": {"total_tokens": None, "prompt_tokens": None}}],
)
def test_no_usage_reads_as_none(response):
    assert Usage.from_response(response) is None


@pytest.mark.parametrize("bad", [-1, 1.5, float("nan"), float("inf")])
def test_bad_reported_counts_raise(bad):
    with pytest.raises(ValueError, match=r"usage\.prompt_tokens"):
        Usage.from_response({"usage": {"prompt_tokens": bad, "completion_tokens": 1}})


def test_docstring_examples_run():
    import doctest

    import clear_middleware.usage as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
