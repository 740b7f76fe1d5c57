"""Progress bar (stderr, terminals only) and a JSON-lines metrics logger. No dependencies."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any


class ProgressBar:
    """A one-line progress bar drawn on ``stream`` (stderr) only when it is a terminal.

    Example::

        with ProgressBar(total=1000, desc="train") as bar:
            for step in range(1000):
                bar.update(1, loss=0.12)
    """

    def __init__(self, total: int, desc: str = "", initial: int = 0, stream: IO[str] | None = None,
                 enabled: bool | None = None, min_interval: float = 0.1, width: int = 24):
        self.total, self.desc, self.n = total, desc, initial
        self.stream = stream if stream is not None else sys.stderr
        is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = is_tty if enabled is None else (enabled and is_tty)
        self.min_interval, self.width = min_interval, width
        self._start_n, self._start = initial, time.perf_counter()
        self._last_draw = 0.0
        self.postfix: dict[str, Any] = {}

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n`` and optionally set ``key=value`` fields shown after the bar."""
        self.n += n
        if postfix:
            self.postfix.update(postfix)
        now = time.perf_counter()
        if self.enabled and (now - self._last_draw >= self.min_interval or self.n >= self.total):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(1.0, self.n / self.total) if self.total else 1.0
        filled = int(frac * self.width)
        rate = (self.n - self._start_n) / max(now - self._start, 1e-9)
        fields = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.postfix.items())
        line = f"{self.desc} |{'#' * filled}{'.' * (self.width - filled)}| {self.n}/{self.total} {rate:.2f}it/s {fields}"
        self.stream.write("\r" + line[: _columns() - 1].ljust(_columns() - 1))
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 120


class JsonlLogger:
    """Append one JSON object per line to ``path`` (created with its folder), flushing each line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")

    def log(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line and flush it to the OS."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "JsonlLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
