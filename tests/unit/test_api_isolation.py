"""One query cannot freeze the API: a bounded pool (429), bounded results (413), off-loop work."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pyarrow as pa
import pytest

from sluice.api import ApiConfig, ApiKeys, create_app
from sluice.api.routes import predict as predict_route
from sluice.config.models import SinkConfig
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.warehouse import WarehouseSink
from sluice.storage.query import QueryEngine

pytestmark = pytest.mark.anyio
JSON = {"content-type": "application/json"}


class GatedEngine(QueryEngine):
    """The real engine, whose queries wait at a gate the test opens."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        self.waiting = 0
        self.lock = threading.Lock()

    def query(self, sql: str, limit: int | None = None, max_bytes: int | None = None) -> pa.Table:
        with self.lock:
            self.waiting += 1
        self.gate.wait(60)
        return super().query(sql, limit, max_bytes)


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:5000"
    )


async def _until(check: Callable[[], bool]) -> None:
    with anyio.fail_after(60):
        while not check():
            await anyio.sleep(0.01)


@pytest.fixture
def gated(tmp_path: Path) -> GatedEngine:
    return GatedEngine(Settings(home=tmp_path))


@pytest.fixture
async def gated_client(gated: GatedEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        gated.settings,
        api_keys=ApiKeys(),
        config=ApiConfig(query_concurrency=2),
        query_engine_factory=lambda _settings: gated,
    )
    async with _client(app) as client:
        yield client
    gated.gate.set()


async def test_a_full_query_pool_answers_429_and_health_stays_up(
    gated: GatedEngine, gated_client: httpx.AsyncClient
) -> None:
    answers: list[httpx.Response] = []

    async def run_query() -> None:
        answers.append(await gated_client.post("/api/v1/query", json={"sql": "SELECT 1 AS x"}))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run_query)
        tasks.start_soon(run_query)
        await _until(lambda: gated.waiting == 2)  # both slots are taken by running queries
        full = await gated_client.post("/api/v1/query", json={"sql": "SELECT 2 AS x"})
        assert full.status_code == 429
        assert full.headers["retry-after"] == "1"
        assert full.json()["detail"] == {"running": 2, "limit": 2}
        assert "SLUICE_API_QUERY_CONCURRENCY=2" in full.json()["error"]
        assert (await gated_client.get("/api/v1/tables")).status_code == 429
        assert (await gated_client.get("/healthz")).status_code == 200  # the loop is free
        gated.gate.set()
    assert [a.status_code for a in answers] == [200, 200]
    again = await gated_client.post("/api/v1/query", json={"sql": "SELECT 3 AS x"})
    assert again.json()["rows"] == [{"x": 3}]


async def test_a_result_past_the_byte_limit_is_413(tmp_path: Path) -> None:
    app = create_app(
        Settings(home=tmp_path), api_keys=ApiKeys(), config=ApiConfig(max_result_bytes=100_000)
    )
    async with _client(app) as client:
        big = {"sql": "SELECT list(range) AS l FROM range(10000000)", "limit": 10}
        r = await client.post("/api/v1/query", json=big)
        assert r.status_code == 413
        assert r.json()["error"].startswith("the result is larger than the limit of 100000 bytes")
        assert r.json()["detail"] == {"limit_bytes": 100_000}
        wide = {"sql": "SELECT repeat('x', 100) AS s FROM range(5000)", "limit": 5000}
        r = await client.post("/api/v1/query", json=wide)  # small in Arrow, big in JSON
        assert r.status_code == 413
        ok = {"sql": "SELECT range AS i FROM range(5000)", "limit": 5000}
        r = await client.post("/api/v1/query", json=ok)
        assert r.status_code == 200 and r.json()["count"] == 5000


async def test_health_answers_while_a_query_result_is_built(gated: GatedEngine) -> None:
    app = create_app(
        gated.settings, api_keys=ApiKeys(), query_engine_factory=lambda _settings: gated
    )
    sql = {"sql": "SELECT range AS i, repeat('x', 100) AS s FROM range(10000)", "limit": 10000}
    async with _client(app) as client, anyio.create_task_group() as tasks:
        answer: list[httpx.Response] = []

        async def run_query() -> None:
            answer.append(await client.post("/api/v1/query", json=sql))

        tasks.start_soon(run_query)
        await _until(lambda: gated.waiting == 1)
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert answer == []  # health answered while the query's thread was still at work
        gated.gate.set()
    assert answer[0].status_code == 200 and answer[0].json()["count"] == 10_000


async def test_predict_runs_off_the_event_loop(tmp_path: Path) -> None:
    gate, entered = threading.Event(), threading.Event()

    def slow_predictor(data: Any, model: str | None = None) -> dict[str, Any]:
        entered.set()
        gate.wait(60)
        return {"model": model or "echo", "predictions": [{"n": len(data)}]}

    app = create_app(Settings(home=tmp_path), predictor=slow_predictor, api_keys=ApiKeys())
    async with _client(app) as client, anyio.create_task_group() as tasks:
        answer: list[httpx.Response] = []

        async def run_predict() -> None:
            body = {"data": ["x"] * 1000}
            answer.append(await client.post("/api/v1/predict", json=body, headers=JSON))

        tasks.start_soon(run_predict)
        await _until(entered.is_set)
        assert (await client.get("/healthz")).status_code == 200
        assert answer == []
        gate.set()
    assert answer[0].json()["predictions"] == [{"n": 1000}]


async def test_api_queries_do_not_block_the_warehouse_sink(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    sink = WarehouseSink(
        SinkConfig.model_validate({"type": "warehouse", "table": "t"}), SinkContext("p", settings)
    )
    try:
        assert sink.write(pa.table({"v": [1]}), 1)
        engine = GatedEngine(settings)
        app = create_app(settings, api_keys=ApiKeys(), query_engine_factory=lambda _s: engine)
        async with _client(app) as client, anyio.create_task_group() as tasks:
            answer: list[httpx.Response] = []

            async def run_query() -> None:
                body = {"sql": "SELECT count(*) AS n FROM t"}
                answer.append(await client.post("/api/v1/query", json=body))

            tasks.start_soon(run_query)
            await _until(lambda: engine.waiting == 1)
            for epoch in range(2, 6):
                assert sink.write(pa.table({"v": [epoch]}), epoch)
            engine.gate.set()
        assert answer[0].json()["rows"] == [{"n": 5}]
    finally:
        sink.close()


async def test_a_small_request_to_a_fast_model_runs_on_the_loop_a_slow_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, list[int]] = {"fast": [], "slow": []}

    def predictor(data: Any, model: str | None = None) -> dict[str, Any]:
        assert model is not None
        threads[model].append(threading.get_ident())
        if model == "slow":
            time.sleep(0.01)  # always above the 1 ms bound
        return {"model": model, "prediction": {"n": len(data)}}

    async def three_calls(client: httpx.AsyncClient, model: str) -> None:
        for _ in range(3):
            body = {"data": {"x": 1}, "model": model}
            answer = await client.post("/api/v1/predict", json=body, headers=JSON)
            assert answer.json() == {"model": model, "prediction": {"n": 1}}

    app = create_app(Settings(home=tmp_path), predictor=predictor, api_keys=ApiKeys())
    loop = threading.get_ident()  # this test's event loop runs the app
    async with _client(app) as client:
        await three_calls(client, "slow")
        assert loop not in threads["slow"]
        # a bound no call reaches: the test does not depend on how fast this machine is
        monkeypatch.setattr(predict_route, "_INLINE_SECONDS", 60.0)
        await three_calls(client, "fast")
    # a model's first answer is timed in a worker thread; then a fast model stays on the loop
    assert threads["fast"][0] != loop and threads["fast"][1:] == [loop, loop]
