"""What every command shares: consoles, error exit, settings."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console

from sluice.core.errors import SluiceError
from sluice.core.settings import Settings

console = Console()
err_console = Console(stderr=True)
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json or csv")]


def fail(exc: BaseException) -> NoReturn:
    """Print ``error: message`` (no traceback) and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2 if isinstance(exc, SluiceError) else 1)


def settings() -> Settings:
    """Settings from the environment (SLUICE_HOME and friends)."""
    return Settings()
