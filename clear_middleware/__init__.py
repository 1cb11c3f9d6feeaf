"""clear-middleware: shadow-price (CLEAR) allocation of reasoning-token budgets.

The framework-free core: utility curves and the allocator (:mod:`.curves`,
:mod:`.allocator`), curve estimators (:mod:`.estimators`), session budgets that are never
overspent (:mod:`.ledger`), provider settings and LiteLLM calls (:mod:`.dispatch`), and the
:class:`BudgetSession` facade that ties them together. Framework adapters live in
:mod:`clear_middleware.integrations`.
"""

from .allocator import POLICIES, Allocation, Policy, allocate
from .allocator.progressive import StepPolicy
from .curves import (
    BestResponse,
    EmpiricalCurve,
    ShiftedSurge,
    SurgeParameters,
    UtilityCurves,
    fit_shifted_surge,
)
from .dispatch import ProviderSettings, provider_settings
from .estimators import HistoryEstimator, ProbeEstimator, StaticEstimator, population_prior
from .ledger import Amount, BudgetExceeded, Caps, Ledger, StoreUnavailable
from .pricing import MissingPriceError, ModelPrice, PriceBook
from .prompt_margin import PromptMargin
from .session import BudgetSession, Plan, SubtaskResult, UnfundedSubtasks
from .subtask import Subtask
from .tokens import count_message_tokens
from .usage import Usage

__version__ = "0.1.0"

__all__ = [
    "POLICIES",
    "Allocation",
    "Amount",
    "BestResponse",
    "BudgetExceeded",
    "BudgetSession",
    "Caps",
    "EmpiricalCurve",
    "HistoryEstimator",
    "Ledger",
    "MissingPriceError",
    "ModelPrice",
    "Plan",
    "Policy",
    "PriceBook",
    "ProbeEstimator",
    "PromptMargin",
    "ProviderSettings",
    "ShiftedSurge",
    "StaticEstimator",
    "StepPolicy",
    "StoreUnavailable",
    "Subtask",
    "SubtaskResult",
    "SurgeParameters",
    "UnfundedSubtasks",
    "Usage",
    "UtilityCurves",
    "__version__",
    "allocate",
    "count_message_tokens",
    "fit_shifted_surge",
    "population_prior",
    "provider_settings",
]
