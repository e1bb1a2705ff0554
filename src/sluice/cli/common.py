"""What every command shares: consoles, error exit, settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from sluice.core.errors import SluiceError
from sluice.core.settings import Settings

console = Console()
err_console = Console(stderr=True)
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json or csv")]


def fail(exc: BaseException) -> NoReturn:
    """Print ``error: message`` (no traceback) and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2 if isinstance(exc, SluiceError) else 1)


FORMATS = ("table", "json", "csv")


def check_format(fmt: str) -> None:
    """Fail with one line unless ``fmt`` is one of ``FORMATS`` (before any work is done)."""
    if fmt not in FORMATS:
        fail(SluiceError(f"unknown format {fmt!r}; use {', '.join(FORMATS)}"))


def settings() -> Settings:
    """Settings from the environment (SLUICE_HOME and friends)."""
    return Settings()


@contextmanager
def starting() -> Iterator[None]:
    """Pause the cyclic GC while a command imports and builds what it runs.

    Start-up makes about a million objects that live as long as the process; collecting
    while they are made finds nothing (about 0.2 s of CPU per ``sluice run``). Afterwards
    they are frozen (later collections skip them) and the GC runs as before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
