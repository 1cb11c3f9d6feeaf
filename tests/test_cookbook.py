"""The cookbook scripts run offline against the local simulator and print their results.

All four are started at once (each as its own process, with a timeout) and their output is
checked. The simulator replays recorded runs deterministically, so the numbers are exact.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["wrap_existing_chain", "cap_agent_session", "switch_providers", "clear_vs_uniform"]
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("cookbook")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    running = {
        name: subprocess.Popen([sys.executable, str(ROOT / "cookbook" / f"{name}.py")],
                               cwd=folder, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in SCRIPTS
    }
    done = {}
    for name, process in running.items():
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            stderr += f"\n(killed after {TIMEOUT_S} s)"
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                                 stderr)
    done["folder"] = folder  # type: ignore[assignment]
    return done


def _run(outputs, name: str) -> str:
    result = outputs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_every_script_is_tested():
    assert sorted(p.stem for p in (ROOT / "cookbook").glob("*.py")) == sorted(SCRIPTS)


def test_wrap_existing_chain(outputs):
    out = _run(outputs, "wrap_existing_chain")
    assert out.startswith("16 problems, one budget of 40000 tokens")
    assert "funded 16/16; spent 25264 of 40000 tokens; 14736 left" in out
    # All 16 in the first plan, at about 40,000 / 16 each (prompt 35 or 36 + cap, on the
    # 16-token grid): 2 x (36 + 2,492) + 13 x (36 + 2,460) + (35 + 2,461) = 40,000.
    caps = sorted(int(c) for c in re.findall(r" cap +(\d+) ", out))
    assert caps == [2_460] * 13 + [2_461] + [2_492] * 2


def test_cap_agent_session(outputs):
    out = _run(outputs, "cap_agent_session")
    turns = re.findall(r"turn \d: (\w+)", out)
    # Turn 3 gets what the wrap-up's reserve leaves (cut at that cap), turn 4 only the wrap-up.
    assert turns == ["answered", "answered", "answered", "wrap_up", "exhausted", "exhausted"]
    # Per turn, what the ledger committed: turns 1 and 2 finish (7,613 and 4,654 tokens);
    # turn 3 gets what is left of the 3,733 once the wrap-up's reserve is held, and is cut.
    spent = [int(t) for t in re.findall(r"turn \d: \w+ +(\d+) tokens", out)]
    assert spent == [7_613, 4_654, 1_988, 1_644, 0, 0]
    assert "spent 15899 of 16000 tokens; never over the cap: True" in out


def test_switch_providers(outputs):
    out = _run(outputs, "switch_providers")
    assert re.search(r"reasoner +-> openai/deepscaler-1.5b +answered 8/8, unfunded 0", out)
    assert re.search(r"small +-> openai/qwen3-0.6b +answered 7/8, unfunded 0", out)
    assert "{'max_completion_tokens': 6000, 'reasoning_effort': 'medium'}" in out
    assert "{'max_tokens': 6000, 'thinking': {'type': 'enabled', 'budget_tokens': 4500}}" in out


def test_clear_vs_uniform(outputs):
    out = _run(outputs, "clear_vs_uniform")
    table = [tuple(int(x.replace(",", "")) for x in row)
             for row in re.findall(r"^ +([\d,]+) +(\d+) +(\d+)$", out, flags=re.M)]
    # Once the MATH-500 problems have settled, the tokens they returned fund AIME problems the
    # price left out, at the caps that fit: at 40,000 aime24/2024-I-1 (5,830) and aime25/0
    # (3,002), both solved; at 80,000 aime25/0 (4,442, solved) and aime25/1 (2,378, cut).
    assert table == [(20_000, 11, 0), (40_000, 18, 2), (80_000, 18, 14), (160_000, 23, 21)]
    plot = outputs["folder"] / "clear_vs_uniform.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
