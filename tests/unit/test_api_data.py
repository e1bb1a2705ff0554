"""tables, tables/{name}, query, anomalies and dlq (list, summary, replay) over real DuckDB.

The engine is ``sluice.storage.query.QueryEngine`` over real Delta tables when it is
available; until then a small DuckDB engine over Arrow tables with the same two methods.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pytest

from sluice.api import ApiConfig, ApiKeys, create_app
from sluice.core.context import DEAD_LETTER_SCHEMA
from sluice.core.errors import QueryError
from sluice.core.settings import Settings
from sluice.storage.log import open_log

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Info:
    name: str
    kind: str
    rows: int
    columns: list[str]


class DuckEngine:
    """Read-only SQL over named Arrow tables in DuckDB (QueryEngine's API)."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        self.con = duckdb.connect()
        self.lock = threading.Lock()
        self.infos = []
        for name, table in tables.items():
            self.con.register(name, table)
            self.infos.append(Info(name, "lake", table.num_rows, table.column_names))

    def tables(self) -> list[Info]:
        return list(self.infos)

    def query(self, sql: str, limit: int | None = None, max_bytes: int | None = None) -> pa.Table:
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if head not in {"SELECT", "WITH"} or ";" in sql.strip().rstrip(";"):
            raise QueryError(f"only one read-only SELECT statement is allowed, got {head!r}")
        with self.lock:
            try:
                result = self.con.sql(sql)
                table = result.to_arrow_table() if result is not None else pa.table({})
            except duckdb.Error as exc:
                raise QueryError(str(exc).splitlines()[0]) from None
        return table.slice(0, limit) if limit is not None else table


def telemetry() -> pa.Table:
    n = 10
    return pa.table(
        {
            "device_id": [f"d{i % 3}" for i in range(n)],
            "ts": pa.array(
                [T0 + timedelta(minutes=i) for i in range(n)], pa.timestamp("us", "UTC")
            ),
            "temp_c": [20.0 + i for i in range(n)],
            "temp_anomaly_anomaly": [i in (2, 5, 9) for i in range(n)],
            "temp_anomaly_reason": [f"temp_c z={i}" if i in (2, 5, 9) else None for i in range(n)],
            "drift_anomaly": [i == 7 for i in range(n)],
            "drift_score": [1.0 if i == 7 else 0.0 for i in range(n)],
            "is_anomaly": [i in (1, 2) for i in range(n)],  # ground truth: no model's flag
        }
    )


def dead_letters() -> pa.Table:
    rows = [
        (
            "telemetry",
            1,
            "decode",
            "temperature: not a number",
            '{"temperature": "hot"}',
            "events@3",
        ),
        ("telemetry", 1, "decode", "invalid JSON", "{oops", "events@4"),
        ("other", 2, "transform", "division by zero", '{"x": 0}', "file.jsonl:9"),
    ]
    cols = list(zip(*rows, strict=True))
    stamps = [T0 + timedelta(seconds=i) for i in range(3)]
    return pa.table(
        [
            pa.array(cols[0]),
            pa.array(cols[1], pa.int64()),
            pa.array(cols[2]),
            pa.array(cols[3]),
            pa.array(cols[4]),
            pa.array(cols[5]),
            pa.array(stamps, pa.timestamp("us", "UTC")),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    engine = DuckEngine(
        {
            "telemetry": telemetry(),
            "dead_letters": dead_letters(),
            "plain": pa.table({"x": list(range(250))}),
        }
    )
    app = create_app(
        Settings(home=tmp_path),
        api_keys=ApiKeys(),
        config=ApiConfig(),
        query_engine_factory=lambda _settings: engine,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:5000"
    ) as c:
        yield c


async def test_tables_and_paginated_rows(client: httpx.AsyncClient) -> None:
    tables = (await client.get("/api/v1/tables")).json()
    assert [t["name"] for t in tables] == ["telemetry", "dead_letters", "plain"]
    assert tables[2] == {"name": "plain", "kind": "lake", "rows": 250, "columns": ["x"]}
    first = (await client.get("/api/v1/tables/plain", params={"limit": 100})).json()
    assert [r["x"] for r in first["rows"]] == list(range(100))
    assert first["next_offset"] == 100
    last = (await client.get("/api/v1/tables/plain", params={"limit": 100, "offset": 200})).json()
    assert last["count"] == 50 and last["next_offset"] is None


@pytest.mark.parametrize(
    "name",
    ['plain"; DROP TABLE telemetry; --', "../../etc/passwd", "plain UNION SELECT 1", "PLAIN"],
)
async def test_table_names_are_checked_against_the_list(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.get(f"/api/v1/tables/{name}")
    assert r.status_code == 404
    assert r.json()["error"].startswith(("no table named", "Not Found"))
    assert (await client.get("/api/v1/tables/telemetry")).json()["count"] == 10


async def test_query_read_only(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM plain"})
    assert r.status_code == 200
    assert r.json()["rows"] == [{"n": 250}] and r.json()["columns"] == ["n"]
    r = await client.post(
        "/api/v1/query",
        content=b'{"sql": "SELECT x FROM plain", "limit": 5}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.json()["count"] == 5 and r.json()["truncated"] is True


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE plain",
        "DELETE FROM plain",
        "SELECT 1; DROP TABLE plain",
        "COPY plain TO '/tmp/x.csv'",
        "SELECT * FROM nowhere",
    ],
)
async def test_query_refuses_writes_and_bad_sql(client: httpx.AsyncClient, sql: str) -> None:
    r = await client.post("/api/v1/query", json={"sql": sql})
    assert r.status_code == 400
    assert r.json()["detail"] == {"type": "QueryError"}
    count = await client.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM plain"})
    assert count.json()["rows"] == [{"n": 250}]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"query": "SELECT 1"}, 'send {"sql"'),
        ({"sql": "SELECT 1", "limit": 0}, "'limit' must be an integer"),
    ],
)
async def test_query_bad_requests(
    client: httpx.AsyncClient, body: dict[str, Any], error: str
) -> None:
    r = await client.post("/api/v1/query", json=body)
    assert r.status_code == 400 and error in r.json()["error"]


async def test_anomalies_newest_first_with_reasons(client: httpx.AsyncClient) -> None:
    page = (await client.get("/api/v1/anomalies")).json()
    assert [r["temp_c"] for r in page["rows"]] == [29.0, 27.0, 25.0, 22.0]
    assert page["rows"][0]["temp_anomaly_reason"] == "temp_c z=9"
    assert page["rows"][0]["table"] == "telemetry"
    second = (await client.get("/api/v1/anomalies", params={"limit": 2, "offset": 2})).json()
    assert [r["temp_c"] for r in second["rows"]] == [25.0, 22.0]
    assert second["next_offset"] is None


async def test_anomaly_filters(client: httpx.AsyncClient) -> None:
    by_key = (await client.get("/api/v1/anomalies", params={"key": "d2"})).json()
    assert [r["temp_c"] for r in by_key["rows"]] == [25.0, 22.0]  # device_id auto-detected
    window = {"since": "2026-01-01T00:04:00Z", "until": "2026-01-01T00:08:00+00:00"}
    ranged = (await client.get("/api/v1/anomalies", params=window)).json()
    assert [r["temp_c"] for r in ranged["rows"]] == [27.0, 25.0]
    sneaky = (await client.get("/api/v1/anomalies", params={"key": "d2' OR '1'='1"})).json()
    assert sneaky["rows"] == []
    r = await client.get("/api/v1/anomalies", params={"key": "d1", "key_column": "x;--"})
    assert r.status_code == 400 and "has no column" in r.json()["error"]
    r = await client.get("/api/v1/anomalies", params={"since": "yesterday"})
    assert r.status_code == 422 and "query.since" in r.json()["error"]
    assert (await client.get("/api/v1/anomalies", params={"pipeline": "telemetry"})).json()[
        "count"
    ] == 4
    assert (await client.get("/api/v1/anomalies", params={"pipeline": "x"})).json()["rows"] == []


async def test_dead_letters_list_and_summary(client: httpx.AsyncClient) -> None:
    page = (await client.get("/api/v1/dlq", params={"pipeline": "telemetry"})).json()
    assert [r["origin"] for r in page["rows"]] == ["events@4", "events@3"]
    assert page["rows"][0]["reason"] == "invalid JSON"
    summary = (await client.get("/api/v1/dlq/summary")).json()
    assert summary[0] == {
        "pipeline": "telemetry",
        "stage": "decode",
        "count": 2,
        "last_at": "2026-01-01T00:00:01+00:00",
        "last_reason": "invalid JSON",
    }


async def test_replay_appends_each_dead_letter_once(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    log = open_log(Settings(home=tmp_path).log_dir)
    log.append("events", [b"{}"] * 5)
    r = await client.post("/api/v1/dlq/replay", json={"stream": "events"})
    assert r.json() == {
        "stream": "events",
        "found": 2,
        "replayed": 2,
        "first_offset": 5,
        "last_offset": 6,
    }
    raws = log.read("events", 5, 10).column("_raw").to_pylist()
    assert raws == ['{"temperature": "hot"}', "{oops"]
    again = (await client.post("/api/v1/dlq/replay", json={"stream": "events"})).json()
    assert again["replayed"] == 0 and log.end_offset("events") == 7


@pytest.mark.parametrize(
    ("body", "status"), [({"stream": "../x"}, 400), ({"stream": "missing"}, 404), ({}, 400)]
)
async def test_replay_bad_requests(
    client: httpx.AsyncClient, body: dict[str, Any], status: int
) -> None:
    r = await client.post("/api/v1/dlq/replay", json=body)
    assert r.status_code == status and r.json()["error"]
