"""SIGKILL `sluice run` pulling a paginated API twice, add records, rerun: each lands once."""

from __future__ import annotations

import json
from pathlib import Path

from deltalake import DeltaTable

from tests.http_api import Api, serve
from tests.processes import committed_epoch, kill_when, start_run

PIPELINE = """\
name: httpcrash
source: {{type: http, url: "{url}", format: ndjson, cursor: id, cursor_param: since,
          pagination: {{type: offset, param: offset}}, poll_interval: 100ms}}
schema: {{id: long, v: double}}
batch: {{max_rows: 500, max_latency: 50ms}}
sinks:
  - {{type: lake, table: httpcrash, partition_by: none}}
"""
TOTAL, MORE = 20_000, 1_500


def records(start: int, stop: int) -> list[bytes]:
    """NDJSON records with increasing ids."""
    return [json.dumps({"id": i, "v": i / 4}).encode() for i in range(start, stop)]


def test_sigkill_mid_pull_then_new_records_land_exactly_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    pipeline = tmp_path / "httpcrash.yaml"
    with serve(Api(mode="offset", fmt="ndjson", limit=700, records=records(0, TOTAL))) as api:
        pipeline.write_text(PIPELINE.format(url=api.url))
        kill_when(start_run(pipeline, home), lambda: committed_epoch(home, "httpcrash") >= 3)
        first_kill = committed_epoch(home, "httpcrash")
        kill_when(
            start_run(pipeline, home),
            lambda: committed_epoch(home, "httpcrash") >= first_kill + 4,
        )
        assert committed_epoch(home, "httpcrash") < TOTAL // 500, "finished before the kill"
        done = start_run(pipeline, home, "--idle-timeout", "1")
        _, err = done.communicate(timeout=300)
        assert done.returncode == 0, err.decode()
        api.add(records(TOTAL, TOTAL + MORE))
        again = start_run(pipeline, home, "--idle-timeout", "1")
        _, err = again.communicate(timeout=300)
        assert again.returncode == 0, err.decode()
        # the last run resumed past the committed cursor: it asked for the new records only
        assert any(r.query.get("since") == str(TOTAL - 1) for r in api.requests)

    ids = DeltaTable(str(home / "lake" / "httpcrash")).to_pyarrow_table(columns=["id"])
    values = ids.column("id").to_pylist()
    assert len(values) == TOTAL + MORE
    assert sorted(values) == list(range(TOTAL + MORE))
