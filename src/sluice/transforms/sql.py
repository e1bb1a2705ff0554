"""Row-wise transforms: ``filter`` and ``derive`` (DuckDB SQL over Arrow), ``select``, ``rename``.

SQL runs over only the columns an expression needs; its results are put back into the
batch with pyarrow, so every other column (including the internal ``__origin``) flows
through untouched and keeps its Arrow type. A SQL error that depends on the data (a
cast that fails for some rows) dead-letters just the failing rows: the batch is bisected
until the rows that fail are isolated (within a bounded number of queries).
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from sluice.core.batch import empty_table
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.transforms.base import Transform
from sluice.transforms.duck import SQL_CONFIG_ERRORS, DuckSQL, check_expression, quote

# At most this many extra queries are spent isolating failing rows in one batch;
# what is still unresolved then is dead-lettered as a whole.
BISECT_BUDGET = 256


def is_internal(column: str) -> bool:
    """True for runner-internal columns such as ``__origin`` that every step passes on."""
    return column.startswith("__")


def first_line(exc: BaseException) -> str:
    """The first line of an error message (DuckDB appends SQL excerpts on later lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SqlStep(Transform):
    """Base of steps that evaluate DuckDB SQL over each batch with one reusable connection."""

    kind = "sql"

    def __init__(self, index: int) -> None:
        self.index = index
        self.key = f"transforms[{index}].{self.kind}"
        self.stage = f"transform[{index}]"
        self.duck = DuckSQL()
        self._bound: pa.Schema | None = None

    def evaluate(self, table: pa.Table) -> pa.Table:
        """Evaluate this step's SQL over ``table``; one result row per input row."""
        raise NotImplementedError

    def check_result(self, result: pa.Table) -> None:
        """Validate the result schema of a binding run (raise ConfigError if wrong)."""

    def bind(self, table: pa.Table) -> None:
        """Check the SQL against ``table``'s schema once per schema; errors are ConfigErrors."""
        if self._bound is not None and self._bound.equals(table.schema):
            return
        try:
            result = self.evaluate(empty_table(table.schema))
        except duckdb.Error as exc:
            raise ConfigError(first_line(exc), key=self.key) from None
        self.check_result(result)
        self._bound = table.schema

    def output_schema(self, schema: pa.Schema) -> pa.Schema | None:
        """Bind the SQL against ``schema`` (DuckDB on an empty table); the columns out."""
        self.bind(empty_table(schema))
        return super().output_schema(schema)

    def safe_evaluate(self, table: pa.Table, ctx: EpochContext) -> tuple[pa.Table, pa.Table]:
        """Return (rows that evaluated, their results); failing rows are dead-lettered."""
        self.bind(table)
        try:
            return table, self.evaluate(table)
        except SQL_CONFIG_ERRORS as exc:
            raise ConfigError(first_line(exc), key=self.key) from None
        except duckdb.Error:
            pass
        rows: list[pa.Table] = []
        results: list[pa.Table] = []
        self._bisect(table, ctx, rows, results, [BISECT_BUDGET])
        if not rows:
            empty = empty_table(table.schema)
            return empty, self.evaluate(empty)
        return pa.concat_tables(rows), pa.concat_tables(results)

    def _bisect(
        self,
        part: pa.Table,
        ctx: EpochContext,
        rows: list[pa.Table],
        results: list[pa.Table],
        budget: list[int],
    ) -> None:
        if part.num_rows == 0:
            return
        budget[0] -= 1
        try:
            results.append(self.evaluate(part))
            rows.append(part)
            return
        except duckdb.Error as exc:
            if part.num_rows == 1 or budget[0] <= 0:
                ctx.dead_letter_rows(self.stage, f"{self.kind} failed: {first_line(exc)}", part)
                return
        half = part.num_rows // 2
        self._bisect(part.slice(0, half), ctx, rows, results, budget)
        self._bisect(part.slice(half), ctx, rows, results, budget)

    def describe(self) -> dict[str, Any]:
        """A short description for status pages."""
        return {"type": self.kind, "step": self.index}


class FilterTransform(SqlStep):
    """Keep the rows for which a SQL boolean holds; NULL counts as false (filtered)."""

    name = kind = "filter"

    def __init__(self, condition: str, index: int) -> None:
        super().__init__(index)
        self.condition = condition
        check_expression(self.duck, condition, self.key)

    def evaluate(self, table: pa.Table) -> pa.Table:
        """Evaluate the condition to one boolean column ``keep``."""
        return self.duck.query(f"SELECT ({self.condition}) AS keep FROM batch", batch=table)

    def check_result(self, result: pa.Table) -> None:
        """The condition must be boolean."""
        kind = result.schema.field("keep").type
        if not pa.types.is_boolean(kind) and not pa.types.is_null(kind):
            raise ConfigError(
                f"filter {self.condition!r} must be a boolean expression, not {kind}", key=self.key
            )

    def apply(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        """Drop the rows whose condition is false or NULL; count them as ``filtered``."""
        if table.num_rows == 0:
            return table
        rows, result = self.safe_evaluate(table, ctx)
        keep = result.column("keep")
        if pa.types.is_null(keep.type):
            kept = rows.slice(0, 0)
        else:
            kept = rows.filter(keep, null_selection_behavior="drop")
        ctx.counters["filtered"] += rows.num_rows - kept.num_rows
        return kept


class DeriveTransform(SqlStep):
    """Add or replace columns computed by SQL expressions, evaluated in order."""

    name = kind = "derive"

    def __init__(self, columns: dict[str, str], index: int) -> None:
        super().__init__(index)
        if not columns:
            raise ConfigError("derive needs at least one column", key=self.key)
        self.columns = dict(columns)
        for column, expr in self.columns.items():
            check_expression(self.duck, expr, f"{self.key}.{column}")

    def _sql(self, names: list[str]) -> str:
        sql, present = "SELECT * FROM batch", set(names)
        for column, expr in self.columns.items():
            if column in present:
                sql = f"SELECT * REPLACE (({expr}) AS {quote(column)}) FROM ({sql})"
            else:
                sql = f"SELECT *, ({expr}) AS {quote(column)} FROM ({sql})"
                present.add(column)
        return f"SELECT {', '.join(quote(c) for c in self.columns)} FROM ({sql})"

    def evaluate(self, table: pa.Table) -> pa.Table:
        """Evaluate the derived columns only (DuckDB reads just the columns they use)."""
        return self.duck.query(self._sql(table.column_names), batch=table)

    def apply(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        """Return the batch with the derived columns added or replaced."""
        if table.num_rows == 0 and self._bound is not None:
            rows, result = table, self.evaluate(table)
        else:
            rows, result = self.safe_evaluate(table, ctx)
        for column in self.columns:
            values = result.column(column)
            where = rows.schema.get_field_index(column)
            if where >= 0:
                rows = rows.set_column(where, column, values)
            else:
                rows = rows.append_column(column, values)
        return rows


class SelectTransform(Transform):
    """Keep only the listed columns (internal ``__`` columns always flow on)."""

    name = "select"

    def __init__(self, columns: list[str], index: int) -> None:
        if not columns:
            raise ConfigError("select needs at least one column", key=f"transforms[{index}].select")
        self.columns = list(columns)
        self.key = f"transforms[{index}].select"

    def apply(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        """Project the batch onto the listed columns."""
        missing = [c for c in self.columns if c not in table.column_names]
        if missing:
            raise ConfigError(
                f"unknown column(s) {', '.join(map(repr, missing))}; "
                f"available: {', '.join(table.column_names)}",
                key=self.key,
            )
        internal = [c for c in table.column_names if is_internal(c) and c not in self.columns]
        return table.select(self.columns + internal)


class RenameTransform(Transform):
    """Rename columns ``{old: new}``."""

    name = "rename"

    def __init__(self, mapping: dict[str, str], index: int) -> None:
        self.key = f"transforms[{index}].rename"
        if not mapping:
            raise ConfigError("rename needs at least one column", key=self.key)
        targets = list(mapping.values())
        if len(set(targets)) != len(targets):
            raise ConfigError("two columns are renamed to the same name", key=self.key)
        self.mapping = dict(mapping)

    def apply(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        """Return the batch with the columns renamed."""
        names = table.column_names
        missing = [c for c in self.mapping if c not in names]
        if missing:
            raise ConfigError(
                f"unknown column(s) {', '.join(map(repr, missing))}; available: {', '.join(names)}",
                key=self.key,
            )
        renamed = [self.mapping.get(c, c) for c in names]
        clashes = sorted({c for c in renamed if renamed.count(c) > 1})
        if clashes:
            raise ConfigError(
                f"renaming would duplicate column(s) {', '.join(clashes)}", key=self.key
            )
        return table.rename_columns(renamed)
