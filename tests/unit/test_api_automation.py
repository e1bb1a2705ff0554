"""Job runs and the actions audit trail through the API (httpx.ASGITransport)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sluice.api import ApiConfig, ApiKeys, create_app
from sluice.core.settings import Settings

pytestmark = pytest.mark.anyio

JOBS = """\
jobs:
  - name: check
    params: {x: 0}
    tasks:
      - {name: one, type: sql, sql: "SELECT 1 AS x"}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "jobs.yaml").write_text(JOBS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLUICE_JOBS_FILE", raising=False)
    app = create_app(Settings(home=home), api_keys=ApiKeys(), config=ApiConfig())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5000") as c:
        yield c


async def test_trigger_and_list_job_runs(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/jobs/check/runs", json={"params": {"x": 1}})
    assert created.status_code == 202, created.text
    run_id = created.json()["run_id"]
    runs = await client.get("/api/v1/jobs/check/runs")
    assert runs.status_code == 200
    assert [r["id"] for r in runs.json()] == [run_id]
    assert runs.json()[0]["state"] == "queued"


async def test_unknown_job_and_bad_body(client: httpx.AsyncClient) -> None:
    missing = await client.post("/api/v1/jobs/nope/runs")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    bad = await client.post("/api/v1/jobs/check/runs", content=b"{not json")
    assert bad.status_code == 400


async def test_actions_audit_trail_and_commands(client: httpx.AsyncClient) -> None:
    listed = await client.get("/api/v1/actions")
    assert listed.status_code == 200
    assert listed.json()["actions"] == []
    unknown = await client.post("/api/v1/actions/42/retry")
    assert unknown.status_code == 404
    verb = await client.post("/api/v1/actions/42/explode")
    assert verb.status_code == 404 and "retry, approve or reject" in verb.json()["error"]
    bad_status = await client.get("/api/v1/actions", params={"status": "bogus"})
    assert bad_status.status_code == 400
