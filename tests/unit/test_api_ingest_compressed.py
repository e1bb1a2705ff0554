"""Log shippers' bodies: gzip/deflate ``json_batch`` (Logstash, Fluent Bit) and ``@timestamp``."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from deltalake import DeltaTable

from sluice.api import ApiConfig, ApiKeys, create_app
from sluice.config.loader import load_pipeline
from sluice.core.settings import Settings
from sluice.runners.create import run
from sluice.storage.log import open_log

pytestmark = pytest.mark.anyio
LIMIT = 1024 * 1024
START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
async def client(sluice_home: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API on a fresh home, streams created on first push, 1 MiB body limit."""
    app = create_app(
        Settings(home=sluice_home),
        api_keys=ApiKeys(),
        config=ApiConfig(max_body_bytes=LIMIT, auto_create_streams=True),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5000") as c:
        yield c


def logstash_events(n: int) -> list[dict[str, Any]]:
    """Events shaped like Logstash's: ``@timestamp``, ``@version``, nested host and log."""
    return [
        {
            "@timestamp": (START + timedelta(seconds=7 * i)).isoformat(timespec="milliseconds"),
            "@version": "1",
            "message": f"GET /item/{i} 200",
            "host": {"name": f"web-{i % 4}"},
            "log": {"level": "info" if i % 10 else "warn"},
        }
        for i in range(n)
    ]


PIPELINE = """\
name: shipped
source: {type: log, stream: logs}
schema: {"@timestamp": timestamp, message: string, host: json, "@version": string}
event_time: "@timestamp"
transforms:
  - window: {size: 1h, aggregate: {n: "count(*)"}, into: shipped_1h}
sinks:
  - {type: lake, table: shipped, partition_by: none}
"""


async def test_a_gzip_json_batch_of_logstash_events_lands_with_timestamp_as_event_time(
    client: httpx.AsyncClient, sluice_home: Path, tmp_path: Path
) -> None:
    events = logstash_events(1_000)
    body = gzip.compress(json.dumps(events).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    r = await client.post("/api/v1/ingest/logs", content=body, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["count"] == 1_000

    path = tmp_path / "shipped.yaml"
    path.write_text(PIPELINE)
    stats = run(load_pipeline(path), until_idle=True, idle_timeout=1.0)
    assert (stats.events_in, stats.events_out, stats.dead_lettered) == (1_000, 1_000, 0)
    settings = Settings(home=sluice_home)
    lake = DeltaTable(str(settings.lake_path("shipped"))).to_pyarrow_table()
    stamps = sorted(lake.column("@timestamp").to_pylist())
    assert stamps == [START + timedelta(seconds=7 * i) for i in range(1_000)]
    # The hourly windows are cut by @timestamp (7,000 s of events span three hours).
    windows = DeltaTable(str(settings.lake_path("shipped_1h"))).to_pyarrow_table()
    hours: dict[datetime, int] = {}
    for stamp in stamps:
        hour = stamp.replace(minute=0, second=0, microsecond=0)
        hours[hour] = hours.get(hour, 0) + 1
    got = {row["window_start"]: row["n"] for row in windows.to_pylist()}
    assert got == hours


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
        ("x-gzip", gzip.compress),
    ],
    ids=["zlib-deflate", "raw-deflate", "x-gzip"],
)
async def test_deflate_bodies_are_accepted(
    client: httpx.AsyncClient, encoding: str, compress: Any
) -> None:
    ndjson = "\n".join(json.dumps(e) for e in logstash_events(20)).encode()
    r = await client.post(
        "/api/v1/ingest/logs", content=compress(ndjson), headers={"content-encoding": encoding}
    )
    assert r.status_code == 202, r.text
    assert r.json()["count"] == 20


async def test_a_decompression_bomb_is_refused_with_413_and_nothing_appended(
    client: httpx.AsyncClient, sluice_home: Path
) -> None:
    bomb = gzip.compress(b"[" + b" " * (200 * LIMIT) + b"]", compresslevel=9)
    assert len(bomb) < LIMIT // 2  # the body itself is well within the limit
    r = await client.post("/api/v1/ingest/logs", content=bomb, headers={"content-encoding": "gzip"})
    assert r.status_code == 413
    assert "decompressed body is larger than the limit" in r.json()["error"]
    log = open_log(Settings(home=sluice_home).log_dir)
    assert not log.exists("logs") or log.end_offset("logs") == 0


@pytest.mark.parametrize(
    ("encoding", "body", "status"),
    [
        ("gzip", b"not gzip at all", 400),
        ("gzip", gzip.compress(b'[{"a": 1}]')[:-6], 400),
        ("br", b"whatever", 415),
    ],
    ids=["not-gzip", "truncated", "brotli"],
)
async def test_bad_compressed_bodies_are_4xx(
    client: httpx.AsyncClient, encoding: str, body: bytes, status: int
) -> None:
    r = await client.post(
        "/api/v1/ingest/logs", content=body, headers={"content-encoding": encoding}
    )
    assert r.status_code == status
    assert r.json()["error"]
