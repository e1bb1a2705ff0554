"""One DuckDB database instance per warehouse file in this process, shared by sinks and queries.

DuckDB lets one process open a file only once (a second instance fails with "Unique file
handle conflict"), and a read-only instance excludes a writer. So the warehouse sink and the
query engine of one process lease cursors of one shared instance instead: a reader's cursor
sees a snapshot (DuckDB's MVCC) and never blocks a sink's transaction.

The file is attached on the first lease and detached (closed) when the last one is
released, so other processes can open the file between uses (as when each write opened it
alone). It is attached to one in-memory DuckDB instance that this process keeps (creating
a DuckDB instance costs about 40 ms of CPU; attaching a file about 1 ms), and each lease's
cursors ``USE`` it, so unqualified names and ``current_database()`` mean the file. It is
attached read-write when a writer leases it or a sink of this process has registered as a
writer of the file (``register_writer``), else read-only, which lets several processes
read at once. A writer that finds a read-only attachment waits for its readers.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import duckdb

from sluice.connectors.warehouse import LOCK_WAIT_SECONDS, attach_duckdb, quote


class WarehouseBusyError(duckdb.IOException):
    """A writer waited too long for this process's read-only users of the file."""


@dataclass
class _Instance:
    database: str  # the attachment's name in the host instance
    read_only: bool
    users: int = 0


@dataclass
class Lease:
    """A cursor on the shared instance; ``cursor()`` gives more, ``release()`` closes them."""

    key: str
    connection: duckdb.DuckDBPyConnection
    read_only: bool
    database: str  # the attached file's name: each cursor ``USE``s it
    _cursors: list[duckdb.DuckDBPyConnection] = field(default_factory=list)
    _released: bool = False

    @property
    def main(self) -> duckdb.DuckDBPyConnection:
        """The lease's first cursor."""
        return self._cursors[0]

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor (its own transactions) on the shared instance."""
        cursor = _cursor(self.connection, self.database)
        self._cursors.append(cursor)
        return cursor

    def release(self) -> None:
        """Close this lease's cursors; the last lease of a file closes the instance."""
        if self._released:
            return
        self._released = True
        for cursor in self._cursors:
            with contextlib.suppress(duckdb.Error):
                cursor.close()
        _release(self.key)


_instances: dict[str, _Instance] = {}
_host: duckdb.DuckDBPyConnection | None = None  # the in-memory instance files attach to
_attached = 0  # attachments made so far (their names are unique)
_writers: Counter[str] = Counter()
_changed = threading.Condition()


def _cursor(host: duckdb.DuckDBPyConnection, database: str) -> duckdb.DuckDBPyConnection:
    """A new cursor of ``host`` whose default database is the attachment ``database``."""
    cursor = host.cursor()
    cursor.execute(f"USE {quote(database)}")
    return cursor


def _attach(path: str, read_only: bool, wait: float) -> str:
    """Attach ``path`` to the host instance (made on first use); the attachment's name."""
    global _host, _attached
    if _host is None:
        _host = duckdb.connect()
    _attached += 1
    database = f"sluice_warehouse_{_attached}"
    with contextlib.closing(_host.cursor()) as cursor:  # the host itself only makes cursors
        attach_duckdb(cursor, path, database, read_only=read_only, wait=wait)
    return database


def _key(path: str) -> str:
    return path if path == ":memory:" else os.path.abspath(path)


def register_writer(path: str) -> None:
    """Declare that a sink of this process writes ``path`` (readers then open it read-write)."""
    with _changed:
        _writers[_key(path)] += 1


def unregister_writer(path: str) -> None:
    """Undo one ``register_writer``."""
    with _changed:
        key = _key(path)
        _writers[key] -= 1
        if _writers[key] <= 0:
            del _writers[key]


def lease(path: str, *, write: bool = False, wait: float = LOCK_WAIT_SECONDS) -> Lease:
    """Lease the shared instance of ``path`` (opening it if needed); release it when done.

    Raises ``duckdb.Error`` when the file stays locked by another process for ``wait``
    seconds, or ``WarehouseBusyError`` when a writer waited that long for read-only users.
    """
    key = _key(path)
    deadline = time.monotonic() + wait
    with _changed:
        need_write = write or _writers[key] > 0
        while True:
            instance = _instances.get(key)
            if instance is None:
                database = _attach(path, read_only=not need_write, wait=wait)
                instance = _instances[key] = _Instance(database, not need_write)
                break
            if not (need_write and instance.read_only):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WarehouseBusyError(
                    f"{path} is open read-only by queries of this process; retry shortly"
                )
            _changed.wait(remaining)
        instance.users += 1
        assert _host is not None
        cursor = _cursor(_host, instance.database)
    return Lease(key, _host, instance.read_only, instance.database, [cursor])


def _release(key: str) -> None:
    with _changed:
        instance = _instances.get(key)
        if instance is None:
            return
        instance.users -= 1
        if instance.users <= 0:
            del _instances[key]
            assert _host is not None
            with contextlib.closing(_host.cursor()) as cursor:
                cursor.execute(f"DETACH {quote(instance.database)}")  # closes the file
            _changed.notify_all()
