"""The embedded durable log: offsets, durability, concurrency, retention, parsing, ingest."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core.errors import ConfigError, NotFoundError, SourceError
from sluice.core.settings import Settings
from sluice.storage.log import (
    EmbeddedLog,
    PayloadError,
    ingest_file,
    open_log,
    parse_events,
)


def _events(n: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps({"id": i, "value": i * 1.5}) for i in range(start, start + n)]


def test_append_and_read_round_trip(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path)
    assert log.append("s", _events(3)) == (0, 2)
    assert log.append("s", pa.array([b'{"id": 3}'], pa.binary())) == (3, 3)
    table = log.read("s", 1, 10)
    assert table.column_names == ["_offset", "_raw", "ts"]
    assert table.column("_offset").to_pylist() == [1, 2, 3]
    assert orjson.loads(table.column("_raw")[0].as_py()) == {"id": 1, "value": 1.5}
    assert log.end_offset("s") == 4
    assert log.read("s", 4, 10).num_rows == 0
    assert log.read("s", 0, 10, until=2).column("_offset").to_pylist() == [0, 1]
    assert log.streams() == ["s"]


def test_empty_append_writes_nothing(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path)
    log.append("s", _events(2))
    assert log.append("s", []) == (2, 1)
    assert log.end_offset("s") == 2


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "", "x" * 101, "a\\b", "a b"])
def test_stream_names_cannot_escape_the_log_folder(tmp_path: Path, name: str) -> None:
    log = EmbeddedLog(tmp_path / "log")
    with pytest.raises(ValueError, match="invalid stream name"):
        log.append(name, _events(1))
    assert not (tmp_path / "log").exists() or list((tmp_path / "log").iterdir()) == []


def test_reading_a_missing_stream_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        EmbeddedLog(tmp_path).read("nope", 0, 10)


def test_concurrent_appends_get_unique_dense_offsets(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def writer(worker: int) -> None:
        for batch in range(20):
            span = log.append("s", _events(7, start=worker * 1000 + batch * 7))
            with lock:
                results.append(span)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    offsets = sorted(o for first, last in results for o in range(first, last + 1))
    assert offsets == list(range(4 * 20 * 7))
    assert log.read("s", 0, 10_000).column("_offset").to_pylist() == offsets


def test_two_processes_append_to_one_stream(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        from sluice.storage.log import EmbeddedLog
        log = EmbeddedLog({str(tmp_path)!r})
        for i in range(50):
            log.append("s", [b'{{"n": 1}}'] * 3)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    log = EmbeddedLog(tmp_path)
    assert log.read("s", 0, 1000).column("_offset").to_pylist() == list(range(300))


def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from sluice.storage.log import EmbeddedLog
        log = EmbeddedLog({str(tmp_path)!r})
        i = 0
        while True:
            first, last = log.append("s", [b'{{"i": %d}}' % n for n in range(i, i + 100)])
            print(last, flush=True)
            i += 100
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    acked = -1
    for line in proc.stdout:
        acked = int(line)
        if acked >= 2_000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for line in proc.stdout:  # acknowledgements printed before the kill landed
        acked = max(acked, int(line))
    proc.stdout.close()
    table = EmbeddedLog(tmp_path).read("s", 0, 1_000_000)
    offsets = table.column("_offset").to_pylist()
    assert offsets[: acked + 1] == list(range(acked + 1))
    raw = table.column("_raw").to_pylist()
    assert [orjson.loads(r)["i"] for r in raw[: acked + 1]] == list(range(acked + 1))


def test_retention_by_size_respects_consumer_position(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path)
    log.append("s", [b"x" * 100] * 10)
    log.commit_consumer("s", "pipe", 3)
    assert log.lag("s") == 7
    assert log.pending_bytes("s") == 700
    assert log.retain("s", max_bytes=250) == 3  # size alone would keep only 8 and 9
    assert log.start_offset("s") == 3
    log.commit_consumer("s", "pipe", 10)
    assert log.retain("s", max_bytes=250) == 5
    assert log.read("s", 0, 100).column("_offset").to_pylist() == [8, 9]
    assert log.append("s", [b"y"]) == (10, 10)  # offsets are never reused


def test_retention_by_age_and_explicit_floor(tmp_path: Path) -> None:
    now = [1_000_000_000]  # microseconds: an injected clock, so load cannot age records
    log = EmbeddedLog(tmp_path, clock=lambda: now[0])
    log.append("s", [b"old"] * 4)
    now[0] += 50_000
    log.append("s", [b"new"] * 2)
    assert log.retain("s", max_age="10ms", keep_from=2) == 2
    assert log.retain("s", max_age="10ms") == 2
    assert log.read("s", 0, 10).column("_raw").to_pylist() == ["new", "new"]
    assert log.retain("s", max_age="1d") == 0
    log.retain("s", max_age="10ms")
    assert log.end_offset("s") == 6


def test_lag_is_zero_without_consumers(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path)
    log.append("s", _events(5))
    assert log.lag("s") == 0
    assert log.pending_bytes("s") == 0


def test_replay_appends_each_origin_once(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path)
    log.append("s", _events(2))
    assert log.replay("s", [b'{"a": 1}', b'{"a": 2}'], ["s@0", "s@1"]) == (2, 2, 3)
    assert log.replay("s", [b'{"a": 1}', b'{"a": 3}'], ["s@0", "s@5"]) == (1, 4, 4)
    assert log.end_offset("s") == 5


def test_wait_wakes_on_append_from_another_thread(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path)
    log.create("s")
    timer = threading.Timer(0.05, lambda: log.append("s", _events(1)))
    timer.start()
    assert log.wait("s", 0, timeout=10)
    timer.join()
    assert not log.wait("s", 1, timeout=0.01)


def test_open_log_shares_one_instance_per_folder(tmp_path: Path) -> None:
    assert open_log(tmp_path) is open_log(str(tmp_path))


# -- parsing ---------------------------------------------------------------------------------
def test_parse_object_array_and_ndjson() -> None:
    assert parse_events(b' {"a": 1}\n') == [b'{"a":1}']
    assert parse_events(b'{\n  "a": 1\n}') == [b'{"a":1}']
    array = parse_events(b'[{"a": 1},\n {"b": [2, "]},{"]}]')
    assert isinstance(array, pa.Array)  # an array's events are kept as their own text
    assert array.to_pylist() == ['{"a": 1}', '{"b": [2, "]},{"]}']
    assert parse_events(b'{"a": 1}\n\n{"b": 2}\n') == [b'{"a": 1}', b'{"b": 2}']


_TEXT = st.text(alphabet='ab\\",[]{}:\n é😀', max_size=6)
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.dictionaries(_TEXT, _VALUES, max_size=4), max_size=12),
    indent=st.booleans(),
)
def test_array_elements_are_split_at_their_own_commas(
    items: list[dict[str, object]], indent: bool
) -> None:
    body = orjson.dumps(items, option=orjson.OPT_INDENT_2 if indent else 0)
    events = parse_events(b" \n" + body + b"\n")
    assert [orjson.loads(raw) for raw in events.to_pylist()] == items


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the body is empty"),
        (b"  \n ", "the body is empty"),
        (b'{"a": 1}\n{"b": }\n', "line 2: invalid JSON"),
        (b'{"a": 1}\n[1, 2]\n', "line 2: expected a JSON object, got an array"),
        (b'{"a": 1}\n1,2\n', "line 2: invalid JSON"),
        (b'[{"a": 1}, 3]', "item 1: expected a JSON object, got a number"),
        (b'[{"a": 1},\n {"a": ]', "line 2: invalid JSON"),
        (b'"text"', "line 1: expected a JSON object, got a string"),
    ],
)
def test_parse_errors_name_the_line(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_events(body)


# -- ingest_file ----------------------------------------------------------------------------
def test_ingest_file_in_chunks(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(_events(25)) + b"\n")
    assert ingest_file(settings, "s", path, chunk_lines=10) == (25, 0, 24)
    assert ingest_file(settings, "s", io.BytesIO(b'[{"a": 1}, {"a": 2}]')) == (2, 25, 26)
    assert open_log(settings.log_dir).end_offset("s") == 27


def test_ingest_file_bad_line_is_named(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    body = b"\n".join(_events(12)) + b"\n{oops\n"
    with pytest.raises(PayloadError, match=r"<input>: line 13: invalid JSON: .*10 events"):
        ingest_file(settings, "s", io.BytesIO(body), chunk_lines=10)
    assert open_log(settings.log_dir).end_offset("s") == 10


def test_ingest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        ingest_file(Settings(home=tmp_path), "s", tmp_path / "missing.jsonl")


# -- periodic retention ---------------------------------------------------------------------

DAY_US = 86_400_000_000


class FakeClock:
    """Microseconds since the epoch, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_767_225_600_000_000  # 2026-01-01

    def __call__(self) -> int:
        return self.now


def _pipeline_reading(home: Path, stream: str, name: str, offset: int) -> None:
    """A pipeline's log source that checkpointed ``offset``: its consumer position."""
    from sluice.config.models import SourceConfig
    from sluice.sources.base import SourceContext, create_source

    config = SourceConfig.model_validate({"type": "log", "stream": stream})
    source = create_source(config, SourceContext(pipeline=name, home=str(home)))
    source.open({"offset": offset})
    source.commit({"offset": offset})


def test_retention_never_deletes_what_a_pipeline_has_not_consumed(tmp_path: Path) -> None:
    clock = FakeClock()
    log = open_log(Settings(home=tmp_path).log_dir)
    log.clock = clock
    log.append("events", _events(10))
    _pipeline_reading(tmp_path, "events", "slow", 4)
    _pipeline_reading(tmp_path, "events", "fast", 9)
    clock.now += 8 * DAY_US
    log.append("events", _events(2, start=10))
    result = log.apply_retention("events", max_age="7d")
    assert (result.deleted, result.held, result.holders) == (4, 6, {"slow": 4, "fast": 9})
    assert log.start_offset("events") == 4
    _pipeline_reading(tmp_path, "events", "slow", 12)
    result = log.apply_retention("events", max_age="7d")
    assert (result.deleted, result.held, result.holders) == (5, 1, {"fast": 9})
    assert log.forget_consumer("events", "fast") and not log.forget_consumer("events", "fast")
    result = log.apply_retention("events", max_age="7d")
    assert (result.deleted, result.held) == (1, 0)
    assert log.read("events", 0, 100).column("_offset").to_pylist() == [10, 11]


def test_retention_pass_trims_every_stream_and_warns_about_holders(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sluice.storage.log_retention import LogRetention, RetentionPolicy

    clock, ticks = FakeClock(), [0.0]
    log = EmbeddedLog(tmp_path, clock=clock)
    log.append("a", [b"x" * 100] * 10)
    log.append("b", [b"y" * 100] * 10)
    log.commit_consumer("b", "stalled", 2)
    retention = LogRetention(log, RetentionPolicy(max_age=None, max_bytes=300), lambda: ticks[0])
    with caplog.at_level("WARNING", logger="sluice.log.retention"):
        done = retention.run_once()
    assert {s: (r.deleted, r.held) for s, r in done.items()} == {"a": (7, 0), "b": (2, 5)}
    assert log.start_offset("a") == 7 and log.start_offset("b") == 2
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "stream 'b' keeps 5 records" in warning and "'stalled' (at offset 2)" in warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="sluice.log.retention"):
        retention.run_once()  # still held, but warned about less than an hour ago
        assert caplog.records == []
        ticks[0] += 3601
        retention.run_once()
    assert len(caplog.records) == 1


def test_retention_thread_runs_until_stopped(tmp_path: Path) -> None:
    from sluice.storage.log_retention import LogRetention, RetentionPolicy

    clock = FakeClock()
    log = EmbeddedLog(tmp_path, clock=clock)
    log.append("s", _events(5))
    clock.now += 2 * DAY_US
    log.append("s", _events(1, start=5))
    retention = LogRetention(log, RetentionPolicy(max_age=timedelta(days=1), check_every=0.01))
    retention.start()
    try:
        deadline = time.monotonic() + 30
        while log.start_offset("s") != 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.start_offset("s") == 5
        clock.now += 2 * DAY_US  # later passes keep running: the newer record goes too
        while log.start_offset("s") != 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.start_offset("s") == 6
    finally:
        retention.stop()
    assert not any(t.name == "sluice-log-retention" for t in threading.enumerate())


def test_retention_policy_from_env() -> None:
    from sluice.storage.log_retention import RetentionPolicy, parse_size

    assert RetentionPolicy.from_env({}) == RetentionPolicy(timedelta(days=7), None, 60.0)
    policy = RetentionPolicy.from_env(
        {
            "SLUICE_LOG_RETENTION": "none",
            "SLUICE_LOG_RETENTION_BYTES": "64MiB",
            "SLUICE_LOG_RETENTION_CHECK": "10s",
        }
    )
    assert policy == RetentionPolicy(None, 64 * 1024 * 1024, 10.0)
    assert not RetentionPolicy.from_env({"SLUICE_LOG_RETENTION": "off"}).enabled
    assert [parse_size(t) for t in ("1000", "2KB", "3 kib", "1GB")] == [
        1000,
        2000,
        3072,
        10**9,
    ]
    with pytest.raises(ConfigError, match="invalid size '12 parsecs'"):
        RetentionPolicy.from_env({"SLUICE_LOG_RETENTION_BYTES": "12 parsecs"})
    with pytest.raises(ConfigError, match="invalid duration"):
        RetentionPolicy.from_env({"SLUICE_LOG_RETENTION": "a week"})
