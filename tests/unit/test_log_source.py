"""LogSource: polls a log stream as raw JSON rows with origins and resumable positions."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.sources.base import SourceContext, create_source
from sluice.sources.log import LogSource
from sluice.storage.log import open_log


def _source(home: Path, stream: str = "events") -> LogSource:
    config = SourceConfig.model_validate({"type": "log", "stream": stream})
    source = create_source(config, SourceContext(pipeline="pipe", home=str(home)))
    assert isinstance(source, LogSource)
    return source


def _append(home: Path, n: int, stream: str = "events") -> None:
    payloads = [orjson.dumps({"n": i}) for i in range(n)]
    open_log(Settings(home=home).log_dir).append(stream, payloads)


def test_polls_raw_rows_with_origin_and_position(tmp_path: Path) -> None:
    _append(tmp_path, 5)
    source = _source(tmp_path)
    source.open(None)
    batch = source.poll(max_rows=3, timeout=0.1)
    assert batch is not None
    assert batch.raw_format == "json"
    assert batch.data.column_names == ["_raw", "__origin"]
    assert batch.data.column("__origin").to_pylist() == ["events@0", "events@1", "events@2"]
    assert batch.position == {"offset": 3}
    assert source.lag() == {"events": 2}
    assert not source.exhausted
    rest = source.poll(max_rows=100, timeout=0.1)
    assert rest is not None and rest.data.num_rows == 2
    assert source.exhausted
    assert source.poll(max_rows=100, timeout=0.01) is None


def test_resumes_and_replays_exactly_until(tmp_path: Path) -> None:
    _append(tmp_path, 10)
    source = _source(tmp_path)
    source.open({"offset": 4})
    batch = source.poll(max_rows=1000, timeout=0.1, until={"offset": 7})
    assert batch is not None
    assert batch.data.column("__origin").to_pylist() == ["events@4", "events@5", "events@6"]
    assert source.poll(max_rows=1000, timeout=0.1, until={"offset": 7}) is None


def test_commit_records_consumer_position(tmp_path: Path) -> None:
    _append(tmp_path, 10)
    source = _source(tmp_path)
    source.open(None)
    log = open_log(Settings(home=tmp_path).log_dir)
    assert log.consumers("events") == {"pipe": 0}
    source.commit({"offset": 6})
    assert log.lag("events") == 4


def test_open_creates_the_stream(tmp_path: Path) -> None:
    source = _source(tmp_path, "fresh")
    source.open(None)
    assert source.exhausted
    assert open_log(Settings(home=tmp_path).log_dir).exists("fresh")


@pytest.mark.parametrize("stream", [None, "../x"])
def test_bad_stream_option_is_a_config_error(tmp_path: Path, stream: str | None) -> None:
    config = SourceConfig.model_validate({"type": "log", "stream": stream})
    with pytest.raises(ConfigError, match="stream"):
        LogSource(config, SourceContext(pipeline="p", home=str(tmp_path)))
