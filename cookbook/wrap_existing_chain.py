"""Wrap an existing LangChain chain: one budget for a whole batch, planned before it runs.

Runs offline: a local simulator stands in for the provider (it replays real runs of a small
reasoning model). With a real provider, drop the simulator and the ``api_base`` / ``api_key``
arguments.

    python cookbook/wrap_existing_chain.py
"""

from __future__ import annotations

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from clear_middleware.integrations.langchain import ChatClear, with_budget
from clear_middleware.session import BudgetSession, SubtaskResult
from clear_middleware.simulator import SimulatorServer, item_marker, load_catalog

BUDGET_TOKENS = 40_000
PROBLEMS = [i for i in load_catalog().items("deepscaler-1.5b") if i.startswith("math500/")][:16]


def main() -> None:
    with SimulatorServer() as sim:
        session = BudgetSession(budget_tokens=BUDGET_TOKENS, model="openai/deepscaler-1.5b",
                                api_base=sim.base_url, api_key="sim")
        # The chain you already have ...
        chain = (ChatPromptTemplate.from_template("{problem} Solve the problem.")
                 | ChatClear(session=session) | StrOutputParser())
        # ... and the one line that puts it on the budget.
        budgeted = with_budget(chain, session)

        inputs = [{"problem": item_marker(item)} for item in PROBLEMS]
        answers = budgeted.batch(inputs, config={"max_concurrency": 8})
        caps = {r.item: r.requested_cap for r in sim.requests}

    print(f"{len(PROBLEMS)} problems, one budget of {BUDGET_TOKENS} tokens")
    for item, answer in zip(PROBLEMS, answers, strict=True):
        if isinstance(answer, SubtaskResult):
            print(f"  {item:<40} unfunded (priced out at {answer.price:.2e}/token)")
        else:
            print(f"  {item:<40} cap {caps[item]:>5}  {answer or '(cut at its cap)'}")
    balance = session.remaining()
    funded = sum(not isinstance(a, SubtaskResult) for a in answers)
    print(f"funded {funded}/{len(PROBLEMS)}; spent {balance.spent_tokens} of "
          f"{BUDGET_TOKENS} tokens; {balance.available_tokens} left")


if __name__ == "__main__":
    main()
