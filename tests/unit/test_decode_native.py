"""The compiled JSON lines pass of the decode gives exactly what the DuckDB decode gives.

The same seeded awkward lines as the Arrow fast path's test (``test_decode_fast``), in larger
batches: each batch is decoded with the compiled pass (its unsure lines by DuckDB, merged back
in place) and by DuckDB alone; rows, types, order and dead letters must be the same.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pyarrow as pa
import pytest

from sluice.config.models import FieldSpec
from sluice.core.context import EpochContext
from sluice.sources import json_lines
from sluice.sources import lines as lines_module
from sluice.sources.decode import Decoder
from sluice.sources.json_lines import LineDecoder
from tests.unit.test_decode_fast import FIELDS, bits, decoded, line


@pytest.fixture(autouse=True)
def _extension_built() -> None:
    if not json_lines.available():
        if os.environ.get("CI"):
            pytest.fail("the JSON lines extension is not built (pip install -e . compiles it)")
        pytest.skip("the JSON lines extension is not built (no C compiler at install)")


TYPES = {name: spec.type for name, spec in FIELDS.items()}


def unsure(lines: list[str]) -> list[bool]:
    """Which of ``lines`` the compiled pass leaves to DuckDB."""
    _, mask = LineDecoder(TYPES).decode(pa.array(lines, pa.string()))
    return [bool(v) for v in mask]


@pytest.mark.parametrize("seed", range(4))
def test_native_decode_matches_duckdb_on_generated_lines(seed: int) -> None:
    rng = random.Random(seed)
    sure = mixed = 0
    for _ in range(60):
        mix = rng.choice([0.0, 0.0, 0.05, 0.15, 0.4])
        lines = [line(rng, mix) for _ in range(rng.choice([1, 2, 5, 20, 60]))]
        native_out, native_dead = decoded(lines, fast=False, native=True)
        duck_out, duck_dead = decoded(lines, fast=False)
        assert native_out.schema == duck_out.schema, lines
        assert bits(native_out) == bits(duck_out), lines
        assert native_dead == duck_dead, lines
        flags = unsure(lines)
        sure += flags.count(False)
        mixed += 0 < flags.count(True) < len(flags)
    # the compiled pass really decoded lines, and batches mixing both paths were merged
    assert sure >= 150 and mixed >= 20


@pytest.mark.parametrize(
    "member",
    [
        '"d": 12345678901234567890123',
        '"d": 4.9e-325',
        '"d": 9007199254740993',
        '"d": -9007199254740993',
        '"d": 18446744073709551615',
        '"d": 1E-7',
        '"d": 0',
        '"d": -0',
        '"d": 2.2250738585072014e-308',
        '"d": 5e-324',
        '"n": -9223372036854775808',
        '"n": 9223372036854775807',
        '"n": -0',
        '"b": false',
        '"s": "a\\u0000b\\ud83d\\ude00"',
        '"s": "tab\\tquote\\"é中"',
        '"s": null',
        '"odd key.\\u00e9": "escaped key"',
        '"day": "2024-02-29"',
        '"day": "0001-01-01"',
        '"ts": "2024-01-01T00:00:00+05"',
        '"ts": "2024-01-01T00:00:00-0830"',
        '"ts": "2024-01-01T00:00:00"',
        '"ts": "2024-01-01 00:00:00.123"',
        '"ts": "1969-12-31T23:59:59.999999Z"',
        '"ts": "0001-01-01T00:00:00Z"',
        '"ts": "9999-12-31T23:59:59.999999+00:00"',
        '"ts": "2024-01-01 00:00:00.25+01:00"',
        '"ts": "2024-06-30T12:00:00-00"',
        '"ts": "2024-06-30T12:00:00+23:59"',
        '"extra": {"s": 1, "d": [true]}',
        '"extra": 1 ',
    ],
)
def test_edge_values_the_native_pass_takes_decode_as_duckdb_does(member: str) -> None:
    first = "" if member.startswith('"ts"') else '"ts": "2024-01-01T00:00:00.5Z", '
    lines = ["{" + first + member + "}"]
    assert unsure(lines) == [False]
    native_out, native_dead = decoded(lines, fast=False, native=True)
    duck_out, duck_dead = decoded(lines, fast=False)
    assert not native_dead and not duck_dead
    assert native_out.schema == duck_out.schema
    assert bits(native_out) == bits(duck_out)


@pytest.mark.parametrize(
    "text",
    [
        '{"ts": "2024-01-01T00:00:00Z", "d": -0.0}',
        '{"ts": "2024-01-01T00:00:00Z", "d": "3.5"}',
        '{"ts": "2024-01-01T00:00:00Z", "d": true}',
        '{"ts": "2024-01-01T00:00:00Z", "d": 1e400}',
        '{"ts": "2024-01-01T00:00:00Z", "d": NaN}',
        '{"ts": "2024-01-01T00:00:00Z", "n": 3.0}',
        '{"ts": "2024-01-01T00:00:00Z", "n": 9223372036854775808}',
        '{"ts": "2024-01-01T00:00:00Z", "s": 12}',
        '{"ts": "2024-01-01T00:00:00Z", "b": "true"}',
        '{"ts": "2024-01-01T00:00:00Z", "day": "2023-02-29"}',
        '{"ts": 1704067200000}',
        '{"ts": "2024-01-01T00:00:00.1234567Z"}',
        '{"ts": "2024-01-01T23:59:60Z"}',
        '{"ts": "2024-01-01T24:00:00Z"}',
        '{"ts": "2024-01-01t00:00:00z"}',
        '{"ts": "2024-01-01T00:00:00 +05:30"}',
        '{"ts": "2024-01-01T00:00:00+24:00"}',
        '{"ts": "0000-01-01T00:00:00Z"}',
        '{"ts": "2024-01-01T00:00:00Z", "s": "a", "s": "b"}',
        '{"ts": "2024-01-01T00:00:00Z",}',
        "[1]",
        "",
        "{",
    ],
)
def test_lines_the_native_pass_leaves_to_duckdb(text: str) -> None:
    assert unsure([text]) == [True]
    native_out, native_dead = decoded([text], fast=False, native=True)
    duck_out, duck_dead = decoded([text], fast=False)
    assert bits(native_out) == bits(duck_out)
    assert native_dead == duck_dead


@pytest.mark.parametrize(
    "text", [' {"ts": "2024-01-01T00:00:00Z"}', '{"ts": "2024-01-01T00:00:00Z"}\t ']
)
def test_whitespace_around_the_object_decodes_as_duckdb_does(text: str) -> None:
    assert unsure([text]) == [False]
    native_out, native_dead = decoded([text], fast=False, native=True)
    duck_out, duck_dead = decoded([text], fast=False)
    assert bits(native_out) == bits(duck_out) and native_out.num_rows == 1
    assert native_dead == duck_dead == []


@pytest.mark.parametrize("text", ['{"ts": null}', '{"s": "no ts"}', '{"ts": "2024-01-01"}'])
def test_required_fields_missing_are_rejected_with_duckdb_reasons(text: str) -> None:
    native_out, native_dead = decoded([text], fast=False, native=True)
    duck_out, duck_dead = decoded([text], fast=False)
    assert bits(native_out) == bits(duck_out)
    assert native_dead == duck_dead


def test_clean_batches_never_reach_duckdb(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [
        '{"s":"dev-1","ts":"2026-01-01T00:00:00.464532Z","d":63.263,"n":3,"b":true,"x":null}',
        '{"s":"dev-2","ts":"2026-01-01T00:00:01Z","d":-1.5e-3,"day":"2024-02-29"}',
    ] * 3000
    decoder = Decoder(FIELDS, "json")

    def refuse(*args: object) -> pa.Table:
        raise AssertionError("DuckDB decoded a clean batch")

    monkeypatch.setattr(decoder, "_duck_decode", refuse)
    ctx = EpochContext("test", 1)
    out = decoder.decode(pa.table({"_raw": lines}), ctx)
    decoder.close()
    assert out.num_rows == 6000 and not ctx.dead_letters
    assert out.column("n").to_pylist()[:2] == [3, 7]  # the default fills the missing value


def test_chunked_large_string_input_and_bookkeeping_columns() -> None:
    good = '{"ts": "2024-01-01T00:00:00Z", "s": "x"}'
    raw = pa.chunked_array(
        [pa.array([good, "{bad"], pa.large_string()), pa.array([good, good], pa.large_string())]
    )
    batch = pa.table(
        {
            "_raw": raw,
            "__origin": ["f:1", "f:2", "f:3", "f:4"],
            "__invalid_utf8": [False, False, True, False],
            "_key": ["a", "b", "c", "d"],
        }
    )
    results = []
    for native in (True, False):
        decoder = Decoder(FIELDS, "json")
        if not native:
            decoder._lines = None
        ctx = EpochContext("test", 1)
        out = decoder.decode(batch, ctx)
        decoder.close()
        letters = pa.concat_tables(ctx.dead_letters).select(["reason", "origin"]).to_pylist()
        results.append((out.to_pylist(), out.schema, letters))
    assert results[0] == results[1]
    assert [r["__origin"] for r in results[0][0]] == ["f:1", "f:4"]
    assert [d["reason"] for d in results[0][2]] == ["malformed JSON", "invalid UTF-8"]


def test_sliced_arrays_with_nulls_decode_like_their_copies() -> None:
    rng = random.Random(7)
    lines: list[str | None] = [line(rng, 0.1) for _ in range(200)]
    lines[5] = lines[77] = None
    whole = pa.array(lines, pa.string())
    decoder = LineDecoder(TYPES)
    for start, length in ((0, 200), (3, 50), (77, 1), (150, 50), (199, 1), (10, 0)):
        part = whole.slice(start, length)
        copy = pa.array(lines[start : start + length], pa.string())
        (got, got_unsure), (want, want_unsure) = decoder.decode(part), decoder.decode(copy)
        assert got_unsure.tolist() == want_unsure.tolist()
        assert {k: v.to_pylist() for k, v in got.items()} == {
            k: v.to_pylist() for k, v in want.items()
        }
        nulls = [i for i, text in enumerate(lines[start : start + length]) if text is None]
        assert all(got_unsure[i] for i in nulls)


def test_binary_lines_are_left_to_duckdb() -> None:
    lines = [b'{"ts": "2024-01-01T00:00:00Z", "s": "x"}']
    decoder = Decoder(FIELDS, "json")
    batch = pa.table({"_raw": pa.array(lines, pa.binary())})
    assert decoder._native_decode(batch, EpochContext("t", 1), pa.schema([])) is None
    decoder.close()
    native_out, native_dead = decoded([lines[0].decode()], fast=False, native=True)
    assert native_out.column("s").to_pylist() == ["x"] and not native_dead


def test_a_declared_metadata_column_leaves_the_batch_to_duckdb() -> None:
    decoder = Decoder({"_key": FieldSpec(type="string"), "s": FieldSpec(type="string")}, "json")
    batch = pa.table({"_raw": ['{"s": "x"}'], "_key": ["k"]})
    assert decoder._native_decode(batch, EpochContext("t", 1), pa.schema([])) is None
    out = decoder.decode(batch, EpochContext("t", 1))
    decoder.close()
    assert out.to_pylist() == [{"_key": "k", "s": "x"}]


def test_the_extension_checks_its_buffers() -> None:
    from sluice.sources import _jsonlines  # type: ignore[attr-defined]

    raw = pa.array(['{"a": 1}'])
    _, offsets, data = raw.buffers()
    small = np.empty(0, np.float64)
    with pytest.raises(ValueError, match="too small"):
        _jsonlines.decode(
            offsets, data, None, 0, 1, False, (b"a",), bytes([1]), [small],
            [np.empty(1, np.uint8)], [None], np.empty(1, np.uint8),
        )  # fmt: skip
    with pytest.raises(ValueError, match="offsets buffer too small"):
        _jsonlines.decode(
            offsets, data, None, 1, 1, False, (b"a",), bytes([1]), [np.empty(1, np.float64)],
            [np.empty(1, np.uint8)], [None], np.empty(1, np.uint8),
        )  # fmt: skip


@pytest.mark.parametrize(
    "size", [0, 1, 1000, lines_module.SCAN_BLOCK, 3 * lines_module.SCAN_BLOCK + 7]
)
def test_newline_positions_match_numpy(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(size)
    buf = rng.choice(np.frombuffer(b"ab\n{}\r", np.uint8), size).astype(np.uint8)
    native = lines_module.newline_positions(buf)
    monkeypatch.setattr(lines_module, "native", None)
    expected = lines_module.newline_positions(buf)
    assert native.dtype == np.int64 and native.tolist() == expected.tolist()
    assert (buf[native] == 10).all() and int(native.size) == int((buf == 10).sum())


def test_origin_column_matches_arrow(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    numbers = np.concatenate(
        [
            rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64),
            np.array([0, 1, -1, 9, 10, -10, 2**63 - 1, -(2**63)], np.int64),
            rng.integers(0, 10**6, 500, dtype=np.int64),
        ]
    )
    for name in ("telemetry.jsonl", "dir/é 中.jsonl", ""):
        for values in (numbers, numbers[::2], numbers[:0]):
            native = lines_module.origin_column(name, values)
            with monkeypatch.context() as patch:
                patch.setattr(lines_module, "native", None)
                expected = lines_module.origin_column(name, values)
            native.validate(full=True)
            assert native.type == expected.type and native.to_pylist() == expected.to_pylist()
