"""The ``http`` source against a local paginated API: pagination, cursor, retries, bad input."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.config.loader import load_pipeline
from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError, SourceError
from sluice.core.settings import Settings
from sluice.runners.check import check_pipeline
from sluice.runners.create import run
from sluice.sinks.dead_letter import read_dead_letters
from sluice.sources.base import SourceContext, create_source
from sluice.sources.http import HttpSource
from sluice.storage.lake_tables import open_delta
from tests.http_api import Api, serve

PAGINATION: dict[str, dict[str, Any]] = {
    "offset": {"pagination": {"type": "offset", "param": "offset"}},
    "page": {"pagination": {"type": "page", "param": "page"}},
    "link": {"pagination": {"type": "link"}},
    "body-link": {"records": "data", "pagination": {"type": "link", "next": "next"}},
    "token": {
        "records": "data",
        "pagination": {"type": "cursor", "param": "cursor", "next": "next_cursor"},
    },
    "none": {},
}


def records(start: int, stop: int) -> list[bytes]:
    """Records ``{"id": i, "v": ...}`` for ``start <= i < stop``."""
    return [json.dumps({"id": i, "v": i / 2}).encode() for i in range(start, stop)]


@pytest.fixture
def api() -> Iterator[Api]:
    """An offset-paged JSON-array API on 127.0.0.1."""
    with serve(Api(mode="offset", fmt="json", limit=7)) as running:
        yield running


def source(api: Api, **options: Any) -> HttpSource:
    """An ``http`` source on ``api`` that records its waits instead of sleeping."""
    config = {"type": "http", "url": api.url, "format": api.fmt, **options}
    built = create_source(SourceConfig.model_validate(config), SourceContext("t", "/tmp"))
    assert isinstance(built, HttpSource)
    waits: list[float] = []
    built.sleep = waits.append
    built.waits = waits  # type: ignore[attr-defined]
    return built


def pipeline(tmp_path: Path, api: Api, name: str = "pull", **options: Any) -> Path:
    """A pipeline of the ``http`` source on ``api`` into the lake table ``name``."""
    spec = {
        "name": name,
        "source": {"type": "http", "url": api.url, "format": api.fmt, **options},
        "schema": {"id": "long", "v": "double"},
        "batch": {"max_rows": 5, "max_latency": "100ms"},
        "sinks": [{"type": "lake", "table": name, "partition_by": "none"}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(spec, indent=1))
    return path


def lake_ids(settings: Settings, table: str) -> list[int]:
    """The ``id`` column of a lake table, in order."""
    delta = open_delta(settings.lake_path(table))
    assert delta is not None
    return sorted(delta.to_pyarrow_table().column("id").to_pylist())


@pytest.mark.parametrize("mode", list(PAGINATION))
def test_every_pagination_lands_each_record_once_across_runs(
    mode: str, tmp_path: Path, settings: Settings
) -> None:
    fmt = "ndjson" if mode in ("offset", "link") else "json"
    with serve(Api(mode=mode, fmt=fmt, limit=7, records=records(0, 30))) as api:
        file = pipeline(tmp_path, api, **PAGINATION[mode])
        assert run(load_pipeline(file), until_idle=True, idle_timeout=1.0).events_out == 30
        api.add(records(30, 41))
        again = run(load_pipeline(file), until_idle=True, idle_timeout=1.0)
        assert (again.events_in, again.events_out) == (11, 11)
    assert lake_ids(settings, "pull") == list(range(41))


def test_incremental_cursor_is_sent_and_checkpointed(
    tmp_path: Path, settings: Settings, api: Api
) -> None:
    api.add(records(0, 20))
    file = pipeline(
        tmp_path, api, cursor="id", cursor_param="since", start=0, **PAGINATION["offset"]
    )
    assert run(load_pipeline(file), until_idle=True, idle_timeout=1.0).events_out == 20
    api.add(records(20, 25))
    api.requests.clear()
    # The API is inclusive (id >= since): the record at the cursor comes back and is dropped.
    assert run(load_pipeline(file), until_idle=True, idle_timeout=1.0).events_out == 5
    assert api.requests[0].query == {"since": "19", "offset": "0"}
    assert lake_ids(settings, "pull") == list(range(25))
    with sqlite3.connect(settings.home / "metadata.db") as conn:
        (position,) = conn.execute(
            "select position from checkpoints where pipeline = 'pull'"
        ).fetchone()
    # The sweep's end committed the new cursor: the next run asks for what is past it.
    assert json.loads(position) == {"since": 24, "cursor": 24, "page": None, "skip": 0}


def test_secrets_come_from_the_environment_and_stay_out_of_checkpoints(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-s3cr3t")
    with serve(Api(mode="link", fmt="ndjson", limit=4, records=records(0, 10))) as api:
        spec = pipeline(tmp_path, api, pagination={"type": "link"}).read_text()
        spec = spec.replace(
            '"format": "ndjson",',
            '"format": "ndjson", "headers": {"Authorization": "Bearer ${API_TOKEN}"}, '
            '"params": {"api_key": "${API_TOKEN}"},',
        )
        file = tmp_path / "secret.yaml"
        file.write_text(spec)
        assert run(load_pipeline(file), until_idle=True, idle_timeout=1.0).events_out == 10
    assert {r.headers["Authorization"] for r in api.requests} == {"Bearer tok-s3cr3t"}
    assert {r.query["api_key"] for r in api.requests} == {"tok-s3cr3t"}
    assert len(api.requests) >= 3  # the next links were followed, the key re-added to each
    assert b"tok-s3cr3t" not in (settings.home / "metadata.db").read_bytes()


def test_429_and_503_are_retried_honouring_retry_after(api: Api) -> None:
    api.add(records(0, 3))
    api.faults.extend(
        [
            (429, {"Retry-After": "7"}, b"slow down"),
            (503, {}, b"down"),
            (503, {"Retry-After": "2"}, b"down"),
        ]
    )
    pull = source(api, retry_delay="1s")
    pull.open(None)
    batch = pull.poll(100, 1.0)
    assert batch is not None and batch.data.num_rows == 3
    assert pull.waits == [7.0, 2.0, 2.0]  # type: ignore[attr-defined]
    pull.close()


def test_an_endpoint_that_stays_down_is_a_clear_error(api: Api) -> None:
    api.faults.extend([(502, {}, b"bad gateway")] * 4)
    pull = source(api, retries=3)
    pull.open(None)
    with pytest.raises(SourceError, match=r"page first: endpoint unavailable after 4 attempts"):
        pull.poll(100, 1.0)
    assert pull.waits == [0.5, 1.0, 2.0]  # type: ignore[attr-defined]
    pull.close()


def test_a_refused_connection_is_retried_then_named(tmp_path: Path) -> None:
    from tests.kafka_broker import free_port

    config = {"type": "http", "url": f"http://127.0.0.1:{free_port()}/feed", "retries": 2}
    pull = create_source(SourceConfig.model_validate(config), SourceContext("t", "/tmp"))
    assert isinstance(pull, HttpSource)
    pull.sleep = lambda _s: None
    pull.open(None)
    with pytest.raises(SourceError, match=r"127.0.0.1/feed page first: endpoint unavailable"):
        pull.poll(10, 1.0)
    pull.close()


def test_a_client_error_is_not_retried(api: Api) -> None:
    api.faults.append((404, {}, b"no such thing"))
    pull = source(api)
    pull.open(None)
    with pytest.raises(SourceError, match="HTTP 404"):
        pull.poll(10, 1.0)
    assert pull.waits == []  # type: ignore[attr-defined]
    pull.close()


def test_a_page_that_is_not_json_is_a_clear_error(api: Api) -> None:
    api.faults.append((200, {"Content-Type": "text/html"}, b"<html>maintenance</html>"))
    pull = source(api)
    pull.open(None)
    with pytest.raises(SourceError, match=r"page first: the page is not JSON"):
        pull.poll(10, 1.0)
    pull.close()


def test_an_object_page_needs_its_records_path(api: Api) -> None:
    api.faults.append((200, {}, b'{"items": [1, 2]}'))
    pull = source(api)
    pull.open(None)
    with pytest.raises(SourceError, match=r"holds no JSON array \(set 'records:'"):
        pull.poll(10, 1.0)
    pull.close()


def test_a_next_link_seen_before_is_an_endless_loop(api: Api) -> None:
    looping = (200, {"Link": f'<{api.url}?from=3>; rel="next"'}, b"[]")
    api.faults.extend([(200, {"Link": f'<{api.url}?from=3>; rel="next"'}, b'[{"id": 1}]')])
    api.faults.extend([(200, {"Link": f'<{api.url}?from=3>; rel="next"'}, b'[{"id": 2}]')])
    api.faults.append(looping)
    pull = source(api, pagination={"type": "link"})
    pull.open(None)
    assert pull.poll(10, 1.0) is not None
    assert pull.poll(10, 1.0) is not None
    with pytest.raises(SourceError, match=r"endless pagination: page /records\?from=3 was"):
        pull.poll(10, 1.0)
    pull.close()


def test_an_api_ignoring_the_page_parameter_is_an_endless_loop(api: Api) -> None:
    api.faults.extend([(200, {}, b'[{"id": 1}]')] * 3)
    pull = source(api, pagination={"type": "page", "param": "page"})
    pull.open(None)
    assert pull.poll(10, 1.0) is not None
    with pytest.raises(SourceError, match="endless pagination: the same page came back"):
        pull.poll(10, 1.0)
    pull.close()


def test_the_rate_limit_spaces_requests(api: Api) -> None:
    api.add(records(0, 21))
    pull = source(api, rate_limit=2, pagination={"type": "offset", "param": "offset"})
    now = [100.0]
    pull.clock = lambda: now[0]
    pull.open(None)
    while pull.poll(100, 1.0) is not None:
        pass
    assert len(api.requests) == 4  # three pages of 7, then an empty one
    assert pull.waits == [0.5, 0.5, 0.5]  # type: ignore[attr-defined]


def test_bad_records_are_dead_lettered_with_their_page(tmp_path: Path, settings: Settings) -> None:
    lines = [*records(0, 3), b"{oops", *records(3, 5)]
    with serve(Api(mode="offset", fmt="ndjson", limit=4, records=lines)) as api:
        file = pipeline(tmp_path, api, pagination={"type": "offset", "param": "offset"})
        stats = run(load_pipeline(file), until_idle=True, idle_timeout=1.0)
    assert (stats.events_out, stats.dead_lettered) == (5, 1)
    dead = read_dead_letters(settings, "pull", limit=None).to_pylist()
    assert dead[0]["origin"] == "127.0.0.1/records@first#3"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "ftp://x/y"}, "source.url: .*url must start with http"),
        ({"pagination": {"type": "page"}}, "page pagination needs 'param'"),
        ({"pagination": {"type": "cursor", "param": "c"}}, "needs 'next'"),
        ({"cursor_param": "since"}, "'cursor_param' needs 'cursor'"),
        ({"rate_limit": 0}, "source.rate_limit"),
        ({"poll_interval": "soon"}, "source.poll_interval"),
        ({"format": "ndjson", "records": "data"}, "an ndjson page has no body paths"),
        ({"refresh": 1}, "source.refresh"),
    ],
)
def test_validate_names_the_file_line_and_key(
    options: dict[str, Any], message: str, tmp_path: Path, sluice_home: Path
) -> None:
    source_spec = {"type": "http", "url": "http://127.0.0.1:9/x", **options}
    file = tmp_path / "bad.yaml"
    file.write_text(
        "name: bad\nsource:\n"
        + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in source_spec.items())
        + "sinks:\n  - {type: lake, table: bad}\n"
    )
    with pytest.raises(ConfigError, match=message) as caught:
        check_pipeline(file)
    assert str(caught.value).startswith(f"{file}:")
    assert not sluice_home.exists() or not any(sluice_home.iterdir())
