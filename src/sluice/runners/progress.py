"""Progress bar and end-of-run summary for the command line."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sluice.runners.stats import RunStats


class LineProgress:
    """A long operation's progress: a bar in a terminal, a line every ``every`` s otherwise.

    With a known ``total`` the bar shows the percentage and the time left; without a
    terminal (a pipe, a log file) one line goes to stderr every ``every`` seconds.
    """

    def __init__(
        self,
        console: Console,
        label: str,
        *,
        total: int | None = None,
        unit: str = "events",
        enabled: bool = True,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        lines_to: Console | None = None,
    ) -> None:
        self.console, self.label, self.total, self.unit = console, label, total, unit
        self.tty = enabled and console.is_terminal
        self.lines = enabled and not console.is_terminal
        self.every, self.clock = every, clock
        self._last = clock()
        self._errors = lines_to or Console(stderr=True, highlight=False, soft_wrap=True)
        columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
        if total is not None:  # 0: known later (``set_total``)
            columns += [BarColumn(bar_width=24), TaskProgressColumn()]
        columns += [
            TextColumn("{task.completed:,.0f} " + unit),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
        ]
        if total is not None:
            columns += [TextColumn("left"), TimeRemainingColumn()]
        self.progress = Progress(*columns, console=console, transient=True)
        self.task = self.progress.add_task(label, total=total, extra="")

    def __enter__(self) -> LineProgress:
        if self.tty:
            self.progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.tty:
            self.progress.stop()

    def set_total(self, total: int) -> None:
        """The total, once it is known."""
        self.total = total
        self.progress.update(self.task, total=total)

    def update(self, done: float, extra: str = "") -> None:
        """Show ``done`` (of ``total``) with an ``extra`` note such as a rate."""
        if self.tty:
            self.progress.update(self.task, completed=done, extra=extra)
        elif self.lines and self.clock() - self._last >= self.every:
            self._last = self.clock()
            self._errors.print(self.line(done, extra))

    def line(self, done: float, extra: str = "") -> str:
        """The one-line progress printed when there is no terminal."""
        amount = f"{done:,.0f}"
        if self.total:
            amount += f" of {self.total:,} {self.unit} ({min(done / self.total, 1.0):.0%})"
        else:
            amount += f" {self.unit}"
        return f"{self.label}: {amount}" + (f", {extra}" if extra else "")


@contextlib.contextmanager
def step(console: Console, message: str) -> Iterator[None]:
    """A spinner with ``message`` in a terminal; one line saying it otherwise."""
    if console.is_terminal:
        with console.status(message):
            yield
    else:
        console.print(message, highlight=False)
        yield


class ProgressReporter:
    """Shows events processed, events/s and dead letters while a pipeline runs."""

    def __init__(
        self, console: Console, name: str, enabled: bool = True, total: int | None = None
    ) -> None:
        self.line = LineProgress(console, name, total=total, enabled=enabled)

    def __enter__(self) -> ProgressReporter:
        self.line.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.line.__exit__(et, ev, tb)

    def update(self, stats: RunStats) -> None:
        """Refresh from the run's counters."""
        extra = f"{stats.rate:,.0f} events/s, {stats.dead_lettered:,} dead-lettered"
        self.line.update(stats.events_in, extra)


def print_summary(console: Console, stats: RunStats) -> None:
    """Print a run's summary: events in, out, filtered, dead-lettered, time."""
    table = Table(title=f"pipeline {stats.pipeline}", show_header=False, title_justify="left")
    rows = [
        ("events in", f"{stats.events_in:,}"),
        ("events out", f"{stats.events_out:,}"),
        ("filtered", f"{stats.filtered:,}"),
        ("dead-lettered", f"{stats.dead_lettered:,}"),
    ]
    if stats.aggregated:
        rows.append(("aggregated into windows", f"{stats.aggregated:,}"))
    for key, value in sorted(stats.extra.items()):
        rows.append((key.replace("_", " "), f"{value:,}"))
    rows += [
        ("epochs", f"{stats.epochs:,}"),
        ("time", f"{stats.seconds:.2f} s"),
        ("throughput", f"{stats.rate:,.0f} events/s"),
    ]
    for label, text in rows:
        table.add_row(label, text)
    console.print(table)
