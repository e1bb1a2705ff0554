"""Rule conditions of a simple shape, evaluated with numpy as DuckDB evaluates them.

Most rules compare columns with constants (``m_anomaly AND temperature > 75``). Such a
condition costs a DuckDB query per epoch (about 1.5 ms of CPU per rule on 200k rows, threads
included); here it is a few numpy operations over columns converted once per epoch. Handled:
a numeric column compared with a number, a string or boolean column compared for equality
with a constant of its kind, boolean columns and constants, ``IS [NOT] NULL``, and ``AND``,
``OR``, ``NOT`` with SQL's three-valued logic and DuckDB's ordering of NaN (above every number,
equal to itself). Any other shape is not compiled, and a column of another type at run time
raises :class:`UnsupportedError`: the engine then asks DuckDB, so results never depend on which
path ran (``tests/unit/test_actions_conditions.py`` compares both on random data).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.core.arrays import bools, contiguous, scalar, to_numpy

# (value, known): SQL's three-valued truth per row; ``value`` only counts where ``known``
# (None: known on every row)
Truth = tuple[np.ndarray, np.ndarray | None]
_EXACT_INT = 2**53  # integers up to this convert to float64 exactly, as DuckDB's cast does
_DECIMAL = re.compile(r"-?\d*\.?\d*")  # a decimal literal without exponent
_INTEGERS: dict[pa.DataType, Any] = {  # integer types whose values fit int64
    pa.int8(): np.int8,
    pa.int16(): np.int16,
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.uint8(): np.uint8,
    pa.uint16(): np.uint16,
    pa.uint32(): np.uint32,
}


_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)  # DuckDB folds ASCII only


class UnsupportedError(Exception):
    """The condition meets a column this module does not evaluate; DuckDB must."""


class Columns:
    """An epoch's columns, looked up as DuckDB binds names, each converted to numpy once."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._arrays: dict[str, pa.Array] = {}
        self._numbers: dict[str, np.ndarray] = {}
        self._nan: dict[str, np.ndarray] = {}
        self._booleans: dict[str, np.ndarray] = {}
        self._valid: dict[str, np.ndarray | None] = {}
        lowered: dict[str, list[str]] = {}
        for name in table.column_names:
            lowered.setdefault(name.translate(_FOLD), []).append(name)
        self._lowered = lowered

    def array(self, name: str) -> pa.Array:
        """The column ``name`` binds to: the only one equal to it ignoring case."""
        found = self._arrays.get(name)
        if found is None:
            matches = self._lowered.get(name.translate(_FOLD), [])
            if len(matches) != 1:  # missing, or names differing in case only: DuckDB decides
                raise UnsupportedError(name)
            found = self._arrays[name] = contiguous(self.table.column(matches[0]))
        return found

    def valid(self, name: str) -> np.ndarray | None:
        """Rows where ``name`` is not NULL (None: every row)."""
        if name not in self._valid:
            array = self.array(name)
            self._valid[name] = to_numpy(array.is_valid()) if array.null_count else None
        return self._valid[name]

    def numbers(self, name: str) -> np.ndarray:
        """The values of a float64 or integer column (any value under a NULL)."""
        found = self._numbers.get(name)
        if found is None:
            array = self.array(name)
            if array.type == pa.float64():
                found = _buffer_values(array, np.float64)
            elif array.type in _INTEGERS:
                found = _buffer_values(array, _INTEGERS[array.type]).astype(np.int64)
            else:
                raise UnsupportedError(name)
            self._numbers[name] = found
        return found

    def nan(self, name: str) -> np.ndarray:
        """Rows where the float64 column ``name`` holds NaN."""
        found = self._nan.get(name)
        if found is None:
            found = self._nan[name] = np.isnan(self.numbers(name))
        return found

    def booleans(self, name: str) -> np.ndarray:
        """The values of a boolean column (False under a NULL)."""
        found = self._booleans.get(name)
        if found is None:
            array = self.array(name)
            if array.type != pa.bool_():
                raise UnsupportedError(name)
            found = self._booleans[name] = bools(array)
        return found


def _buffer_values(array: pa.Array, dtype: Any) -> np.ndarray:
    """The values buffer of a fixed-width array, including the slots under NULLs."""
    width = np.dtype(dtype).itemsize
    return np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * width)


class Node:
    """A compiled condition: evaluates to SQL's three-valued truth per row."""

    def truth(self, columns: Columns, n: int) -> Truth:
        """``(value, known)`` of the condition on every row."""
        raise NotImplementedError


@dataclass
class Constant(Node):
    """``TRUE`` or ``FALSE``."""

    value: bool

    def truth(self, columns: Columns, n: int) -> Truth:
        """The constant on every row."""
        return np.full(n, self.value), None


@dataclass
class BooleanColumn(Node):
    """A boolean column used as a condition."""

    name: str

    def truth(self, columns: Columns, n: int) -> Truth:
        """The column's values; NULL where it is NULL."""
        return columns.booleans(self.name), columns.valid(self.name)


@dataclass
class IsNull(Node):
    """``column IS NULL`` (``negate``: ``IS NOT NULL``)."""

    name: str
    negate: bool

    def truth(self, columns: Columns, n: int) -> Truth:
        """Never NULL itself."""
        valid = columns.valid(self.name)
        if valid is None:
            return np.full(n, self.negate), None
        return (valid if self.negate else ~valid), None


@dataclass
class Compare(Node):
    """``column <op> constant`` (``op`` one of = <> < <= > >=)."""

    name: str
    op: str
    constant: bool | int | float | str

    def truth(self, columns: Columns, n: int) -> Truth:
        """The comparison; NULL where the column is NULL."""
        constant, op = self.constant, self.op
        if isinstance(constant, (bool, str)):
            if op not in ("=", "<>"):
                raise UnsupportedError(op)
            if isinstance(constant, bool):
                equal = columns.booleans(self.name) == constant
            else:
                equal = _string_equal(columns.array(self.name), constant)
            return (equal if op == "=" else ~equal), columns.valid(self.name)
        values = columns.numbers(self.name)
        if values.dtype == np.int64 and isinstance(constant, float):
            raise UnsupportedError(self.name)  # DuckDB compares as decimals there
        result = _ORDER[op](values, constant)
        if op in (">", ">=") and values.dtype == np.float64:
            result |= columns.nan(self.name)  # DuckDB orders NaN above every number
        return result, columns.valid(self.name)


_ORDER = {
    "=": np.equal,
    "<>": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def _string_equal(array: pa.Array, text: str) -> np.ndarray:
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise UnsupportedError(str(array.type))
    return bools(pc.equal(array, scalar(text, array.type)))


@dataclass
class Not(Node):
    """``NOT child``."""

    child: Node

    def truth(self, columns: Columns, n: int) -> Truth:
        """NULL stays NULL."""
        value, known = self.child.truth(columns, n)
        return ~value, known


@dataclass
class Junction(Node):
    """``AND`` (``all_``) or ``OR`` of the children, with SQL's three-valued logic."""

    children: list[Node]
    all_: bool

    def truth(self, columns: Columns, n: int) -> Truth:
        """FALSE decides an AND, TRUE an OR, whatever the other sides are."""
        value, known = self.children[0].truth(columns, n)
        for child in self.children[1:]:
            other, other_known = child.truth(columns, n)
            if known is None and other_known is None:
                value = value & other if self.all_ else value | other
                continue
            known = np.ones(n, bool) if known is None else known
            other_known = np.ones(n, bool) if other_known is None else other_known
            if self.all_:
                decided = (known & ~value) | (other_known & ~other)
                value = value & other & ~decided
            else:
                decided = (known & value) | (other_known & other)
                value = decided
            known = (known & other_known) | decided
        return value, known


_COMPARISONS = {
    "COMPARE_EQUAL": "=",
    "COMPARE_NOTEQUAL": "<>",
    "COMPARE_LESSTHAN": "<",
    "COMPARE_LESSTHANOREQUALTO": "<=",
    "COMPARE_GREATERTHAN": ">",
    "COMPARE_GREATERTHANOREQUALTO": ">=",
}
_FLIPPED = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def compile_parsed(statement: dict[str, Any]) -> Node | None:
    """The node for a parsed ``SELECT (<when>) AS c`` (DuckDB's ``json_serialize_sql``), or
    None when the condition has a shape this module does not evaluate."""
    try:
        (expression,) = statement["statements"][0]["node"]["select_list"]
        return _node(expression)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _node(expr: dict[str, Any]) -> Node | None:
    kind, type_ = expr.get("class"), expr.get("type")
    if kind == "CONJUNCTION" and type_ in ("CONJUNCTION_AND", "CONJUNCTION_OR"):
        children = [_node(child) for child in expr["children"]]
        if not children or any(c is None for c in children):
            return None
        return Junction([c for c in children if c is not None], type_ == "CONJUNCTION_AND")
    if kind == "OPERATOR" and type_ == "OPERATOR_NOT":
        child = _node(expr["children"][0]) if len(expr["children"]) == 1 else None
        return Not(child) if child is not None else None
    if kind == "OPERATOR" and type_ in ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL"):
        name = _column(expr["children"][0]) if len(expr["children"]) == 1 else None
        return IsNull(name, type_ == "OPERATOR_IS_NOT_NULL") if name is not None else None
    if kind == "COLUMN_REF":
        name = _column(expr)
        return BooleanColumn(name) if name is not None else None
    if kind == "CONSTANT":
        value = _constant(expr)
        return Constant(value) if isinstance(value, bool) else None
    if kind == "COMPARISON" and type_ in _COMPARISONS:
        op = _COMPARISONS[type_]
        left, right = expr["left"], expr["right"]
        name, constant = _column(left), _constant(right)
        if name is None:  # the constant on the left: ``75 < x`` is ``x > 75``
            name, constant, op = _column(right), _constant(left), _FLIPPED[op]
        if name is None or constant is None:
            return None
        return Compare(name, op, constant)
    return None


def _column(expr: dict[str, Any]) -> str | None:
    if expr.get("class") != "COLUMN_REF" or len(expr.get("column_names", [])) != 1:
        return None
    name = expr["column_names"][0]
    return name if isinstance(name, str) else None


def _constant(expr: dict[str, Any]) -> bool | int | float | str | None:
    """A literal as Python, when comparing with it here gives DuckDB's answer."""
    if expr.get("class") != "CONSTANT":
        return None
    literal = expr.get("literal") or {}
    kind, text = literal.get("kind"), literal.get("text")
    if not isinstance(text, str):
        return None
    if kind == "BOOLEAN" and text in ("true", "false"):
        return text == "true"
    if kind == "STRING":
        return text
    if kind == "INTEGER":
        number = int(text)
        return number if abs(number) <= _EXACT_INT else None
    if kind == "NUMERIC":
        # a decimal literal becomes the nearest double, as DuckDB casts it for a DOUBLE column;
        # long ones (DuckDB's wide decimals) and exponents are left to DuckDB
        digits = sum(ch.isdigit() for ch in text)
        if not _DECIMAL.fullmatch(text) or digits > 15:
            return None
        return float(text)
    return None
