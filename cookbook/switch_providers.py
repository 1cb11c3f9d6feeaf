"""Switch providers with a LiteLLM ``model_list`` config: the code stays, the name changes.

The session's router reads a LiteLLM config (the proxy's ``config.yaml`` format). The same
budgeted chain then runs on either model group; the budget's caps become each provider's own
settings. Offline, both groups point at the local simulator (two small reasoning models);
the last table shows what a cap would become for real providers (nothing is sent).

    python cookbook/switch_providers.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from clear_middleware.dispatch import provider_settings
from clear_middleware.integrations.langchain import ChatClear, with_budget
from clear_middleware.session import BudgetSession, SubtaskResult
from clear_middleware.simulator import SimulatorServer, item_marker, load_catalog

CONFIG = """\
model_list:
  - model_name: reasoner
    litellm_params: {{model: openai/deepscaler-1.5b, api_base: "{base}", api_key: sim}}
  - model_name: small
    litellm_params: {{model: openai/qwen3-0.6b, api_base: "{base}", api_key: sim}}
"""
PROBLEMS = [i for i in load_catalog().items("qwen3-0.6b") if i.startswith("math500/")][:8]


def run(group: str, config: Path) -> None:
    session = BudgetSession(budget_tokens=25_000, model=group, router=config)
    chain = (ChatPromptTemplate.from_template("{problem} Solve the problem.")
             | ChatClear(session=session) | StrOutputParser())
    answers = with_budget(chain, session).batch([{"problem": item_marker(p)} for p in PROBLEMS])
    answered = sum(isinstance(a, str) and "boxed" in a for a in answers)
    unfunded = sum(isinstance(a, SubtaskResult) for a in answers)
    print(f"  {group:<9} -> {session.provider_model:<24} answered {answered}/{len(PROBLEMS)}, "
          f"unfunded {unfunded}, spent {session.remaining().spent_tokens} tokens")


def main() -> None:
    with SimulatorServer() as sim, tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "litellm_config.yaml"
        config.write_text(CONFIG.format(base=sim.base_url))
        print(f"the same chain on two model groups of {config.name} (25,000 tokens each)")
        for group in ("reasoner", "small"):
            run(group, config)
    print("what a 6,000-token cap becomes per provider (LiteLLM kwargs):")
    for model in ("openai/o4-mini", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash",
                  "openai/gpt-4o-mini"):
        print(f"  {model:<28} {provider_settings(model, 6_000).kwargs}")


if __name__ == "__main__":
    main()
