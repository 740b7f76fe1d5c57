"""Progress reporting for long jobs, and a JSON-lines metrics logger.

``ProgressBar`` draws a tqdm bar when its stream is a terminal, and otherwise (a log
file, CI, ``nohup``) prints one plain line every ``interval`` seconds (default 15 s),
so a redirected job is never silent for long.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

#: seconds between plain progress lines when the stream is not a terminal
LINE_INTERVAL = 15.0


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class ProgressBar:
    """Progress of a job of ``total`` units on ``stream`` (default stderr).

    On a terminal this is a tqdm bar; elsewhere a line ``desc: n/total (p%) rate it/s
    elapsed/eta key=value ...`` is printed every ``interval`` seconds and once at the
    end. ``enabled=False`` silences it entirely.

    Example::

        with ProgressBar(total=1000, desc="train") as bar:
            for step in range(1000):
                bar.update(1, loss=0.12)
    """

    def __init__(self, total: int | None, desc: str = "", initial: int = 0, stream: IO[str] | None = None,
                 enabled: bool | None = None, interval: float | None = None, unit: str = "it"):
        self.total, self.desc, self.n, self.unit = total, desc, initial, unit
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = bool(getattr(self.stream, "isatty", None) and self.stream.isatty())
        self.enabled = True if enabled is None else bool(enabled)
        self.interval = LINE_INTERVAL if interval is None else float(interval)
        self._start_n, self._start = initial, time.perf_counter()
        self._last_line = self._start
        self.postfix: dict[str, Any] = {}
        self._bar = None
        if self.enabled and self.is_tty:
            self._bar = tqdm(total=total, desc=desc, initial=initial, file=self.stream, unit=unit,
                             dynamic_ncols=True, leave=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n`` and optionally set ``key=value`` fields shown after the bar."""
        self.n += n
        if postfix:
            self.postfix.update(postfix)
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _fmt_value(v) for k, v in self.postfix.items()}, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._print_line(now)

    def set_postfix(self, **postfix: Any) -> None:
        """Set ``key=value`` fields without advancing."""
        self.update(0, **postfix)

    def line(self, now: float | None = None) -> str:
        """The plain progress line for the current state."""
        now = time.perf_counter() if now is None else now
        elapsed = now - self._start
        rate = (self.n - self._start_n) / max(elapsed, 1e-9)
        head = f"{self.desc}: {self.n}"
        if self.total:
            head += f"/{self.total} ({100.0 * self.n / self.total:.0f}%)"
        text = f"{head} {rate:.3g} {self.unit}/s, {_clock(elapsed)} elapsed"
        if self.total and rate > 0 and self.n < self.total:
            text += f", ~{_clock((self.total - self.n) / rate)} left"
        if self.postfix:
            text += " " + " ".join(f"{k}={_fmt_value(v)}" for k, v in self.postfix.items())
        return text

    def _print_line(self, now: float) -> None:
        try:
            print(self.line(now), file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):
            self.enabled = False

    def close(self) -> None:
        """Finish: close the bar, or print the final line (idempotent)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._print_line(time.perf_counter())
        self.enabled = False

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


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
