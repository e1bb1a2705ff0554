"""The decoder: raw rows → schema-typed rows, with a dead letter and a reason for every misfit."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from sluice.config.models import FieldSpec
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.sources.decode import Decoder

TELEMETRY = {
    "device_id": FieldSpec(type="string", required=True),
    "ts": FieldSpec(type="timestamp", required=True),
    "temperature": FieldSpec(type="double"),
    "count": FieldSpec(type="long", default=0),
    "ok": FieldSpec(type="boolean"),
}


def decode_lines(
    lines: list[str], fields: dict[str, FieldSpec] | None = None
) -> tuple[pa.Table, EpochContext]:
    table = pa.table(
        {
            "_raw": pa.array(lines, pa.string()),
            "__origin": pa.array([f"t.jsonl:{i + 1}" for i in range(len(lines))]),
        }
    )
    ctx = EpochContext("test", 1)
    out = Decoder(fields or TELEMETRY, "json").decode(table, ctx)
    assert out.num_rows + ctx.dead_letter_count == len(lines)
    return out, ctx


def dead(ctx: EpochContext) -> list[dict[str, object]]:
    if not ctx.dead_letters:
        return []
    return (
        pa.concat_tables(ctx.dead_letters).select(["reason", "raw", "origin", "stage"]).to_pylist()
    )


def test_clean_rows_are_typed_exactly_to_the_schema() -> None:
    out, ctx = decode_lines(
        ['{"device_id":"d1","ts":"2024-01-01T00:00:00Z","temperature":21.5,"count":3,"ok":true}']
    )
    assert out.schema == pa.schema(
        [
            ("device_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("temperature", pa.float64()),
            ("count", pa.int64()),
            ("ok", pa.bool_()),
            ("__origin", pa.string()),
        ]
    )
    assert out.to_pylist() == [
        {
            "device_id": "d1",
            "ts": datetime(2024, 1, 1, tzinfo=UTC),
            "temperature": 21.5,
            "count": 3,
            "ok": True,
            "__origin": "t.jsonl:1",
        }
    ]
    assert dead(ctx) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-04T05:06:07Z", datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("2024-03-04T05:06:07.250Z", datetime(2024, 3, 4, 5, 6, 7, 250000, tzinfo=UTC)),
        ("2024-03-04 05:06:07", datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("2024-03-04T07:06:07+02:00", datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("2024-03-04", datetime(2024, 3, 4, tzinfo=UTC)),
        (1709528767000, datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("1709528767000", datetime(2024, 3, 4, 5, 6, 7, tzinfo=UTC)),
    ],
)
def test_timestamps_in_common_formats(text: object, expected: datetime) -> None:
    out, ctx = decode_lines([json.dumps({"device_id": "d", "ts": text})])
    assert dead(ctx) == []
    assert out.column("ts").to_pylist() == [expected]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"device_id":"d","ts":"yesterday"}', "field 'ts': not a timestamp: \"yesterday\""),
        (
            '{"device_id":"d","ts":"2024-01-01","temperature":"abc"}',
            "field 'temperature': expected double, got \"abc\"",
        ),
        (
            '{"device_id":"d","ts":"2024-01-01","temperature":true}',
            "field 'temperature': expected double, got true",
        ),
        (
            '{"device_id":"d","ts":"2024-01-01","count":3.5}',
            "field 'count': expected long, got 3.5",
        ),
        (
            '{"device_id":"d","ts":"2024-01-01","ok":"yes"}',
            "field 'ok': expected boolean, got \"yes\"",
        ),
        ('{"ts":"2024-01-01"}', "missing required field 'device_id'"),
        ('{"device_id":null,"ts":"2024-01-01"}', "missing required field 'device_id'"),
        ('{"device_id":"d","ts":"2024-01-01"', "malformed JSON"),
        ("[1, 2]", "not a JSON object"),
        ("42", "not a JSON object"),
        ('"text"', "not a JSON object"),
    ],
)
def test_misfits_are_dead_lettered_with_a_reason(line: str, reason: str) -> None:
    good = '{"device_id":"g","ts":"2024-01-01"}'
    out, ctx = decode_lines([good, line, good])
    assert out.column("device_id").to_pylist() == ["g", "g"]
    assert dead(ctx) == [{"reason": reason, "raw": line, "origin": "t.jsonl:2", "stage": "decode"}]


def test_defaults_fill_missing_optional_fields_and_extras_are_ignored() -> None:
    out, ctx = decode_lines(['{"device_id":"d","ts":"2024-01-01","extra":{"x":1},"more":[1]}'])
    assert dead(ctx) == []
    row = out.to_pylist()[0]
    assert (row["count"], row["temperature"], row["ok"]) == (0, None, None)


def test_long_accepts_integral_numbers_and_numeric_strings() -> None:
    out, ctx = decode_lines(
        [
            '{"device_id":"d","ts":"2024-01-01","count":7}',
            '{"device_id":"d","ts":"2024-01-01","count":"8"}',
            '{"device_id":"d","ts":"2024-01-01","count":9.0}',
        ]
    )
    assert dead(ctx) == []
    assert out.column("count").to_pylist() == [7, 8, 9]


def test_date_json_and_string_types() -> None:
    fields = {
        "day": FieldSpec(type="date"),
        "payload": FieldSpec(type="json"),
        "name": FieldSpec(type="string"),
    }
    out, ctx = decode_lines(
        [
            '{"day":"2024-02-29","payload":{"a":[1,2]},"name":"x"}',
            '{"day":"2024-02-30"}',
            '{"payload":"text","name":5}',
        ],
        fields,
    )
    assert out.select(["day", "payload", "name"]).to_pylist() == [
        {"day": date(2024, 2, 29), "payload": '{"a":[1,2]}', "name": "x"},
        {"day": None, "payload": '"text"', "name": "5"},
    ]
    assert [d["reason"] for d in dead(ctx)] == ["field 'day': not a date: \"2024-02-30\""]


def test_invalid_utf8_and_error_markers_win() -> None:
    table = pa.table(
        {
            "_raw": ['{"device_id":"d","ts":"2024-01-01"}'] * 3,
            "__invalid_utf8": [False, True, False],
            "__error": [None, None, "broken upstream"],
        }
    )
    ctx = EpochContext("test", 1)
    out = Decoder(TELEMETRY, "json").decode(table, ctx)
    assert out.num_rows == 1
    assert "__origin" not in out.column_names
    assert [d["reason"] for d in dead(ctx)] == ["invalid UTF-8", "broken upstream"]


def test_empty_batch_returns_the_schema() -> None:
    ctx = EpochContext("test", 1)
    out = Decoder(TELEMETRY, "json").decode(pa.table({"_raw": pa.array([], pa.string())}), ctx)
    assert out.num_rows == 0
    assert out.schema.names == list(TELEMETRY)


def test_csv_strings_are_cast_and_bad_rows_keep_the_row_as_json() -> None:
    table = pa.table(
        {
            "device_id": ["a", "b", None],
            "ts": ["2024-01-01", "nope", "2024-01-01"],
            "temperature": ["1.5", "2", "x"],
            "__origin": ["f:2", "f:3", "f:4"],
        }
    )
    ctx = EpochContext("test", 1)
    out = Decoder(TELEMETRY, "csv").decode(table, ctx)
    assert out.select(["device_id", "temperature", "count"]).to_pylist() == [
        {"device_id": "a", "temperature": 1.5, "count": 0}
    ]
    letters = dead(ctx)
    assert [d["reason"] for d in letters] == [
        "field 'ts': not a timestamp: \"nope\"",
        "missing required field 'device_id'",
    ]
    assert json.loads(str(letters[0]["raw"])) == {
        "device_id": "b",
        "ts": "nope",
        "temperature": "2",
    }


def test_csv_error_rows_keep_their_raw_line() -> None:
    table = pa.table(
        {
            "device_id": ["a", None],
            "ts": ["2024-01-01", None],
            "_raw": [None, "a,b,c,d"],
            "__error": [None, "malformed CSV row"],
        }
    )
    ctx = EpochContext("test", 1)
    out = Decoder(TELEMETRY, "csv").decode(table, ctx)
    assert out.num_rows == 1
    assert dead(ctx)[0]["raw"] == "a,b,c,d"
    assert dead(ctx)[0]["reason"] == "malformed CSV row"


def test_arrow_input_is_cast_and_nulls_in_required_fields_rejected() -> None:
    table = pa.table(
        {
            "device_id": ["a", None],
            "ts": [1704067200000, 1704067200000],
            "temperature": pa.array([1, 2], pa.int32()),
            "count": [1.0, 2.5],
        }
    )
    ctx = EpochContext("test", 1)
    out = Decoder(TELEMETRY, "arrow").decode(table, ctx)
    assert out.to_pylist() == [
        {
            "device_id": "a",
            "ts": datetime(2024, 1, 1, tzinfo=UTC),
            "temperature": 1.0,
            "count": 1,
            "ok": None,
        }
    ]
    assert [d["reason"] for d in dead(ctx)] == ["missing required field 'device_id'"]


def test_a_bad_default_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="default 'soon' is not a valid timestamp"):
        Decoder({"ts": FieldSpec(type="timestamp", default="soon")}, "json")


def test_decoder_is_reusable_across_batch_shapes() -> None:
    decoder = Decoder(TELEMETRY, "json")
    ctx = EpochContext("test", 1)
    first = decoder.decode(pa.table({"_raw": ['{"device_id":"a","ts":"2024-01-01"}']}), ctx)
    second = decoder.decode(
        pa.table({"_raw": ['{"device_id":"b","ts":"2024-01-01"}'], "__origin": ["x:1"]}), ctx
    )
    assert first.column("device_id").to_pylist() == ["a"]
    assert second.column("__origin").to_pylist() == ["x:1"]


def test_defaults_of_every_type() -> None:
    fields = {
        "name": FieldSpec(type="string", default="anon"),
        "ts": FieldSpec(type="timestamp", default=datetime(2024, 5, 6, tzinfo=UTC)),
        "day": FieldSpec(type="date", default=date(2024, 5, 6)),
        "flag": FieldSpec(type="boolean", default=False),
        "ratio": FieldSpec(type="double", default=0.5),
        "meta": FieldSpec(type="json", default={"k": [1]}),
    }
    out, ctx = decode_lines(["{}"], fields)
    assert dead(ctx) == []
    assert out.drop_columns(["__origin"]).to_pylist() == [
        {
            "name": "anon",
            "ts": datetime(2024, 5, 6, tzinfo=UTC),
            "day": date(2024, 5, 6),
            "flag": False,
            "ratio": 0.5,
            "meta": '{"k": [1]}',
        }
    ]


def kafka_batch() -> pa.Table:
    """A JSON batch shaped like the Kafka source's, with ``include`` metadata columns."""
    return pa.table(
        {
            "_raw": ['{"device_id":"a","ts":"2024-01-01"}', "{oops", '{"device_id":"c","ts":1}'],
            "_key": ["k1", "k2", None],
            "_partition": pa.array([0, 2, 1], pa.int32()),
            "_offset": pa.array([10, 11, 12], pa.int64()),
            "_headers": pa.array([[("h", b"v")], [], None], pa.map_(pa.string(), pa.binary())),
            "_kafka_ts": pa.array([1_000, 2_000, None], pa.timestamp("ms", tz="UTC")),
            "__invalid_utf8": [False, False, False],
            "__origin": ["t/0@10", "t/2@11", "t/1@12"],
        }
    )


def test_source_metadata_columns_pass_through_when_not_declared() -> None:
    batch = kafka_batch()
    ctx = EpochContext("test", 1)
    out = Decoder(TELEMETRY, "json").decode(batch, ctx)
    metadata = ["_key", "_partition", "_offset", "_headers", "_kafka_ts"]
    assert out.column_names == [*TELEMETRY, *metadata, "__origin"]
    for name in metadata:  # their own types, untouched
        assert out.schema.field(name).type == batch.schema.field(name).type
    assert out.select([*metadata, "__origin"]).to_pylist() == [
        {
            "_key": "k1",
            "_partition": 0,
            "_offset": 10,
            "_headers": [("h", b"v")],
            "_kafka_ts": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
            "__origin": "t/0@10",
        },
        {
            "_key": None,
            "_partition": 1,
            "_offset": 12,
            "_headers": None,
            "_kafka_ts": None,
            "__origin": "t/1@12",
        },
    ]
    assert dead(ctx) == [
        {"reason": "malformed JSON", "raw": "{oops", "origin": "t/2@11", "stage": "decode"}
    ]


def test_declared_metadata_columns_come_from_the_column_and_are_cast() -> None:
    fields = {
        "device_id": FieldSpec(type="string"),
        "_partition": FieldSpec(type="long", required=True),
        "_key": FieldSpec(type="string"),
    }
    batch = kafka_batch().slice(0, 1)
    batch = batch.set_column(
        0, "_raw", pa.array(['{"device_id":"a","_partition":"not this","_key":"nor this"}'])
    )
    ctx = EpochContext("test", 1)
    out = Decoder(fields, "json").decode(batch, ctx)
    assert dead(ctx) == []
    assert out.schema.field("_partition").type == pa.int64()
    assert out.select(["device_id", "_partition", "_key", "_offset"]).to_pylist() == [
        {"device_id": "a", "_partition": 0, "_key": "k1", "_offset": 10}
    ]


def test_raw_and_bookkeeping_columns_never_pass_through() -> None:
    out, _ = decode_lines(['{"device_id":"a","ts":"2024-01-01"}'])
    assert "_raw" not in out.column_names
    batch = pa.table(
        {
            "device_id": ["a"],
            "ts": ["2024-01-01"],
            "extra": ["an undeclared CSV column"],
            "__error": pa.array([None], pa.string()),
        }
    )
    csv = Decoder(TELEMETRY, "csv").decode(batch, EpochContext("test", 1))
    assert csv.column_names == list(TELEMETRY)


def test_offsets_as_origin_are_named_by_the_context_prefix() -> None:
    table = pa.table(
        {
            "_raw": ['{"device_id":"a","ts":"2024-01-01"}', "not json", '{"device_id":"c"}'],
            "__origin": pa.array([40, 41, 42], pa.int64()),
        }
    )
    ctx = EpochContext("p#t/3", 1, origin_prefix="t/3@")
    out = Decoder(TELEMETRY, "json").decode(table, ctx)
    assert out.column("__origin").to_pylist() == [40]
    assert [(d["origin"], d["reason"]) for d in dead(ctx)] == [
        ("t/3@41", "malformed JSON"),
        ("t/3@42", "missing required field 'ts'"),
    ]
