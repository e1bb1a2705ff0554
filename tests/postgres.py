"""The local PostgreSQL for tests: reachability and throw-away databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import require_service

SERVER = "postgresql://postgres@127.0.0.1:5432"
ADMIN_URL = f"{SERVER}/test"


def postgres_up() -> bool:
    """True when the local PostgreSQL accepts connections."""
    import psycopg

    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def create_database(prefix: str) -> str:
    """Create a uniquely named database (failing under CI without PostgreSQL); its name."""
    import psycopg

    require_service(postgres_up(), "PostgreSQL at 127.0.0.1:5432")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_databases(*names: str) -> None:
    """Drop ``names``, ending their sessions."""
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temporary_database(prefix: str) -> Iterator[str]:
    """A fresh database for the block; its name."""
    name = create_database(prefix)
    try:
        yield name
    finally:
        drop_databases(name)


def create_readings(url: str) -> None:
    """A ``readings`` table: id, device_id, ts, temperature, updated_at (for sql sources)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE readings (id bigint PRIMARY KEY, device_id text, "
            "ts timestamptz, temperature double precision, updated_at timestamptz)"
        )


def insert_readings(url: str, first: int, last: int, stamp: str = "now()") -> None:
    """Rows ``first..last`` (ids) of ``readings``; ``updated_at`` repeats for 10 rows."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO readings SELECT g, 'd' || (g %% 7), "
            "timestamptz '2026-01-01' + g * interval '1 second', g / 10.0, "
            f"{stamp} + (g / 10) * interval '1 second' "
            "FROM generate_series(%s::bigint, %s::bigint) AS g",
            (first, last),
        )
