"""Progress of the long stages (calibration, SLEB, healing, evaluation), on a terminal and in a log.

On a terminal a transient rich bar redraws in place. Elsewhere (a log file, CI, ``nohup``, a pipe)
a bar draws nothing, so the same calls print a plain line instead: done/total, the stage's note
(a healing step's loss and tokens/s) and the ETA, at most every ``every`` seconds and on the last
item. ``--quiet`` turns all of it off (``PROGRESS.quiet``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from interlace.console import console


@dataclass
class ProgressSettings:
    """How the long stages report progress; the CLI sets ``quiet`` from ``--quiet``.

    Attributes:
        quiet: print no progress at all (bars, lines, SLEB's steps).
        every: seconds between two progress lines where there is no terminal; the first and the
            last item always get one. Stages whose items are slow (healing steps) pass their own.
    """

    quiet: bool = False
    every: float = 10.0


# The CLI's setting, like ``console``: a library caller passes ``progress=False`` instead.
PROGRESS = ProgressSettings()


def duration(seconds: float) -> str:
    """H:MM:SS, as rich's TimeRemainingColumn shows it."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Tracker:
    """The handle of a ``progress`` block: ``advance`` counts items done, ``print`` adds a line."""

    def __init__(self, description: str, total: int, completed: int, unit: str, every: float, bar: Progress | None) -> None:
        self.description, self.total, self.done, self.unit, self.every = description, total, completed, unit, every
        self._first, self._started, self._last_line = completed, time.perf_counter(), None
        self._bar = bar
        self._task = bar.add_task(description, total=total, completed=completed, fields="") if bar is not None else None

    def advance(self, count: int = 1, note: str = "") -> None:
        """Count ``count`` more items done; ``note`` (e.g. "loss 4.6401, 812 tokens/s") goes on the bar or line."""
        self.done += count
        text = note
        if self._bar is not None:
            self._bar.update(self._task, advance=count, fields=text)
            return
        now = time.perf_counter()
        last = self.done >= self.total
        if self._last_line is not None and now - self._last_line < self.every and not last:
            return
        self._last_line = now
        elapsed = now - self._started
        rate = (self.done - self._first) / elapsed if elapsed > 0 else 0.0
        eta = f"took {duration(elapsed)}" if last else f"ETA {duration((self.total - self.done) / rate)}" if rate > 0 else "ETA ?"
        unit = f" {self.unit}" if self.unit else ""
        console.print(f"  {self.description} {self.done}/{self.total}{unit}{', ' + text if text else ''}, {eta}", highlight=False, soft_wrap=True)

    def print(self, line: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        (self._bar.console if self._bar is not None else console).print(line, highlight=False, soft_wrap=True)


class _Silent(Tracker):
    """What a disabled ``progress`` block hands out: counts, prints nothing."""

    def __init__(self, total: int, completed: int) -> None:
        self.total, self.done = total, completed

    def advance(self, count: int = 1, note: str = "") -> None:
        self.done += count

    def print(self, line: str) -> None:
        pass


@contextmanager
def progress(
    description: str, total: int, *, enabled: bool = True, completed: int = 0, unit: str = "", every: float | None = None
) -> Iterator[Tracker]:
    """Report a stage's progress: a transient bar on a terminal, elsewhere a line at most every
    ``every`` seconds (``PROGRESS.every`` if None; 0: every item) and on the last item. Nothing
    when ``enabled`` is False or ``PROGRESS.quiet`` is set.

    Example:
        with progress("healing", steps, unit="steps", every=0) as bar:
            for step in range(steps):
                ...
                bar.advance(note=f"loss {loss:.4f}")
    """
    if not enabled or PROGRESS.quiet:
        yield _Silent(total, completed)
        return
    every = PROGRESS.every if every is None else every
    if not console.is_terminal:
        yield Tracker(description, total, completed, unit, every, None)
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TextColumn("{task.fields[fields]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        yield Tracker(description, total, completed, unit, every, bar)
