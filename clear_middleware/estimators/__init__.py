"""Estimators: what each subtask's accuracy-vs-tokens curve is predicted to be."""

from .base import CallObservation, CurveEstimator
from .static import DEFAULT_PRIOR, StaticEstimator

__all__ = ["DEFAULT_PRIOR", "CallObservation", "CurveEstimator", "StaticEstimator"]
