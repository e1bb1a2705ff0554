"""Source of ``type: sql``: incremental reads of a table or query by a monotonic cursor column.

Options: ``url`` (``postgresql://``, ``mysql://``, ``mariadb://``, ``sqlite:///``;
credentials through ``${VAR}``), ``table`` or ``query`` (a SELECT using ``:cursor``, bound
to the last cursor value, or ``start`` (default 0) on the first read), ``cursor`` (the
column), ``start``, ``batch_rows`` (rows per query, default 100000), ``poll_interval``
(wait after a read that found nothing, default ``1s``), ``retries`` and ``retry_delay``
(reconnects with doubling delays before a clear error).

Each read is ``... WHERE cursor > <last> ORDER BY cursor LIMIT batch_rows + 1``. A read
never ends inside a run of equal cursor values: when the extra row shows the last value's
run going on, that run is left for the next read (or, when it fills the whole read, it is
read whole), so ties are never split and a position is simply ``{"cursor": <last value
read>}``. Replaying
an epoch (``until``) reads ``cursor <= until`` the same way, so it gives the same rows. The
position is committed in the pipeline checkpoint with the sinks' epoch: each row lands once.

Rows arrive typed (``raw_format: arrow``), with ``__origin = "<table>@<cursor>"`` for the
dead-letter store. A NULL cursor, or a table whose largest cursor is below the checkpoint
(recreated or truncated: the cursor went backwards) stops the run with an error saying so.
Rows must get increasing cursor values as they are committed: a row committed later with
a value at or below one already read is not seen.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluice.config.models import SourceConfig
from sluice.connectors.sql import (
    ArrowReader,
    SqlUrl,
    literal,
    open_reader,
    parse_sql_url,
    quote_name,
)
from sluice.core.errors import ConfigError, SourceError, TransientSourceError
from sluice.core.types import parse_duration
from sluice.sources.base import (
    Position,
    Source,
    SourceBatch,
    SourceContext,
    check_duration,
    validate_options,
)

log = logging.getLogger("sluice.sources.sql")
_PLACEHOLDER = re.compile(r"(?<![:\w]):cursor\b")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
Scalar = int | float | str


class SqlOptions(BaseModel):
    """The options of a ``sql`` source."""

    model_config = ConfigDict(extra="forbid")

    url: str
    table: str | None = None
    query: str | None = None
    cursor: str
    start: Scalar = 0
    batch_rows: int = Field(default=100_000, gt=0)
    poll_interval: str = "1s"
    retries: int = Field(default=5, ge=0)
    retry_delay: str = "500ms"

    @model_validator(mode="after")
    def _check(self) -> SqlOptions:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.table is not None and not _NAME.match(self.table):
            raise ValueError(f"table {self.table!r} must be a name or schema.name")
        if self.query is not None and not _PLACEHOLDER.search(self.query):
            raise ValueError("query must filter on ':cursor', e.g. 'WHERE id > :cursor'")
        if not _NAME.match(self.cursor) or "." in self.cursor:
            raise ValueError(f"cursor {self.cursor!r} must be a column name")
        return self

    _durations = field_validator("poll_interval", "retry_delay")(
        classmethod(lambda cls, v: check_duration(v))
    )


def parse_options(config: SourceConfig) -> SqlOptions:
    """Validate the source's options (ConfigError naming the key)."""
    options = dict(config.options)
    if config.format not in (None, "arrow"):
        raise ConfigError("a sql source reads typed columns: leave 'format' out", key="source")
    return validate_options(SqlOptions, options)


def _json_value(value: Any) -> Scalar:
    """A cursor value as a JSON scalar (text for dates, times and decimals)."""
    return value if isinstance(value, int | float | str) else str(value)


class SqlSource(Source):
    """Reads new rows of a table or query in cursor order, in Arrow batches."""

    prefetch_safe = True  # the next read runs while an epoch is processed (drivers drop the GIL)

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.options = parse_options(config)
        self.url: SqlUrl = parse_sql_url(self.options.url)
        self.name = self.options.table or "query"
        self.cursor_sql = quote_name(self.options.cursor, self.url.dialect)
        self.poll_interval = parse_duration(self.options.poll_interval).total_seconds()
        self.retry_delay = parse_duration(self.options.retry_delay).total_seconds()
        self.cursor: Scalar | None = None
        self.sleep: Callable[[float], None] = time.sleep
        self._reader: ArrowReader | None = None
        self._idle = False
        self._next_poll = 0.0

    # -- SQL ---------------------------------------------------------------------------
    def _relation(self) -> str:
        """The rows to read from: the table, or the query with ``:cursor`` bound."""
        if self.options.table is not None:
            return quote_name(self.options.table, self.url.dialect)
        bound = self.options.start if self.cursor is None else self.cursor
        query = _PLACEHOLDER.sub(
            lambda _m: literal(bound, self.url.dialect), self.options.query or ""
        )
        return f"({query}) AS sluice_rows"

    def _select(self, conditions: list[str], limit: int | None) -> str:
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        tail = f" LIMIT {limit}" if limit is not None else ""
        return f"SELECT * FROM {self._relation()}{where} ORDER BY {self.cursor_sql}{tail}"

    def _after(self, until: Position | None) -> list[str]:
        """Conditions: past the current cursor, and not past ``until`` (a replay)."""
        found = []
        if self.cursor is not None:
            found.append(f"{self.cursor_sql} > {literal(self.cursor, self.url.dialect)}")
        if until is not None:
            found.append(f"{self.cursor_sql} <= {literal(until['cursor'], self.url.dialect)}")
        return found

    def _read(self, sql: str) -> pa.Table:
        """Run ``sql``, reconnecting with doubling delays while the database is unreachable."""
        delay = self.retry_delay
        for attempt in range(self.options.retries + 1):
            if self._reader is None:
                self._reader = open_reader(self.url)
            try:
                return self._reader.read(sql)
            except TransientSourceError as exc:
                if attempt == self.options.retries:
                    raise SourceError(
                        f"sql source {self.name}: database unreachable after "
                        f"{attempt + 1} attempts: {exc}"
                    ) from None
                log.warning("sql source %s: %s; retrying in %.1fs", self.name, exc, delay)
                self.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the protocol --------------------------------------------------------------------
    def open(self, position: Position | None) -> None:
        """Resume after ``position["cursor"]`` (None: from the first row)."""
        self.cursor = None if position is None else position["cursor"]
        self._idle, self._next_poll = False, 0.0
        if self.options.table is not None:
            self._check_table()

    def _check_table(self) -> None:
        """Refuse NULL cursors, and a table whose cursor went back below the checkpoint."""
        col = self.cursor_sql
        stats = self._read(
            f"SELECT count(*) - count({col}) AS nulls, max({col}) AS top FROM {self._relation()}"
        ).to_pylist()[0]
        if stats["nulls"]:
            raise SourceError(
                f"sql source {self.name}: cursor column {self.options.cursor!r} is NULL in "
                f"{stats['nulls']} row(s); every row needs a cursor value"
            )
        if self.cursor is not None and stats["top"] is not None:
            below = self._read(
                f"SELECT count(*) AS n FROM {self._relation()} WHERE {col} >= "
                f"{literal(self.cursor, self.url.dialect)}"
            ).to_pylist()[0]["n"]
            if not below:
                raise SourceError(
                    f"sql source {self.name}: cursor went backwards: the largest "
                    f"{self.options.cursor} is {stats['top']} but the checkpoint is at "
                    f"{self.cursor} (was the table recreated? rows below the checkpoint are not "
                    "read again; to reload the table, run it as a pipeline with a new name)"
                )

    def poll(
        self, max_rows: int, timeout: float, until: Position | None = None
    ) -> SourceBatch | None:
        """Up to ``max_rows`` new rows (more only to finish a run of equal cursor values)."""
        if until is not None and self.cursor == until["cursor"]:
            return None
        if until is None and self._idle and not self._wait(timeout):
            return None
        limit = min(max_rows, self.options.batch_rows)
        # One row more than wanted tells whether the last value's run goes on past the limit.
        table = self._read(self._select(self._after(until), limit + 1))
        if table.num_rows == 0:
            if until is not None:  # the rows of the planned epoch are gone: end the replay
                self.cursor = until["cursor"]
                return SourceBatch(pa.table({}), "arrow", dict(until))
            self._idle, self._next_poll = True, time.monotonic() + self.poll_interval
            return None
        self._idle = False
        column = self._checked_cursor(table)
        if table.num_rows > limit:
            table = self._without_split_tie(table, column, limit)
            column = table.column(self.options.cursor)
        self.cursor = _json_value(column[-1].as_py())
        origin = pc.binary_join_element_wise(
            pa.scalar(f"{self.name}@"), pc.cast(column, pa.string()), ""
        )
        data = table.append_column("__origin", origin)
        return SourceBatch(data=data, raw_format="arrow", position={"cursor": self.cursor})

    def _wait(self, timeout: float) -> bool:
        """After an empty read, wait out ``poll_interval`` (up to ``timeout``); True if done."""
        remaining = self._next_poll - time.monotonic()
        if remaining > 0:
            self.sleep(min(remaining, timeout))
        return time.monotonic() >= self._next_poll

    def _checked_cursor(self, table: pa.Table) -> pa.ChunkedArray:
        """The cursor column, refusing NULL values."""
        name = self.options.cursor
        if name not in table.column_names:
            raise SourceError(f"sql source {self.name}: the rows have no column {name!r}")
        column = table.column(name)
        if column.null_count:
            raise SourceError(
                f"sql source {self.name}: cursor column {name!r} is NULL in "
                f"{column.null_count} row(s); every row needs a cursor value"
            )
        return column

    def _without_split_tie(self, table: pa.Table, column: pa.ChunkedArray, limit: int) -> pa.Table:
        """The first ``limit`` rows, less the last value's run if it goes on past them.

        That run is left to the next read; when it fills the whole read, it is read whole.
        """
        last = column[limit - 1]
        if column[limit] != last:
            return table.slice(0, limit)
        first = pc.index(column, last).as_py()
        if first > 0:
            return table.slice(0, first)
        value = literal(_json_value(last.as_py()), self.url.dialect)
        return self._read(self._select([f"{self.cursor_sql} = {value}"], None))

    @property
    def exhausted(self) -> bool:
        """True once a read found no new row."""
        return self._idle

    def close(self) -> None:
        """Close the connection."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
