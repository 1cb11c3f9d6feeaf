"""A one-line progress bar on stderr, for command-line jobs (no dependencies).

On a terminal the line is redrawn in place; elsewhere (a log file, a pipe, a test's captured
stream) it is written once per tenth of the work and at the end, so logs stay short.

>>> import io
>>> out = io.StringIO()
>>> bar = ProgressBar(4, "clear", stream=out, width=8)
>>> for _ in range(4):
...     bar.advance()
>>> bar.close()
>>> out.getvalue().splitlines()[-1]
'clear    [########]   4/4'
"""

from __future__ import annotations

import sys
from typing import TextIO

from ._validation import non_negative_int


class ProgressBar:
    """Counts finished units of work out of ``total``.

    Args:
        total: units of work (>= 1).
        label: what is running, shown before the bar.
        stream: where to draw (default ``sys.stderr``).
        width: characters of the bar itself (>= 1).
    """

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None,
                 width: int = 30) -> None:
        self.total = non_negative_int("total", total, minimum=1)
        self.width = non_negative_int("width", width, minimum=1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        isatty = getattr(self.stream, "isatty", None)
        self._live = bool(isatty and isatty())
        self._last_tenth = -1

    def advance(self, *_: object) -> None:
        """Count one more unit as finished. Arguments are ignored, so the bar's ``advance``
        can be passed as a callback (e.g. ``on_result=bar.advance``)."""
        self.done = min(self.total, self.done + 1)
        tenth = 10 * self.done // self.total
        if self._live:
            self.stream.write("\r" + self._line())
            self.stream.flush()
        elif tenth != self._last_tenth:
            self.stream.write(self._line() + "\n")
        self._last_tenth = tenth

    def close(self) -> None:
        """End the line (on a terminal) and make sure the final count was shown."""
        if self._live:
            self.stream.write("\n")
        elif self._last_tenth != 10 * self.done // self.total or self.done == 0:
            self.stream.write(self._line() + "\n")
        self.stream.flush()

    def _line(self) -> str:
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        digits = len(str(self.total))
        return f"{self.label:<8} [{bar}] {self.done:>{digits + 2}}/{self.total}"
