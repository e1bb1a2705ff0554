"""Printing Arrow tables as a rich table, JSON or CSV."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console
from rich.table import Table

from sluice.core.errors import ConfigError


def print_table(console: Console, table: pa.Table, fmt: str = "table") -> None:
    """Print ``table`` as ``table`` (rich), ``json`` (one array) or ``csv``."""
    if fmt == "json":
        console.file.write(json.dumps(table.to_pylist(), default=str) + "\n")
    elif fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        console.file.write(buf.getvalue().decode())
    elif fmt == "table":
        view = Table(show_lines=False, header_style="bold")
        for name in table.column_names:
            view.add_column(name, overflow="fold")
        for row in table.to_pylist():
            view.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(view)
        console.print(f"[dim]{table.num_rows} row(s)[/]")
    else:
        raise ConfigError(f"unknown format {fmt!r}; use table, json or csv")
