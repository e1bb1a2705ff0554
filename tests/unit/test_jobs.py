"""Jobs: the jobs file, task types, retries, timeouts, skipped downstream, the service API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.orchestration.service import backfill, jobs_provider, run_now, run_task, trigger
from sluice.orchestration.spec import jobs_from_text, load_jobs
from sluice.storage.db import dispose_all


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    yield Settings(home=tmp_path / "home")
    dispose_all()


def _events(settings: Settings, name: str = "events", parts: int = 4) -> str:
    uri = settings.lake_path(name)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for part in range(parts):
        ids = list(range(part * 10, part * 10 + 10))
        write_deltalake(
            uri,
            pa.table(
                {
                    "id": pa.array(ids, pa.int64()),
                    "value": pa.array([None if i == 7 else float(i) for i in ids], pa.float64()),
                    "ts": pa.array(
                        [base + timedelta(minutes=i) for i in ids], pa.timestamp("us", "UTC")
                    ),
                }
            ),
            mode="append",
        )
    return uri


def _states(run: dict) -> list[tuple[str, int, str]]:
    return [(t["task"], t["attempt"], t["state"]) for t in run["tasks"]]


def test_transient_failure_succeeds_on_retry(tmp_path: Path, settings: Settings) -> None:
    marker = tmp_path / "seen"
    jobs = jobs_from_text(
        f"""
jobs:
  - name: flaky
    allow_shell: true
    retries: 2
    retry_delay: 0s
    tasks:
      - name: once_broken
        type: shell
        command: "test -f {marker} || (touch {marker}; exit 3)"
      - name: after
        type: sql
        sql: "SELECT 42 AS answer"
        depends_on: [once_broken]
""",
        "jobs.yaml",
    )
    run = run_now(settings, jobs, "flaky")
    assert run["state"] == "success"
    assert _states(run) == [
        ("once_broken", 1, "failed"),
        ("once_broken", 2, "success"),
        ("after", 1, "success"),
    ]
    assert "status 3" in run["tasks"][0]["error"]
    assert "42" in run["tasks"][2]["log"]


def test_sql_task_retries_until_table_exists(settings: Settings) -> None:
    jobs = jobs_from_text("""
jobs:
  - name: waits
    retries: 1
    retry_delay: 1s
    tasks: [{name: count, type: sql, sql: "SELECT count(*) AS n FROM events"}]
""")
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the table appears during the backoff
        slept.append(seconds)
        _events(settings, parts=1)

    from sluice.orchestration.scheduler import Scheduler

    scheduler = Scheduler(settings, jobs, sleep=sleep)
    run_id = scheduler.store.create(
        "waits",
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 2, tzinfo=UTC),
        datetime.now(UTC),
    )
    assert scheduler.tick()
    run = scheduler.store.get(run_id)
    scheduler.close()
    assert slept == [1.0]
    assert _states(run) == [("count", 1, "failed"), ("count", 2, "success")]


def test_timeout_fails_and_downstream_is_skipped(tmp_path: Path, settings: Settings) -> None:
    jobs = jobs_from_text("""
jobs:
  - name: slow
    allow_shell: true
    tasks:
      - {name: sleepy, type: shell, command: "sleep 5", timeout: 0.3s}
      - {name: next, type: sql, sql: "SELECT 1", depends_on: [sleepy]}
      - {name: last, type: sql, sql: "SELECT 1", depends_on: [next]}
      - {name: independent, type: sql, sql: "SELECT 1"}
""")
    run = run_now(settings, jobs, "slow")
    assert run["state"] == "failed"
    assert _states(run) == [
        ("sleepy", 1, "failed"),
        ("next", 0, "skipped"),
        ("last", 0, "skipped"),
        ("independent", 1, "success"),
    ]
    assert "timed out" in run["tasks"][0]["error"]


def test_thread_task_timeout(settings: Settings) -> None:
    _events(settings, parts=1)
    jobs = jobs_from_text("""
jobs:
  - name: heavy
    timeout: 0.2s
    tasks:
      - {name: big, type: sql,
         sql: "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3"}
""")
    run = run_now(settings, jobs, "heavy")
    assert run["state"] == "failed"
    assert "timed out" in run["tasks"][0]["error"] or "nterrupt" in run["tasks"][0]["error"]


def test_quality_check_passes_and_fails(settings: Settings) -> None:
    _events(settings)
    jobs = jobs_from_text("""
jobs:
  - name: checks
    tasks:
      - name: good
        type: quality_check
        table: events
        min_rows: 40
        not_null: [id, ts]
        freshness: {column: ts, max_age: 36500d}
        assertions: ["SELECT * FROM events WHERE id < 0"]
      - name: bad
        type: quality_check
        table: events
        min_rows: 1000
        not_null: [value]
        freshness: {column: ts, max_age: 1h}
        depends_on: [good]
""")
    run = run_now(settings, jobs, "checks")
    assert run["state"] == "failed"
    assert _states(run) == [("good", 1, "success"), ("bad", 1, "failed")]
    assert "40 rows, expected at least 1000" in run["tasks"][1]["error"]
    assert "value has 1 null" in run["tasks"][1]["error"]
    assert "more than 1h" in run["tasks"][1]["error"]


def test_compact_and_export_on_real_delta_table(tmp_path: Path, settings: Settings) -> None:
    uri = _events(settings, parts=5)
    assert len(DeltaTable(uri).file_uris()) == 5
    out = tmp_path / "out" / "{{ ds }}.parquet"
    jobs = jobs_from_text(f"""
jobs:
  - name: maintain
    tasks:
      - {{name: compact, type: compact, table: events, retention_hours: 0}}
      - {{name: to_parquet, type: export, table: events, path: "{out}",
          depends_on: [compact]}}
      - {{name: to_wh, type: export, to: warehouse, table: events, target_table: events_copy,
          depends_on: [compact]}}
""")
    run = run_now(settings, jobs, "maintain")
    assert run["state"] == "success", run["tasks"]
    table = DeltaTable(uri)
    assert len(table.file_uris()) == 1
    assert table.to_pyarrow_table().num_rows == 50
    written = list((tmp_path / "out").glob("*.parquet"))
    assert len(written) == 1 and pq.read_table(written[0]).num_rows == 50
    import duckdb

    with duckdb.connect(str(settings.warehouse_url), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM events_copy").fetchone() == (50,)


def test_templating_params_and_run_task(tmp_path: Path, settings: Settings) -> None:
    out = tmp_path / "t.txt"
    jobs = jobs_from_text(f"""
jobs:
  - name: tmpl
    allow_shell: true
    params: {{who: world}}
    tasks:
      - name: say
        type: shell
        command: "echo {{{{ params.who }}}} {{{{ ds }}}} {{{{ data_interval_end }}}} > {out}"
""")
    run_task(settings, jobs, "tmpl", "say", start=datetime(2026, 3, 4, tzinfo=UTC))
    assert out.read_text().split() == ["world", "2026-03-04", "2026-03-05T00:00:00+00:00"]
    bad = jobs_from_text("""
jobs:
  - name: tmpl
    tasks: [{name: q, type: sql, sql: "SELECT {{ params.missing }}"}]
""")
    with pytest.raises(ConfigError, match="missing"):
        run_task(settings, bad, "tmpl", "q", start=datetime(2026, 3, 4, tzinfo=UTC))


def test_backfill_runs_each_day_once(tmp_path: Path, settings: Settings) -> None:
    marker = tmp_path / "days"
    jobs = jobs_from_text(f"""
jobs:
  - name: daily
    schedule: "0 0 * * *"
    allow_shell: true
    tasks: [{{name: d, type: shell, command: "echo {{{{ ds }}}} >> {marker}"}}]
""")
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC)
    assert [r["state"] for r in backfill(settings, jobs, "daily", start, end)] == ["success"] * 3
    assert backfill(settings, jobs, "daily", start, end) == []  # never twice
    assert marker.read_text().split() == ["2026-01-01", "2026-01-02", "2026-01-03"]


def test_provider_and_trigger(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text("""
jobs:
  - name: nightly
    schedule: "0 2 * * *"
    params: {x: 0}
    tasks:
      - {name: a, type: sql, sql: "SELECT 1"}
      - {name: b, type: sql, sql: "SELECT 2", depends_on: [a]}
""")
    run_id = trigger(settings, "nightly", {"x": 1}, jobs_file=path)
    run_now(settings, load_jobs(path), "nightly")
    listed = jobs_provider(settings, path)()
    assert listed[0]["name"] == "nightly" and listed[0]["schedule"] == "0 2 * * *"
    assert [t["name"] for t in listed[0]["tasks"]] == ["a", "b"]
    runs = listed[0]["runs"]
    assert {r["state"] for r in runs} == {"queued", "success"}
    assert any(r["id"] == run_id and r["params"] == {"x": 1} for r in runs)
    assert next(r for r in runs if r["state"] == "success")["task_states"] == {
        "a": "success",
        "b": "success",
    }


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (
            "      - {name: a, type: sql, sql: x, depends_on: [nope]}\n",
            5,
            "unknown dependency 'nope'",
        ),
        (
            "      - {name: a, type: sql, sql: x, depends_on: [b]}\n"
            "      - {name: b, type: sql, sql: x, depends_on: [a]}\n",
            4,
            "cycle",
        ),
        ("      - {name: a, type: sql}\n", 5, "tasks[0].sql: required key is missing"),
        ("      - {name: a, type: shell, command: ls}\n", 5, "allow_shell"),
        ("      - {name: a, type: teleport}\n", 5, "type"),
        ("      - name: a\n        type: compact\n        tabel: x\n", 7, "unknown key"),
    ],
)
def test_bad_jobs_file_gives_file_and_line(
    tmp_path: Path, body: str, line: int, message: str
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n  - name: j\n    schedule: '0 * * * *'\n    tasks:\n" + body)
    with pytest.raises(ConfigError) as info:
        load_jobs(path)
    assert f"{path}:{line}:" in str(info.value)
    assert message in str(info.value)


def test_bad_schedule_gives_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"jobs.yaml:3: jobs\[0\].schedule.*invalid cron"):
        jobs_from_text(
            "jobs:\n  - name: j\n    schedule: '61 * * * *'\n"
            "    tasks: [{name: a, type: sql, sql: x}]\n",
            "jobs.yaml",
        )


def test_train_then_promote_if_better(tmp_path: Path, settings: Settings) -> None:
    from sluice.models.registry import ModelRegistry

    _events(settings)
    jobs = jobs_from_text("""
jobs:
  - name: retrain
    tasks:
      - {name: train, type: train_model, model: det, kind: isolation_forest, table: events,
         features: [value]}
      - {name: promote, type: promote_if_better, model: det, metric: score,
         depends_on: [train]}
""")
    run = run_now(settings, jobs, "retrain")
    assert _states(run) == [("train", 1, "success"), ("promote", 1, "failed")]
    assert "no metric 'score'" in run["tasks"][1]["error"]

    registry = ModelRegistry(settings)
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"x")
    promote = jobs_from_text("""
jobs:
  - name: p
    tasks: [{name: p, type: promote_if_better, model: det, metric: score}]
""")
    registry.register(
        "det", "isolation_forest", artifact, features=["value"], metrics={"score": 0.5}
    )
    assert run_now(settings, promote, "p")["state"] == "success"
    assert registry.production("det").version == 2  # no production before: promoted
    registry.register(
        "det", "isolation_forest", artifact, features=["value"], metrics={"score": 0.4}
    )
    run_now(settings, promote, "p")
    assert registry.production("det").version == 2  # worse: kept
    registry.register(
        "det", "isolation_forest", artifact, features=["value"], metrics={"score": 0.9}
    )
    run_now(settings, promote, "p")
    assert registry.production("det").version == 4
