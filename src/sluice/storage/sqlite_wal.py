"""Switching a SQLite file to write-ahead logging when several processes open it at once."""

from __future__ import annotations

import sqlite3
import time
from typing import Any


def enable_wal(cursor: Any, attempts: int = 100) -> None:
    """Switch to WAL; a new file that several processes open at once may refuse for a moment.

    Changing the journal mode needs an exclusive lock and SQLite answers "database is
    locked" at once rather than waiting (the busy timeout does not apply), so retry briefly.
    """
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)
