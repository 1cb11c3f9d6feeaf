"""Write one benchmark's results into its own section of ``docs/benchmarks.md``.

Each benchmark owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; running
it replaces that section (or appends it) and leaves the other benchmarks' sections untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
REPORT = DOCS / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every section below is written by the script it names (`python benchmarks/<script>.py`);\n"
    "numbers are measured on the machine that ran it, and every comparison is made within one\n"
    "run (ratios), never against numbers from another machine.\n"
)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; floats are printed as given (format them first)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, report: Path = REPORT) -> None:
    """Replace (or append) the section ``name`` of the benchmark report with ``body``."""
    report.parent.mkdir(parents=True, exist_ok=True)
    text = report.read_text() if report.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    report.write_text(text)
