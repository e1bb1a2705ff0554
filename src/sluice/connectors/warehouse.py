"""Warehouse connection plumbing shared by the warehouse sink and the query engine."""

from __future__ import annotations

import time

import duckdb

MARKER_TABLE = "_sluice_epochs"
BATCH_VIEW = "__sluice_batch"  # the name an epoch's rows are registered under in DuckDB
LOCK_WAIT_SECONDS = 2.0
_LOCK_HINTS = ("lock", "different configuration", "conflict")


def quote(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def is_postgres_url(url: str) -> bool:
    """True for ``postgresql://``, ``postgres://`` and ``redshift://`` URLs."""
    return url.startswith(("postgresql://", "postgres://", "redshift://"))


def duckdb_path(url: str) -> str:
    """The file path of a DuckDB warehouse URL (a plain path or ``duckdb:///path``)."""
    return url.removeprefix("duckdb://") if url.startswith("duckdb://") else url


def is_lock_error(exc: duckdb.Error) -> bool:
    """True when a DuckDB error means the file is held by another process or connection."""
    text = str(exc).lower()
    return any(hint in text for hint in _LOCK_HINTS)


def attach_duckdb(
    con: duckdb.DuckDBPyConnection,
    path: str,
    name: str,
    read_only: bool = False,
    wait: float = LOCK_WAIT_SECONDS,
) -> None:
    """Attach a DuckDB file to ``con`` as ``name``, retrying while another process holds it."""
    mode = " (READ_ONLY)" if read_only else ""
    statement = f"ATTACH '{path.replace(chr(39), chr(39) * 2)}' AS {quote(name)}{mode}"
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        try:
            con.execute(statement)
            return
        except duckdb.Error as exc:
            if not is_lock_error(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for logs and errors)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
