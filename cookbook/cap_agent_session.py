"""Cap one agent session: a LangChain v1 agent whose every model call is on one budget.

Each turn is priced against what is left once a wrap-up reserve is held back (a turn may get
less than it would like: here turn 3 gets what the reserve leaves and is cut at that cap);
when a turn cannot be funded the agent ends with a wrap-up answer paid from the reserve, and
later turns end at once without calling the model. Runs offline against the local simulator.

    python cookbook/cap_agent_session.py
"""

from __future__ import annotations

from langchain.agents import create_agent
from langgraph.checkpoint.memory import InMemorySaver

from clear_middleware.integrations.langchain import ChatClear, ClearBudgetMiddleware
from clear_middleware.session import BudgetSession
from clear_middleware.simulator import SimulatorServer, item_marker, load_catalog

BUDGET_TOKENS = 16_000
# Six AIME 2024 problems whose replayed runs show every outcome: answered, cut at the cap the
# reserve leaves, the wrap-up, and turns that end at once.
QUESTIONS = [i for i in load_catalog().items("deepscaler-1.5b") if i.startswith("aime24/")][5:11]


def main() -> None:
    with SimulatorServer() as sim:
        session = BudgetSession(budget_tokens=BUDGET_TOKENS, model="openai/deepscaler-1.5b",
                                session_id="agent-session-1", api_base=sim.base_url,
                                api_key="sim")
        agent = create_agent(
            ChatClear(session=session),
            middleware=[ClearBudgetMiddleware(session, expected_calls=1, wrap_up_tokens=1_500)],
            checkpointer=InMemorySaver(),
        )
        config = {"configurable": {"thread_id": session.session_id}}
        print(f"one agent session, {BUDGET_TOKENS} tokens")
        for turn, item in enumerate(QUESTIONS, 1):
            before = session.remaining().spent_tokens
            state = agent.invoke({"messages": [("user", f"{item_marker(item)} Solve it.")]},
                                 config)
            reply = state["messages"][-1]
            how = reply.response_metadata.get("clear_budget", "answered")
            spent = session.remaining().spent_tokens - before
            text = reply.text or "(cut at its cap)"
            print(f"  turn {turn}: {how:<9} {spent:>5} tokens  {text[:70]}")
        balance = session.remaining()
    print(f"spent {balance.spent_tokens} of {BUDGET_TOKENS} tokens; never over the cap: "
          f"{balance.spent_tokens <= BUDGET_TOKENS}")


if __name__ == "__main__":
    main()
