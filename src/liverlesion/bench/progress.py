"""A one-line progress display on stderr (tqdm is not a dependency).

On a terminal the line is redrawn in place, at most ten times a second; elsewhere (CI
logs, pipes) one line is printed per task, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``start(label)`` a task, ``update(done, total)`` while it runs, ``finish(note)`` when done."""

    def __init__(self, tasks: int, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.tasks = max(1, tasks)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.live = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self._task = 0
        self._label = ""
        self._drawn = 0.0
        self._width = 0

    def start(self, label: str) -> None:
        self._task += 1
        self._label = label
        if self.enabled and not self.live:
            print(f"[{self._task}/{self.tasks}] {label}", file=self.stream, flush=True)
        self.update(0, 0)

    def update(self, done: int, total: int, what: str = "") -> None:
        if not self.live or (time.monotonic() - self._drawn < 0.1 and 0 < done < total):
            return
        bar = ""
        if total:
            filled = round(20 * done / total)
            bar = f" |{'#' * filled}{'.' * (20 - filled)}| {done}/{total} {what}".rstrip()
        self._draw(f"[{self._task}/{self.tasks}] {self._label}{bar}")

    def finish(self, note: str = "") -> None:
        if self.live:
            self._draw(f"[{self._task}/{self.tasks}] {self._label}{': ' + note if note else ''}")
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
        elif self.enabled and note:
            print(f"      {note}", file=self.stream, flush=True)

    def _draw(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)
        self._drawn = time.monotonic()
