"""Framework adapters for clear-middleware (installed as ``clear_middleware.integrations``).

Each adapter translates one framework's events into the framework-free ``BudgetSession`` API
and holds no allocation logic. Adapters import their framework lazily, so the core package
never depends on LangChain, LangGraph or the LiteLLM proxy.
"""
