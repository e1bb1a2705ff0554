"""Schema migrations of the metadata DB: Alembic revisions shipped in ``storage/migrations``.

``ensure_schema`` brings a database to the head revision the first time a process uses
it. Processes that start together are serialised: on PostgreSQL by a transaction-scoped
advisory lock, on SQLite by ``BEGIN IMMEDIATE``; the one that waited finds the schema at
head and does nothing. A database created before migrations existed (its tables made by
``create_all``, no ``alembic_version``) is adopted: the first revision creates only the
tables it lacks and stamps it.

An empty database (a fresh ``SLUICE_HOME``) is made in one step instead: the tables
declared in code (``db.declared_metadata``) are created and stamped at head in one transaction,
under the same lock, without importing Alembic. The declared tables and the migrations'
result are kept equal by tests on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    text,
)
from sqlalchemy.exc import OperationalError

from sluice.core.errors import StateError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision, known without importing Alembic (a test keeps it equal to the scripts).
HEAD = "0007"
# Any constant: replicas of one database agree on it, other users of the database do not use it.
ADVISORY_LOCK_KEY = 0x51C1CE_DB
# Alembic's version table, as Alembic creates it.
_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision shipped with this version of Sluice."""
    return HEAD


def script_head() -> str | None:
    """The newest revision according to the scripts in ``migrations/versions``."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: Engine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    with _reachable(engine), engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate to ``revision`` while holding the migration lock; return the revision reached."""
    from alembic import command

    with _reachable(engine), engine.connect() as conn:
        _lock(conn)
        command.upgrade(_config(conn), revision)
        conn.commit()
    return current(engine)


def ensure_schema(
    engine: Engine, metadata: MetaData | Callable[[], MetaData] | None = None
) -> None:
    """Upgrade to head unless the database is already there; refuse a newer schema.

    With ``metadata`` (the tables declared in code, or a function returning them: called
    only for an empty database), an empty database is created at head in one step
    (``create_at_head``) instead of running every migration.
    """
    revision = current(engine)
    if revision == HEAD:
        return
    if revision is not None and not _known(revision):
        where = engine.url.render_as_string(hide_password=True)
        raise StateError(
            f"metadata database {where} is at schema revision {revision}, which this version "
            f"of Sluice does not know (its newest is {HEAD}): upgrade Sluice"
        )
    if revision is None and metadata is not None:
        declared = metadata() if callable(metadata) else metadata
        if create_at_head(engine, declared):
            return
    upgrade(engine)


def create_at_head(engine: Engine, metadata: MetaData) -> bool:
    """Create ``metadata``'s tables and stamp head, if the database holds no table at all.

    ``metadata`` must declare exactly the head revision's tables (``db.declared_metadata``).
    Runs under the migration lock in one transaction; False (nothing done) when any table
    exists, e.g. another process made the schema first or the database predates migrations.
    """
    with _reachable(engine), engine.connect() as conn:
        _lock(conn)
        if inspect(conn).get_table_names():
            conn.rollback()
            return False
        metadata.create_all(conn, checkfirst=False)
        _VERSION.create(conn)
        conn.execute(_VERSION.insert().values(version_num=HEAD))
        conn.commit()
    return True


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _lock(conn: Connection) -> None:
    """Take the lock that serialises migrations; it is released when ``conn`` commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _reachable(engine: Engine) -> Iterator[None]:
    """Turn "cannot connect" into a StateError naming the database without its password."""
    try:
        yield
    except OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StateError(f"metadata database {where} is unavailable: {reason}") from exc
