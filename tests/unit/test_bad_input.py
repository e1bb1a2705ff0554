"""Bad input through the file source and the decoder: good rows land typed, every bad row
is a dead letter with a reason, and rows in = good + dead-lettered, exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sluice.config.models import FieldSpec, SourceConfig
from sluice.core.context import EpochContext
from sluice.sources.base import SourceContext
from sluice.sources.decode import Decoder
from sluice.sources.file import FileSource

FIELDS = {
    "device_id": FieldSpec(type="string", required=True),
    "ts": FieldSpec(type="timestamp", required=True),
    "temperature": FieldSpec(type="double"),
}
GOOD = '{"device_id":"d%d","ts":"2024-01-01T00:00:%02dZ","temperature":%d.5}'


@dataclass
class Outcome:
    rows_in: int
    good: pa.Table
    dead: list[dict[str, Any]]


def ingest(path: Path, fields: dict[str, FieldSpec] = FIELDS, **options: Any) -> Outcome:
    """Read ``path`` with the file source in small batches and decode every batch."""
    source = FileSource(
        SourceConfig(type="file", path=str(path), **options),
        SourceContext(pipeline="test", home="/nonexistent"),
    )
    source.open(None)
    decoder: Decoder | None = None
    ctx = EpochContext("test", 1)
    rows_in, good = 0, []
    while (batch := source.poll(3, 0)) is not None:
        decoder = decoder or Decoder(fields, batch.raw_format)
        rows_in += batch.data.num_rows
        good.append(decoder.decode(batch.data, ctx))
    assert source.exhausted
    table = pa.concat_tables(good) if good else pa.table({})
    dead = pa.concat_tables(ctx.dead_letters).to_pylist() if ctx.dead_letters else []
    assert all(d["stage"] == "decode" for d in dead)
    assert rows_in == table.num_rows + len(dead)
    return Outcome(rows_in, table, dead)


def good_lines(count: int) -> list[str]:
    return [GOOD % (i, i, i) for i in range(count)]


def reasons(outcome: Outcome) -> list[tuple[str, str]]:
    return [(d["origin"], d["reason"]) for d in outcome.dead]


def test_malformed_json_lines(tmp_path: Path) -> None:
    lines = good_lines(4)
    lines[1:1] = ['{"device_id": "x", "ts": ', "not json at all", "{'single': 'quotes'}"]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    out = ingest(tmp_path / "m.jsonl")
    assert out.good.column("device_id").to_pylist() == ["d0", "d1", "d2", "d3"]
    assert reasons(out) == [
        ("m.jsonl:2", "malformed JSON"),
        ("m.jsonl:3", "malformed JSON"),
        ("m.jsonl:4", "malformed JSON"),
    ]
    assert out.dead[1]["raw"] == "not json at all"


def test_array_or_number_instead_of_an_object(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("\n".join([*good_lines(1), "[1,2,3]", "17", "null"]))
    out = ingest(tmp_path / "a.jsonl")
    assert out.good.num_rows == 1
    assert [r for _, r in reasons(out)] == ["not a JSON object"] * 3


def test_wrong_types(tmp_path: Path) -> None:
    lines = [
        *good_lines(1),
        '{"device_id":"x","ts":"2024-01-01","temperature":"hot"}',
        '{"device_id":"y","ts":"noon","temperature":1}',
        '{"device_id":"z","ts":"2024-01-01","temperature":"21.5"}',
    ]
    (tmp_path / "w.jsonl").write_text("\n".join(lines) + "\n")
    out = ingest(tmp_path / "w.jsonl")
    assert out.good.column("temperature").to_pylist() == [0.5, 21.5]
    assert reasons(out) == [
        ("w.jsonl:2", "field 'temperature': expected double, got \"hot\""),
        ("w.jsonl:3", "field 'ts': not a timestamp: \"noon\""),
    ]


def test_missing_required_fields(tmp_path: Path) -> None:
    lines = [*good_lines(2), '{"ts":"2024-01-01"}', '{"device_id":"x"}', "{}"]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    out = ingest(tmp_path / "r.jsonl")
    assert out.good.num_rows == 2
    assert [r for _, r in reasons(out)] == [
        "missing required field 'device_id'",
        "missing required field 'ts'",
        "missing required field 'device_id'",
    ]


def test_a_10_mb_line(tmp_path: Path) -> None:
    big = json.dumps({"device_id": "big", "ts": "2024-01-01", "note": "x" * 10_000_000})
    lines = [*good_lines(2), big, *good_lines(2)]
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    out = ingest(tmp_path / "big.jsonl", chunk_bytes=1 << 20)
    assert out.good.column("device_id").to_pylist() == ["d0", "d1", "big", "d0", "d1"]
    assert out.dead == []


def test_a_10_mb_malformed_line_is_one_dead_letter(tmp_path: Path) -> None:
    big = '{"device_id": "' + "y" * 10_000_000
    (tmp_path / "bad.jsonl").write_text("\n".join([big, *good_lines(1)]))
    out = ingest(tmp_path / "bad.jsonl", chunk_bytes=1 << 20)
    assert out.good.num_rows == 1
    assert reasons(out) == [("bad.jsonl:1", "malformed JSON")]
    assert len(out.dead[0]["raw"]) == len(big)


def test_invalid_utf8(tmp_path: Path) -> None:
    lines = [line.encode() for line in good_lines(3)]
    lines[1] = b'{"device_id":"caf\xe9","ts":"2024-01-01"}'
    (tmp_path / "u.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = ingest(tmp_path / "u.jsonl")
    assert out.good.column("device_id").to_pylist() == ["d0", "d2"]
    assert reasons(out) == [("u.jsonl:2", "invalid UTF-8")]
    assert out.dead[0]["raw"] == '{"device_id":"caf\ufffd","ts":"2024-01-01"}'


def test_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_bytes(b"")
    out = ingest(tmp_path / "e.jsonl")
    assert (out.rows_in, out.good.num_rows, out.dead) == (0, 0, [])


def test_a_truncated_last_line(tmp_path: Path) -> None:
    lines = good_lines(3)
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + '\n{"device_id":"late","ts":"2024-')
    (tmp_path / "t2.jsonl").write_text("\n".join(lines))  # complete, no final newline
    out = ingest(tmp_path / "t.jsonl")
    assert out.good.num_rows == 3
    assert reasons(out) == [("t.jsonl:4", "malformed JSON")]
    assert ingest(tmp_path / "t2.jsonl").good.num_rows == 3


def test_unknown_extra_fields_are_ignored(tmp_path: Path) -> None:
    line = '{"device_id":"x","ts":"2024-01-01","firmware":"1.2","tags":["a"],"temperature":3}'
    (tmp_path / "x.jsonl").write_text(line + "\n")
    out = ingest(tmp_path / "x.jsonl")
    assert out.good.drop_columns(["__origin"]).to_pylist() == [
        {"device_id": "x", "ts": datetime(2024, 1, 1, tzinfo=UTC), "temperature": 3.0}
    ]


def test_blank_lines_are_not_events(tmp_path: Path) -> None:
    lines = good_lines(3)
    (tmp_path / "b.jsonl").write_text(
        "\n\n" + lines[0] + "\n  \n\r\n" + lines[1] + "\n\n" + lines[2] + "\n\n"
    )
    out = ingest(tmp_path / "b.jsonl")
    assert (out.rows_in, out.dead) == (3, [])
    assert out.good.column("__origin").to_pylist() == ["b.jsonl:3", "b.jsonl:6", "b.jsonl:8"]


def test_csv_with_a_malformed_row(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text(
        "device_id,ts,temperature\nd1,2024-01-01,1.5\n"
        "d2,2024-01-01\nd3,2024-01-01,x\nd4,2024-01-01,2,extra\n"
        "d5,2024-01-02T10:00:00Z,3\n"
    )
    out = ingest(tmp_path / "c.csv")
    assert out.good.column("device_id").to_pylist() == ["d1", "d5"]
    assert reasons(out) == [
        ("c.csv:3", "malformed CSV row: expected 3 columns, got 2"),
        ("c.csv:4", "field 'temperature': expected double, got \"x\""),
        ("c.csv:5", "malformed CSV row: expected 3 columns, got 4"),
    ]
    assert out.dead[0]["raw"] == "d2,2024-01-01"
    assert json.loads(out.dead[1]["raw"])["temperature"] == "x"


def test_csv_with_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_bytes(b"device_id,ts\nd1,2024-01-01\nd\xff2,2024-01-01\n")
    out = ingest(tmp_path / "c.csv")
    assert out.good.column("device_id").to_pylist() == ["d1"]
    assert reasons(out) == [("c.csv:3", "invalid UTF-8")]


def test_parquet_with_nulls_and_uncastable_values(tmp_path: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "device_id": ["a", None, "c", "d"],
                "ts": ["2024-01-01", "2024-01-01", "later", "2024-01-02"],
                "temperature": pa.array([1, 2, 3, 4], pa.int64()),
                "unused": [True, False, True, False],
            }
        ),
        tmp_path / "p.parquet",
    )
    out = ingest(tmp_path / "p.parquet")
    assert out.good.column("device_id").to_pylist() == ["a", "d"]
    assert out.good.schema.field("temperature").type == pa.float64()
    assert reasons(out) == [
        ("p.parquet:2", "missing required field 'device_id'"),
        ("p.parquet:3", "field 'ts': not a timestamp: \"later\""),
    ]
