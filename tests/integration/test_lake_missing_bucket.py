"""A lake on a bucket that does not exist fails fast, naming the bucket (never retries forever)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from sluice.core.errors import SinkError, TransientSinkError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.lake import write_lake_table
from tests.kafka_broker import MotoS3

DEADLINE_S = 60  # the bound; the run is killed (and the test fails) past it


@pytest.fixture
def s3_env(moto_s3_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS environment of the moto server (also set for this process)."""
    env = moto_s3_server.env() | {
        "AWS_ENDPOINT_URL": moto_s3_server.url,
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_lake_write_to_a_missing_bucket_is_a_permanent_error(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", lake_root="s3://no-such-bucket/lake")
    with pytest.raises(SinkError, match="the bucket 'no-such-bucket' does not exist") as failed:
        write_lake_table(SinkContext("p", settings), "events", pa.table({"a": [1]}), epoch=1)
    assert not isinstance(failed.value, TransientSinkError)


def test_sluice_run_stops_with_the_bucket_named(s3_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "events.jsonl"
    data.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(10)))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f'name: to-s3\nsource: {{type: file, path: "{data}", format: json}}\n'
        "schema: {id: long}\nsinks:\n  - {type: lake, table: events}\n"
    )
    env = (
        os.environ
        | s3_env
        | {
            "SLUICE_HOME": str(tmp_path / "home"),
            "SLUICE_LAKE_URL": "s3://missing-lake-bucket/lake",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "run", str(pipeline), "--until-idle", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode != 0
    assert "the bucket 'missing-lake-bucket' does not exist" in done.stdout + done.stderr
