"""Rule conditions evaluated with numpy give DuckDB's answers, NULLs and NaN included."""

from __future__ import annotations

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.actions.conditions import (
    Columns,
    Junction,
    Not,
    UnsupportedError,
    compile_parsed,
)

FLOATS = [0.0, -0.0, 1.0, -1.0, 2.5, 75.0, 75.5, 0.9901, 1e-3, float("nan"), float("inf")]
FLOATS += [float("-inf"), 1e300, None, 0.99014, 0.99006, 2.4999999999999996, 75.00000000000001]
INTS = [0, 1, -1, 75, 2**40, -(2**62), None]
BOOLS = [True, False, None]
STRINGS = ["ok", "maintenance", "", "é", "OK", None]
NUMBERS = ["0", "1", "-1", "75", "2.5", "-2.5", "0.9901", "75.0", "1e-3", "-0.0", ".5"]
NUMBERS += ["9007199254740993", "123456789012345678", "0.1234567890123456789"]


def table_of(rows: list[tuple[object, ...]]) -> pa.Table:
    """A batch with a float64, int64, uint8, bool and string column (NULLs in each)."""
    f, i, b, s = zip(*rows, strict=True) if rows else ([], [], [], [])
    small = [None if v is None else abs(v) % 256 for v in i]
    return pa.table(
        {
            "f": pa.array(f, pa.float64()),
            "i": pa.array(i, pa.int64()),
            "u": pa.array(small, pa.uint8()),
            "b": pa.array(b, pa.bool_()),
            "s": pa.array(s, pa.string()),
            "Mixed": pa.array(f, pa.float64()),
        }
    )


def parse(con: duckdb.DuckDBPyConnection, when: str) -> dict[str, object]:
    sql = "SELECT (" + when + ") AS c"
    ((text,),) = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()
    parsed: dict[str, object] = orjson.loads(text)
    return parsed


def duck(con: duckdb.DuckDBPyConnection, table: pa.Table, when: str) -> np.ndarray | None:
    con.register("batch", table)
    try:
        out = con.execute(f"SELECT COALESCE(CAST(({when}) AS BOOLEAN), false) FROM batch")
        return np.array([row[0] for row in out.fetchall()], dtype=bool)
    except duckdb.Error:
        return None
    finally:
        con.unregister("batch")


def fast(con: duckdb.DuckDBPyConnection, table: pa.Table, when: str) -> np.ndarray | None:
    node = compile_parsed(parse(con, when))
    if node is None:
        return None
    try:
        value, known = node.truth(Columns(table), table.num_rows)
    except UnsupportedError:
        return None
    return np.asarray(value if known is None else value & known, dtype=bool)


comparisons = st.sampled_from(["=", "<>", "!=", "<", "<=", ">", ">="])
atoms = st.one_of(
    st.builds(
        lambda c, op, n: f"{c} {op} {n}",
        st.sampled_from(["f", "i", "u", "F", "Mixed"]),
        comparisons,
        st.sampled_from(NUMBERS),
    ),
    st.builds(
        lambda n, op, c: f"{n} {op} {c}",
        st.sampled_from(NUMBERS),
        comparisons,
        st.sampled_from(["f", "i"]),
    ),
    st.builds(lambda op, t: f"s {op} '{t}'", comparisons, st.sampled_from(STRINGS[:-1])),
    st.builds(lambda op, v: f"b {op} {v}", comparisons, st.sampled_from(["true", "false"])),
    st.builds(
        lambda c, n: f"{c} IS {n}NULL",
        st.sampled_from(["f", "i", "b", "s"]),
        st.sampled_from(["", "NOT "]),
    ),
    st.sampled_from(["b", "true", "false"]),
)
# shapes left to DuckDB (the whole condition then is), now and then
others = st.sampled_from(["f", "missing > 1", "s > 1", "b > 0", "f > 'x'", "f > 1e-3"])
atoms = st.one_of(atoms, atoms, atoms, atoms, atoms, others)
conditions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a}) AND ({b})", inner, inner),
        st.builds(lambda a, b: f"({a}) OR ({b})", inner, inner),
        st.builds(lambda a: f"NOT ({a})", inner),
    ),
    max_leaves=5,
)
rows = st.lists(
    st.tuples(
        st.sampled_from(FLOATS),
        st.sampled_from(INTS),
        st.sampled_from(BOOLS),
        st.sampled_from(STRINGS),
    ),
    min_size=0,
    max_size=30,
)


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(when=conditions, data=rows)
def test_fast_conditions_equal_duckdb(
    con: duckdb.DuckDBPyConnection, when: str, data: list[tuple[object, ...]]
) -> None:
    table = table_of(data)
    got = fast(con, table, when)
    if got is None:  # left to DuckDB
        return
    expected = duck(con, table, when)
    assert expected is not None, f"DuckDB refuses {when!r}, the fast path does not"
    np.testing.assert_array_equal(got, expected, err_msg=when)


@pytest.mark.parametrize(
    ("when", "compiled"),
    [
        ("m_anomaly AND temperature > 75", True),
        ("m_score > 0.99 AND pressure > 97", True),
        ("NOT b OR f IS NULL", True),
        ("status = 'maintenance'", True),
        ("temperature > 9007199254740993", False),  # beyond exact doubles
        ("score > 0.1234567890123456789", False),  # a wide decimal
        ("f > 1e-3", False),  # exponent: DuckDB's double parse
        ("abs(f) > 1", False),
        ("f BETWEEN 1 AND 2", False),
        ("f > NULL", False),
        ("t.f > 1", False),
        ("f + 1 > 2", False),
    ],
)
def test_which_shapes_compile(con: duckdb.DuckDBPyConnection, when: str, compiled: bool) -> None:
    assert (compile_parsed(parse(con, when)) is not None) is compiled


def test_common_rules_take_the_fast_path(con: duckdb.DuckDBPyConnection) -> None:
    """The shapes of the benchmark's rules are evaluated here, not handed back to DuckDB."""
    table = table_of([(80.0, 1, True, "ok"), (70.0, 2, True, "ok"), (None, 3, None, None)])
    for when, expected in [
        ("b AND f > 75", [True, False, False]),
        ("f > 75 OR s = 'ok'", [True, True, False]),
        ("NOT (i > 1)", [True, False, False]),
    ]:
        got = fast(con, table, when)
        assert got is not None, when
        assert got.tolist() == expected


def test_three_valued_logic_exhaustively(con: duckdb.DuckDBPyConnection) -> None:
    """Every TRUE/FALSE/NULL pair under AND, OR and NOT, nested as a NOT reveals NULLs."""
    pairs = [(a, b) for a in BOOLS for b in BOOLS]
    table = pa.table({"p": pa.array([a for a, _ in pairs], pa.bool_()), "q": [b for _, b in pairs]})
    for when in [
        "p AND q",
        "p OR q",
        "NOT p",
        "NOT (p AND q)",
        "NOT (p OR q)",
        "NOT (NOT p AND q)",
        "NOT (p AND q AND NOT q)",
        "NOT (p OR q OR p IS NULL)",
    ]:
        node = compile_parsed(parse(con, when))
        assert isinstance(node, Junction | Not), when
        got = fast(con, table, when)
        assert got is not None, when
        np.testing.assert_array_equal(got, duck(con, table, when), err_msg=when)


def test_names_differing_only_in_case_are_left_to_duckdb(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB binds names ignoring case; with two such columns the fast path does not guess."""
    table = pa.table({"temp": [1.0, 5.0], "TEMP": [9.0, 0.0]})
    for when in ["temp > 2", "TEMP > 2", "Temp > 2"]:
        assert fast(con, table, when) is None
    assert fast(con, pa.table({"Temp": [1.0, 5.0]}), "TEMP > 2") is not None
    accented = pa.table({"Température": [1.0, 5.0]})  # DuckDB folds ASCII letters only
    assert fast(con, accented, "TEMPÉRATURE > 2") is None
    assert duck(con, accented, "TEMPÉRATURE > 2") is None
    assert fast(con, accented, "TEMPéRATURE > 2").tolist() == [False, True]  # type: ignore[union-attr]
