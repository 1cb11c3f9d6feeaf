"""The session facade: a budget, CLEAR caps, and calls through LiteLLM."""

from .results import Plan, PlannedSubtask, SubtaskResult
from .subtask import Subtask

__all__ = ["BudgetSession", "Plan", "PlannedSubtask", "Subtask", "SubtaskResult",
           "UnfundedSubtasks"]


def __getattr__(name: str) -> object:
    # The estimators import ``session.subtask``, and ``budget_session`` imports the
    # estimators: loading ``budget_session`` here eagerly made ``import
    # clear_middleware.estimators`` (before the session) fail on a circular import.
    if name in ("BudgetSession", "UnfundedSubtasks"):
        from . import budget_session

        return getattr(budget_session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
