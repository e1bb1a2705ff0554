"""Decode raw source rows into the pipeline's schema; rows that do not fit become dead letters.

One DuckDB query per batch does the whole job over the Arrow table: it parses JSON lines
(``json_extract_string`` to text values), casts every field, fills defaults and computes a
per-row rejection reason (null for good rows). Good rows leave typed exactly to the schema;
the others go to ``ctx.dead_letter`` with their raw payload, origin and reason.

JSON lines are first decoded by the compiled one-pass module (``json_lines``, when it is
built): the lines it cannot prove to decode exactly as DuckDB would (rejects among them) are
decoded by the query above and put back in their places (``Decoder._native_decode``;
``tests/unit/test_decode_native.py`` compares both on generated lines). Without the module,
small JSON batches (up to ``FAST_MAX_ROWS``) are first read by Arrow's JSON reader, which is
stricter than the decode; a batch it reads whole, with every value passing the checks of
``Decoder._fast_decode``, is taken from it (the same values, no query to bind), any other
batch is decoded by DuckDB. ``tests/unit/test_decode_fast.py`` compares both on generated lines.

Input formats (``raw_format``):

* ``json``: a ``_raw`` string column holding one JSON object per row.
* ``csv``: one string column per CSV column (missing values are null).
* ``arrow``: typed columns (Parquet, generators), cast to the schema.

Optional bookkeeping columns honoured in every format: ``__origin`` (a string, or an
offset that ``EpochContext.origin_prefix`` completes; kept on good rows),
``__invalid_utf8`` (bool: the row is rejected as ``invalid UTF-8``) and ``__error``
(string: the row is rejected with that reason; its payload is in ``_raw``).

Source metadata columns, named with one leading underscore (``_key``, ``_partition``,
``_kafka_ts``... but not ``_raw``), pass through to the good rows with their own type when
the schema does not declare them; a declared one is cast to its field's type and, for
``json`` input, taken from the column rather than from the JSON object.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from sluice.config.models import FieldSpec
from sluice.core.arrays import bools, from_numpy, scalar, to_numpy
from sluice.core.batch import empty_table
from sluice.core.context import EpochContext
from sluice.core.duck import memory_cursor
from sluice.core.errors import ConfigError
from sluice.core.types import DUCKDB_TYPES, arrow_type
from sluice.sources import json_lines
from sluice.sources.json_lines import LineDecoder

RAW_FORMATS = ("json", "csv", "arrow")
_SHOWN_CHARS = 80  # how much of a bad value a reason quotes
# Above this share of unsure lines, DuckDB decodes the whole batch rather than only those.
_UNSURE_SHARE = 0.5
ROW_INDEX = "_sluice_row_index"  # carries each unsure line's position through the DuckDB decode
_MORSEL_ROWS = 20_000  # DuckDB parallelises an Arrow scan by record batch
# Up to this many JSON rows, a batch is first parsed by Arrow (no DuckDB query to bind, about
# 3 ms a batch); larger batches go straight to DuckDB, whose extraction costs less per row.
FAST_MAX_ROWS = 4096
# How Arrow's JSON reader reads each schema type: timestamps and dates as text, cast after.
_FAST_READ_TYPES = {
    "string": pa.string(),
    "long": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.string(),
    "date": pa.string(),
}
# The texts whose Arrow cast is known to match DuckDB's (others: the DuckDB decode decides).
_FAST_TEXT_SHAPES = {
    "timestamp": r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d(:?\d\d)?)$",
    "date": r"^\d{4}-\d\d-\d\d$",
}


_BOOKKEEPING = ("_raw", "__origin", "__invalid_utf8", "__error")


def _ident(name: str) -> str:
    """Quote ``name`` as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    """Quote ``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def text_cast(type_name: str, ref: str) -> str:
    """SQL turning the text value ``ref`` into ``type_name`` (NULL when it does not fit)."""
    if type_name == "string":
        return ref
    if type_name == "json":
        return f"CASE WHEN json_valid({ref}) THEN {ref} ELSE to_json({ref})::VARCHAR END"
    if type_name == "double":
        return f"TRY_CAST({ref} AS DOUBLE)"
    if type_name == "long":
        as_double = f"TRY_CAST({ref} AS DOUBLE)"
        return f"CASE WHEN {as_double} = floor({as_double}) THEN TRY_CAST({ref} AS BIGINT) END"
    if type_name == "boolean":
        return f"CASE lower(trim({ref})) WHEN 'true' THEN true WHEN 'false' THEN false END"
    if type_name == "date":
        return f"TRY_CAST({ref} AS DATE)"
    if type_name == "timestamp":
        epoch_ms = f"try(to_timestamp(TRY_CAST({ref} AS DOUBLE) / 1000.0))"
        return f"COALESCE(TRY_CAST({ref} AS TIMESTAMPTZ), {epoch_ms})"
    raise ConfigError(f"unknown type {type_name!r}")


def typed_cast(type_name: str, ref: str, source: pa.DataType) -> str:
    """SQL turning the typed value ``ref`` (Arrow type ``source``) into ``type_name``."""
    if pa.types.is_string(source) or pa.types.is_large_string(source):
        return text_cast(type_name, ref)
    if type_name == "timestamp" and (pa.types.is_integer(source) or pa.types.is_floating(source)):
        return f"try(to_timestamp({ref} / 1000.0))"
    if type_name == "long" and pa.types.is_floating(source):
        return f"CASE WHEN {ref} = floor({ref}) THEN TRY_CAST({ref} AS BIGINT) END"
    if type_name == "json":
        return f"to_json({ref})::VARCHAR"
    if type_name == "string" and not pa.types.is_dictionary(source):
        return f"TRY_CAST({ref} AS VARCHAR)"
    return f"TRY_CAST({ref} AS {DUCKDB_TYPES[type_name]})"


Branch = tuple[str, str]  # a CASE branch: (condition, reason)


def _failure_reason(name: str, spec: FieldSpec, ref: str, value: str, shown: str) -> list[Branch]:
    """CASE branches naming the first problem of field ``name``."""
    branches = []
    if spec.required:
        branches.append((f"{ref} IS NULL", _literal(f"missing required field {name!r}")))
    if spec.type == "timestamp":
        prefix = _literal(f"field {name!r}: not a timestamp: ")
    elif spec.type == "date":
        prefix = _literal(f"field {name!r}: not a date: ")
    else:
        prefix = _literal(f"field {name!r}: expected {spec.type}, got ")
    branches.append(
        (f"{ref} IS NOT NULL AND {value} IS NULL", f"{prefix} || left({shown}, {_SHOWN_CHARS})")
    )
    return branches


def metadata_columns(schema: pa.Schema) -> list[str]:
    """Names of the source metadata columns of ``schema`` (``_name``, not ``__`` nor ``_raw``)."""
    return [n for n in schema.names if n[:1] == "_" and n[:2] != "__" and n != "_raw"]


def _in_morsels(table: pa.Table) -> pa.Table:
    """Re-chunk ``table`` without copying so DuckDB's threads share the scan (per batch)."""
    if table.num_columns == 0 or all(len(c) <= _MORSEL_ROWS for c in table.column(0).chunks):
        return table
    return pa.Table.from_batches(table.to_batches(max_chunksize=_MORSEL_ROWS), table.schema)


def _plain_doubles(column: pa.ChunkedArray) -> bool:
    """True when no value of ``column`` is NaN, infinite or a negative zero.

    DuckDB's text casts decide those: ``-0`` is 0.0 there (an integer), ``1e400`` infinity.
    """
    values = to_numpy(column.drop_null())
    return bool(np.isfinite(values).all() and not np.signbit(values[values == 0]).any())


class Decoder:
    """Casts raw rows to the schema and dead-letters those that do not fit, vectorised."""

    def __init__(self, fields: dict[str, FieldSpec], raw_format: str) -> None:
        if raw_format not in RAW_FORMATS:
            raise ConfigError(
                f"unknown raw format {raw_format!r}; expected one of " + ", ".join(RAW_FORMATS)
            )
        self.fields = dict(fields)
        self.raw_format = raw_format
        self.schema = pa.schema([pa.field(n, arrow_type(s.type)) for n, s in fields.items()])
        self._con = memory_cursor()
        self._defaults = {
            n: self._default_sql(n, s) for n, s in fields.items() if s.default is not None
        }
        # per input schema and kind (checking only, or with reasons): the decode relation,
        # parsed once and re-run on each batch
        self._relations: dict[tuple[Any, ...], duckdb.DuckDBPyRelation] = {}
        self._fast_options: pa_json.ParseOptions | None = None
        plain = all(s.type in _FAST_READ_TYPES for s in fields.values()) and not any(
            c in name for name in fields for c in '"\\\n'
        )  # a name the JSON path of the DuckDB decode has to escape: DuckDB decides
        if raw_format == "json" and plain:
            read = pa.schema([pa.field(n, _FAST_READ_TYPES[s.type]) for n, s in fields.items()])
            self._fast_options = pa_json.ParseOptions(
                explicit_schema=read, unexpected_field_behavior="ignore"
            )
        # the compiled one-pass decode of JSON lines (None: DuckDB or Arrow decode every batch)
        self._lines: LineDecoder | None = None
        if (
            raw_format == "json"
            and plain
            and json_lines.available()
            and all(s.type in json_lines.KINDS for s in fields.values())
            and ROW_INDEX not in fields
        ):
            self._lines = LineDecoder({n: s.type for n, s in fields.items()})
        self._fast_defaults = {
            n: self._con.sql(f"SELECT {sql} AS v")
            .to_arrow_table()
            .column("v")[0]
            .cast(arrow_type(fields[n].type))
            for n, sql in self._defaults.items()
        }

    def close(self) -> None:
        """Release the DuckDB connection."""
        self._con.close()

    def _default_sql(self, name: str, spec: FieldSpec) -> str:
        """Validate the default of ``name`` once and return it as a typed SQL literal."""
        default = spec.default
        text = json.dumps(default) if isinstance(default, dict | list | bool) else str(default)
        sql_type = DUCKDB_TYPES[spec.type]
        cast = text_cast(spec.type, "v")
        value = self._con.execute(
            f"SELECT ({cast})::{sql_type} IS NOT NULL FROM (SELECT ?::VARCHAR AS v)", [text]
        ).fetchall()
        if not value or not value[0][0]:
            raise ConfigError(
                f"schema field {name!r}: default {spec.default!r} is not a valid {spec.type}"
            )
        return f"({text_cast(spec.type, _literal(text))})::{sql_type}"

    # -- query building ----------------------------------------------------------------
    def _relation(self, schema: pa.Schema, *, reasons: bool) -> duckdb.DuckDBPyRelation:
        """The decode relation for input tables shaped like ``schema`` (``batch`` registered).

        A relation is built once; run again, it reads whatever table is registered as
        ``batch`` then. Without ``reasons`` it only flags bad rows (``__bad``): binding the
        reason texts costs about 1 ms a batch, paid only when a batch has bad rows.
        """
        key = (reasons, *((f.name, str(f.type)) for f in schema))
        relation = self._relations.get(key)
        if relation is None:
            relation = self._con.sql(self._build_query(schema, reasons=reasons))
            self._relations[key] = relation
        return relation

    def _build_query(self, schema: pa.Schema, *, reasons: bool = True) -> str:
        names = set(schema.names)
        values, branches = self._field_sql(schema)
        special = []
        if "__invalid_utf8" in names:
            special.append(('"__invalid_utf8"', "'invalid UTF-8'"))
        if "__error" in names:
            special.append(('"__error" IS NOT NULL', '"__error"'))
        if self.raw_format == "json":
            special += [
                ("__jt IS NULL", "'malformed JSON'"),
                ("__jt <> 'OBJECT'", "'not a JSON object'"),
            ]
        branches = special + branches
        if not reasons:  # the same conditions in the same order: bad when one holds
            checks = "\n".join(f"WHEN {condition} THEN true" for condition, _ in branches)
            flag = f"CASE {checks} ELSE false END" if branches else "false"
        reason = (
            "CASE " + "\n".join(f"WHEN {c} THEN {r}" for c, r in branches) + " END"
            if branches
            else "NULL"
        )
        outputs = []
        for name, spec in self.fields.items():
            expr = values[name]
            if name in self._defaults:
                expr = f"COALESCE({expr}, {self._defaults[name]})"
            outputs.append(f"({expr})::{DUCKDB_TYPES[spec.type]} AS {_ident(name)}")
        passed = [_ident(n) for n in self._passthrough(schema)]
        outputs += passed
        kept = [_ident(n) for n in self.fields] + passed
        if not reasons:
            outputs.append(f"{flag} AS __bad")
            parsed = f"SELECT {', '.join(outputs)} FROM ({self._parsed_sql(schema)}) AS parsed"
            return f"SELECT {', '.join([*kept, '__bad'])} FROM ({parsed}) AS typed"
        outputs.append(f"{reason} AS __reason")
        # Typed input: the payload (a JSON object of the row) is built later, for bad rows only.
        raw = "NULL::VARCHAR" if self.raw_format == "arrow" else self._raw_sql(schema)
        outputs.append(f"{raw} AS __raw_payload")
        typed = f"SELECT {', '.join(outputs)} FROM ({self._parsed_sql(schema)}) AS parsed"
        return (
            f"SELECT {', '.join([*kept, '__reason'])}, CASE WHEN __reason IS NOT NULL "
            f"THEN __raw_payload END AS __raw_payload FROM ({typed}) AS typed"
        )

    def _passthrough(self, schema: pa.Schema) -> list[str]:
        """The metadata columns of ``schema`` that no field declares: kept as they are."""
        return [n for n in metadata_columns(schema) if n not in self.fields]

    def _from_json(self, schema: pa.Schema) -> list[str]:
        """The fields read from the JSON object (all but declared metadata columns)."""
        if self.raw_format != "json":
            return []
        columns = set(metadata_columns(schema))
        return [n for n in self.fields if n not in columns]

    def _parsed_sql(self, schema: pa.Schema) -> str:
        """The input relation, with JSON lines parsed into one text column per field."""
        if self.raw_format != "json":
            return "SELECT * FROM batch"
        from_json = self._from_json(schema)
        texts = [n for n in from_json if self.fields[n].type != "json"]
        jsons = [n for n in from_json if self.fields[n].type == "json"]
        lists, aliases, columns = [], [], []
        for alias, func, names in (
            ("__t", "json_extract_string", texts),
            ("__j", "json_extract", jsons),
        ):
            if names:
                paths = ", ".join(_literal("$." + json.dumps(n, ensure_ascii=False)) for n in names)
                lists.append(f"try({func}(_raw, [{paths}])) AS {alias}")
                aliases.append(alias)
                columns += [
                    f"{alias}[{i}] AS {_ident('__v_' + n)}" for i, n in enumerate(names, start=1)
                ]
        if not lists:
            inner = "SELECT *, try(json_type(_raw)) AS __jt FROM batch"
            return f"SELECT * FROM ({inner})"
        # The extraction parses each line once: NULL when it is malformed, and only a line
        # with none of the fields needs json_type to tell an object from other JSON.
        found = " + ".join(f"list_count({a})" for a in aliases)
        kind = (
            f"CASE WHEN {aliases[0]} IS NULL THEN NULL WHEN {found} > 0 THEN 'OBJECT' "
            "ELSE try(json_type(_raw)) END AS __jt"
        )
        inner = f"SELECT *, {kind} FROM (SELECT *, {', '.join(lists)} FROM batch)"
        return f"SELECT {', '.join(['*', *columns])} FROM ({inner})"

    def _field_sql(self, schema: pa.Schema) -> tuple[dict[str, str], list[Branch]]:
        """Per field: the value expression, and the CASE branches of its failure reason."""
        values: dict[str, str] = {}
        reasons: list[Branch] = []
        from_json = set(self._from_json(schema))
        for name, spec in self.fields.items():
            if name in from_json:
                ref = _ident("__v_" + name)
                path = _literal("$." + json.dumps(name, ensure_ascii=False))
                value = text_cast(spec.type, ref)
                if spec.type == "json":
                    ref = f"NULLIF({ref}::VARCHAR, 'null')"
                    value = ref
                shown = f"json_extract(_raw, {path})::VARCHAR"
            elif name in schema.names:
                ref = _ident(name)
                value = typed_cast(spec.type, ref, schema.field(name).type)
                shown = f"to_json({ref})::VARCHAR"
            else:
                ref, value, shown = "NULL", "NULL", "NULL"
            values[name] = value
            reasons += _failure_reason(name, spec, ref, value, shown)
        return values, reasons

    def _raw_sql(self, schema: pa.Schema) -> str:
        """The dead-letter payload: the raw line, or the input row as a JSON object."""
        if self.raw_format == "json":
            return "_raw"
        cols = [n for n in schema.names if not n.startswith("__") and n != "_raw"]
        row_json = (
            f"to_json(struct_pack({', '.join(_ident(c) for c in cols)}))::VARCHAR"
            if cols
            else "'{}'"
        )
        return f"COALESCE(_raw, {row_json})" if "_raw" in schema.names else row_json

    # -- decoding ------------------------------------------------------------------------
    def decode(self, batch: pa.Table, ctx: EpochContext) -> pa.Table:
        """Return the rows of ``batch`` that fit the schema; dead-letter the others."""
        origin_field = [batch.schema.field("__origin")] if "__origin" in batch.column_names else []
        passed = [batch.schema.field(n) for n in self._passthrough(batch.schema)]
        out_schema = pa.schema([*self.schema, *passed, *origin_field])
        if batch.num_rows == 0:
            return empty_table(out_schema)
        if self.raw_format == "json" and "_raw" not in batch.column_names:
            raise ConfigError("json input needs a '_raw' column holding the JSON text")
        if self._lines is not None:
            native = self._native_decode(batch, ctx, out_schema)
            if native is not None:
                return native
        elif batch.num_rows <= FAST_MAX_ROWS:
            fast = self._fast_decode(batch)
            if fast is not None:
                return fast.select(out_schema.names).cast(out_schema)
        return self._duck_decode(batch, ctx, out_schema)

    def _duck_decode(self, batch: pa.Table, ctx: EpochContext, out_schema: pa.Schema) -> pa.Table:
        """Decode ``batch`` with one DuckDB query; dead-letter the rows that do not fit."""
        origin_field = [batch.schema.field("__origin")] if "__origin" in batch.column_names else []
        # Origins stay out of the query (one string per row through DuckDB and back): the
        # result keeps the input's row order, so they are put back here.
        origins = batch.column("__origin") if origin_field else None
        scanned = batch.drop_columns(["__origin"]) if origin_field else batch
        self._con.register("batch", _in_morsels(scanned))
        try:
            result = self._relation(scanned.schema, reasons=False).to_arrow_table()
            all_good = not pc.any(result.column("__bad")).as_py()
            if not all_good:  # the rejects need their reasons: the full query, once more
                result = self._relation(scanned.schema, reasons=True).to_arrow_table()
        finally:
            self._con.unregister("batch")
        if origins is not None:
            result = result.append_column("__origin", origins)
        if all_good:
            return result.select(out_schema.names).cast(out_schema)
        reason = result.column("__reason")
        bad_mask = pc.is_valid(reason)
        bad = result.filter(bad_mask)
        origin = bad.column("__origin") if origin_field else None
        raw = bad.column("__raw_payload")
        if self.raw_format == "arrow":  # the projection keeps the input's row order
            raw = self._payloads(batch.filter(bad_mask))
        ctx.dead_letter(
            stage="decode",
            reason=bad.column("__reason").combine_chunks(),
            raw=raw.combine_chunks(),
            origin=origin.combine_chunks() if origin is not None else None,
        )
        good = result.filter(pc.invert(bad_mask))
        return good.select(out_schema.names).cast(out_schema)

    def _native_decode(
        self, batch: pa.Table, ctx: EpochContext, out_schema: pa.Schema
    ) -> pa.Table | None:
        """``batch`` decoded by the compiled pass, or None when DuckDB must decode all of it.

        The lines it is unsure of (rejects among them) are decoded by DuckDB and put back in
        their places, so the result and the dead letters are the DuckDB decode's.
        """
        assert self._lines is not None
        passed = set(self._passthrough(batch.schema))
        for name in batch.column_names:
            if name.startswith("_") and name not in passed and name not in _BOOKKEEPING:
                return None  # a declared metadata column: the full decode
        raw = batch.column("_raw")
        if not (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)):
            return None
        parts = [self._lines.decode(chunk) for chunk in raw.chunks]
        unsure = np.concatenate([mask for _, mask in parts])
        columns = {
            name: pa.chunked_array([cols[name] for cols, _ in parts], arrow_type(spec.type))
            for name, spec in self.fields.items()
        }
        for name, spec in self.fields.items():
            if spec.required and columns[name].null_count:
                unsure |= to_numpy(pc.is_null(columns[name]))
        if "__invalid_utf8" in batch.column_names:
            unsure |= bools(batch.column("__invalid_utf8"))
        if "__error" in batch.column_names:
            unsure |= to_numpy(pc.is_valid(batch.column("__error")))
        share = np.count_nonzero(unsure) / max(len(unsure), 1)
        if share > _UNSURE_SHARE:
            return None
        for name, default in self._fast_defaults.items():
            if columns[name].null_count:
                columns[name] = pc.fill_null(columns[name], default)
        for name in out_schema.names:  # the metadata columns and origins pass through
            if name not in columns:
                columns[name] = batch.column(name)
        decoded = pa.table(columns).select(out_schema.names)
        if share == 0:
            return decoded
        return self._merge_unsure(batch, decoded, unsure, ctx, out_schema)

    def _merge_unsure(
        self,
        batch: pa.Table,
        decoded: pa.Table,
        unsure: np.ndarray,
        ctx: EpochContext,
        out_schema: pa.Schema,
    ) -> pa.Table:
        """``decoded`` with its unsure rows replaced by DuckDB's decode of them, in order."""
        sure_rows = np.flatnonzero(~unsure)
        unsure_rows = np.flatnonzero(unsure)
        subset = batch.take(from_numpy(unsure_rows)).append_column(
            ROW_INDEX, from_numpy(unsure_rows)
        )
        with_index = pa.schema([*out_schema, pa.field(ROW_INDEX, pa.int64())])
        slow = self._duck_decode(subset, ctx, with_index)
        sure = decoded.take(from_numpy(sure_rows)).append_column(ROW_INDEX, from_numpy(sure_rows))
        merged = pa.concat_tables([sure, slow.select(with_index.names)])
        order = np.argsort(to_numpy(merged.column(ROW_INDEX)), kind="stable")
        return merged.take(from_numpy(order)).drop_columns([ROW_INDEX])

    def _fast_decode(self, batch: pa.Table) -> pa.Table | None:
        """``batch`` decoded by Arrow's JSON reader, or None when DuckDB must decide.

        Arrow's parser is stricter than the decode: it refuses malformed lines, non-objects,
        duplicate keys and any value whose JSON type is not the field's (``true`` or ``"3"``
        in a double field, a number in a string or timestamp field, ``3.0`` in a long one).
        A batch is taken from it only when every line parses and every value passes the
        checks below, so that each value is the one the DuckDB decode gives; any other batch
        (rejects included, which need their reasons) is decoded by DuckDB.
        """
        if self._fast_options is None:
            return None
        passed = set(self._passthrough(batch.schema))
        for name in batch.column_names:
            if name == "__invalid_utf8":
                if pc.any(batch.column(name)).as_py():
                    return None
            elif name.startswith("_") and name not in ("_raw", "__origin") and name not in passed:
                return None  # a declared metadata column or a source's error: the full decode
        raw = batch.column("_raw").combine_chunks()
        # One line, one row: no null or blank line (Arrow skips blank ones), no line break
        # inside a line, and as many rows read as lines (a line with two objects fails that).
        if raw.null_count or not pc.all(pc.starts_with(raw, "{")).as_py():
            return None
        if pc.any(pc.match_substring_regex(raw, "[\r\n]")).as_py():
            return None
        lines = pc.binary_join_element_wise(raw, scalar("", raw.type), scalar("\n", raw.type))
        offset_type = np.int64 if pa.types.is_large_string(lines.type) else np.int32
        offsets = np.frombuffer(lines.buffers()[1], offset_type, len(lines) + 1, lines.offset)
        text = lines.buffers()[2][int(offsets[0]) : int(offsets[-1])]
        try:
            table = pa_json.read_json(
                pa.BufferReader(text),
                read_options=pa_json.ReadOptions(use_threads=False),
                parse_options=self._fast_options,
            )
        except pa.ArrowInvalid:
            return None
        if table.num_rows != len(raw):
            return None
        columns = {}
        for name, spec in self.fields.items():
            column = table.column(name)
            if spec.required and column.null_count:
                return None  # a rejected row
            if spec.type == "double" and not _plain_doubles(column):
                return None
            elif spec.type in _FAST_TEXT_SHAPES and column.null_count < len(column):
                shape = pc.match_substring_regex(column, _FAST_TEXT_SHAPES[spec.type])
                if not pc.all(shape).as_py():
                    return None
                try:
                    column = column.cast(arrow_type(spec.type))
                except pa.ArrowInvalid:
                    return None
            elif spec.type in _FAST_TEXT_SHAPES:
                column = column.cast(arrow_type(spec.type))
            if name in self._fast_defaults:
                column = pc.fill_null(column, self._fast_defaults[name])
            columns[name] = column
        for name in self._passthrough(batch.schema):
            columns[name] = batch.column(name)
        if "__origin" in batch.column_names:
            columns["__origin"] = batch.column("__origin")
        return pa.table(columns)

    def _payloads(self, rows: pa.Table) -> pa.ChunkedArray:
        """The dead-letter payload of each of ``rows`` (typed input rows)."""
        self._con.register("batch", rows)
        try:
            found = self._con.sql(f"SELECT {self._raw_sql(rows.schema)} AS r FROM batch")
            return found.to_arrow_table().column("r")
        finally:
            self._con.unregister("batch")


def reject_flagged(batch: pa.Table, ctx: EpochContext) -> pa.Table:
    """Typed input without a pipeline schema: dead-letter the rows a source flagged.

    Rows with an ``__error`` go to ``ctx.dead_letter`` (payload from ``_raw``); the others
    pass as they are, without ``_raw``. A batch without ``__error`` is returned unchanged.
    """
    if "__error" not in batch.column_names:
        return batch
    bad_mask = pc.is_valid(batch.column("__error"))
    bad = batch.filter(bad_mask)
    if bad.num_rows:
        raw = bad.column("_raw") if "_raw" in bad.column_names else pa.nulls(bad.num_rows)
        origin = bad.column("__origin") if "__origin" in bad.column_names else None
        ctx.dead_letter(
            stage="decode",
            reason=bad.column("__error").combine_chunks(),
            raw=raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw,
            origin=origin.combine_chunks() if origin is not None else None,
        )
    good = batch.filter(pc.invert(bad_mask)) if bad.num_rows else batch
    return good.drop_columns([c for c in ("_raw", "__error") if c in good.column_names])
