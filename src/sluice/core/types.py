"""Schema types of the pipeline file, their Arrow equivalents, and duration parsing."""

from __future__ import annotations

import re
from datetime import timedelta

import pyarrow as pa

from sluice.core.errors import ConfigError

SCHEMA_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "long": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "json": pa.string(),
}

DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "long": "BIGINT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
    "json": "VARCHAR",
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def arrow_type(name: str) -> pa.DataType:
    """Return the Arrow type for a schema type name such as ``double``."""
    try:
        return SCHEMA_TYPES[name]
    except KeyError:
        raise ConfigError(
            f"unknown type {name!r}; expected one of {', '.join(SCHEMA_TYPES)}"
        ) from None


def arrow_schema(fields: dict[str, str]) -> pa.Schema:
    """Build an Arrow schema from ``{column: type name}``."""
    return pa.schema([pa.field(col, arrow_type(typ)) for col, typ in fields.items()])


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Parse ``500ms``, ``10s``, ``1m``, ``2h`` or ``1d`` (numbers are seconds)."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float):
        return timedelta(seconds=float(text))
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"invalid duration {text!r}; write it like 500ms, 10s, 1m, 2h or 1d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def duration_us(text: str | int | float | timedelta) -> int:
    """Parse a duration and return it in whole microseconds."""
    delta = parse_duration(text)
    return delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds
