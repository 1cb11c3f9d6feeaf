"""The session package imports in any order (no circular import with the estimators)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_estimators_import_before_the_session() -> None:
    code = ("import clear_middleware.estimators as e; from clear_middleware.session import "
            "BudgetSession; print(e.StaticEstimator.__name__, BudgetSession.__name__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["StaticEstimator", "BudgetSession"]
