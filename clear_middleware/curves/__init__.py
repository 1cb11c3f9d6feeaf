"""Utility curves: expected utility of a call as a function of its token cap, in batches."""

from .base import SATURATION_FRACTION, BestResponse, UtilityCurves
from .empirical import EmpiricalCurve, EnvelopeResponse
from .fitting import SurgeParameters, fit_shifted_surge
from .shifted_surge import ShiftedSurge, SurgeResponse

__all__ = [
    "SATURATION_FRACTION",
    "BestResponse",
    "EmpiricalCurve",
    "EnvelopeResponse",
    "ShiftedSurge",
    "SurgeParameters",
    "SurgeResponse",
    "UtilityCurves",
    "fit_shifted_surge",
]
