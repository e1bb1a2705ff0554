"""The Arrow fast path of the JSON decode gives exactly what the DuckDB decode gives.

Seeded random lines mix well-formed values with the awkward ones (number spellings, large
and negative-zero numbers, timestamps with and without offsets, escapes, nulls, duplicate
and extra keys, nested values, non-objects, broken JSON). Each small batch is decoded twice,
once with the fast path allowed and once by DuckDB alone: the rows (values and types), the
dead letters (reasons, payloads, origins) must be the same.
"""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from sluice.config.models import FieldSpec
from sluice.core.context import EpochContext
from sluice.sources import decode
from sluice.sources.decode import Decoder

FIELDS = {
    "s": FieldSpec(type="string"),
    "d": FieldSpec(type="double"),
    "n": FieldSpec(type="long", default=7),
    "b": FieldSpec(type="boolean"),
    "ts": FieldSpec(type="timestamp", required=True),
    "day": FieldSpec(type="date"),
    "odd key.é": FieldSpec(type="string"),
}

NUMBERS = [
    "0", "-0", "-0.0", "1", "-17", "3.0", "1E-7", "1e-7", "1.0e308", "1e400", "-1e400", "4.9e-325",
    "9007199254740993", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "12345678901234567890123", "0.1", "2.5e3", "1e3", "123456.789e-3",
]  # fmt: skip
BROKEN = ["NaN", "Infinity", "-Infinity", "01", ".5", "1.", "0x10", "+1", "1e", "tru"]
TEXTS = [
    '"x"', '""', '"3.5"', '"true"', '"TRUE"', '"a\\"b"', '"\\u00e9\\u4e2d"', '"\\ud83d\\ude00"',
    '"\\ud800"', '"a\\u0000b"', '"tab\\tnl\\n"', '"1E-7"', '"null"', '"  42 "',
]  # fmt: skip
TIMES = [
    "2024-01-01T00:00:00Z", "2024-01-01 00:00:00", "2024-01-01T00:00:00+05:30",
    "2024-01-01T00:00:00-0800", "2024-01-01T00:00:00+05", "2024-01-01T00:00:00.5Z",
    "2024-01-01T00:00:00.123456Z", "2024-01-01T00:00:00.1234567Z", "2024-01-01T00:00Z",
    "2024-01-01T00Z", "2024-01-01", "2024-02-30T00:00:00Z", "2024-01-01T23:59:60Z",
    "2024-01-01T24:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
    "0000-01-01T00:00:00Z", "2024-1-1T00:00:00Z", "2024-01-01t00:00:00z",
    "2024-01-01T00:00:00 +05:30", "2024-01-01T00:00:00+05:30:15", "2024-01-01T00:00:00-00:00",
    "1704067200000",
]  # fmt: skip
DAYS = ["2024-01-01", "2024-02-29", "2023-02-29", "0000-01-01", "2024-1-1", "2024-01-01T00:00:00Z"]
OTHER = ["true", "false", "null", "[]", "[1, 2]", '{"a": 1}', '{"a": {"b": [null]}}']


def value(rng: random.Random, kind: str, mix: float) -> str:
    """A JSON value of the field's own kind, or (with chance ``mix``) of any other."""
    if rng.random() < mix:
        kind = rng.choice(["number", "text", "time", "day", "other"])
    if rng.random() < mix / 3:
        return rng.choice(BROKEN)
    if kind in ("number", "int") and rng.random() < 0.3:
        return rng.choice(NUMBERS)
    if kind == "number":
        return repr(rng.uniform(-1e6, 1e6))
    if kind == "int":
        return str(rng.randint(-(2**63), 2**63 - 1))
    if kind == "time":
        if rng.random() < 0.5:
            return json.dumps(rng.choice(TIMES[:8]))
        return json.dumps(rng.choice(TIMES)) if rng.random() < 0.9 else rng.choice(NUMBERS)
    if kind == "day":
        return json.dumps(rng.choice(DAYS[:2] if rng.random() < 0.5 else DAYS))
    if kind == "bool":
        return rng.choice(["true", "false"])
    if kind == "other":
        return rng.choice(OTHER)
    return rng.choice(TEXTS) if rng.random() < 0.5 else json.dumps(rng.choice(TEXTS + TIMES))


KINDS = {"s": "text", "d": "number", "n": "int", "b": "bool", "ts": "time", "day": "day"}


def line(rng: random.Random, mix: float) -> str:
    """One line: an object of some of the fields or, with chances growing with ``mix``, not."""
    roll = rng.random()
    if roll < mix / 5:
        return rng.choice(["", " ", "[1]", "3", '"x"', "null", "{", '{"s": }', "{} {}", "{}{}"])
    members = []
    for name, kind in KINDS.items():
        if rng.random() < 0.8 or (name == "ts" and rng.random() > mix):
            members.append(f"{json.dumps(name)}: {value(rng, kind, mix)}")
    if rng.random() < 0.2:
        members.append(f'"odd key.\\u00e9": {value(rng, "text", mix)}')
    if rng.random() < 0.2:
        extra = rng.choice(OTHER) if rng.random() > mix else value(rng, "other", 1)
        members.append(f'"extra": {extra}')
    if rng.random() < mix / 3 and members:
        members.append(rng.choice(members))  # a duplicate key
    if rng.random() < mix / 5:
        members.append('"d\\u0020": 1')  # a key that only looks like another one
    rng.shuffle(members)
    text = "{" + rng.choice([", ", ","]).join(members) + "}"
    if roll > 1 - mix / 5:
        text = rng.choice([" " + text, text + "\r", text.replace(",", ",\r", 1), text + ",}"])
    return text


def decoded(
    lines: list[str], fast: bool, native: bool = False
) -> tuple[pa.Table, list[dict[str, object]]]:
    """The decoded rows and the dead letters, with the Arrow (or native) fast path or not."""
    batch = pa.table(
        {
            "_raw": pa.array(lines, pa.string()),
            "__origin": pa.array([f"t.jsonl:{i + 1}" for i in range(len(lines))]),
            "_key": pa.array([f"k{i}" for i in range(len(lines))]),
        }
    )
    ctx = EpochContext("test", 3)
    decoder = Decoder(FIELDS, "json")
    if not fast:
        decoder._fast_options = None
    if not native:
        decoder._lines = None
    try:
        out = decoder.decode(batch, ctx)
    finally:
        decoder.close()
    letters = (
        pa.concat_tables(ctx.dead_letters).drop_columns(["rejected_at"]).to_pylist()
        if ctx.dead_letters
        else []
    )
    return out, letters


def bits(table: pa.Table) -> dict[str, list[object]]:
    """Each column's values as stored (the sign of zero counts; dates out of Python's range)."""
    stored = {"d": pa.int64(), "ts": pa.int64(), "day": pa.int32()}
    return {
        name: (
            table.column(name).combine_chunks().view(stored[name])
            if name in stored
            else table.column(name)
        ).to_pylist()
        for name in table.column_names
    }


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_matches_the_duckdb_decode_on_generated_lines(seed: int) -> None:
    rng = random.Random(seed)
    taken = 0
    calls = Decoder._fast_decode
    for _ in range(200):
        mix = rng.choice([0.0, 0.0, 0.05, 0.15])
        lines = [line(rng, mix) for _ in range(rng.choice([1, 1, 1, 2, 3, 8]))]
        fast_out, fast_dead = decoded(lines, fast=True)
        slow_out, slow_dead = decoded(lines, fast=False)
        assert fast_out.schema == slow_out.schema, lines
        assert bits(fast_out) == bits(slow_out), lines
        assert fast_dead == slow_dead, lines
        probe = Decoder(FIELDS, "json")
        batch = pa.table({"_raw": pa.array(lines, pa.string())})
        taken += calls(probe, batch) is not None
        probe.close()
    assert taken >= 15  # the fast path was really compared, not only its fallback


def test_fast_path_keeps_clean_batches_of_the_benchmark_shape_and_falls_back_on_a_reject() -> None:
    clean = [
        '{"s":"dev-1","ts":"2026-01-01T00:00:00.464532Z","d":63.263,"n":3,"b":true,"x":null}',
        '{"s":"dev-2","ts":"2026-01-01T00:00:01Z","d":-1.5e-3,"day":"2024-02-29"}',
    ]
    decoder = Decoder(FIELDS, "json")
    assert decoder._fast_decode(pa.table({"_raw": clean})) is not None
    for bad in ('{"ts":"2026-01-01T00:00:00Z","d":true}', '{"s":"no ts"}', "", "[1]"):
        assert decoder._fast_decode(pa.table({"_raw": [*clean, bad]})) is None
    decoder.close()
    out, dead = decoded([*clean, '{"ts":"2026-01-01T00:00:00Z","d":true}'], fast=True)
    assert out.num_rows == 2
    assert [d["reason"] for d in dead] == ["field 'd': expected double, got true"]


def test_large_batches_skip_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "FAST_MAX_ROWS", 1)
    seen: list[pa.Table] = []
    original = Decoder._fast_decode
    monkeypatch.setattr(
        Decoder, "_fast_decode", lambda self, b: seen.append(b) or original(self, b)
    )
    lines = ['{"ts":"2026-01-01T00:00:00Z"}'] * 2
    out, dead = decoded(lines, fast=True)
    assert out.num_rows == 2 and not dead and not seen


@pytest.mark.parametrize(
    "member",
    [
        '"d": 12345678901234567890123',
        '"d": 4.9e-325',
        '"d": 9007199254740993',
        '"d": 1E-7',
        '"n": -9223372036854775808',
        '"n": -0',
        '"s": "a\\u0000b\\ud83d\\ude00"',
        '"s": "1E-7"',
        '"odd key.\\u00e9": "escaped key"',
        '"day": "0000-01-01"',
        '"ts": "2024-01-01T00:00:00+05"',
        '"ts": "2024-01-01T00:00:00-0830"',
        '"ts": "9999-12-31T23:59:59.999999+00:00"',
        '"ts": "2024-01-01 00:00:00.25+01:00"',
        '"ts": "2024-06-30T12:00:00-00"',
        '"extra": {"s": 1, "d": [true]}',
    ],
)
def test_edge_values_the_fast_path_takes_decode_as_duckdb_does(member: str) -> None:
    first = "" if member.startswith('"ts"') else '"ts": "2024-01-01T00:00:00.5Z", '
    lines = ["{" + first + member + "}"]
    probe = Decoder(FIELDS, "json")
    assert probe._fast_decode(pa.table({"_raw": lines})) is not None
    probe.close()
    fast_out, fast_dead = decoded(lines, fast=True)
    slow_out, slow_dead = decoded(lines, fast=False)
    assert not fast_dead and not slow_dead
    assert fast_out.schema == slow_out.schema
    assert bits(fast_out) == bits(slow_out)


def test_negative_zero_is_left_to_duckdb_which_reads_minus_0_as_zero() -> None:
    lines = ['{"ts": "2024-01-01T00:00:00Z", "d": -0}', '{"ts": "2024-01-01T00:00:00Z", "d": -0.0}']
    probe = Decoder(FIELDS, "json")
    assert probe._fast_decode(pa.table({"_raw": lines})) is None
    probe.close()
    out, _ = decoded(lines, fast=True)
    assert [str(v) for v in out.column("d").to_pylist()] == ["0.0", "-0.0"]


def test_large_string_lines_and_escaped_field_names() -> None:
    lines = ['{"ts": "2024-01-01T00:00:00Z", "s": "x"}', '{"ts": "2024-01-01T00:00:01Z"}']
    probe = Decoder(FIELDS, "json")
    assert probe._fast_decode(pa.table({"_raw": pa.array(lines, pa.large_string())})) is not None
    probe.close()
    quoted = Decoder({'a"b': FieldSpec(type="string")}, "json")
    assert quoted._fast_decode(pa.table({"_raw": ['{"a\\"b": "x"}']})) is None
    quoted.close()
