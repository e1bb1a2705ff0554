"""What ``sluice run`` of a file pipeline imports: none of the code it does not use.

Each module checked here costs start-up time (SQLAlchemy's PostgreSQL dialect,
prometheus_client with its HTTP and TLS modules, the Kafka plumbing, the metadata tables of
models and actions); the checks run in fresh interpreters.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from sluice.sources import synthetic

RUN = """
import sys
from sluice.cli import app
try:
    app(["run", sys.argv[1], "--until-idle", "--quiet"], standalone_mode=False)
except SystemExit as exc:
    assert not exc.code, exc.code
print("imported:", ",".join(sorted(sys.modules)))
"""
# never needed by a file source, a DuckDB warehouse and SQLite metadata
UNUSED = (
    "alembic",
    "prometheus_client",
    "sqlalchemy.dialects.postgresql",
    "sluice.actions.base",
    "sluice.connectors.kafka",
    "sluice.runners.partitioned",
    "sluice.sinks.postgres",
    "sluice.sinks.redshift",
)
# the tables of other features: imported to create an empty metadata database only
TABLES = (
    "sluice.actions.outbox",
    "sluice.models.drift",
    "sluice.models.registry",
    "sluice.orchestration.history",
)


def _imported(pipeline: Path, home: Path) -> set[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(pipeline)],
        capture_output=True,
        text=True,
        env={"SLUICE_HOME": str(home), "PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(s for s in done.stdout.splitlines() if s.startswith("imported: "))
    return set(line.removeprefix("imported: ").split(","))


def test_a_file_pipeline_imports_only_what_it_uses(tmp_path: Path) -> None:
    """The first run (an empty metadata database) and a second one (at head) of a pipeline
    with a window, a lake and a warehouse sink."""
    data = tmp_path / "events.jsonl"
    synthetic.write_jsonl(synthetic.telemetry(500, n_devices=5, seed=3, labels=False), data)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        textwrap.dedent(f"""\
            name: p
            source: {{type: file, path: "{data}", format: json}}
            schema: {{device_id: string, ts: timestamp, temperature: double,
                      pressure: double, vibration: double, status: string}}
            event_time: ts
            transforms:
              - filter: "status <> 'maintenance'"
              - window: {{key: device_id, size: 1m, aggregate: {{n: "count(*)"}}}}
            sinks:
              - {{type: lake, table: p}}
              - {{type: warehouse, table: p}}
            """)
    )
    home = tmp_path / "home"
    first = _imported(pipeline, home)
    assert "sluice.sinks.warehouse" in first and "sqlalchemy" in first
    assert not first & set(UNUSED), first & set(UNUSED)
    assert set(TABLES) <= first
    again = _imported(pipeline, home)
    assert not again & {*UNUSED, *TABLES}, again & {*UNUSED, *TABLES}
