"""The session facade: a budget, CLEAR caps, and calls through LiteLLM."""

from ..subtask import Subtask
from .budget_session import BudgetSession, UnfundedSubtasks
from .results import Plan, PlannedSubtask, SubtaskResult

__all__ = ["BudgetSession", "Plan", "PlannedSubtask", "Subtask", "SubtaskResult",
           "UnfundedSubtasks"]
