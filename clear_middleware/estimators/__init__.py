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
from .static import DEFAULT_PRIOR, StaticEstimator

__all__ = [
    "DEFAULT_PRIOR",
    "CallObservation",
    "CurveEstimator",
    "GroupCurve",
    "HistoryEstimator",
    "MemoryObservationLog",
    "Observation",
    "ObservationLog",
    "RedisObservationLog",
    "SQLiteObservationLog",
    "StaticEstimator",
    "observation_log",
]
