"""The session facade: a budget, CLEAR caps, and calls through LiteLLM."""

from ..subtask import Subtask
from .budget_session import BudgetSession, UnfundedSubtasks
from .results import (
    CallQuote,
    CallTicket,
    Plan,
    PlannedSubtask,
    StepPlan,
    StepQuote,
    SubtaskResult,
)

__all__ = ["BudgetSession", "CallQuote", "CallTicket", "Plan", "PlannedSubtask", "StepPlan",
           "StepQuote", "Subtask", "SubtaskResult", "UnfundedSubtasks"]
