"""The metadata database: one SQLAlchemy engine per URL and a shared table registry.

SQLite (WAL mode, synchronous FULL) under ``SLUICE_HOME`` is the embedded default;
``SLUICE_METADATA_URL=postgresql://...`` points several replicas at one PostgreSQL.
Feature modules declare their tables on ``METADATA``; the schema itself is made by the
Alembic migrations in ``storage/migrations``, applied when an engine is first created.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from sluice.core.deps import require
from sluice.core.errors import ConfigError, MissingDependencyError
from sluice.storage.sqlite_wal import enable_wal

METADATA = MetaData()
# Modules that declare the metadata tables on METADATA (imported by name: they import this one).
TABLE_MODULES = (
    "sluice.storage.checkpoints",
    "sluice.storage.runs",
    "sluice.actions.outbox",
    "sluice.orchestration.history",
    "sluice.models.registry",
    "sluice.models.drift",
)
_engines: dict[str, Engine] = {}
_created: set[tuple[str, str]] = set()
_migrated: set[str] = set()
_lock = threading.Lock()


def sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    """Set up a new SQLite connection: busy timeout, WAL, synchronous FULL."""
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA busy_timeout=30000")
    enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _postgres_utc(dbapi_conn: object, _record: object) -> None:
    """Times are read back in UTC whatever the server's TimeZone (SQLite holds UTC too)."""
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("SET TIME ZONE 'UTC'")
    cursor.close()
    dbapi_conn.commit()  # type: ignore[attr-defined]


def _postgres_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            require("psycopg", "postgres", "a PostgreSQL metadata store")
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` (not cached, schema untouched), creating SQLite's folder."""
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, poolclass=NullPool)
            event.listen(engine, "connect", sqlite_pragmas)
            return engine
        if url.startswith(("postgresql://", "postgresql+", "postgres://")):
            engine = create_engine(_postgres_url(url), pool_pre_ping=True)
            event.listen(engine, "connect", _postgres_utc)
            return engine
        reason = "only SQLite and PostgreSQL are supported"
    except (ArgumentError, ImportError) as exc:
        if isinstance(exc, MissingDependencyError):
            raise
        reason = str(exc)
    raise ConfigError(
        f"{_masked(url)} cannot be used as the metadata database ({reason}); use "
        "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB",
        key="SLUICE_METADATA_URL",
    )


def _masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the URL"


def get_engine(url: str) -> Engine:
    """Return the (cached) engine for ``url`` with its schema migrated to the newest revision."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = make_engine(url)
            try:
                _migrate(engine)
            except BaseException:
                engine.dispose()
                raise
            _engines[url] = engine
        return engine


def declared_metadata() -> MetaData:
    """``METADATA`` with every table of ``TABLE_MODULES`` declared on it."""
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return METADATA


def _migrate(engine: Engine) -> None:
    from sluice.storage.migrate import ensure_schema

    key = engine.url.render_as_string(hide_password=False)
    if key not in _migrated:
        # the table modules are imported only to create an empty database
        ensure_schema(engine, declared_metadata)
        _migrated.add(key)


def ensure_tables(engine: Engine, *names: str) -> None:
    """Migrate ``engine`` to the newest schema, then create any named table still missing.

    The migrations create every table; ``create_all`` only covers a table declared in code
    whose migration has not been written yet.
    """
    key = (str(engine.url), ",".join(sorted(names)))
    if key in _created:
        return
    with _lock:
        _migrate(engine)
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
        _migrated.clear()
