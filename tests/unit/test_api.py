"""The API in-process through httpx.ASGITransport: ingest, predict, pipelines, ops, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from sklearn.ensemble import IsolationForest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sluice.api import ApiConfig, ApiKeys, create_app
from sluice.core.errors import NotFoundError
from sluice.core.settings import Settings
from sluice.storage.log import open_log

pytestmark = pytest.mark.anyio


class SmallPredictor:
    """A real scikit-learn text classifier and anomaly detector, trained on seeded data."""

    def __init__(self) -> None:
        texts = ["refund my order", "charged twice", "app crashes on login", "error on start"]
        self.text = make_pipeline(TfidfVectorizer(), LogisticRegression(random_state=0))
        self.text.fit(texts * 5, ["billing", "billing", "bug", "bug"] * 5)
        rng = np.random.default_rng(7)
        self.anomaly = IsolationForest(random_state=0, n_estimators=20)
        self.anomaly.fit(rng.normal(20.0, 1.0, size=(200, 2)))

    def __call__(self, data: Any, model: str | None = None) -> dict[str, Any]:
        name = model or ("ticket_text" if isinstance(data, str) else "temp_anomaly")
        if name == "ticket_text":
            texts = [data] if isinstance(data, str) else list(data)
            return {
                "model": name,
                "predictions": [{"label": str(label)} for label in self.text.predict(texts)],
            }
        if name == "temp_anomaly":
            records = [data] if isinstance(data, dict) else data
            x = np.array([[r["temperature"], r["pressure"]] for r in records], dtype=float)
            flags = self.anomaly.predict(x) == -1
            return {"model": name, "predictions": [{"anomaly": bool(f)} for f in flags]}
        raise NotFoundError(f"no model named {name!r} in the registry")


class StaticPipelines:
    """A pipelines provider holding fixed statuses (what the serve runtime reports)."""

    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {
            "telemetry": {
                "name": "telemetry",
                "state": "running",
                "events_per_second": 120.5,
                "lag": {"events": 3},
                "errors": 0,
                "tables": ["telemetry"],
                "source": {"type": "log", "stream": "events"},
            },
        }

    def list(self) -> list[dict[str, Any]]:
        return list(self.status.values())

    def get(self, name: str) -> dict[str, Any]:
        if name not in self.status:
            raise NotFoundError(f"no pipeline named {name!r}")
        return self.status[name]

    def start(self, name: str) -> dict[str, Any]:
        self.get(name)["state"] = "running"
        return self.status[name]

    def stop(self, name: str) -> dict[str, Any]:
        self.get(name)["state"] = "stopped"
        return self.status[name]


@pytest.fixture(scope="module")
def predictor() -> SmallPredictor:
    return SmallPredictor()


def make_app(home: Path, predictor: Any = None, **config: Any) -> FastAPI:
    return create_app(
        Settings(home=home),
        pipelines_provider=StaticPipelines(),
        predictor=predictor,
        api_keys=ApiKeys(),
        config=ApiConfig(**{"max_body_bytes": 1024 * 1024, **config}),
        models_provider=lambda: [{"name": "temp_anomaly", "version": 1}],
    )


@pytest.fixture
async def client(tmp_path: Path, predictor: SmallPredictor) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(tmp_path, predictor)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5000") as c:
        yield c


def _events(n: int) -> list[dict[str, Any]]:
    return [{"device_id": f"d{i % 3}", "temperature": 20.0 + i, "pressure": 1.0} for i in range(n)]


def _log_end(tmp_path: Path, stream: str) -> int:
    log = open_log(Settings(home=tmp_path).log_dir)
    return log.end_offset(stream) if log.exists(stream) else 0


# -- ingest ----------------------------------------------------------------------------------
async def test_ingest_array_object_and_ndjson(client: httpx.AsyncClient, tmp_path: Path) -> None:
    r = await client.post("/api/v1/ingest/events", json=_events(3))
    assert r.status_code == 202, r.text
    assert r.json() == {"stream": "events", "count": 3, "first_offset": 0, "last_offset": 2}
    r = await client.post("/api/v1/ingest/events", json={"device_id": "d9", "temperature": 1.0})
    assert r.json()["first_offset"] == 3
    ndjson = b"\n".join(orjson.dumps(e) for e in _events(2)) + b"\n"
    r = await client.post(
        "/api/v1/ingest/events", content=ndjson, headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 202 and r.json()["last_offset"] == 5
    table = open_log(Settings(home=tmp_path).log_dir).read("events", 0, 100)
    assert orjson.loads(table.column("_raw")[3].as_py()) == {"device_id": "d9", "temperature": 1.0}


@pytest.mark.parametrize(
    ("body", "error", "where"),
    [
        (b'{"a": 1}\n{"a": \n', "line 2: invalid JSON", {"line": 2}),
        (b'[{"a": 1}, "x"]', "item 1: expected a JSON object", {"item": 1}),
        (b"", "the body is empty", {}),
        (b"not json", "line 1: invalid JSON", {"line": 1}),
    ],
)
async def test_ingest_bad_bodies_write_nothing(
    client: httpx.AsyncClient, tmp_path: Path, body: bytes, error: str, where: dict[str, Any]
) -> None:
    r = await client.post("/api/v1/ingest/events", content=body)
    assert r.status_code == 400
    assert error in r.json()["error"]
    assert r.json()["detail"] == {"stream": "events", **where}
    assert _log_end(tmp_path, "events") == 0


async def test_ingest_unknown_stream_is_404(client: httpx.AsyncClient, tmp_path: Path) -> None:
    r = await client.post("/api/v1/ingest/nowhere", json=_events(1))
    assert r.status_code == 404
    assert "stream 'nowhere' does not exist" in r.json()["error"]
    assert not open_log(Settings(home=tmp_path).log_dir).exists("nowhere")


async def test_ingest_auto_create(tmp_path: Path) -> None:
    app = make_app(tmp_path, auto_create_streams=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:5000"
    ) as c:
        r = await c.post("/api/v1/ingest/new-stream", json=_events(1))
    assert r.status_code == 202


@pytest.mark.parametrize("name", ["..%2F..%2Fetc", "a%20b", "x" * 101, "..", "%2e%2e"])
async def test_ingest_path_traversal_is_refused(
    client: httpx.AsyncClient, tmp_path: Path, name: str
) -> None:
    r = await client.post(f"/api/v1/ingest/{name}", json=_events(1))
    assert r.status_code in (400, 404)
    assert r.json()["error"]
    assert not list(tmp_path.rglob("*.db"))


async def test_ingest_over_the_size_limit_is_413(client: httpx.AsyncClient, tmp_path: Path) -> None:
    big = b"[" + b",".join([b'{"pad": "' + b"x" * 1000 + b'"}'] * 2000) + b"]"
    r = await client.post("/api/v1/ingest/events", content=big)
    assert r.status_code == 413
    assert r.json()["detail"] == {"limit_bytes": 1024 * 1024}
    assert _log_end(tmp_path, "events") == 0


@pytest.mark.parametrize("ndjson", [False, True])
async def test_ingest_over_the_item_cap_is_413(tmp_path: Path, ndjson: bool) -> None:
    app = make_app(tmp_path, max_items=5, auto_create_streams=True)

    def body(n: int) -> bytes:
        events = [b"{}"] * n
        return b"\n".join(events) if ndjson else b"[" + b",".join(events) + b"]"

    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:5000"
    ) as c:
        r = await c.post("/api/v1/ingest/events", content=body(6), headers=headers)
        assert r.status_code == 413
        assert "more than the limit of 5 per request" in r.json()["error"]
        assert r.json()["detail"] == {"stream": "events", "items": 6, "limit_items": 5}
        assert _log_end(tmp_path, "events") == 0
        r = await c.post("/api/v1/ingest/events", content=body(5), headers=headers)
        assert r.status_code == 202 and r.json()["count"] == 5


async def test_ingest_50mb_streamed_body_stops_at_the_limit(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(50):
            sent += 1
            yield b" " * (1024 * 1024)

    r = await client.post("/api/v1/ingest/events", content=chunks())
    assert r.status_code == 413
    assert sent < 50  # the server stopped reading long before 50 MB
    assert _log_end(tmp_path, "events") == 0


async def test_ingest_backpressure_is_429(tmp_path: Path) -> None:
    app = make_app(tmp_path, max_backlog=5)
    log = open_log(Settings(home=tmp_path).log_dir)
    log.append("events", [b"{}"] * 6)
    log.commit_consumer("events", "telemetry", 0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:5000"
    ) as c:
        r = await c.post("/api/v1/ingest/events", json=_events(1))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.json()["detail"]["lag"] == 6
        log.commit_consumer("events", "telemetry", 6)
        assert (await c.post("/api/v1/ingest/events", json=_events(1))).status_code == 202
    assert log.end_offset("events") == 7


# -- predict ---------------------------------------------------------------------------------
async def test_predict_accepts_curls_form_content_type(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/predict",
        content=b'{"data": "sample input"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "ticket_text"
    assert r.json()["predictions"][0]["label"] in {"billing", "bug"}


async def test_predict_records_and_named_model(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/predict", json={"data": {"temperature": 20.1, "pressure": 20.0}})
    assert r.status_code == 200
    assert r.json() == {"model": "temp_anomaly", "predictions": [{"anomaly": False}]}
    r = await client.post(
        "/api/v1/predict",
        json={
            "model": "temp_anomaly",
            "data": [{"temperature": 20.0, "pressure": 20.0}, {"temperature": 95, "pressure": -4}],
        },
    )
    assert [p["anomaly"] for p in r.json()["predictions"]] == [False, True]
    r = await client.post("/api/v1/predict", json={"data": "charged twice", "model": "ticket_text"})
    assert r.json()["predictions"] == [{"label": "billing"}]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"data": "x", "model": "nope"}', 404, "no model named 'nope'"),
        (b"{bad", 400, "invalid JSON at line 1"),
        (b"", 400, "the body is empty"),
        (b'{"input": "x"}', 400, "missing 'data'"),
        (b'{"data": 5}', 400, "'data' must be a string"),
        (b"[1, 2]", 400, "the body must be a JSON object"),
        (b'{"data": "x", "model": 3}', 400, "'model' must be a model name"),
    ],
)
async def test_predict_bad_requests(
    client: httpx.AsyncClient, body: bytes, status: int, error: str
) -> None:
    r = await client.post("/api/v1/predict", content=body)
    assert r.status_code == status
    assert error in r.json()["error"]


async def test_predict_without_a_predictor_is_503(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:5000"
    ) as c:
        r = await c.post("/api/v1/predict", json={"data": "x"})
    assert r.status_code == 503
    assert "no model is available" in r.json()["error"]


# -- pipelines, models, jobs, streams, health, metrics ---------------------------------------
async def test_pipelines_status_and_control(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/pipelines")
    assert [p["name"] for p in r.json()] == ["telemetry"]
    assert (await client.get("/api/v1/pipelines/telemetry")).json()["state"] == "running"
    assert (await client.post("/api/v1/pipelines/telemetry/stop")).json()["state"] == "stopped"
    assert (await client.post("/api/v1/pipelines/telemetry/start")).json()["state"] == "running"
    r = await client.get("/api/v1/pipelines/ghost")
    assert r.status_code == 404 and "ghost" in r.json()["error"]


async def test_served_log_stream_accepts_ingest(client: httpx.AsyncClient) -> None:
    # "events" is the stream of the served pipeline's log source: it exists before any push
    r = await client.post("/api/v1/ingest/events", json=_events(2))
    assert r.status_code == 202
    streams = (await client.get("/api/v1/streams")).json()
    assert streams == [
        {"name": "events", "start_offset": 0, "end_offset": 2, "lag": 0, "consumers": {}}
    ]


async def test_models_jobs_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/models")).json() == [{"name": "temp_anomaly", "version": 1}]
    assert (await client.get("/api/v1/jobs")).json() == []
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"log": "ok", "pipelines": "ok"}


async def test_metrics_count_ingest_and_predict(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/ingest/events", json=_events(4))
    await client.post("/api/v1/predict", json={"data": "refund"})
    text = (await client.get("/metrics")).text
    assert 'sluice_ingest_events_total{stream="events"} 4.0' in text
    assert 'sluice_ingest_requests_total{status="202",stream="events"} 1.0' in text
    assert 'sluice_predict_seconds_count{model="ticket_text"} 1.0' in text  # the model used
    assert 'model="default"' not in text
    assert 'sluice_pipeline_events_per_second{pipeline="telemetry"} 120.5' in text
    assert 'sluice_pipeline_lag{pipeline="telemetry"} 3.0' in text


async def test_unknown_route_and_validation_errors_are_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"] == "Not Found"
    r = await client.get("/api/v1/dlq", params={"limit": 0})
    assert r.status_code == 422
    assert "query.limit" in r.json()["error"]
    assert r.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_dashboard_and_openapi(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200 and "<canvas" in r.text
    assert (await client.get("/static/app.js")).status_code == 200
    assert "/api/v1/predict" in (await client.get("/openapi.json")).json()["paths"]
