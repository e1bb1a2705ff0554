"""Sluice's SQL expressions (DuckDB dialect) translated to Spark SQL with sqlglot.

A function sqlglot does not know is passed through by name, which may mean something else
(or nothing) in Spark: such functions are refused here, before the job starts, as is
everything sqlglot itself reports as unsupported. What translates is then bound by Spark
against the real schema on empty input, also before any data moves (see ``spark_plan``).
"""

from __future__ import annotations

from sluice.core.deps import require
from sluice.core.errors import ConfigError


def to_spark(sql: str, where: str) -> str:
    """``sql`` (a DuckDB expression) in Spark SQL; a ConfigError naming ``where`` if it can't."""
    sqlglot = require("sqlglot", "spark", "--runner spark")
    from sqlglot import exp
    from sqlglot.errors import ErrorLevel, SqlglotError

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
        unknown = sorted({node.name.lower() for node in tree.find_all(exp.Anonymous)})
        if unknown:
            raise ConfigError(
                f"{sql!r} does not translate to Spark SQL: no translation for "
                f"{', '.join(f + '()' for f in unknown)}; run it with --runner local",
                key=where,
            )
        return str(tree.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE))
    except SqlglotError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{sql!r} does not translate to Spark SQL: {first}; run it with --runner local",
            key=where,
        ) from None
