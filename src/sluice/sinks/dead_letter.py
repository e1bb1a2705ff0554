"""The dead-letter store: a lake table of rejected records, written and listed here.

The runner writes each epoch's rejects with ``dead_letter_sink(context).write(table, epoch)``
(a LakeSink on the ``dead_letter`` table, idempotent per pipeline and epoch).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from sluice.config.models import SinkConfig
from sluice.core.context import DEAD_LETTER_SCHEMA
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.lake import LakeSink
from sluice.storage.lake_tables import lake_dataset, open_delta

DEAD_LETTER_TABLE = "dead_letter"


def dead_letter_sink(context: SinkContext, table: str = DEAD_LETTER_TABLE) -> LakeSink:
    """The sink that stores a pipeline's dead letters (unpartitioned)."""
    config = SinkConfig.model_validate({"type": "lake", "table": table, "partition_by": "none"})
    return LakeSink(config, context)


def read_dead_letters(
    settings: Settings,
    pipeline: str | None = None,
    limit: int | None = 50,
    table: str = DEAD_LETTER_TABLE,
) -> pa.Table:
    """The most recent dead letters (newest first), optionally of one pipeline only."""
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    delta = open_delta(settings.lake_path(table))
    if delta is None:
        return DEAD_LETTER_SCHEMA.empty_table()
    con = duckdb.connect()
    try:
        con.register("dead_letters", lake_dataset(delta))
        where = "WHERE pipeline = $pipeline" if pipeline is not None else ""
        bound = "LIMIT $limit" if limit is not None else ""
        params: dict[str, object] = {}
        if pipeline is not None:
            params["pipeline"] = pipeline
        if limit is not None:
            params["limit"] = limit
        sql = f"SELECT * FROM dead_letters {where} ORDER BY rejected_at DESC, epoch DESC {bound}"
        result = _arrow(con.sql(sql, params=params))
        if result.column_names == DEAD_LETTER_SCHEMA.names:
            result = result.cast(DEAD_LETTER_SCHEMA)  # DuckDB reports the zone as Etc/UTC
        return result
    finally:
        con.close()


def _arrow(relation: duckdb.DuckDBPyRelation | None) -> pa.Table:
    return relation.to_arrow_table() if relation is not None else pa.table({})


def count_dead_letters(
    settings: Settings, pipeline: str | None = None, table: str = DEAD_LETTER_TABLE
) -> int:
    """How many dead letters the store holds (of one pipeline, or all)."""
    delta = open_delta(settings.lake_path(table))
    if delta is None:
        return 0
    con = duckdb.connect()
    try:
        con.register("dead_letters", lake_dataset(delta))
        if pipeline is None:
            rows = con.execute("SELECT count(*) FROM dead_letters").fetchall()
        else:
            rows = con.execute(
                "SELECT count(*) FROM dead_letters WHERE pipeline = ?", [pipeline]
            ).fetchall()
        return int(rows[0][0])
    finally:
        con.close()
