"""The metadata database: one SQLAlchemy engine per URL and a shared table registry.

SQLite (WAL mode, synchronous FULL) under ``SLUICE_HOME`` is the embedded default;
``SLUICE_METADATA_URL=postgresql://...`` points several replicas at one PostgreSQL.
Feature modules declare their tables on ``METADATA`` and call ``ensure_tables``.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.pool import NullPool

METADATA = MetaData()
_engines: dict[str, Engine] = {}
_created: set[tuple[str, str]] = set()
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _postgres_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def get_engine(url: str) -> Engine:
    """Return the (cached) engine for ``url``, creating the SQLite file's folder if needed."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, poolclass=NullPool)
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(_postgres_url(url), pool_pre_ping=True)
            _engines[url] = engine
        return engine


def ensure_tables(engine: Engine, *names: str) -> None:
    """Create the named tables of ``METADATA`` (all when no names) if they do not exist."""
    key = (str(engine.url), ",".join(sorted(names)))
    if key in _created:
        return
    tables = [METADATA.tables[n] for n in names] if names else None
    METADATA.create_all(engine, tables=tables, checkfirst=True)
    _created.add(key)


def dispose_all() -> None:
    """Close every cached engine (tests, forks)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _created.clear()
