"""What the dashboard reads: incidents, a key's series, dead letters by reason, throughput from
the run history, pipeline runs, drift and action summaries (real DuckDB and SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from sluice.api.app import create_app
from sluice.api.auth import ApiKeys
from sluice.api.deps import ApiConfig
from sluice.core.settings import Settings
from sluice.storage.db import get_engine
from sluice.storage.runs import RunHistory
from tests.unit.test_api_data import DuckEngine, dead_letters

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# d0 alerts at minutes 0, 1 (one incident), 2 (a new onset: a second one) and 20 (after a gap)
FLAGS = {(0, 0): 0.9, (0, 1): 0.0, (0, 2): 0.8, (0, 20): 0.0, (1, 5): 0.7}


def scored() -> pa.Table:
    rows = [(d, m) for d in (0, 1) for m in range(30)]
    return pa.table(
        {
            "device_id": [f"d{d}" for d, _ in rows],
            "ts": pa.array([T0 + timedelta(minutes=m) for _, m in rows], pa.timestamp("us", "UTC")),
            "temp_c": [20.0 + m for _, m in rows],
            "is_anomaly": [m == 3 for _, m in rows],  # ground truth, no model's flag
            "m_anomaly": [(d, m) in FLAGS for d, m in rows],
            "m_score": [0.99 if (d, m) in FLAGS else 0.1 for d, m in rows],
            "m_onset": [FLAGS.get((d, m), 0.0) for d, m in rows],
            "m_reason": [f"temp_c up at {m}" if (d, m) in FLAGS else None for d, m in rows],
        }
    )


class Pipelines:
    """A served pipeline whose events total the test sets."""

    total = 0

    def list(self) -> list[dict[str, object]]:
        return [{"name": "live", "state": "running", "events_total": self.total}]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    engine = DuckEngine({"scored": scored(), "dead_letters": dead_letters()})
    settings = Settings(home=tmp_path)
    history = RunHistory(get_engine(str(settings.ensure().metadata_url)))
    run = history.start("batch#t0")
    history.finish(run, "succeeded", {"events_in": 600, "seconds": 60.0})
    app = create_app(
        settings,
        api_keys=ApiKeys(),
        config=ApiConfig(),
        query_engine_factory=lambda _settings: engine,
        pipelines_provider=Pipelines(),  # type: ignore[arg-type]
        models_provider=lambda: [{"name": "m", "features": ["temp_c"]}],
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:5000"
    ) as c:
        yield c


async def test_incidents_group_anomalies_per_key(client: httpx.AsyncClient) -> None:
    found = (await client.get("/api/v1/incidents")).json()
    spans = sorted((i["key"], i["start"][11:16], i["end"][11:16], i["events"]) for i in found)
    assert spans == [
        ("d0", "00:00", "00:01", 2),
        ("d0", "00:02", "00:02", 1),
        ("d0", "00:20", "00:20", 1),
        ("d1", "00:05", "00:05", 1),
    ]
    assert {i["model"] for i in found} == {"m"}  # is_anomaly is no model
    assert found[0]["start"] > found[-1]["start"] and found[0]["reason"] == "temp_c up at 20"


async def test_series_of_one_key_marks_the_alerted_rows(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/series", params={"table": "scored", "key": "d1"})).json()
    assert body["features"] == ["temp_c"] and body["key_column"] == "device_id"
    assert len(body["rows"]) == 30 and body["rows"][0]["temp_c"] == 20.0  # oldest first
    assert [r["t"][11:16] for r in body["rows"] if r["alerted"]] == ["00:05"]
    missing = await client.get("/api/v1/series", params={"table": "nosuch", "key": "d1"})
    assert missing.status_code == 404


async def test_dead_letters_by_reason(client: httpx.AsyncClient) -> None:
    reasons = (await client.get("/api/v1/dlq/reasons")).json()
    assert {(r["pipeline"], r["reason"], r["count"]) for r in reasons} == {
        ("telemetry", "temperature: not a number", 1),
        ("telemetry", "invalid JSON", 1),
        ("other", "division by zero", 1),
    }


async def test_throughput_from_the_run_history_and_live_samples(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/throughput", params={"minutes": 60})).json()
    width = body["bucket_seconds"]
    assert sum(body["pipelines"]["batch"]) * width == pytest.approx(600, rel=1e-3)
    assert sum(body["pipelines"]["live"]) == 0.0
    Pipelines.total = 500  # the served pipeline did 500 events since the last look
    body = (await client.get("/api/v1/throughput", params={"minutes": 60})).json()
    assert sum(body["pipelines"]["live"]) * body["bucket_seconds"] == pytest.approx(500, rel=1e-3)


async def test_pipeline_runs_drift_and_action_summary(client: httpx.AsyncClient) -> None:
    runs = (await client.get("/api/v1/pipelines/batch%23t0/runs")).json()
    assert runs[0]["stats"]["events_in"] == 600 and runs[0]["status"] == "succeeded"
    assert (await client.get("/api/v1/drift")).json() == []
    summary = (await client.get("/api/v1/actions/summary")).json()
    assert summary == {"by_rule": [], "failures": [], "queue": []}
