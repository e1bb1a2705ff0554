"""The metadata store on PostgreSQL and SQLite: migrations, adoption, races, a crashed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, func, insert, inspect, select, text
from typer.testing import CliRunner

from sluice.core.errors import StateError
from sluice.core.settings import Settings
from sluice.storage import db, migrate
from sluice.storage.checkpoints import CheckpointStore
from sluice.storage.db import METADATA, dispose_all, get_engine, make_engine
from tests.postgres import SERVER, create_database, drop_databases
from tests.processes import kill_when

psycopg = pytest.importorskip("psycopg")


def declared_metadata() -> MetaData:
    """``METADATA`` with every Sluice table declared on it."""
    return db.declared_metadata()


@pytest.fixture(scope="session")
def new_database() -> Iterator[Callable[[], str]]:
    """Creates uniquely named databases on demand; drops them all when the session ends."""
    made: list[str] = []

    def make() -> str:
        made.append(create_database("sluice_meta"))
        return f"{SERVER}/{made[-1]}"

    yield make
    dispose_all()
    if made:
        drop_databases(*made)


@pytest.fixture
def pg_url(new_database: Callable[[], str], sluice_home: Path) -> str:
    """An empty PostgreSQL database for one test."""
    return new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, sluice_home: Path) -> str:
    """An empty metadata database of each supported kind."""
    if request.param == "sqlite":
        return f"sqlite:///{sluice_home / 'metadata.db'}"
    make: Callable[[], str] = request.getfixturevalue("new_database")
    return make()


def tables(engine: Engine) -> set[str]:
    """Tables present in the database."""
    return set(inspect(engine).get_table_names())


def schema_diff(engine: Engine) -> list[Any]:
    """Differences between the migrated schema and the tables declared in code."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), declared_metadata()))


# -- migrations -------------------------------------------------------------------------


def test_head_constant_names_the_newest_script() -> None:
    assert migrate.script_head() == migrate.HEAD


def test_migrations_build_the_declared_schema_on_an_empty_database(any_url: str) -> None:
    engine = make_engine(any_url)
    try:
        assert migrate.current(engine) is None
        assert tables(engine) == set()
        assert migrate.upgrade(engine) == migrate.HEAD
        declared = set(declared_metadata().tables)
        assert tables(engine) == declared | {"alembic_version"}
        assert schema_diff(engine) == []
        assert migrate.upgrade(engine) == migrate.HEAD  # a second upgrade is a no-op
    finally:
        engine.dispose()


def test_outbox_rows_from_before_action_batches_are_kept_and_delivered(
    any_url: str, tmp_path: Path
) -> None:
    """0005 -> 0006: the outbox is narrowed, its old rows (message inline) stay deliverable."""
    from sluice.actions.base import ActionContext
    from sluice.actions.dispatcher import Dispatcher, Route
    from sluice.actions.log import LogAction, LogOptions
    from sluice.actions.rules import RetrySpec
    from sluice.actions.service import ActionsService

    engine = make_engine(any_url)
    try:
        assert migrate.upgrade(engine, "0005") == "0005"
        stamp = datetime.now(UTC)
        with engine.begin() as conn:
            for i in range(3):
                conn.execute(
                    text(
                        "INSERT INTO actions_outbox (pipeline, epoch, action, type, key, "
                        "severity, idempotency_key, payload, status, attempts, "
                        "next_attempt_at, created_at, updated_at) VALUES ('p', 1, 'a', 'log', "
                        ":key, 'info', :idem, :payload, 'pending', 0, 0, :at, :at)"
                    ),
                    {
                        "key": f"k{i}",
                        "idem": f"i{i}",
                        "payload": f'{{"payload": {i}}}',
                        "at": stamp,
                    },
                )
        assert migrate.upgrade(engine) == migrate.HEAD
        assert schema_diff(engine) == []
        out = tmp_path / "old.jsonl"
        action = LogAction("a", LogOptions(path=str(out)), ActionContext("p"))
        dispatcher = Dispatcher(engine, {("p", "a"): Route(action, RetrySpec())})
        assert dispatcher.run_once() == 3
        assert [json.loads(line)["payload"] for line in out.read_text().splitlines()] == [0, 1, 2]
        shown = ActionsService(engine).list()
        assert [(r["status"], r["payload"], r["attempts"]) for r in shown] == [
            ("delivered", {"payload": i}, 1) for i in (2, 1, 0)
        ]
        assert len(ActionsService(engine).get(shown[0]["id"])["attempt_log"]) == 1
    finally:
        engine.dispose()


def reflected_schema(engine: Engine) -> dict[str, Any]:
    """Every table's columns, keys, indexes and constraints as the database reports them."""
    found = inspect(engine)
    schema: dict[str, Any] = {}
    for table in sorted(found.get_table_names()):
        columns = [
            (c["name"], str(c["type"]), c["nullable"], c.get("default"))
            for c in found.get_columns(table)
        ]
        indexes = sorted(
            (
                i["name"],
                tuple(i["column_names"]),
                bool(i["unique"]),
                # a partial index's WHERE clause
                sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items()),
            )
            for i in found.get_indexes(table)
        )
        uniques = sorted(
            (u["name"], tuple(u["column_names"])) for u in found.get_unique_constraints(table)
        )
        foreign = sorted(
            (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
            for f in found.get_foreign_keys(table)
        )
        pk = found.get_pk_constraint(table)
        schema[table] = (columns, tuple(pk["constrained_columns"]), indexes, uniques, foreign)
    return schema


def test_an_empty_database_made_in_one_step_equals_the_migrated_one(
    any_url: str, new_database: Callable[[], str], sluice_home: Path
) -> None:
    other = (
        f"sqlite:///{sluice_home / 'other.db'}" if any_url.startswith("sqlite") else new_database()
    )
    migrated, created = make_engine(any_url), make_engine(other)
    try:
        assert migrate.upgrade(migrated) == migrate.HEAD
        assert migrate.create_at_head(created, declared_metadata())
        assert migrate.current(created) == migrate.HEAD
        assert reflected_schema(created) == reflected_schema(migrated)
        assert schema_diff(created) == []
        # tables exist: nothing done
        assert not migrate.create_at_head(created, declared_metadata())
        assert not migrate.create_at_head(migrated, declared_metadata())
        assert migrate.upgrade(created) == migrate.HEAD  # later migrations start from head
    finally:
        migrated.dispose()
        created.dispose()


CHILD = textwrap.dedent("""
    import pathlib, sys, time
    import alembic.command  # imported before the start line, so the race is in the DB
    from sluice.storage.checkpoints import CheckpointStore
    from sluice.storage.db import get_engine

    url, go, name = sys.argv[1:4]
    while not pathlib.Path(go).exists():
        time.sleep(0.002)
    CheckpointStore(get_engine(url)).commit(name, 1, {"n": name}, {"s": name.encode()})
""")


def test_replicas_starting_together_migrate_once(any_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, any_url, str(go), f"replica-{i}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    time.sleep(1.0)  # let every child import and wait at the start line
    go.touch()
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [c.returncode for c in children] == [0] * 4, "\n".join(errors)
    engine = get_engine(any_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            migrate.HEAD
        ]
    store = CheckpointStore(engine)
    for i in range(4):
        ckpt = store.load(f"replica-{i}")
        assert (ckpt.epoch, ckpt.position, ckpt.states) == (
            1,
            {"n": f"replica-{i}"},
            {"s": f"replica-{i}".encode()},
        )


def test_sqlite_database_from_before_migrations_is_adopted(sluice_home: Path) -> None:
    url = f"sqlite:///{sluice_home / 'metadata.db'}"
    old = make_engine(url)
    declared_metadata()
    METADATA.create_all(  # what ensure_tables made before migrations existed
        old, tables=[METADATA.tables[n] for n in ("checkpoints", "operator_state", "pipeline_runs")]
    )
    with old.begin() as conn:
        conn.execute(
            insert(METADATA.tables["checkpoints"]).values(
                pipeline="old", epoch=7, position='{"offset": 70}', updated_at=datetime.now(UTC)
            )
        )
    old.dispose()

    engine = get_engine(url)
    assert migrate.current(engine) == migrate.HEAD
    assert tables(engine) == set(METADATA.tables) | {"alembic_version"}
    assert schema_diff(engine) == []
    ckpt = CheckpointStore(engine).load("old")
    assert (ckpt.epoch, ckpt.position) == (7, {"offset": 70})
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_a_schema_newer_than_this_sluice_is_refused(sluice_home: Path) -> None:
    url = f"sqlite:///{sluice_home / 'metadata.db'}"
    get_engine(url)
    dispose_all()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StateError, match=r"revision 9999.*upgrade Sluice"):
        get_engine(url)


def test_unreachable_postgres_is_a_clear_error_without_the_password(sluice_home: Path) -> None:
    with pytest.raises(StateError, match="unavailable") as info:
        get_engine("postgresql://sluice:hunter2@127.0.0.1:1/sluice")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_db_commands(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sluice.cli import app

    monkeypatch.setenv("SLUICE_METADATA_URL", pg_url)
    runner = CliRunner()
    result = runner.invoke(app, ["db", "current"])
    assert result.exit_code == 0 and "revision none" in result.output, result.output
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0 and f"upgraded from empty to revision {migrate.HEAD}" in (
        result.output
    )
    result = runner.invoke(app, ["db", "current"])
    assert f"revision {migrate.HEAD} (up to date)" in result.output


# -- every store on PostgreSQL ----------------------------------------------------------


def test_checkpoint_plan_commit_load_round_trip(pg_url: str) -> None:
    from sluice.actions.outbox import ActionRecord, PendingActions, RuleCounts, write_pending

    with psycopg.connect(pg_url, autocommit=True) as conn:  # times still come back in UTC
        conn.execute(f"ALTER DATABASE {pg_url.rsplit('/', 1)[1]} SET timezone TO 'Asia/Kolkata'")
    store = CheckpointStore(get_engine(pg_url))
    assert store.load("p").epoch == 0
    store.plan("p", 1, {"offset": 10})
    planned = store.load("p")
    assert (planned.epoch, planned.planned_epoch, planned.planned_position) == (
        0,
        1,
        {"offset": 10},
    )
    pending = PendingActions(
        [ActionRecord("a", "log", "row-1", "k", "info", {"m": 1})], [RuleCounts("a", fired=1)]
    )
    blob = bytes(range(256))
    for _ in range(2):  # a replayed epoch: the outbox insert is ignored, the state replaced
        store.commit(
            "p",
            1,
            {"offset": 10},
            {"window": blob, "model": b"m"},
            [lambda conn: write_pending(conn, "p", 1, pending, time.time())],
        )
    store.commit("p", 2, {"offset": 20}, {"model": None})
    ckpt = store.load("p")
    assert (ckpt.epoch, ckpt.position, ckpt.planned_epoch) == (2, {"offset": 20}, None)
    assert ckpt.states == {"window": blob}
    assert ckpt.updated_at is not None and ckpt.updated_at.utcoffset() == timedelta(0)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM actions_outbox")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM action_counts")).scalar() == 1
    assert [r["pipeline"] for r in store.all()] == ["p"]
    store.reset("p")
    assert store.load("p").epoch == 0


def test_outbox_batched_delivery_and_its_fallback(any_url: str, tmp_path: Path) -> None:
    import pyarrow as pa

    from sluice.actions.engine import ActionEngine
    from sluice.actions.outbox import all_actions
    from sluice.config.models import ActionConfig
    from sluice.core.context import EpochContext

    out = tmp_path / "out.jsonl"
    rules = [
        ActionConfig(name="ok", when="true", type="log", path=str(out), key="device"),
        ActionConfig(name="broken", when="n < 3", type="log", path=str(tmp_path), key="device"),
    ]
    settings = Settings(home=tmp_path, metadata_url=any_url)
    engine = ActionEngine(
        rules, pipeline="p", settings=settings, dispatch=False, clock=lambda: 1000.0
    ).start()
    table = pa.table({"device": [f"d{i % 7}" for i in range(50)], "n": list(range(50))})
    pending = engine.evaluate(table, EpochContext("p", 1))
    store = CheckpointStore(engine.db)
    for _ in range(2):  # a replayed epoch inserts nothing
        store.commit("p", 1, {}, {}, [engine.outbox_writer(pending, 1)])
    while engine.dispatcher.run_once():
        pass
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["payload"]["row"]["n"] for line in lines) == list(range(50))
    with engine.db.connect() as conn:
        rows = [SimpleNamespace(**r) for r in all_actions(conn)]  # lazy batches' too
        logged = conn.execute(
            text(  # an attempt row covers a run of rows delivered in one call
                "SELECT status, sum(coalesce(last_outbox_id - outbox_id + 1, 1)) "
                "FROM action_attempts GROUP BY status ORDER BY status"
            )
        ).all()
    assert [(r.status, r.attempts) for r in rows if r.action == "ok"] == [("delivered", 1)] * 50
    broken = [r for r in rows if r.action == "broken"]
    assert len(broken) == 3 and {r.status for r in broken} == {"pending"}
    assert all("cannot append" in r.last_error for r in broken if r.attempts)
    assert [tuple(r) for r in logged] == [("delivered", 50), ("transient", 3)]
    engine.close(drain_seconds=0)


def test_runs_jobs_models_drift_and_actions_stores(pg_url: str, tmp_path: Path) -> None:
    from sluice.actions.service import ActionsService
    from sluice.models.drift import DriftEvent, DriftLog
    from sluice.models.registry import ModelRegistry, OnlineModelIndex, OnlineModelInfo
    from sluice.orchestration.history import RunStore
    from sluice.storage.runs import RunHistory

    settings = Settings(home=tmp_path / "home", metadata_url=pg_url)
    engine = get_engine(pg_url)

    history = RunHistory(engine)
    run = history.start("p")
    history.finish(run, "succeeded", {"events_in": 5})
    assert history.recent("p")[0]["stats"] == {"events_in": 5}

    jobs = RunStore(engine)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    run_id = jobs.create("nightly", t0, t0 + timedelta(days=1), t0)
    assert run_id is not None
    assert jobs.create("nightly", t0, t0 + timedelta(days=1), t0) is None  # same interval
    assert jobs.claim(run_id, "w1", t0, t0 + timedelta(minutes=1))
    assert not jobs.claim(run_id, "w2", t0, t0 + timedelta(minutes=1))  # lease still live
    assert jobs.claim(run_id, "w2", t0 + timedelta(minutes=2), t0 + timedelta(minutes=3))
    assert jobs.active_count("nightly", t0 + timedelta(minutes=2)) == 1
    attempt = jobs.start_task(run_id, "load", 1, t0)
    jobs.finish_task(attempt, "success", t0, log="ok")
    jobs.finish(run_id, "success", t0)
    got = jobs.get(run_id)
    assert (got["state"], got["attempts"], got["interval_start"]) == ("success", 2, t0)
    assert [t["state"] for t in got["tasks"]] == ["success"]

    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights")
    registry = ModelRegistry(settings)
    registry.register("m", "pickle", artifact, features=["x"], metrics={"auc": 0.9})
    registry.register("m", "pickle", artifact, features=["x"], stage="production")
    registry.promote("m", 1)
    assert registry.rollback("m").version == 2
    assert [(v.version, v.stage) for v in registry.list("m")] == [
        (2, "production"),
        (1, "candidate"),
    ]

    index = OnlineModelIndex(settings)
    index.record(OnlineModelInfo("om", "p", "hst", ["x"], None))
    index.record(OnlineModelInfo("om", "p2", "hst", ["x", "y"], "device"))
    assert index.list() == [OnlineModelInfo("om", "p2", "hst", ["x", "y"], "device")]

    drift = DriftLog(engine)
    drift.record("p", "m", 3, "alert", [DriftEvent("x", "psi", 0.4, 0.2)])
    assert drift.recent().to_pylist()[0]["value"] == pytest.approx(0.4)

    stats = ActionsService(engine).stats()
    assert stats["attempts"] == {"count": 0, "avg_latency_ms": None, "max_latency_ms": None}


# -- a crashed and resumed pipeline with its state in PostgreSQL ------------------------

N_ROWS = 30_000
PIPELINE = """\
name: pgmeta
source: {{type: file, path: "{data}", format: json}}
schema: {{id: long, device_id: string, temperature: double}}
batch: {{max_rows: 1000}}
actions:
  - {{name: hot, when: "temperature > 95", type: log, path: "{alerts}"}}
sinks:
  - {{type: lake, table: pgmeta}}
"""
JOBS = """
jobs:
  - name: tally
    tasks:
      - {name: count, type: sql, sql: "SELECT 7 AS seven"}
"""


def _epoch(url: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute("SELECT epoch FROM checkpoints WHERE pipeline = 'pgmeta'").fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def _sluice(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after(env: dict[str, str], pipeline: Path, url: str, epoch: int) -> None:
    proc = _sluice(env, "run", str(pipeline), "--until-idle", "--quiet")
    kill_when(proc, lambda: _epoch(url) >= epoch)


def test_pipeline_killed_and_resumed_lands_every_row_once(pg_url: str, tmp_path: Path) -> None:
    data = tmp_path / "events.jsonl"
    rows = [
        {"id": i, "device_id": f"d{i % 7}", "temperature": 50.0 + (i * 37) % 50}
        for i in range(N_ROWS)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hot = sum(1 for r in rows if r["temperature"] > 95)
    pipeline = tmp_path / "pgmeta.yaml"
    pipeline.write_text(PIPELINE.format(data=data, alerts=tmp_path / "alerts.jsonl"))
    home = tmp_path / "home"
    env = {**os.environ, "SLUICE_HOME": str(home), "SLUICE_METADATA_URL": pg_url}

    _kill_after(env, pipeline, pg_url, 2)
    _kill_after(env, pipeline, pg_url, _epoch(pg_url) + 3)
    final = _sluice(env, "run", str(pipeline), "--until-idle", "--quiet")
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert not (home / "metadata.db").exists()  # every bit of metadata went to PostgreSQL

    from deltalake import DeltaTable

    ids = DeltaTable(str(home / "lake" / "pgmeta")).to_pyarrow_table(columns=["id"])["id"]
    assert len(ids) == N_ROWS and len(set(ids.to_pylist())) == N_ROWS

    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(JOBS)
    out, err = _sluice(env, "jobs", "run", "tally", "--jobs", str(jobs_file)).communicate(
        timeout=120
    )
    assert "count #1: success" in out, err

    with psycopg.connect(pg_url) as conn:
        runs = conn.execute(
            "SELECT status FROM pipeline_runs WHERE pipeline = 'pgmeta' ORDER BY id"
        ).fetchall()
        fired = conn.execute(
            "SELECT sum(fired) FROM action_counts WHERE pipeline = 'pgmeta'"
        ).fetchone()
        job = conn.execute("SELECT state FROM job_runs WHERE job = 'tally'").fetchall()
        tasks = conn.execute("SELECT task, state FROM task_runs").fetchall()
    assert [r[0] for r in runs] == ["running", "running", "succeeded"]  # two were killed
    from sluice.actions.outbox import all_actions

    with get_engine(pg_url).connect() as meta:  # outbox rows and lazy batches' actions
        keys = [r["idempotency_key"] for r in all_actions(meta, "pgmeta")]
    assert (len(keys), len(set(keys))) == (hot, hot)
    assert fired == (hot,)
    assert job == [("success",)] and tasks == [("count", "success")]


# -- lazy batches (0007): a batched type's actions without outbox rows ------------------


def _lazy_engine(url: str, home: Path, out: Path) -> Any:
    from sluice.actions.engine import ActionEngine
    from sluice.config.models import ActionConfig

    rules = [
        ActionConfig(name="all", when="true", type="log", path=str(out), key="device"),
        ActionConfig(name="hot", when="n % 3 = 0", type="log", path=str(out)),
        ActionConfig(  # a template: outbox rows (not lazy)
            name="tpl", when="n % 100 < 4", type="log", path=str(out), payload={"d": "{{ device }}"}
        ),
        ActionConfig(  # delivery fails: its lazy batches get outbox rows (same ids); fewer
            # than 5 rows, or the circuit breaker opens at an unordered point of the round
            name="broken",
            when="n % 12 = 0",
            type="log",
            path=str(home),
        ),
    ]
    settings = Settings(home=home, metadata_url=url)
    return ActionEngine(
        rules,
        pipeline="p",
        settings=settings,
        dispatch=False,
        clock=lambda: 1000.0,
        dispatcher_options={"seed": 7},  # the same retry jitter
    ).start()


def _shown(service: Any) -> dict[str, Any]:
    """Everything the API and CLI show of the actions (attempt latencies aside)."""
    out: dict[str, Any] = {"count": service.count(), "by_rule": service.by_rule()}
    stats = service.stats()
    stats["attempts"].pop("avg_latency_ms")
    stats["attempts"].pop("max_latency_ms")
    out["stats"] = stats
    for status in (None, "pending", "delivered"):
        for action in (None, "all", "broken"):
            out[f"count {status} {action}"] = service.count(status, action=action)
            for limit, offset in ((1000, 0), (7, 0), (7, 5), (3, 20), (50, 31), (5, 1000)):
                out[f"list {status} {action} {limit} {offset}"] = service.list(
                    status, action=action, limit=limit, offset=offset
                )
    for row in service.list(limit=1000):
        shown = service.get(row["id"])
        out[f"get {row['id']}"] = {
            **shown,
            "attempt_log": [
                {k: v for k, v in t.items() if k not in ("id", "latency_ms")}
                for t in shown["attempt_log"]
            ],
        }
    return out


def test_lazy_batches_show_as_outbox_rows_would(
    any_url: str, new_database: Callable[[], str], tmp_path: Path
) -> None:
    """The same epochs written lazily and with outbox rows: the API/CLI see the same."""
    import pyarrow as pa

    from sluice.actions.outbox import RecordGroup, states
    from sluice.actions.service import ActionsService
    from sluice.core.context import EpochContext

    other = f"sqlite:///{tmp_path / 'rows.db'}" if any_url.startswith("sqlite") else new_database()
    seen = []
    for url, lazy in ((any_url, True), (other, False)):
        out = tmp_path / f"out-{lazy}.jsonl"
        engine = _lazy_engine(url, tmp_path, out)
        store = CheckpointStore(engine.db)
        service = ActionsService(engine.db)
        for epoch in (1, 2, 3):
            n = [epoch * 100 + i for i in range(12)]
            table = pa.table({"device": [f"d{i % 4}" for i in n], "n": n})
            pending = engine.evaluate(table, EpochContext("p", epoch))
            for part in pending.parts:
                if isinstance(part, RecordGroup):
                    part.lazy = lazy
            store.commit("p", epoch, {}, {}, [engine.outbox_writer(pending, epoch)])
        before = _shown(service)
        with engine.db.connect() as conn:
            written = conn.execute(select(func.count()).select_from(states)).scalar()
        assert written == (9 if lazy else 0)  # all, hot, broken x 3 epochs (not tpl)
        while engine.dispatcher.run_once():
            pass
        # the same lines; each action's in order (the row path writes action by action)
        lines = out.read_text().splitlines()
        by_action = {a: [x for x in lines if f'"action":"{a}"' in x] for a in ("all", "hot")}
        seen.append((before, _shown(service), sorted(lines), by_action))
        with engine.db.connect() as conn:  # the failed batches got their outbox rows
            left = conn.execute(select(states.c.action, states.c.status)).all()
        assert sorted(set(left)) == ([("all", "delivered"), ("hot", "delivered")] if lazy else [])
        engine.close(drain_seconds=0)
    assert seen[0][0] == seen[1][0]  # before delivery
    assert seen[0][1] == seen[1][1]  # after: delivered, and the failed ones pending
    assert seen[0][2:] == seen[1][2:]  # the same log lines
    after = seen[0][1]
    assert after["count"] == 3 * (12 + 4 + 4 + 1)
    assert after["count pending broken"] == 3
    assert {r["attempts"] for r in after["list pending broken 1000 0"]} == {1}


def test_lazy_batches_migrate_down_to_outbox_rows(any_url: str, tmp_path: Path) -> None:
    """0007 -> 0006 writes the outbox rows of lazy batches' actions, with their ids."""
    import pyarrow as pa
    from alembic import command

    from sluice.actions.service import ActionsService
    from sluice.core.context import EpochContext

    engine = _lazy_engine(any_url, tmp_path, tmp_path / "out.jsonl")
    for epoch in (1, 2):
        n = list(range(epoch * 10, epoch * 10 + 6))
        pending = engine.evaluate(pa.table({"device": ["a"] * 6, "n": n}), EpochContext("p", 1))
        CheckpointStore(engine.db).commit(
            "p", epoch, {}, {}, [engine.outbox_writer(pending, epoch)]
        )
        if epoch == 1:
            while engine.dispatcher.run_once():
                pass
    shown = ActionsService(engine.db).list(limit=1000)
    engine.close(drain_seconds=0)
    db = make_engine(any_url)
    try:
        with db.connect() as conn:
            command.downgrade(migrate._config(conn), "0006")
            conn.commit()
        assert migrate.current(db) == "0006" and "action_batch_states" not in tables(db)
        with db.connect() as conn:
            rows = conn.execute(
                text("SELECT id, action, status, attempts FROM actions_outbox ORDER BY id DESC")
            ).all()
        assert [tuple(r) for r in rows] == [
            (r["id"], r["action"], r["status"], r["attempts"]) for r in shown
        ]
        assert migrate.upgrade(db) == migrate.HEAD
        assert schema_diff(db) == []
    finally:
        db.dispose()
