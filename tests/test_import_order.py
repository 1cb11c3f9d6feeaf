"""The estimators and the session import each other's modules: each must import on its own,
first, in a fresh interpreter (no import cycle)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SUBPACKAGES = ["estimators", "session"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_imports_first(name: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import clear_middleware.{name}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
