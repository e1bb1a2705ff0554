"""Keyless mode against web pages: cross-site requests and DNS rebinding are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice.api import ApiConfig, ApiKeys, create_app
from sluice.core.settings import Settings
from sluice.storage.log import open_log
from tests.unit.test_api import StaticPipelines

pytestmark = pytest.mark.anyio
LOCAL = "http://127.0.0.1:5000"
FOREIGN = {"Origin": "http://attacker.example", "Content-Type": "text/plain"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _client(home: Path, keys: ApiKeys, pipelines: Any = None) -> httpx.AsyncClient:
    app = create_app(
        Settings(home=home),
        pipelines_provider=pipelines or StaticPipelines(),
        predictor=lambda data, model=None: {"model": "echo", "data": data},
        api_keys=keys,
        config=ApiConfig(auto_create_streams=True),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(tmp_path, ApiKeys()) as c:
        yield c


def _log_end(home: Path, stream: str) -> int:
    log = open_log(Settings(home=home).log_dir)
    return log.end_offset(stream) if log.exists(stream) else 0


async def test_foreign_origin_text_plain_posts_are_refused(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    r = await client.post("/api/v1/ingest/events", content=b'{"a": 1}', headers=FOREIGN)
    assert r.status_code == 403
    assert r.json()["detail"] == {"origin": "http://attacker.example"}
    assert "another origin" in r.json()["error"]
    r = await client.post("/api/v1/pipelines/telemetry/stop", headers=FOREIGN)
    assert r.status_code == 403
    assert (await client.get("/api/v1/pipelines/telemetry")).json()["state"] == "running"
    r = await client.post("/api/v1/jobs/any/runs", content=b"{}", headers=FOREIGN)
    assert r.status_code == 403
    assert _log_end(tmp_path, "events") == 0


@pytest.mark.parametrize(
    "kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
async def test_cross_site_content_types_are_refused_without_origin(
    client: httpx.AsyncClient, tmp_path: Path, kind: str
) -> None:
    r = await client.post(
        "/api/v1/ingest/events", content=b'{"a": 1}', headers={"Content-Type": kind}
    )
    assert r.status_code == 403
    assert "application/json" in r.json()["error"]
    assert r.json()["detail"] == {"content_type": kind.partition(";")[0]}
    assert _log_end(tmp_path, "events") == 0


async def test_rebound_host_is_refused(client: httpx.AsyncClient) -> None:
    for host in ("attacker.example", "attacker.example:5000", "10.0.0.8:5000", "[::2]"):
        r = await client.post(
            "/api/v1/query", json={"sql": "SELECT 1 AS one"}, headers={"Host": host}
        )
        assert r.status_code == 403, host
        assert r.json()["detail"] == {"host": host}
        assert "Host header" in r.json()["error"]
    assert (await client.get("/", headers={"Host": "attacker.example"})).status_code == 403


async def test_same_origin_json_and_scripts_still_work(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    for host in ("127.0.0.1:5000", "localhost:5000", "LOCALHOST", "[::1]:5000", "127.0.0.2"):
        origin = {"Host": host, "Origin": f"http://{host.lower()}"}
        r = await client.post("/api/v1/ingest/events", json={"a": 1}, headers=origin)
        assert r.status_code == 202, (host, r.text)
    ndjson = {"Content-Type": "application/x-ndjson"}
    r = await client.post("/api/v1/ingest/events", content=b'{"a": 1}\n{"a": 2}\n', headers=ndjson)
    assert r.status_code == 202
    r = await client.post("/api/v1/ingest/events", content=b'{"a": 1}')  # no type: a script
    assert r.status_code == 202
    assert _log_end(tmp_path, "events") == 8
    r = await client.post("/api/v1/pipelines/telemetry/stop")  # curl -X POST, no body
    assert r.status_code == 200 and r.json()["state"] == "stopped"
    assert (await client.get("/")).status_code == 200  # the dashboard
    assert (await client.get("/static/app.js")).status_code == 200


async def test_predict_keeps_the_curl_form_body_but_not_a_foreign_origin(
    client: httpx.AsyncClient,
) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
    r = await client.post("/api/v1/predict", content=b'{"data": "sample input"}', headers=form)
    assert r.status_code == 200 and r.json()["data"] == "sample input"
    r = await client.post("/api/v1/predict", content=b'{"data": "x"}', headers=FOREIGN)
    assert r.status_code == 403


async def test_api_keys_decide_when_configured(tmp_path: Path) -> None:
    async with _client(tmp_path, ApiKeys.from_pairs("w-key-0123456789:write")) as c:
        headers = {**FOREIGN, "Host": "sluice.example", "X-API-Key": "w-key-0123456789"}
        r = await c.post("/api/v1/ingest/events", content=b'{"a": 1}', headers=headers)
        assert r.status_code == 202
        r = await c.post("/api/v1/ingest/events", content=b'{"a": 1}', headers=FOREIGN)
        assert r.status_code == 401
