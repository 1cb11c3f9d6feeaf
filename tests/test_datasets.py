import numpy as np
import pytest

from clear_middleware.datasets.reasoning_sweep import SWEEP_ATTRIBUTION, item_rollouts, load_sweep


@pytest.fixture(scope="module")
def sweep():
    return load_sweep()


def test_bundled_copy_is_the_dev_split(sweep):
    assert len(sweep) == 9108
    assert len(sweep.models()) == 10
    assert sweep.models_with_caps(3) == ["deepscaler-1.5b", "openrs1-1.5b", "openrs3-1.5b",
                                         "qwen3-1.7b"]
    assert sweep.caps_of("deepscaler-1.5b") == [1024, 2048, 4096, 8192, 16384]
    assert "CC-BY-4.0" in SWEEP_ATTRIBUTION


def test_cut_runs_are_at_their_cap(sweep):
    np.testing.assert_array_equal(sweep.length[sweep.reached_cap], sweep.cap[sweep.reached_cap])
    assert np.all(sweep.length[~sweep.reached_cap] < sweep.cap[~sweep.reached_cap])


def test_item_rollouts_groups_runs_by_item(sweep):
    runs = item_rollouts(sweep, "deepscaler-1.5b")
    assert len(runs) == 160
    assert sorted(set(runs.benchmark.tolist())) == ["aime24", "aime25", "math500"]
    assert int(runs.valid.sum()) == len(sweep.for_model("deepscaler-1.5b"))
    # aime24 items ran under 5 caps x 3 seeds (a few runs are missing from the sweep).
    per_item = runs.valid[runs.benchmark == "aime24"].sum(axis=1)
    assert per_item.max() == 15 and per_item.min() == 14
    # A correct run finished within its cap; answers found in cut runs are not counted.
    assert not np.any(runs.correct & runs.censored)
    assert np.all(runs.length[runs.correct] <= runs.cap[runs.correct])


def test_unknown_model_names_the_known_ones(sweep):
    with pytest.raises(KeyError, match=r"deepscaler-1\.5b"):
        sweep.for_model("gpt-9")
