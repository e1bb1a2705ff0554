"""Reading lake/warehouse tables for the API through the QueryEngine, safely.

Table and column names are only ever taken from the engine's own table list and quoted;
filter values are rendered as escaped SQL literals; limits and offsets are integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from sluice.api.deps import QueryEngineLike
from sluice.api.errors import ApiError

DEAD_LETTER_COLUMNS = frozenset({"pipeline", "stage", "reason", "raw", "origin"})
TIME_COLUMNS = ("ts", "event_time", "timestamp", "time", "rejected_at")


@dataclass(frozen=True)
class TableView:
    """What the API needs to know about one queryable table."""

    name: str
    kind: str
    rows: int | None
    columns: tuple[str, ...]

    @property
    def anomaly_columns(self) -> list[str]:
        """Columns named ``<model>_anomaly`` beside the model's ``_score`` or ``_reason``.

        A plain boolean such as the ground truth ``is_anomaly`` is no model's flag.
        """
        names = set(self.columns)
        return [
            c
            for c in self.columns
            if c.endswith("_anomaly")
            and names
            & {c.removesuffix("_anomaly") + "_score", c.removesuffix("_anomaly") + "_reason"}
        ]

    @property
    def anomaly_models(self) -> list[str]:
        """The models whose flags ``anomaly_columns`` are."""
        return [c.removesuffix("_anomaly") for c in self.anomaly_columns]

    @property
    def is_dead_letters(self) -> bool:
        """True when the table has the dead-letter schema."""
        return set(self.columns) >= DEAD_LETTER_COLUMNS

    def time_column(self, preferred: str | None = None) -> str | None:
        """The column used for time filters and ordering."""
        if preferred is not None:
            if preferred not in self.columns:
                raise ApiError(
                    400,
                    f"table {self.name!r} has no column {preferred!r}",
                    {"columns": list(self.columns)},
                )
            return preferred
        return next((c for c in TIME_COLUMNS if c in self.columns), None)


def _column_names(columns: Any) -> tuple[str, ...]:
    if isinstance(columns, dict):
        return tuple(str(c) for c in columns)
    names = []
    for column in columns or ():
        if isinstance(column, str):
            names.append(column)
        elif isinstance(column, tuple | list):
            names.append(str(column[0]))
        else:
            names.append(str(getattr(column, "name", column)))
    return tuple(names)


def table_views(engine: QueryEngineLike) -> dict[str, TableView]:
    """The engine's tables by name."""
    views = {}
    for info in engine.tables():
        rows = getattr(info, "rows", None)
        views[str(info.name)] = TableView(
            str(info.name),
            str(getattr(info, "kind", "")),
            rows if isinstance(rows, int) else None,
            _column_names(getattr(info, "columns", ())),
        )
    return views


def find_table(engine: QueryEngineLike, name: str) -> TableView:
    """The named table, or 404 (a name that is not in the list never reaches SQL)."""
    view = table_views(engine).get(name)
    if view is None:
        raise ApiError(404, f"no table named {name!r}", {"table": name})
    return view


def ident(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str | int | float | datetime) -> str:
    """An SQL literal for a filter value."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return f"TIMESTAMPTZ '{moment.astimezone(UTC).isoformat()}'"
    if isinstance(value, bool | int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts."""
    return table.to_pylist()


def page(rows: list[dict[str, Any]], limit: int, offset: int, **extra: Any) -> dict[str, Any]:
    """A paginated response body."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "rows": rows,
        "count": len(rows),
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if more else None,
        **extra,
    }


def time_filters(column: str | None, since: datetime | None, until: datetime | None) -> list[str]:
    """WHERE conditions for a time range on ``column``."""
    if (since or until) and column is None:
        raise ApiError(400, "this table has no time column; pass time_column", None)
    conditions = []
    if since is not None:
        conditions.append(f"{ident(str(column))} >= {literal(since)}")
    if until is not None:
        conditions.append(f"{ident(str(column))} < {literal(until)}")
    return conditions
