"""Progress of long operations: a bar with percentage and time left in a TTY, lines otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from sluice.runners.progress import LineProgress


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_a_terminal_a_line_every_few_seconds_with_percentage() -> None:
    clock, out = Clock(), io.StringIO()
    lines = Console(file=out, width=200, force_terminal=False)
    quiet = Console(file=io.StringIO(), force_terminal=False)
    with LineProgress(
        quiet, "telemetry", total=200_000, every=5.0, clock=clock, lines_to=lines
    ) as progress:
        progress.update(10_000, "900 events/s")
        assert out.getvalue() == ""  # not yet 5 s
        clock.now += 5.0
        progress.update(50_000, "1,000 events/s")
        clock.now += 1.0
        progress.update(60_000)
        clock.now += 5.0
        progress.update(200_000)
    assert out.getvalue().splitlines() == [
        "telemetry: 50,000 of 200,000 events (25%), 1,000 events/s",
        "telemetry: 200,000 of 200,000 events (100%)",
    ]


def test_unknown_total_counts_only() -> None:
    progress = LineProgress(Console(file=io.StringIO()), "ingest", unit="bytes")
    assert progress.line(1234) == "ingest: 1,234 bytes"


def test_in_a_terminal_the_bar_shows_percentage_and_time_left() -> None:
    out = io.StringIO()
    tty = Console(file=out, width=160, force_terminal=True, color_system=None)
    with LineProgress(tty, "telemetry", total=1000) as progress:
        progress.update(250, "10 events/s")
        progress.progress.refresh()
        shown = out.getvalue()
    assert "25%" in shown and "250 events" in shown and "left" in shown
    assert "10 events/s" in shown


def test_disabled_prints_nothing() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    clock = Clock()
    with LineProgress(console, "x", enabled=False, clock=clock, lines_to=console) as progress:
        clock.now += 60
        progress.update(5)
    assert out.getvalue() == ""


def test_a_total_known_later_shows_in_the_lines() -> None:
    clock, out = Clock(), io.StringIO()
    lines = Console(file=out, width=200, force_terminal=False)
    with LineProgress(
        Console(file=io.StringIO()),
        "backfill nightly",
        total=0,
        unit="runs",
        clock=clock,
        lines_to=lines,
    ) as progress:
        progress.set_total(8)
        clock.now += 10
        progress.update(2)
    assert out.getvalue().strip() == "backfill nightly: 2 of 8 runs (25%)"
