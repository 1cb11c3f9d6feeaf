"""``clear-middleware demo``: the printed table, its numbers against the simulator and the
catalog, real-provider mode (a config file or --model/--api-base), and bad options."""

from __future__ import annotations

import io
import re
import time

import pytest

from clear_middleware.cli import main
from clear_middleware.demo import DemoOptions, draw_batch, kind_curves, run_demo
from clear_middleware.pricing import PriceBook
from clear_middleware.simulator import SimulatorServer, load_catalog
from clear_middleware.simulator.replay import answer_text

ROW = re.compile(r"^\s*(clear|uniform)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d,]+)\s+(\S+)"
                 r"\s+\$(\d+\.\d{4})$")


def _rows(out: str) -> dict[str, dict]:
    rows = {}
    for line in out.splitlines():
        found = ROW.match(line)
        if found:
            policy, accuracy, ok, abandoned, errors, spent, server, usd = found.groups()
            rows[policy] = {
                "accuracy": None if accuracy == "n/a" else float(accuracy.rstrip("%")),
                "answered": int(ok), "abandoned": int(abandoned), "errors": int(errors),
                "spent": int(spent.replace(",", "")),
                "server": None if server == "n/a" else int(server.replace(",", "")),
                "usd": float(usd),
            }
    return rows


def test_demo_prints_clear_beating_uniform_within_the_budget(capsys) -> None:
    start = time.perf_counter()
    assert main(["demo", "--n", "30", "--seed", "0"]) == 0
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()

    assert out.startswith("clear-middleware demo: 30 subtasks of deepscaler-1.5b (math500 19, "
                          "aime24 6, aime25 5), one session budget of 45,000 tokens (1,500 per "
                          "subtask)")
    assert "on the local simulator (http://127.0.0.1:" in out
    assert "fitted on the 130 sweep items not in the batch" in out
    assert "USD at openai/o4-mini" in out
    rows = _rows(out)
    assert set(rows) == {"clear", "uniform"}
    clear, uniform = rows["clear"], rows["uniform"]
    assert clear["accuracy"] > uniform["accuracy"]
    for row in rows.values():
        assert row["spent"] == row["server"] <= 45_000
        assert row["answered"] + row["abandoned"] + row["errors"] == 30 and row["errors"] == 0
        assert row["usd"] > 0
    assert clear["abandoned"] > 0 and uniform["abandoned"] == 0
    assert "every run stayed within it; ledger and server agree on every token" in out
    assert re.search(r"CLEAR solved \d+ of 30, uniform caps \d+, on the same budget", out)
    assert "CC-BY-4.0" in out
    # The progress bars went to stderr, not into the table.
    assert "clear    [" in err and "uniform  [" in err and err.count("30/30") == 2
    assert "[#" not in out
    assert elapsed < 60


def test_demo_numbers_match_the_catalog_and_prices() -> None:
    options = DemoOptions(n=12, seed=3, concurrency=4)
    out, err = io.StringIO(), io.StringIO()
    outcomes = run_demo(options, out=out, err=err)

    catalog = load_catalog()
    batch = draw_batch(catalog.items("deepscaler-1.5b"), 12, 3)
    assert [r.subtask_id for r in outcomes[0].results] == list(batch.items)
    assert not set(batch.items) & set(batch.held_out)  # the curves never saw the batch
    assert len(batch.items) + len(batch.held_out) == 160
    price = PriceBook().price("openai/o4-mini")
    for outcome in outcomes:
        # A correct reply carries the gold answer of its item, in the simulator's words.
        golds = {item: answer_text(next(r for r in catalog.runs("deepscaler-1.5b", item)
                                        if r.correct))
                 for item in batch.items
                 if any(r.correct for r in catalog.runs("deepscaler-1.5b", item))}
        boxed = sum(r.ok and r.text == golds.get(r.subtask_id) for r in outcome.results)
        assert outcome.correct == boxed
        assert outcome.spent_tokens == outcome.server_tokens <= 12 * 1500
        assert outcome.usd == pytest.approx(sum(
            price.cost_usd(r.usage.prompt_tokens, r.usage.completion_tokens,
                           r.usage.reasoning_tokens) for r in outcome.results))
    assert out.getvalue().count("\n") > 5 and "12/12" in err.getvalue()


def test_kind_curves_are_learned_per_benchmark() -> None:
    items = load_catalog().items("deepscaler-1.5b")
    curves = kind_curves("deepscaler-1.5b", draw_batch(items, 60, 0).held_out)
    assert sorted(curves) == ["aime24", "aime25", "math500"]
    assert all(len(c) == 1 for c in curves.values())
    # One shared surge rate; math500 is both easier (higher ceiling) and earlier than AIME.
    assert len({float(c.rate[0]) for c in curves.values()}) == 1
    assert curves["math500"].ceiling[0] > max(curves["aime24"].ceiling[0],
                                             curves["aime25"].ceiling[0])
    assert curves["math500"].threshold[0] < min(curves["aime24"].threshold[0],
                                               curves["aime25"].threshold[0])


def test_draw_batch_keeps_benchmark_shares() -> None:
    items = load_catalog().items("deepscaler-1.5b")  # 30 aime24, 30 aime25, 100 math500
    batch = draw_batch(items, 60, 0)
    assert batch.kinds() == {"math500": 38, "aime24": 11, "aime25": 11}
    assert draw_batch(items, 60, 0) == batch and draw_batch(items, 60, 1) != batch


def test_demo_against_a_provider_config_file(tmp_path, capsys) -> None:
    with SimulatorServer() as provider:  # stands in for a real OpenAI-compatible provider
        config = tmp_path / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: my-reasoner\n"
            "    litellm_params:\n"
            "      model: openai/deepscaler-1.5b\n"
            f"      api_base: {provider.base_url}\n"
            "      api_key: sim\n"
        )
        assert main(["demo", "--n", "6", "--config", str(config)]) == 0
        served = provider.requests
    out = capsys.readouterr().out
    assert f"calls: my-reasoner from {config}, through LiteLLM" in out
    rows = _rows(out)
    assert {p: (r["accuracy"], r["server"]) for p, r in rows.items()} == {
        "clear": (None, None), "uniform": (None, None)}
    assert sum(r["spent"] for r in rows.values()) == sum(
        q.prompt_tokens + q.completion_tokens for q in served if q.status == 200)
    assert "ledger and server agree" in out and "CLEAR solved" not in out


def test_demo_against_model_and_api_base(capsys) -> None:
    with SimulatorServer() as provider:
        base_url = provider.base_url
        assert main(["demo", "--n", "4", "--model", "openai/deepscaler-1.5b",
                     "--api-base", base_url, "--api-key", "sim"]) == 0
        assert {q.model for q in provider.requests} == {"deepscaler-1.5b"}
    out = capsys.readouterr().out
    assert f"calls: openai/deepscaler-1.5b at {base_url}, through LiteLLM" in out
    assert set(_rows(out)) == {"clear", "uniform"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "0"], r"--n must be an integer in \[1, 120\] for deepscaler-1.5b"),
        (["--n", "121"], r"--n must be an integer in \[1, 120\]"),
        (["--budget-per-item", "0"], r"--budget-per-item must be an integer >= 1; got 0"),
        (["--concurrency", "0"], r"--concurrency must be an integer >= 1; got 0"),
        (["--sim-model", "gpt-9"], r"--sim-model must be one of \['deepscaler-1.5b'"),
        (["--api-base", "http://127.0.0.1:9"], r"--api-base and --api-key need --model"),
        (["--config", "x.yaml", "--api-key", "k"], r"go in the litellm_params of --config"),
        (["--price-model", "no-such-model"], r"no price for model 'no-such-model'"),
    ],
)
def test_demo_bad_options_are_named(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *argv])
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)
