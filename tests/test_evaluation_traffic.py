"""The traffic-stream harness and the prompt-feature pieces (their benchmarks run elsewhere)."""

import zlib

import numpy as np
import pytest

from clear_middleware.estimators.prompt_features import RidgeScale, stretch, text_features
from clear_middleware.evaluation.traffic import (
    PROMPT_TOKENS,
    item_pool,
    kind_truth,
    make_stream,
    run_streams,
    sampling_weights,
    window_subtasks,
)
from clear_middleware.tokens import count_text_tokens


@pytest.fixture(scope="module")
def pool():
    return item_pool("qwen3-1.7b")


def test_mixes_weight_kinds_as_documented(pool):
    for mix in ("balanced", "easy-heavy", "hard-heavy", "mixed"):
        assert sampling_weights(pool, mix).sum() == pytest.approx(1.0)
    share = {mix: sampling_weights(pool, mix)[pool.kind == "math500"].sum()
             for mix in ("balanced", "easy-heavy", "hard-heavy", "mixed")}
    assert share["balanced"] == pytest.approx(1 / 3)
    assert share["mixed"] == pytest.approx(100 / 160)
    assert share["easy-heavy"] == pytest.approx(0.8) and share["hard-heavy"] == pytest.approx(0.2)
    easy = sampling_weights(pool, "easy-heavy")
    levels = np.array([h or "" for h in pool.hint])
    # Within MATH-500, a level-1-3 item is twice as likely as a level-4-5 one.
    assert easy[levels == "level-1"][0] == pytest.approx(2 * easy[levels == "level-5"][0])
    with pytest.raises(ValueError, match="mix must be one of"):
        sampling_weights(pool, "uniform")


def test_windows_and_prompts(pool):
    assert [len(w.items) for w in make_stream(pool, "balanced", 10, 8, arrivals="burst")] == [
        8, 8, 8, 8, 32, 8, 8, 8, 8, 32]
    window = make_stream(pool, "mixed", 1, 50)[0]
    subtasks = window_subtasks(pool, window)
    # Equal prompt lengths: the item marker must not make some subtasks cheaper to fund.
    assert {count_text_tokens(s.messages[0]["content"], "openai/qwen3-1.7b")
            for s in subtasks} == {PROMPT_TOKENS}
    assert [s.kind for s in subtasks] == [str(pool.kind[i]) for i in window.items]


def test_kind_truth_is_the_weighted_mean_of_its_items(pool):
    weights = sampling_weights(pool, "easy-heavy")
    kinds = kind_truth(pool, weights)
    math = pool.kind == "math500"
    expected = (weights[math] / weights[math].sum()) @ pool.truth.values[math]
    np.testing.assert_allclose(kinds.values[np.argmax(math)], expected)


def test_streams_score_the_caps_sent_on_the_true_curves(pool):
    # Two windows of six subtasks, end to end through the simulator over HTTP.
    results = run_streams("qwen3-1.7b", budget_per_item=1024, windows=2, window_size=6,
                          variants=("uniform", "clear (true item curves)"), pool=pool)
    stream = make_stream(pool, "balanced", 2, 6, seed=zlib.crc32(b"qwen3-1.7b"))
    for result in results.values():
        assert result.items == [6, 6] and result.errors == [0, 0]
        for window, caps, expected in zip(stream, result.caps, result.expected_correct,
                                          strict=True):
            values = pool.truth.take(list(window.items)).value(np.array(caps, float)[:, None])
            assert expected == pytest.approx(float(values.sum()), abs=1e-12)
        assert result.expected_accuracy_after(0) == pytest.approx(
            sum(result.expected_correct) / 12)
    # Uniform sends one cap to every subtask (what is left of 1,064 tokens each once its
    # prompt is reserved); CLEAR on the true item curves does not.
    assert len({c for caps in results["uniform"].caps for c in caps}) == 1
    assert len({c for caps in results["clear (true item curves)"].caps for c in caps}) > 1


def test_ridge_scale_recovers_a_linear_signal():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3))
    hints = [f"level-{k}" for k in rng.integers(1, 4, 200)]
    level = np.array([int(h[-1]) for h in hints])
    target = 7.0 + 0.5 * features[:, 0] + 0.3 * level + rng.normal(0, 0.05, 200)
    model = RidgeScale(alpha=0.1).fit(features, hints, target)
    assert np.abs(model.predict(features, hints) - target).mean() < 0.1
    with pytest.raises(ValueError, match="alpha must be > 0"):
        RidgeScale(alpha=0.0)


def test_stretch_needs_factor_times_the_tokens():
    grid = np.arange(0.0, 4001.0, 100.0)
    curve = np.clip((grid - 500.0) / 1000.0, 0.0, 1.0)
    doubled = stretch(curve, grid, np.array([2.0]))
    assert doubled.value([2000.0])[0] == pytest.approx(float(np.interp(1000.0, grid, curve)))
    assert text_features("Find $x$ if $x^2 = 4$.").shape == (13,)


def test_censored_learning_compares_variants_on_the_same_stream():
    from clear_middleware.evaluation.learning import censored_learning

    options = dict(windows=3, measure_from=1, window_size=6, seed=4)
    cut = censored_learning("qwen3-1.7b", 2048, **options)
    whole = censored_learning("qwen3-1.7b", 2048, observe="full", **options)
    # The reference sees the same windows whatever the estimator saw; reruns repeat exactly.
    assert cut.true_kind == whole.true_kind > 0
    assert cut.uniform == whole.uniform > 0
    assert censored_learning("qwen3-1.7b", 2048, **options) == cut
    assert 0 <= cut.learned <= 1 and 0 <= whole.learned <= 1


def test_learning_result_gains_are_points_over_uniform():
    from clear_middleware.evaluation.learning import LearningResult

    result = LearningResult(learned=0.45, true_kind=0.5, uniform=0.4)
    assert result.ratio == pytest.approx(0.9)
    assert result.learned_gain == pytest.approx(5.0)
    assert result.true_kind_gain == pytest.approx(10.0)
