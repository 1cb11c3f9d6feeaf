"""The session facade: a budget, CLEAR caps, and calls through LiteLLM."""

from .budget_session import BudgetSession, UnfundedSubtasks
from .results import Plan, PlannedSubtask, SubtaskResult
from .subtask import Subtask

__all__ = ["BudgetSession", "Plan", "PlannedSubtask", "Subtask", "SubtaskResult",
           "UnfundedSubtasks"]
