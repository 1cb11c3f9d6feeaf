"""clear-middleware: shadow-price (CLEAR) allocation of reasoning-token budgets.

The framework-free core: utility curves, the allocator and its baselines. Framework adapters
live in :mod:`clear_middleware.integrations`.
"""

from .allocator import POLICIES, Allocation, Policy, allocate
from .curves import (
    BestResponse,
    EmpiricalCurve,
    ShiftedSurge,
    SurgeParameters,
    UtilityCurves,
    fit_shifted_surge,
)

__version__ = "0.1.0"

__all__ = [
    "POLICIES",
    "Allocation",
    "BestResponse",
    "EmpiricalCurve",
    "Policy",
    "ShiftedSurge",
    "SurgeParameters",
    "UtilityCurves",
    "__version__",
    "allocate",
    "fit_shifted_surge",
]
