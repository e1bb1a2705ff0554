"""Progress bar and end-of-run summary for the command line."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from sluice.runners.stats import RunStats


class ProgressReporter:
    """Shows events processed and events/s while a pipeline runs."""

    def __init__(self, console: Console, name: str, enabled: bool = True) -> None:
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[events]:,} events"),
            TextColumn("{task.fields[rate]:,.0f} events/s"),
            TextColumn("{task.fields[dlq]:,} dead-lettered"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task(name, events=0, rate=0.0, dlq=0)

    def __enter__(self) -> ProgressReporter:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.enabled:
            self.progress.stop()

    def update(self, stats: RunStats) -> None:
        """Refresh the bar from the run's counters."""
        if self.enabled:
            self.progress.update(
                self.task, events=stats.events_in, rate=stats.rate, dlq=stats.dead_lettered
            )


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
