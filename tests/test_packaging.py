"""The package list in pyproject.toml is explicit (integrations/ maps to a subpackage)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "clear_middleware").rglob("__init__.py")
    }
    found |= {
        "clear_middleware.integrations" + "".join(
            "." + part for part in p.parent.relative_to(ROOT / "integrations").parts)
        for p in (ROOT / "integrations").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools].packages: {sorted(found - listed)}"
    assert "clear_middleware.data" in listed  # the bundled data files ship with the wheel
    assert (ROOT / "clear_middleware" / "py.typed").exists()


def test_core_never_imports_langchain():
    for path in (ROOT / "clear_middleware").rglob("*.py"):
        text = path.read_text()
        assert "import langchain" not in text and "from langchain" not in text, path
        assert "import langgraph" not in text and "from langgraph" not in text, path
