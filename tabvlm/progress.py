"""Progress of a long loop: a tqdm bar on a terminal, a plain line now and then anywhere else.

    bar = progress(total=len(items), desc="predict", unit="img")
    for item in items:
        ...
        bar.update(1)
    bar.close()

A bar redraws itself with carriage returns, which a log file keeps as one endless line. So when
the stream is not a terminal (a file, a pipe, CI), `progress` returns a `LineProgress` instead:
one line such as `predict: 40/120 img (33%) | 2.1 img/s | 0:19 elapsed, ~0:38 left` every
`every` items (default: a tenth of the total) or `seconds` seconds, whichever comes first, and
one at the end. Both have the methods the loops use: `update`, `set_postfix`, `write`, `close`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any


def is_terminal(file: IO[str]) -> bool:
    """Whether `file` is an interactive terminal (False for files, pipes, closed streams)."""
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(total: int | None, file: IO[str] | None = None, disable: bool = False, **options: Any) -> Any:
    """A tqdm bar when `file` (default stderr) is a terminal, else a `LineProgress`; `options` are
    LineProgress's (desc, unit and initial go to the bar too). `disable`: neither draws anything,
    and `write` still prints."""
    file = sys.stderr if file is None else file
    if is_terminal(file) and not disable:
        from tqdm import tqdm

        shared = {k: options[k] for k in ("desc", "unit", "initial") if k in options}
        return tqdm(total=total, file=file, dynamic_ncols=True, **shared)
    return LineProgress(total, file=file, disable=disable, **options)


def _clock(s: float) -> str:
    """Seconds as H:MM:SS, or M:SS under an hour."""
    m, s = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LineProgress:
    """Plain progress lines for a stream that is not a terminal (see the module docstring)."""

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        file: IO[str] | None = None,
        disable: bool = False,
        every: int | None = None,
        seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start_n = self.shown_n = initial
        self.file = sys.stderr if file is None else file
        self.disable = disable
        self.every = every if every is not None else max(1, math.ceil((total or 1000) / 10))
        self.seconds = seconds
        self.clock = clock
        self.t0 = self.shown_t = clock()
        self.postfix = ""
        self.closed = False

    def update(self, n: int = 1) -> None:
        """Count `n` more items; print a line when `every` items or `seconds` have passed."""
        self.n += n
        if self.disable:
            return
        now = self.clock()
        if self.n - self.shown_n >= self.every or now - self.shown_t >= self.seconds:
            self._show(now)

    def set_postfix(self, **values: object) -> None:
        """Values shown at the end of the next line (`loss=0.1234`)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, message: str, file: IO[str] | None = None) -> None:
        """Print a message (as `tqdm.write` does around a bar)."""
        print(message, file=self.file if file is None else file, flush=True)

    def close(self) -> None:
        """The last line, unless the last update already showed the final count."""
        if self.closed:
            return
        self.closed = True
        if not self.disable and self.n != self.shown_n:
            self._show(self.clock())

    def line(self, now: float) -> str:
        """`desc: n/total unit (p%) | rate | elapsed, ~left | postfix`."""
        elapsed = now - self.t0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {done} {self.unit}" if self.desc else f"{done} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        timing = f"{_clock(elapsed)} elapsed"
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                timing += f", ~{_clock((self.total - self.n) / rate)} left"
        parts.append(timing)
        if self.postfix:
            parts.append(self.postfix)
        return " | ".join(parts)

    def _show(self, now: float) -> None:
        print(self.line(now), file=self.file, flush=True)
        self.shown_n, self.shown_t = self.n, now

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
