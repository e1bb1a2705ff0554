"""Numpy ↔ Arrow helpers that leave pandas unimported, and a run that never imports it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sluice.core.arrays import (
    binaries,
    bools,
    contiguous,
    floats,
    from_numpy,
    objects,
    scalar,
    strings,
    to_numpy,
)
from sluice.core.batch import empty_table
from sluice.sources import synthetic


@pytest.mark.parametrize(
    "values",
    [
        np.arange(7, dtype=np.int64),
        np.array([-3, 0, 2**40], np.int64),
        np.array([1.5, -0.0, np.inf, np.nan]),
        np.array([1, 2], np.int32),
        np.array([True, False, True, True, False, False, False, True, True]),
        np.zeros(0, np.int64),
        np.zeros(0, bool),
        np.arange(10)[::3],  # not contiguous
    ],
)
def test_from_numpy_and_back_match_pyarrow(values: np.ndarray) -> None:
    array = from_numpy(values)
    expected = pa.array(values)
    assert array.type == expected.type
    assert array.null_count == expected.null_count == 0
    np.testing.assert_array_equal(array.to_numpy(zero_copy_only=False), values)  # NaN == NaN
    back = to_numpy(array)
    assert back.dtype == expected.to_numpy(zero_copy_only=False).dtype
    np.testing.assert_array_equal(back, expected.to_numpy(zero_copy_only=False))


def test_to_numpy_of_slices_and_chunks() -> None:
    bools = pa.array([True, False, True, True, False, True, False, False, True, True])
    for start in range(5):
        part = bools.slice(start, 4)
        np.testing.assert_array_equal(to_numpy(part), part.to_numpy(zero_copy_only=False))
        part = pa.array(np.arange(20)).slice(start, 7)
        np.testing.assert_array_equal(to_numpy(part), part.to_numpy())
    chunked = pa.chunked_array([pa.array([1, 2]), pa.array([3])])
    np.testing.assert_array_equal(to_numpy(chunked), chunked.to_numpy())
    with pytest.raises(ValueError, match="nulls"):
        to_numpy(pa.array([1, None]))


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        ("", pa.string()),
        ("dev-1:é", pa.string()),
        ("x", pa.large_string()),
        (b"", pa.binary()),
        (b'"payload":null}\n', pa.binary()),
        (b"\x00\xff", pa.large_binary()),
        (-5, pa.int64()),
        (1_767_225_600_000_000, pa.timestamp("us", tz="UTC")),
        (True, pa.bool_()),
        (False, pa.bool_()),
    ],
)
def test_scalar_matches_pyarrow(value: bool | int | str | bytes, type_: pa.DataType) -> None:
    assert scalar(value, type_).equals(pa.scalar(value, type_))


def test_scalar_refuses_other_widths() -> None:
    with pytest.raises(TypeError):
        scalar(1, pa.int32())


@pytest.mark.parametrize(
    "array",
    [
        pa.array([1, None, 3], pa.int32()),
        pa.array([1.5, None, float("nan"), -0.0]),
        pa.array([True, None, False]),
        pa.chunked_array([pa.array([1, 2], pa.int64()), pa.array([None], pa.int64())]),
        pa.array([5, 6, 7, 8], pa.uint8()).slice(1, 2),
        pa.array([], pa.float64()),
    ],
)
def test_floats_match_pyarrow(array: pa.Array | pa.ChunkedArray) -> None:
    expected = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    got = floats(array)
    assert got.dtype == np.float64 and got.flags.writeable
    np.testing.assert_array_equal(got, expected)  # NaN == NaN


def test_bools_count_nulls_as_false() -> None:
    chunked = pa.chunked_array([pa.array([True, None, False]), pa.array([None, True])])
    got = bools(chunked)
    assert got.dtype == bool and got.flags.writeable
    assert got.tolist() == [True, False, False, False, True]
    assert bools(pa.array([True, False, True]).slice(1)).tolist() == [False, True]


@pytest.mark.parametrize(
    "array",
    [
        pa.array(["b", None, "a", "b", "é", ""]),
        pa.chunked_array([pa.array(["x", "y"]), pa.array([None, "x"])]),
        pa.array(["a", "b", "c", "d"], pa.large_string()).slice(1, 2),
        pa.array([], pa.string()),
    ],
)
def test_objects_match_pyarrow(array: pa.Array | pa.ChunkedArray) -> None:
    got = objects(array)
    assert got.dtype == object
    assert got.tolist() == array.to_numpy(zero_copy_only=False).tolist()
    with pytest.raises(TypeError):
        objects(pa.array([1, 2]))


@pytest.mark.parametrize(
    "values",
    [
        ["", "temperature 4.2 sigma", None, "é ü", "", ""],
        ["only"],
        [None, None],
        [],
    ],
)
def test_strings_match_pyarrow(values: list[str | None]) -> None:
    array = np.array(values, dtype=object)
    got = strings(array)
    assert got.type == pa.string()
    assert got.equals(pa.array(values, pa.string()))


@pytest.mark.parametrize("values", [[b"", b"{}", "é\n".encode(), b"\x00"], [b"only"], []])
def test_binaries_match_pyarrow(values: list[bytes]) -> None:
    assert binaries(values).equals(pa.array(values, pa.binary()))
    text = [v for v in values if v != b"\x00"]
    assert binaries(text, pa.string()).equals(pa.array([v.decode() for v in text], pa.string()))


def test_contiguous_keeps_one_chunk_and_combines_several() -> None:
    one = pa.array([1.0, 2.0])
    assert contiguous(one) is one
    assert contiguous(pa.chunked_array([one])).buffers()[1].address == one.buffers()[1].address
    assert contiguous(pa.chunked_array([one, one])).equals(pa.array([1.0, 2.0, 1.0, 2.0]))


def test_empty_table_keeps_schema_and_one_chunk() -> None:
    schema = pa.schema(
        [
            pa.field("a", pa.int64()),
            pa.field("t", pa.timestamp("us", tz="UTC")),
            pa.field("s", pa.struct([("x", pa.string())])),
            pa.field("l", pa.list_(pa.int32()), nullable=False),
        ],
        metadata={b"k": b"v"},
    )
    table = empty_table(schema)
    assert table.equals(schema.empty_table())
    assert table.schema.equals(schema, check_metadata=True)
    assert [c.num_chunks for c in table.columns] == [1, 1, 1, 1]
    assert empty_table(pa.schema([])).num_columns == 0


def test_origin_column_matches_pyarrow() -> None:
    from sluice.sources.lines import origin_column

    numbers = np.array([1, 2, 30], np.int64)
    expected = pc.binary_join_element_wise("a.jsonl:", pa.array(numbers).cast(pa.string()), "")
    assert origin_column("a.jsonl", numbers).equals(expected)


RUN = """
import sys
from sluice.cli import app
for path in sys.argv[1:]:
    try:
        app([ "run", path, "--until-idle", "--quiet"], standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, exc.code
print("pandas imported:", "pandas" in sys.modules)
"""


def test_sluice_run_does_not_import_pandas(tmp_path: Path) -> None:
    """The benchmark's pipelines (large batches: DuckDB decode; small ones: Arrow's), and one
    with a keyed online model and action rules, run without pyarrow importing pandas (about
    0.2 s of start-up)."""
    data = tmp_path / "events.jsonl"
    synthetic.write_jsonl(synthetic.telemetry(6000, n_devices=10, seed=3, labels=False), data)
    pipelines = []
    for name, batch, into in [("big", "", ""), ("small", "batch: {max_rows: 1000}\n", "into")]:
        window = ", into: w_1m" if into else ""
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            textwrap.dedent(f"""\
                name: {name}
                source: {{type: file, path: "{data}", format: json}}
                schema: {{device_id: string, ts: timestamp, temperature: double,
                          pressure: double, vibration: double, status: string}}
                event_time: ts
                """)
            + batch
            + textwrap.dedent(f"""\
                transforms:
                  - filter: "status <> 'maintenance'"
                  - derive: {{temp_c: "(temperature - 32) * 5 / 9"}}
                  - window: {{key: device_id, size: 1m, aggregate: {{t: "avg(temp_c)",
                      n: "count(*)"}}{window}}}
                sinks:
                  - {{type: lake, table: {name}}}
                  - {{type: warehouse, table: {name}}}
                """)
        )
        pipelines.append(str(path))
    log = tmp_path / "actions.jsonl"
    rules = [
        f'{{name: r{i}, type: log, path: "{log}", when: "temperature > 0", {extra}}}'
        for i, extra in enumerate(
            [
                "dedupe: {key: device_id, window: 10m}",
                "group_by: [device_id, status], for: 2",
                "rate_limit: 100/m",
                "cooldown: 1m, severity: critical",
            ]
        )
    ]
    model = tmp_path / "model.yaml"  # a keyed online model and rules of every kind
    model.write_text(
        textwrap.dedent(f"""            name: model
            source: {{type: file, path: "{data}", format: json}}
            schema: {{device_id: string, ts: timestamp, temperature: double,
                      pressure: double, vibration: double, status: string}}
            event_time: ts
            batch: {{max_rows: 2000}}
            models:
              - {{name: m, type: online_anomaly, features: [temperature, pressure],
                  key: device_id}}
            sinks:
              - {{type: lake, table: scored}}
            actions:
            """)
        + "".join(f"  - {rule}\n" for rule in rules)
    )
    pipelines.append(str(model))
    src = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run(
        [sys.executable, "-c", RUN, *pipelines],
        capture_output=True,
        text=True,
        env={"SLUICE_HOME": str(tmp_path / "home"), "PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pandas imported: False" in done.stdout, done.stdout[-2000:]
    fired = {line.split('"action":"')[1].split('"')[0] for line in log.open()}
    assert fired == {"r0", "r1", "r2", "r3"}
