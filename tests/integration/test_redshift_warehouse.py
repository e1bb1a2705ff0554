"""The Redshift warehouse: Parquet staged on S3 per epoch, COPY and marker in one transaction.

The SQL and the staging are real (moto S3); the COPY itself is replayed on PostgreSQL by
``tests.redshift_replay`` (``COPY FROM S3`` exists only on Redshift).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from sluice.config.models import SinkConfig
from sluice.core.errors import ConfigError, TransientSinkError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.redshift import RedshiftWarehouse, varchar_size
from sluice.sinks.warehouse import WarehouseSink
from tests.kafka_broker import MotoS3
from tests.postgres import SERVER, temporary_database
from tests.redshift_replay import ReplayConnection

ROLE = "arn:aws:iam::123456789012:role/sluice-load"


class Redshift:
    """A Redshift warehouse over a PostgreSQL database, its replaying connections."""

    def __init__(self, database: str, staging: str) -> None:
        self.dsn = f"{SERVER}/{database}"
        self.staging = staging
        self.connections: list[ReplayConnection] = []
        self.fail_on: str | None = None

    def connect(self, url: str, **kwargs: Any) -> ReplayConnection:
        """What the warehouse opens instead of psycopg.connect."""
        assert url == self.dsn
        conn = ReplayConnection(psycopg.connect(url, **kwargs), self.fail_on)
        self.connections.append(conn)
        return conn

    def warehouse(self, **options: Any) -> RedshiftWarehouse:
        """A warehouse writing through this replay."""
        url = self.dsn.replace("postgresql://", "redshift://")
        return RedshiftWarehouse(
            url, staging=self.staging, iam_role=ROLE, connect=self.connect, **options
        )

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` on the database."""
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture
def redshift(moto_s3_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Redshift]:
    """A throw-away database and a staging bucket on the moto server."""
    for key, value in moto_s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3_server.url)
    with temporary_database("redshift") as name:
        yield Redshift(name, f"s3://{moto_s3_server.bucket()}/stage")


def _batch(start: int, n: int, device: str = "dev") -> pa.Table:
    return pa.table(
        {
            "ts": pa.array(
                [datetime(2026, 1, 1, 0, i, tzinfo=UTC) for i in range(start, start + n)],
                pa.timestamp("us", "UTC"),
            ),
            "value": pa.array([i * 0.5 for i in range(start, start + n)], pa.float64()),
            "ok": pa.array([i % 2 == 0 for i in range(start, start + n)]),
            "n": pa.array(range(start, start + n), pa.int64()),
            "device": pa.array([f"{device}-{i}" for i in range(start, start + n)]),
        }
    )


def test_epoch_is_staged_as_parquet_and_copied_with_its_marker(redshift: Redshift) -> None:
    warehouse = redshift.warehouse()
    try:
        assert warehouse.write({"p": 1}, "events", _batch(0, 5)) is True
        (conn,) = redshift.connections
        prefix = f"{redshift.staging}/events/p/epoch=1/"
        copy = f"COPY \"events\" FROM '{prefix}' IAM_ROLE '{ROLE}' FORMAT AS PARQUET"
        create = (
            'CREATE TABLE IF NOT EXISTS "events" ("ts" TIMESTAMPTZ, "value" DOUBLE PRECISION, '
            '"ok" BOOLEAN, "n" BIGINT, "device" VARCHAR(256))'
        )
        assert create in conn.statements and copy in conn.statements
        marker = next(
            i for i, s in enumerate(conn.statements) if 'INSERT INTO "_sluice_epochs"' in s
        )
        assert conn.statements.index(create) < conn.statements.index(copy) < marker
        # At COPY time the epoch's one Parquet file was staged; after the commit it is gone.
        assert conn.replayed == [[f"{prefix}part-00000.parquet"]]
        assert warehouse.stage.files(prefix) == []
        # Replaying the epoch is a no-op: no second COPY, no duplicate rows.
        assert warehouse.write({"p": 1}, "events", _batch(0, 5)) is False
        assert sum(s.startswith("COPY") for s in conn.statements) == 1
    finally:
        warehouse.close()
    assert redshift.rows('SELECT n, value, ok, device, ts FROM "events" ORDER BY n') == [
        (i, i * 0.5, i % 2 == 0, f"dev-{i}", datetime(2026, 1, 1, 0, i, tzinfo=UTC))
        for i in range(5)
    ]
    assert redshift.rows("SELECT pipeline, sink_table, epoch FROM _sluice_epochs") == [
        ("p", "events", 1)
    ]
    types = redshift.rows(
        "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns"
        " WHERE table_name = 'events' ORDER BY ordinal_position"
    )
    assert types == [
        ("ts", "timestamp with time zone", None),
        ("value", "double precision", None),
        ("ok", "boolean", None),
        ("n", "bigint", None),
        ("device", "character varying", 256),
    ]


def test_longer_text_widens_and_new_columns_load_by_position(redshift: Redshift) -> None:
    warehouse = redshift.warehouse()
    try:
        warehouse.write({"p": 1}, "events", _batch(0, 2))
        wide = _batch(2, 2, device="d" * 300).append_column("site", pa.array(["a", "b"]))
        narrow = _batch(4, 1).drop_columns(["ok"])  # a column the batch lacks loads as null
        assert warehouse.write(
            {"p": 2}, "events", wide.select(["site", *_batch(0, 1).column_names])
        )
        assert warehouse.write({"p": 3}, "events", narrow)
    finally:
        warehouse.close()
    statements = redshift.connections[0].statements
    assert 'ALTER TABLE "events" ALTER COLUMN "device" TYPE VARCHAR(512)' in statements
    assert 'ALTER TABLE "events" ADD COLUMN "site" VARCHAR(256)' in statements
    assert redshift.rows('SELECT n, ok, site, length(device) FROM "events" ORDER BY n') == [
        (0, True, None, 5),
        (1, False, None, 5),
        (2, True, "a", 302),
        (3, False, "b", 302),
        (4, None, None, 5),
    ]


def test_a_failed_marker_rolls_back_the_copy_and_cleans_the_stage(redshift: Redshift) -> None:
    redshift.fail_on = 'INSERT INTO "_sluice_epochs"'
    warehouse = redshift.warehouse()
    try:
        with pytest.raises(TransientSinkError, match="injected failure"):
            warehouse.write({"p": 1}, "events", _batch(0, 3))
        assert warehouse.stage.files(f"{redshift.staging}/events/p/epoch=1/") == []
    finally:
        warehouse.close()
    assert redshift.rows("SELECT to_regclass('events')") == [(None,)]  # the DDL rolled back too
    redshift.fail_on = None
    retry = redshift.warehouse()
    try:
        assert retry.write({"p": 1}, "events", _batch(0, 3)) is True
    finally:
        retry.close()
    assert redshift.rows('SELECT count(*) FROM "events"') == [(3,)]


def test_varchar_sizes_and_configured_length() -> None:
    assert [varchar_size(n) for n in (0, 256, 257, 5000, 70000)] == [256, 256, 512, 8192, 65535]
    assert varchar_size(10, configured=64) == 64


def test_the_sink_picks_the_redshift_loader_without_io(tmp_path: Path) -> None:
    context = SinkContext("p", Settings(home=tmp_path / "home"))
    url = "redshift://loader:secret@cluster.example:5439/dev"
    config = SinkConfig(
        type="warehouse", table="events", url=url, staging="s3://stage/sluice", varchar_length=1024
    )
    sink = WarehouseSink(config, context)
    assert isinstance(sink.backend, RedshiftWarehouse)
    assert (sink.backend.varchar_length, sink.backend.iam_role) == (1024, "default")
    without = SinkConfig(type="warehouse", table="events", url=url)
    with pytest.raises(ConfigError, match="staging"):
        WarehouseSink(without, context)
    assert not (tmp_path / "home").exists()
