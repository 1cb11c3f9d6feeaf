"""Estimators: what each subtask's accuracy-vs-tokens curve is predicted to be."""

from .base import CallObservation, CurveEstimator
from .history import GroupCurve, HistoryEstimator
from .observations import (
    MemoryObservationLog,
    Observation,
    ObservationLog,
    RedisObservationLog,
    SQLiteObservationLog,
    observation_log,
)
from .prior import CURVE_GRID, population_finished, population_prior
from .probe import DEFAULT_TEMPLATE, ProbeEstimator, ProbeStats, parse_estimate, probe_curves
from .static import DEFAULT_SURGE, StaticEstimator

__all__ = [
    "CURVE_GRID",
    "DEFAULT_SURGE",
    "DEFAULT_TEMPLATE",
    "CallObservation",
    "CurveEstimator",
    "GroupCurve",
    "HistoryEstimator",
    "MemoryObservationLog",
    "Observation",
    "ObservationLog",
    "ProbeEstimator",
    "ProbeStats",
    "RedisObservationLog",
    "SQLiteObservationLog",
    "StaticEstimator",
    "observation_log",
    "parse_estimate",
    "population_finished",
    "population_prior",
    "probe_curves",
]
