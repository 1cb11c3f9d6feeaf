"""Offline evaluation of allocation policies on real measured curves (the budget-sweep data)."""

from .frontier import FrontierPoint, ItemCurves, frontier, item_curves, kind_curve_splits

__all__ = ["FrontierPoint", "ItemCurves", "frontier", "item_curves", "kind_curve_splits"]
