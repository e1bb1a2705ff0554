"""The file source: chunked reading, exact positions, resume, replay, globs, formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError, SourceError
from sluice.sources.base import Position, SourceContext
from sluice.sources.file import FileSource
from sluice.sources.lines import SCAN_BLOCK, newline_positions


def make_source(path: Path | str, **options: Any) -> FileSource:
    config = SourceConfig(type="file", path=str(path), **options)
    return FileSource(config, SourceContext(pipeline="test", home="/nonexistent"))


def write_lines(path: Path, start: int, count: int) -> list[str]:
    lines = [json.dumps({"n": i, "pad": "x" * (i % 7)}) for i in range(start, start + count)]
    path.write_text("".join(line + "\n" for line in lines))
    return lines


def drain(
    source: FileSource, max_rows: int = 1000, until: Position | None = None
) -> tuple[list[dict[str, Any]], Position | None]:
    rows: list[dict[str, Any]] = []
    position = None
    while (batch := source.poll(max_rows, 0, until=until)) is not None:
        assert batch.data.num_rows <= max_rows
        rows += batch.data.to_pylist()
        position = batch.position
        if until is not None and position == until:
            break
    return rows, position


def raws(rows: list[dict[str, Any]]) -> list[str]:
    return [r["_raw"] for r in rows]


def test_json_lines_with_origins_in_small_chunks(tmp_path: Path) -> None:
    lines = write_lines(tmp_path / "a.jsonl", 0, 50)
    source = make_source(tmp_path / "a.jsonl", chunk_bytes=64)
    source.open(None)
    rows, position = drain(source, max_rows=7)
    assert raws(rows) == lines
    assert [r["__origin"] for r in rows] == [f"a.jsonl:{i}" for i in range(1, 51)]
    assert position == {
        "files": {
            str(tmp_path / "a.jsonl"): {
                "offset": (tmp_path / "a.jsonl").stat().st_size,
                "line": 51,
                "done": True,
            }
        }
    }
    assert source.exhausted


def test_max_rows_bounds_every_batch(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", 0, 100)
    source = make_source(tmp_path / "a.jsonl")
    source.open(None)
    sizes = []
    while (batch := source.poll(30, 0)) is not None:
        sizes.append(batch.data.num_rows)
    assert sizes == [30, 30, 30, 10]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=st.integers(1, 40), second=st.integers(1, 40), chunk=st.integers(8, 300))
def test_resume_from_any_position_gives_exactly_the_rest(
    tmp_path: Path, first: int, second: int, chunk: int
) -> None:
    path = tmp_path / "r.jsonl"
    if not path.exists():
        write_lines(path, 0, 60)
    expected = [json.dumps({"n": i, "pad": "x" * (i % 7)}) for i in range(60)]
    source = make_source(path, chunk_bytes=chunk)
    source.open(None)
    batch = source.poll(first, 0)
    assert batch is not None
    position = json.loads(json.dumps(batch.position))
    resumed = make_source(path, chunk_bytes=chunk)
    resumed.open(position)
    rest, _ = drain(resumed, max_rows=second)
    assert raws(batch.data.to_pylist()) + raws(rest) == expected


def test_until_replays_exactly_one_epoch(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(
        "".join(json.dumps({"n": i}) + "\n" + ("\n" if i % 5 == 0 else "") for i in range(40))
    )
    source = make_source(path, chunk_bytes=50)
    source.open(None)
    start = source.poll(5, 0)
    assert start is not None
    epoch, end = drain_epoch(source, 12)
    replay = make_source(path, chunk_bytes=50)
    replay.open(start.position)
    rows, position = drain(replay, max_rows=100, until=end)
    assert position == end
    assert raws(rows) == epoch
    after, _ = drain(replay)
    assert [json.loads(r)["n"] for r in raws(after)] == list(range(17, 40))


def drain_epoch(source: FileSource, rows: int) -> tuple[list[str], Position]:
    got: list[str] = []
    position: Position = {}
    while len(got) < rows:
        batch = source.poll(rows - len(got), 0)
        assert batch is not None
        got += raws(batch.data.to_pylist())
        position = batch.position
    return got, position


def test_until_across_files(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", 0, 3)
    write_lines(tmp_path / "b.jsonl", 3, 3)
    source = make_source(tmp_path / "*.jsonl")
    source.open(None)
    _, end = drain_epoch(source, 5)
    replay = make_source(tmp_path / "*.jsonl")
    replay.open(None)
    rows, position = drain(replay, until=end)
    assert position == end
    assert [json.loads(r)["n"] for r in raws(rows)] == [0, 1, 2, 3, 4]


def test_glob_reads_sorted_and_picks_up_new_files(tmp_path: Path) -> None:
    write_lines(tmp_path / "b.jsonl", 10, 2)
    write_lines(tmp_path / "a.jsonl", 0, 2)
    (tmp_path / "notes.txt").write_text("not data\n")
    source = make_source(tmp_path / "*.jsonl")
    source.open(None)
    rows, _ = drain(source)
    assert [json.loads(r)["n"] for r in raws(rows)] == [0, 1, 10, 11]
    assert source.exhausted
    write_lines(tmp_path / "c.jsonl", 20, 2)
    assert not source.exhausted
    rows, position = drain(source)
    assert [json.loads(r)["n"] for r in raws(rows)] == [20, 21]
    assert position is not None and len(position["files"]) == 3


def test_directory_reads_files_of_the_format(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_lines(tmp_path / "sub" / "x.jsonl", 0, 2)
    write_lines(tmp_path / "y.jsonl", 2, 1)
    (tmp_path / "y.csv").write_text("a\n1\n")
    source = make_source(tmp_path, format="json")
    source.open(None)
    rows, _ = drain(source)
    assert [json.loads(r)["n"] for r in raws(rows)] == [0, 1, 2]


def test_empty_directory_and_empty_file(tmp_path: Path) -> None:
    source = make_source(tmp_path, format="json")
    source.open(None)
    assert source.poll(10, 0) is None
    assert source.exhausted
    (tmp_path / "empty.jsonl").write_text("")
    source = make_source(tmp_path / "empty.jsonl")
    source.open(None)
    assert source.poll(10, 0) is None
    assert source.exhausted


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    source = make_source(tmp_path / "nope.jsonl")
    with pytest.raises(SourceError, match=r"nope\.jsonl.*does not exist"):
        source.open(None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "x.txt"}, "cannot tell the format"),
        ({"path": "x.jsonl", "chunk_bytes": 0}, "chunk_bytes"),
        ({"path": "x.jsonl", "colour": "red"}, "colour"),
        ({"path": "x.csv", "csv": {"header": False}}, "columns"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_source(**options)


def test_relative_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_lines(tmp_path / "rel.jsonl", 0, 2)
    monkeypatch.chdir(tmp_path)
    source = make_source("rel.jsonl")
    source.open(None)
    assert len(drain(source)[0]) == 2


def test_csv_records_with_quoted_newlines_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('id;note\n1;"two\nlines"\n\n2;plain\n3;"a;b"\n')
    source = make_source(path, csv={"delimiter": ";"}, chunk_bytes=6)
    source.open(None)
    first = source.poll(1, 0)
    assert first is not None and first.raw_format == "csv"
    assert first.data.to_pylist() == [{"id": "1", "note": "two\nlines", "__origin": "d.csv:2"}]
    resumed = make_source(path, csv={"delimiter": ";"}, chunk_bytes=6)
    resumed.open(first.position)
    rows, _ = drain(resumed)
    assert [(r["id"], r["note"], r["__origin"]) for r in rows] == [
        ("2", "plain", "d.csv:5"),
        ("3", "a;b", "d.csv:6"),
    ]


def test_csv_without_header_uses_the_given_columns(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("1,2\n3,4")
    source = make_source(path, csv={"header": False, "columns": ["a", "b"]})
    source.open(None)
    rows, _ = drain(source)
    assert [(r["a"], r["b"]) for r in rows] == [("1", "2"), ("3", "4")]


def test_parquet_in_batches_and_resume_by_row(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"n": list(range(25)), "s": [str(i) for i in range(25)]}), path, row_group_size=7
    )
    source = make_source(path)
    source.open(None)
    first = source.poll(10, 0)
    assert first is not None and first.raw_format == "arrow"
    assert first.data.column("n").to_pylist() == list(range(10))
    assert first.data.column("__origin").to_pylist()[:2] == ["p.parquet:1", "p.parquet:2"]
    resumed = make_source(path)
    resumed.open(first.position)
    rows, position = drain(resumed, max_rows=4)
    assert [r["n"] for r in rows] == list(range(10, 25))
    assert position == {"files": {str(path): {"offset": 25, "line": 26, "done": True}}}


def write_dataset(directory: Path, fmt: str, sizes: list[int]) -> int:
    """Write one file per size; every row holds its global number ``n``."""
    n = 0
    for index, size in enumerate(sizes):
        numbers = list(range(n, n + size))
        n += size
        if fmt == "parquet":
            pq.write_table(
                pa.table({"n": numbers}), directory / f"f{index}.parquet", row_group_size=5
            )
        elif fmt == "csv":
            body = "".join(f'{i},"multi\nline"\n' + "\n" * (i % 2) for i in numbers)
            (directory / f"f{index}.csv").write_text("n,note\n" + body)
        else:
            body = "".join(json.dumps({"n": i}) + "\n" + "\n" * (i % 3 == 0) for i in numbers)
            (directory / f"f{index}.jsonl").write_text(body)
    return n


def numbers(table: pa.Table) -> list[int]:
    if "n" in table.column_names:
        return [int(v) for v in table.column("n").to_pylist()]
    return [json.loads(v)["n"] for v in table.column("_raw").to_pylist()]


def read_epoch(
    source: FileSource, max_rows: int, until: Position | None = None
) -> tuple[list[int], Position | None]:
    """Poll like the runner: until ``max_rows`` rows, nothing more, or ``until``."""
    got: list[int] = []
    position = None
    while len(got) < max_rows:
        batch = source.poll(max_rows - len(got), 0, until=until)
        if batch is None:
            break
        got += numbers(batch.data)
        position = batch.position
        if until is not None and position == until:
            break
    return got, position


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(["json", "csv", "parquet"]),
    sizes=st.lists(st.integers(0, 12), min_size=1, max_size=3),
    chunk=st.integers(8, 120),
    max_rows=st.integers(1, 9),
    data=st.data(),
)
def test_epochs_replay_and_resume_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    fmt: str,
    sizes: list[int],
    chunk: int,
    max_rows: int,
    data: st.DataObject,
) -> None:
    directory = tmp_path_factory.mktemp("epochs")
    total = write_dataset(directory, fmt, sizes)
    pattern = directory / ("*." + {"json": "jsonl", "csv": "csv", "parquet": "parquet"}[fmt])
    source = make_source(pattern, chunk_bytes=chunk)
    source.open(None)
    epochs: list[tuple[Position | None, Position | None, list[int]]] = []
    start: Position | None = None
    while (epoch := read_epoch(source, max_rows))[0]:
        epochs.append((start, epoch[1], epoch[0]))
        start = epoch[1]
    assert [n for _, _, rows in epochs for n in rows] == list(range(total))
    assert source.exhausted
    if epochs:
        begin, end, rows = epochs[data.draw(st.integers(0, len(epochs) - 1))]
        replay = make_source(pattern, chunk_bytes=data.draw(st.integers(8, 120)))
        replay.open(json.loads(json.dumps(begin)) if begin else None)
        assert read_epoch(replay, max_rows, until=json.loads(json.dumps(end))) == (rows, end)
        rest = [n for n in range(total) if n > rows[-1]]
        assert read_epoch(replay, total + 1)[0] == rest


def test_lag_reports_bytes_left(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", 0, 10)
    source = make_source(tmp_path / "a.jsonl")
    source.open(None)
    size = (tmp_path / "a.jsonl").stat().st_size
    assert source.lag() == {str(tmp_path / "a.jsonl"): {"bytes": size}}
    drain(source)
    assert source.lag() == {}


def test_an_exhausted_single_file_does_not_wait_for_more(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", 0, 1)
    source = make_source(tmp_path / "a.jsonl")
    source.open(None)
    assert source.poll(10, 5) is not None
    assert source.poll(10, 5) is None  # would block for 5 s if it waited for new data


def test_crlf_lines(tmp_path: Path) -> None:
    (tmp_path / "w.jsonl").write_bytes(b'{"n":1}\r\n\r\n{"n":2}\r\n')
    source = make_source(tmp_path / "w.jsonl")
    source.open(None)
    rows, _ = drain(source)
    assert raws(rows) == ['{"n":1}', '{"n":2}']


def test_csv_with_a_stray_quote_still_reads_every_record(tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_text('a,b\n1,x"y\n2,z\n3,w\n')
    source = make_source(tmp_path / "q.csv", chunk_bytes=9)
    source.open(None)
    rows, _ = drain(source)
    assert [(r["a"], r["b"], r["__origin"]) for r in rows] == [
        ("1", 'x"y', "q.csv:2"),
        ("2", "z", "q.csv:3"),
        ("3", "w", "q.csv:4"),
    ]


def test_until_at_the_current_position_returns_an_empty_batch(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", 0, 3)
    source = make_source(tmp_path / "a.jsonl")
    source.open(None)
    first = source.poll(2, 0)
    assert first is not None
    resumed = make_source(tmp_path / "a.jsonl")
    resumed.open(first.position)
    batch = resumed.poll(10, 0, until=first.position)
    assert batch is not None
    assert (batch.data.num_rows, batch.position) == (0, first.position)
    assert raws(drain(resumed)[0]) == [json.dumps({"n": 2, "pad": "xx"})]


@pytest.mark.parametrize(
    "size", [0, 1, SCAN_BLOCK - 1, SCAN_BLOCK, SCAN_BLOCK + 1, 3 * SCAN_BLOCK + 17]
)
def test_newline_positions_across_scan_blocks(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 16, size).astype(np.uint8)
    data[-1:] = 10  # a newline as the very last byte (of the last block)
    data[SCAN_BLOCK - 1 : SCAN_BLOCK + 1] = 10  # and on both sides of a block boundary
    found = newline_positions(data)
    assert found.dtype == np.int64
    assert np.array_equal(found, np.flatnonzero(data == 10))


def test_json_lines_larger_than_a_scan_block_keep_every_record(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    lines = [json.dumps({"n": i, "pad": "x" * (i % 50)}) for i in range(20_000)]
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 2 * SCAN_BLOCK
    source = make_source(path)
    source.open(None)
    batch = source.poll(100_000, 0)
    assert batch is not None
    assert batch.data.column("_raw").to_pylist() == lines
    assert batch.data.column("__origin").to_pylist()[-1] == f"big.jsonl:{len(lines)}"
