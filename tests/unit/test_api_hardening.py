"""Smaller hardening of the API: nesting limit, readiness of failed pipelines, auth throttling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from sluice.api import ApiConfig, ApiKeys, create_app, hash_key
from sluice.api.auth import AuthThrottle
from sluice.cli import app as cli
from sluice.core.settings import Settings
from sluice.storage.log import MAX_NESTING, open_log
from tests.unit.test_api import StaticPipelines

pytestmark = pytest.mark.anyio
LOCAL = "http://127.0.0.1:5000"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _app(home: Path, keys: ApiKeys | None = None, pipelines: Any = None, **config: Any) -> Any:
    return create_app(
        Settings(home=home),
        pipelines_provider=pipelines,
        api_keys=keys or ApiKeys(),
        config=ApiConfig(auto_create_streams=True, **config),
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url=LOCAL) as c:
        yield c


def _nested(depth: int) -> bytes:
    """A JSON object ``depth`` levels deep (written by hand: orjson will not write it)."""
    return b'{"a": ' * (depth - 1) + b'{"leaf": 1}' + b"}" * (depth - 1)


@pytest.mark.parametrize("fmt", ["object", "array", "ndjson"])
async def test_records_nested_past_the_limit_are_a_400(
    client: httpx.AsyncClient, tmp_path: Path, fmt: str
) -> None:
    deep, flat = _nested(500), b'{"x": 1}'
    bodies = {
        "object": deep,
        "array": b"[" + flat + b"," + deep + b"]",
        "ndjson": flat + b"\n" + deep + b"\n",
    }
    r = await client.post("/api/v1/ingest/deep", content=bodies[fmt])
    assert r.status_code == 400, r.text
    assert f"nested more than {MAX_NESTING} levels deep" in r.json()["error"]
    where = {"object": {}, "array": {"item": 1}, "ndjson": {"line": 2}}[fmt]
    assert r.json()["detail"] == {"stream": "deep", **where}
    log = open_log(Settings(home=tmp_path).log_dir)
    assert not log.exists("deep") or log.end_offset("deep") == 0


@pytest.mark.parametrize("fmt", ["object", "array", "ndjson"])
async def test_records_at_the_limit_are_accepted(client: httpx.AsyncClient, fmt: str) -> None:
    record = _nested(MAX_NESTING)
    body = {"object": record, "array": b"[" + record + b"]", "ndjson": record + b"\n"}[fmt]
    r = await client.post("/api/v1/ingest/deep", content=body)
    assert r.status_code == 202, r.text


async def test_readyz_is_503_while_a_pipeline_is_failed(tmp_path: Path) -> None:
    pipelines = StaticPipelines()
    transport = httpx.ASGITransport(app=_app(tmp_path, pipelines=pipelines))
    async with httpx.AsyncClient(transport=transport, base_url=LOCAL) as c:
        assert (await c.get("/readyz")).status_code == 200
        pipelines.status["telemetry"]["state"] = "failed"
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["detail"]["checks"] == {"log": "ok", "pipelines": "failed: telemetry"}
        pipelines.status["telemetry"]["state"] = "running"  # restarted after its backoff
        assert (await c.get("/readyz")).status_code == 200


async def test_repeated_invalid_keys_are_throttled_per_client(tmp_path: Path) -> None:
    now = [1000.0]
    app = _app(tmp_path, keys=ApiKeys.from_pairs("right-key-0123456789:read"))
    app.state.sluice.auth_throttle = AuthThrottle(3, clock=lambda: now[0])

    def client(host: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        return httpx.AsyncClient(transport=transport, base_url=LOCAL)

    good, bad = {"X-API-Key": "right-key-0123456789"}, {"X-API-Key": "guess"}
    async with client("10.0.0.1") as guesser, client("10.0.0.2") as other:
        for _ in range(3):
            assert (await guesser.get("/api/v1/streams", headers=bad)).status_code == 401
        r = await guesser.get("/api/v1/streams", headers=good)  # even the right key waits
        assert r.status_code == 429 and r.headers["Retry-After"] == "20"
        assert r.json()["detail"] == {"retry_after_seconds": 20}
        assert (await other.get("/api/v1/streams", headers=good)).status_code == 200
        assert (await guesser.get("/healthz")).status_code == 200  # probes need no key
        now[0] += 20
        assert (await guesser.get("/api/v1/streams", headers=good)).status_code == 200
        assert (await guesser.get("/api/v1/streams", headers=bad)).status_code == 401
        assert (await guesser.get("/api/v1/streams", headers=bad)).status_code == 429


def test_hash_key_wants_a_long_key_and_a_known_role() -> None:
    runner = CliRunner()
    short = runner.invoke(cli, ["api", "hash-key", "x" * 15, "--role", "admin"])
    assert short.exit_code == 2 and "use at least 16" in short.output
    role = runner.invoke(cli, ["api", "hash-key", "k" * 16, "--role", "root"])
    assert role.exit_code == 2 and "unknown role 'root'" in role.output
    ok = runner.invoke(cli, ["api", "hash-key", "k" * 16, "--role", "admin"])
    assert ok.exit_code == 0 and ok.output.strip() == f"{hash_key('k' * 16)}:admin"
