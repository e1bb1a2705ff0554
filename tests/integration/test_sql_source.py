"""The ``sql`` source against the machine's PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sluice.config.loader import load_pipeline
from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError, SourceError
from sluice.core.settings import Settings
from sluice.runners.create import run
from sluice.runners.stats import RunStats
from sluice.sinks.dead_letter import read_dead_letters
from sluice.sources.base import SourceContext, create_source
from sluice.storage.lake_tables import open_delta
from tests.mariadb import SERVER as MARIADB
from tests.mariadb import create_database, drop_database, execute
from tests.postgres import SERVER as POSTGRES
from tests.postgres import create_readings, insert_readings, temporary_database

SCHEMA = {"id": "long", "device_id": "string", "ts": "timestamp", "temperature": "double"}


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throw-away PostgreSQL database with a ``readings`` table."""
    with temporary_database("sqlsrc") as name:
        url = f"{POSTGRES}/{name}"
        create_readings(url)
        yield url


def pipeline_file(tmp_path: Path, source: dict[str, Any], name: str = "sqlp") -> Path:
    """A pipeline file reading ``source`` into the lake table ``name``."""
    spec = {
        "name": name,
        "source": source,
        "schema": SCHEMA,
        "event_time": "ts",
        "batch": {"max_rows": 5_000, "max_latency": "200ms"},
        "sinks": [{"type": "lake", "table": name, "partition_by": "none"}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(spec))
    return path


def table_source(url: str, cursor: str, batch_rows: int) -> dict[str, Any]:
    """A sql source reading the ``readings`` table by ``cursor``."""
    return {
        "type": "sql",
        "url": url,
        "table": "readings",
        "cursor": cursor,
        "batch_rows": batch_rows,
    }


def run_file(path: Path) -> RunStats:
    """Run a pipeline file until its source is idle."""
    return run(load_pipeline(path), until_idle=True, idle_timeout=1.0)


def lake_ids(settings: Settings, table: str = "sqlp") -> list[int]:
    """The ids in a lake table, sorted (duplicates kept)."""
    delta = open_delta(settings.lake_path(table))
    assert delta is not None
    return sorted(delta.to_pyarrow_table(columns=["id"]).column("id").to_pylist())


def test_a_postgres_table_loaded_in_two_runs_lands_every_row_exactly_once(
    pg_url: str, tmp_path: Path, settings: Settings
) -> None:
    insert_readings(pg_url, 1, 12_000)
    path = pipeline_file(tmp_path, table_source(pg_url, "id", 2_500))
    first = run_file(path)
    assert (first.events_in, first.events_out) == (12_000, 12_000)
    insert_readings(pg_url, 12_001, 15_000)
    second = run_file(path)
    assert (second.events_in, second.events_out) == (3_000, 3_000)
    assert lake_ids(settings) == list(range(1, 15_001))
    assert run_file(path).events_in == 0


def test_ties_on_a_timestamp_cursor_are_never_split(
    pg_url: str, tmp_path: Path, settings: Settings
) -> None:
    """``updated_at`` repeats every 10 rows and batches of 7 rows would cut each run."""
    insert_readings(pg_url, 1, 95, stamp="timestamptz '2026-03-01'")
    path = pipeline_file(tmp_path, table_source(pg_url, "updated_at", 7))
    assert run_file(path).events_out == 95
    insert_readings(pg_url, 96, 130, stamp="timestamptz '2026-03-02'")  # later rows, later stamps
    assert run_file(path).events_out == 35
    assert lake_ids(settings) == list(range(1, 131))


def test_a_query_with_a_cursor_reads_sqlite_incrementally(
    tmp_path: Path, settings: Settings
) -> None:
    db = tmp_path / "plant.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, device_id TEXT, ts TEXT, t REAL)")
        conn.executemany(
            "INSERT INTO r VALUES (?, ?, ?, ?)",
            [(i, f"d{i % 3}", f"2026-01-01T00:00:{i % 60:02d}Z", i * 1.5) for i in range(1, 41)],
        )
    source = {
        "type": "sql",
        "url": f"sqlite:///{db}",
        "query": "SELECT id, device_id, ts, t AS temperature FROM r WHERE id > :cursor AND t > 3",
        "cursor": "id",
        "batch_rows": 9,
    }
    path = pipeline_file(tmp_path, source)
    assert run_file(path).events_out == 38  # ids 3..40 have t > 3
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO r VALUES (41, 'd0', '2026-01-01T00:01:00Z', 99.0)")
    assert run_file(path).events_out == 1
    assert lake_ids(settings) == list(range(3, 42))


@pytest.fixture
def maria_url() -> Iterator[str]:
    """A throw-away MariaDB database with a ``readings`` table keyed by a datetime cursor."""
    name = create_database("sqlsrc")
    try:
        execute(
            "CREATE TABLE readings (id BIGINT PRIMARY KEY, device_id VARCHAR(20), "
            "ts DATETIME(6), temperature DOUBLE)",
            name,
        )
        yield f"{MARIADB}/{name}"
    finally:
        drop_database(name)


def maria_insert(url: str, first: int, last: int) -> None:
    """Rows ``first..last`` with one ``ts`` per second."""
    values = ", ".join(
        f"({i}, 'd{i % 5}', TIMESTAMP '2026-01-01 00:00:00' + INTERVAL {i} SECOND, {i / 4})"
        for i in range(first, last + 1)
    )
    execute(f"INSERT INTO readings VALUES {values}", url.rsplit("/", 1)[1])


def test_a_mariadb_table_by_datetime_cursor_in_two_runs(
    maria_url: str, tmp_path: Path, settings: Settings
) -> None:
    maria_insert(maria_url, 1, 500)
    path = pipeline_file(tmp_path, table_source(maria_url, "ts", 120))
    assert run_file(path).events_out == 500
    maria_insert(maria_url, 501, 650)
    assert run_file(path).events_out == 150
    assert lake_ids(settings) == list(range(1, 651))


def test_a_row_that_does_not_fit_is_dead_lettered_with_table_and_cursor(
    pg_url: str, tmp_path: Path, settings: Settings
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE readings ALTER COLUMN temperature TYPE text")
        conn.execute(
            "INSERT INTO readings VALUES (1, 'd1', '2026-01-01', '20.5', now()), "
            "(2, 'd1', '2026-01-01', 'warm', now()), (3, 'd2', '2026-01-01', '19', now())"
        )
    source = {"type": "sql", "url": pg_url, "table": "readings", "cursor": "id"}
    stats = run_file(pipeline_file(tmp_path, source))
    assert (stats.events_out, stats.dead_lettered) == (2, 1)
    dead = read_dead_letters(settings, "sqlp", limit=None).to_pylist()
    assert [d["origin"] for d in dead] == ["readings@2"]
    assert "temperature" in dead[0]["reason"] and "warm" in dead[0]["raw"]


def source_for(url: str, **options: Any) -> Any:
    """A sql source built directly (for error checks)."""
    config = SourceConfig.model_validate({"type": "sql", "url": url, **options})
    return create_source(config, SourceContext("sqlp", "/nonexistent"))


def test_a_null_cursor_is_a_clear_error(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO readings (id, device_id) VALUES (1, 'd1'), (2, 'd1')")
    source = source_for(pg_url, table="readings", cursor="updated_at")
    with pytest.raises(SourceError, match=r"cursor column 'updated_at' is NULL in 2 row"):
        source.open(None)
    source.close()


def test_a_cursor_that_went_backwards_is_a_clear_error(pg_url: str) -> None:
    insert_readings(pg_url, 1, 10)
    source = source_for(pg_url, table="readings", cursor="id")
    with pytest.raises(SourceError, match=r"cursor went backwards: the largest id is 10 but "):
        source.open({"cursor": 5_000})
    source.close()


def test_an_unreachable_database_is_retried_then_a_clear_error_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_PASSWORD", "s3cret-pw")
    url = "postgresql://reader:s3cret-pw@127.0.0.1:1/test"
    source = source_for(url, table="readings", cursor="id", retries=2, retry_delay="10ms")
    waits: list[float] = []
    source.sleep = waits.append  # an injected clock: no real waiting
    with pytest.raises(SourceError) as err:
        source.open(None)
    assert waits == [0.01, 0.02]
    message = str(err.value)
    assert "unreachable after 3 attempts" in message and "refused" in message
    assert "s3cret-pw" not in message and "reader:***@127.0.0.1:1" in message


def test_credentials_come_from_the_environment(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sluice_home: Path
) -> None:
    user, rest = pg_url.removeprefix("postgresql://").split("@", 1)
    monkeypatch.setenv("SQL_USER", user)
    insert_readings(pg_url, 1, 3)
    path = tmp_path / "env.yaml"
    path.write_text(
        "name: envp\n"
        f'source: {{type: sql, url: "postgresql://${{SQL_USER}}@{rest}", table: readings, '
        "cursor: id}\n"
        "sinks: [{type: lake, table: envp}]\n"
    )
    assert run_file(path).events_out == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "oracle://x/y", "table": "t", "cursor": "id"}, "url must start with"),
        ({"url": "sqlite:///x.db", "cursor": "id"}, "exactly one of 'table' or 'query'"),
        ({"url": "sqlite:///x.db", "query": "SELECT * FROM t", "cursor": "id"}, ":cursor"),
        ({"url": "sqlite:///x.db", "table": "t; drop", "cursor": "id"}, "must be a name"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        source_for(**options)


def test_a_dropped_connection_is_reopened_and_reading_goes_on(pg_url: str) -> None:
    insert_readings(pg_url, 1, 30)
    source = source_for(pg_url, table="readings", cursor="id", batch_rows=10, retry_delay="1ms")
    waits: list[float] = []
    source.sleep = waits.append
    source.open(None)
    try:
        first = source.poll(10, 1.0)
        assert first is not None and first.position == {"cursor": 10}
        with psycopg.connect(pg_url, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed == (1,)
        second = source.poll(10, 1.0)
    finally:
        source.close()
    assert second is not None and second.data.column("id").to_pylist() == list(range(11, 21))
    assert len(waits) == 1  # one failed read, one delay, then the new connection read
