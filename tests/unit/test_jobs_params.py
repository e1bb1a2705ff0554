"""Job params are data, never syntax: declared names and types, inert shell values, paths."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from sluice.api import ApiConfig, ApiKeys, create_app
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.orchestration.scheduler import Scheduler
from sluice.orchestration.service import job_runner, resolve_jobs, run_task, store_for
from sluice.orchestration.spec import jobs_from_text
from sluice.orchestration.tasks import contained_path
from sluice.storage.db import dispose_all

pytestmark = pytest.mark.anyio

INJECTIONS = ["x; touch FILE", "x; id > FILE", "$(touch FILE)", "`touch FILE`", "x\ntouch FILE"]


def _jobs(root: Path) -> str:
    return f"""\
jobs:
  - name: templated
    allow_shell: true
    params: {{name: world, count: 1}}
    tasks:
      - {{name: say, type: shell, cwd: "{root}", command: "echo hi-{{{{ params.name }}}} > said"}}
  - name: by_env
    allow_shell: true
    params: {{name: world}}
    tasks:
      - {{name: say, type: shell, cwd: "{root}",
         command: "printf '%s' \\"$SLUICE_PARAM_NAME\\" > said"}}
  - name: dump
    params: {{path: one.parquet}}
    tasks:
      - {{name: out, type: export, query: "SELECT 1 AS one",
         path: "{root}/exports/{{{{ params.path }}}}"}}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    work = tmp_path / "root" / "work"
    work.mkdir(parents=True)
    return work


@pytest.fixture
def settings(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "jobs.yaml").write_text(_jobs(root))
    monkeypatch.chdir(root)
    monkeypatch.delenv("SLUICE_JOBS_FILE", raising=False)
    yield Settings(home=home)
    dispose_all()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, api_keys=ApiKeys(), config=ApiConfig())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5000") as c:
        yield c


def _run_queued(settings: Settings) -> dict[str, Any]:
    """Execute the queued runs as ``sluice serve``'s scheduler would; return the last one."""
    scheduler = Scheduler(settings, resolve_jobs(settings))
    try:
        started = scheduler.tick()
    finally:
        scheduler.close()
    assert len(started) == 1
    return store_for(settings).get(started[0]["id"])


async def _trigger(client: httpx.AsyncClient, job: str, params: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/api/v1/jobs/{job}/runs", json={"params": params})


@pytest.mark.parametrize("value", INJECTIONS)
async def test_shell_metacharacters_in_templated_params_run_nothing(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path, root: Path, value: str
) -> None:
    assert (await _trigger(client, "templated", {"name": value})).status_code == 202
    run = _run_queued(settings)
    assert run["state"] == "failed"
    assert "characters that could change its syntax" in run["tasks"][-1]["error"]
    assert not (root / "said").exists()
    assert list(tmp_path.rglob("FILE")) == []


@pytest.mark.parametrize("value", INJECTIONS)
async def test_params_reach_shell_tasks_as_environment_data(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path, root: Path, value: str
) -> None:
    assert (await _trigger(client, "by_env", {"name": value})).status_code == 202
    assert _run_queued(settings)["state"] == "success"
    assert (root / "said").read_text() == value
    assert list(tmp_path.rglob("FILE")) == []


async def test_declared_params_still_work(
    client: httpx.AsyncClient, settings: Settings, root: Path
) -> None:
    assert (await _trigger(client, "templated", {"name": "ada.l-1", "count": 3})).status_code == 202
    assert _run_queued(settings)["state"] == "success"
    assert (root / "said").read_text().strip() == "hi-ada.l-1"


async def test_undeclared_and_mistyped_params_are_refused(client: httpx.AsyncClient) -> None:
    r = await _trigger(client, "templated", {"name": "a", "cmd": "id"})
    assert r.status_code == 400
    assert r.json()["error"] == "job 'templated' declares no param 'cmd' (declared: count, name)"
    assert r.json()["detail"] == {"job": "templated", "param": "cmd"}
    r = await _trigger(client, "templated", {"count": "1; id"})
    assert r.status_code == 400
    assert r.json()["error"] == "job 'templated': param 'count' must be an integer, got str"
    r = await _trigger(client, "templated", {"name": ["a"]})
    assert r.status_code == 400 and "must be a string" in r.json()["error"]
    r = await client.post("/api/v1/jobs/templated/runs", json=["x"])
    assert r.status_code == 400 and "JSON object" in r.json()["error"]
    assert (await client.get("/api/v1/jobs/templated/runs")).json() == []


@pytest.mark.parametrize("path", ["../../escape.parquet", "sub/../../../escape.parquet"])
async def test_templated_export_paths_stay_under_their_directory(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path, path: str
) -> None:
    assert (await _trigger(client, "dump", {"path": path})).status_code == 202
    run = _run_queued(settings)
    assert run["state"] == "failed"
    assert "templated paths must stay under" in run["tasks"][-1]["error"]
    assert list(tmp_path.rglob("escape.parquet")) == []


async def test_templated_export_path_inside_its_directory_is_written(
    client: httpx.AsyncClient, settings: Settings, root: Path
) -> None:
    assert (await _trigger(client, "dump", {"path": "day/1.parquet"})).status_code == 202
    assert _run_queued(settings)["state"] == "success"
    assert pq.read_table(root / "exports" / "day" / "1.parquet").num_rows == 1


def test_contained_path_rules(root: Path) -> None:
    assert contained_path("out/{{ ds }}.parquet", "out/2026-01-01.parquet")
    assert contained_path("/fixed/path.parquet", "/fixed/path.parquet")  # no template: unchecked
    for bad in ("/etc/passwd", "../x", "a/../../x"):
        with pytest.raises(ConfigError, match="must stay under"):
            contained_path("{{ params.p }}", bad)
    with pytest.raises(ConfigError, match="must stay under"):
        contained_path(f"{root}/exp-{{{{ ds }}}}", str(root.parent / "x"))


def test_run_job_actions_are_held_to_the_declared_params(settings: Settings) -> None:
    run = job_runner(settings)
    with pytest.raises(ConfigError, match="declares no param 'device'"):
        run("templated", {"device": "d1"}, "key-1")
    run("templated", {"name": "d1"}, "key-2")
    queued = store_for(settings).recent("templated", limit=5)
    assert [r["params"] for r in queued] == [{"name": "d1", "idempotency_key": "key-2"}]


def test_templated_pipeline_files_take_params_as_values_only(
    tmp_path: Path, settings: Settings
) -> None:
    (tmp_path / "in.jsonl").write_text('{"device": "d1"}\n{"device": "d2"}\n')
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"""\
name: picked
source: {{type: file, path: "{tmp_path}/in.jsonl", format: json}}
schema: {{device: string}}
transforms: [{{filter: "device = '{{{{ params.device }}}}'"}}]
sinks: [{{type: lake, table: picked}}]
""")
    jobs = jobs_from_text(f"""
jobs:
  - name: pick
    params: {{device: d1}}
    tasks: [{{name: run, type: run_pipeline, pipeline: "{pipeline}", template: true}}]
""")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="could change its syntax"):
        run_task(settings, jobs, "pick", "run", start=start, params={"device": "x' OR '1'='1"})
    assert not (tmp_path / "home" / "lake" / "picked").exists()
    run_task(settings, jobs, "pick", "run", start=start, params={"device": "d2"})
    table = DeltaTable(settings.lake_path("picked")).to_pyarrow_table()
    assert table.column("device").to_pylist() == ["d2"]
