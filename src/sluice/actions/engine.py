"""The action engine: evaluates every rule over a scored batch and feeds the outbox.

All rule conditions run in one DuckDB query per batch (``SELECT cond1, cond2, ... FROM
batch``); ``for``/dedupe/cooldown/rate limits work on numpy arrays of the rows that hold;
templates render only for the rows that survive. Each emitted row is encoded to JSON once
per epoch however many rules emit it, and a rule without templates gets its messages
joined from those JSON pieces (no dict per record). See ``actions/base.py`` for the runner
contract.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine

from sluice.actions.base import Action, ActionContext, JobRunner, create_action, parse_options
from sluice.actions.conditions import Columns, UnsupportedError, compile_parsed
from sluice.actions.dispatcher import Dispatcher, Route
from sluice.actions.outbox import (
    AWAITING,
    FAILED,
    PENDING,
    ActionRecord,
    PendingActions,
    PreparedPart,
    RecordGroup,
    RuleCounts,
    ensure_outbox,
    prepare_pending,
    write_prepared,
)
from sluice.actions.rules import (
    RULE_KEYS,
    GroupIndex,
    RuleOptions,
    RuleState,
    key_strings,
)
from sluice.actions.templates import PayloadTemplate, TemplateRenderError
from sluice.config.models import ActionConfig
from sluice.core.arrays import bools, contiguous, from_numpy, scalar, to_numpy
from sluice.core.context import EpochContext
from sluice.core.duck import memory_cursor
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.core.types import duration_us
from sluice.storage.checkpoints import Writer
from sluice.storage.db import get_engine

log = logging.getLogger("sluice.actions")


def _check_condition(name: str, when: str) -> None:
    """Reject a ``when`` that DuckDB cannot parse as one boolean expression."""
    sql = f"SELECT ({when}) AS c"
    try:
        with _parser().cursor() as con:
            parsed = con.execute(f"SELECT json_serialize_sql({_quote(sql)})").fetchone()
    except duckdb.Error as exc:
        raise ConfigError(f"action {name!r}: invalid condition: {exc}", key="when") from None
    body = orjson.loads(parsed[0]) if parsed else {}
    if body.get("error"):
        raise ConfigError(
            f"action {name!r}: invalid condition {when!r}: "
            f"{body.get('error_message', 'syntax error')}",
            key="when",
        )


def _conditions_parse(whens: list[str]) -> list[dict[str, Any]] | None:
    """DuckDB's parse of every ``when`` as one expression (one statement for all); None when
    one does not parse."""
    if not whens:
        return []
    columns = ", ".join(
        f"json_serialize_sql({_quote(f'SELECT ({w}) AS c')}) AS c{i}" for i, w in enumerate(whens)
    )
    try:
        with _parser().cursor() as con:
            parsed = con.execute(f"SELECT {columns}").fetchone()
    except duckdb.Error:
        return None
    if parsed is None:
        return None
    trees = [orjson.loads(p) for p in parsed]
    return None if any(tree.get("error") for tree in trees) else trees


@functools.cache
def _parser() -> duckdb.DuckDBPyConnection:
    """A connection to the process's shared in-memory DuckDB (``memory_cursor``), for
    conditions: parsing, binding and evaluating.

    Each user takes a cursor (its own connection, so its registered ``batch`` is its own);
    a new database instance would cost ~40 ms of CPU and a thread pool.
    """
    return memory_cursor()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Rule:
    """One compiled action: condition, options, state, templates and the action type."""

    name: str
    type: str
    when: str
    options: RuleOptions
    state: RuleState
    action: Action
    payload: PayloadTemplate | None
    fields: dict[str, PayloadTemplate]

    @classmethod
    def compile(cls, config: ActionConfig, context: ActionContext, *, parsed: bool = False) -> Rule:
        """Validate ``config`` (errors name the action) and build the rule; ``parsed``: its
        condition is known to parse."""
        extra = config.options
        rule_opts = {k: v for k, v in extra.items() if k in RULE_KEYS}
        type_opts = {k: v for k, v in extra.items() if k not in RULE_KEYS}
        options: RuleOptions = parse_options(RuleOptions, rule_opts, config.name)  # type: ignore[arg-type]
        if not parsed:
            _check_condition(config.name, config.when)
        action = create_action(config.type, config.name, type_opts, context)
        payload = (
            PayloadTemplate(options.payload, config.name) if options.payload is not None else None
        )
        fields = {f: PayloadTemplate(t, config.name, f) for f, t in action.templates().items()}
        return cls(
            config.name,
            config.type,
            config.when,
            options,
            RuleState.build(options),
            action,
            payload,
            fields,
        )


def _compile(index: int, config: ActionConfig, context: ActionContext, parsed: bool) -> Rule:
    try:
        return Rule.compile(config, context, parsed=parsed)
    except ConfigError as exc:
        raise exc.within(f"actions[{index}]") from None


class ActionEngine:
    """Evaluates the pipeline's action rules per epoch and owns the outbox dispatcher."""

    def __init__(
        self,
        actions: Sequence[ActionConfig],
        *,
        pipeline: str,
        settings: Settings | None = None,
        event_time: str | None = None,
        job_runner: JobRunner | None = None,
        dispatch: bool = True,
        clock: Callable[[], float] = time.time,
        dispatcher_options: dict[str, Any] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings or Settings()
        self.event_time = event_time
        self.clock = clock
        context = ActionContext(pipeline, self.settings, job_runner)
        names = [a.name for a in actions]
        if len(set(names)) != len(names):
            raise ConfigError(f"pipeline {pipeline!r}: action names must be unique")
        # all conditions parsed at once; one by one (in order, with the other checks) only
        # to name the one that fails
        trees = _conditions_parse([a.when for a in actions])
        self.rules = [_compile(i, cfg, context, trees is not None) for i, cfg in enumerate(actions)]
        # conditions of a simple shape are evaluated with numpy; the others by DuckDB
        self._fast = [compile_parsed(tree) for tree in trees or [{} for _ in actions]]
        self._slow_queries: dict[tuple[int, ...], str] = {}
        # every condition in one statement, built once per run
        self._exprs = [
            f"COALESCE(CAST(({r.when}) AS BOOLEAN), false) AS r{i}"
            for i, r in enumerate(self.rules)
        ]
        self._query = f"SELECT {', '.join(self._exprs)} FROM batch"
        self._con = memory_cursor()  # evaluates the conditions (UTC, as the transforms)
        self._dispatch = dispatch
        self._dispatcher_options = dispatcher_options or {}
        self._dispatcher: Dispatcher | None = None
        self._written: list[PreparedPart] = []  # by the last outbox writer, until notify()

    def start(self) -> ActionEngine:
        """Migrate the outbox tables and start the dispatcher (when ``dispatch``); once."""
        if self._dispatcher is None:
            db = get_engine(str(self.settings.metadata_url))
            ensure_outbox(db)
            routes = {(self.pipeline, r.name): Route(r.action, r.options.retry) for r in self.rules}
            self._dispatcher = Dispatcher(db, routes, clock=self.clock, **self._dispatcher_options)
            if self._dispatch:
                self._dispatcher.start()
        return self

    @property
    def dispatcher(self) -> Dispatcher:
        """The outbox dispatcher (after ``start()``)."""
        if self._dispatcher is None:
            raise RuntimeError("the action engine is not started")
        return self._dispatcher

    @property
    def db(self) -> Engine:
        """The metadata database holding the outbox (after ``start()``)."""
        return self.dispatcher.engine

    def check(self, schema: pa.Schema) -> None:
        """Bind every rule's ``when`` against ``schema``; errors name ``actions[i].when``."""
        con = _parser().cursor()
        try:
            con.register("batch", schema.empty_table())
            try:  # all at once; one by one only to name the one that fails
                con.execute(self._query)
                return
            except duckdb.Error:
                pass
            for i, rule in enumerate(self.rules):
                try:
                    con.execute(f"SELECT CAST(({rule.when}) AS BOOLEAN) FROM batch")
                except duckdb.Error as exc:
                    message = str(exc).strip().splitlines()[0]
                    raise ConfigError(
                        f"action {rule.name!r}: {message}", key=f"actions[{i}].when"
                    ) from None
        finally:
            con.close()

    # -- per epoch -----------------------------------------------------------------------
    def evaluate(self, table: pa.Table, ctx: EpochContext) -> PendingActions:
        """Evaluate every rule over the scored ``table``; return the records to commit."""
        pending = PendingActions()
        if table.num_rows == 0 or not self.rules:
            return pending
        conditions = self._conditions(table)
        times = self._times(table)
        now_us = int(self.clock() * 1_000_000)
        keys = EpochKeys(table)
        emitted: list[tuple[Rule, RuleCounts, np.ndarray]] = []
        for rule, cond in zip(self.rules, conditions, strict=True):
            counts = RuleCounts(rule.name)
            pending.counts.append(counts)
            if cond is None:
                counts.rule_errors = 1
                ctx.counters["action_rule_errors"] += 1
                continue
            if rule.state.streaks is not None:
                cond = self._streaks(rule, cond, times, keys)
            rows = self._select(rule, keys, cond, times, now_us, counts)
            if len(rows):
                emitted.append((rule, counts, rows))
            ctx.counters["actions_fired"] += counts.fired
            ctx.counters["actions_emitted"] += counts.emitted
            ctx.counters["actions_suppressed"] += (
                counts.suppressed_dedupe + counts.suppressed_cooldown + counts.suppressed_rate_limit
            )
        if emitted:
            fired = FiredRows(table, np.concatenate([rows for _, _, rows in emitted]))
            for rule, counts, rows in emitted:
                pending.add(self._records(rule, keys, rows, ctx.epoch, counts, fired))
        return pending

    def _conditions(self, table: pa.Table) -> list[np.ndarray | None]:
        """Every rule's condition as a bool array: simple ones with numpy, the others in one
        DuckDB query (per rule if that fails)."""
        results: list[np.ndarray | None] = [None] * len(self.rules)
        columns, slow = Columns(table), []
        for i, node in enumerate(self._fast):
            if node is None:
                slow.append(i)
                continue
            try:
                value, known = node.truth(columns, table.num_rows)
            except UnsupportedError:  # a column of a type only DuckDB compares
                slow.append(i)
                continue
            # NULL counts as false, as COALESCE(..., false)
            results[i] = value if known is None else value & known
        if slow:
            for i, found in zip(slow, self._slow_conditions(table, tuple(slow)), strict=True):
                results[i] = found
        return results

    def _slow_conditions(self, table: pa.Table, which: tuple[int, ...]) -> list[np.ndarray | None]:
        """The conditions of rules ``which`` by DuckDB: in one query, else one by one."""
        query = self._slow_queries.get(which)
        if query is None:
            exprs = ", ".join(self._exprs[i] for i in which)
            query = self._slow_queries[which] = f"SELECT {exprs} FROM batch"
        self._con.register("batch", table)
        try:
            try:  # numpy straight from DuckDB: ~25% less than through Arrow's bit arrays
                out = self._con.execute(query).fetchnumpy()
                return [_filled(out[f"r{i}"]) for i in which]
            except duckdb.Error:
                return [self._one_condition(self._exprs[i], self.rules[i]) for i in which]
        finally:
            self._con.unregister("batch")

    def _one_condition(self, expr: str, rule: Rule) -> np.ndarray | None:
        try:
            return bools(self._con.sql(f"SELECT {expr} FROM batch").to_arrow_table().column(0))
        except duckdb.Error as exc:
            log.warning("action %s: condition failed on this batch: %s", rule.name, exc)
            return None

    def _times(self, table: pa.Table) -> np.ndarray:
        """Event time in microseconds per row, else the evaluation clock."""
        if self.event_time and self.event_time in table.column_names:
            col = pc.cast(table.column(self.event_time), pa.timestamp("us", tz="UTC"))
            values = pc.cast(col, pa.int64())
            now = int(self.clock() * 1_000_000)
            return np.array(to_numpy(pc.fill_null(values, scalar(now, pa.int64()))), np.int64)
        return np.full(table.num_rows, int(self.clock() * 1_000_000), dtype=np.int64)

    def _select(
        self,
        rule: Rule,
        keys: EpochKeys,
        cond: np.ndarray,
        times: np.ndarray,
        now_us: int,
        counts: RuleCounts,
    ) -> np.ndarray:
        """Indices of rows that fire and survive dedupe, cooldown and rate limit."""
        opts, state = rule.options, rule.state
        rows = np.flatnonzero(cond)
        counts.fired = len(rows)
        horizon = int(times.max()) if len(times) else now_us
        dedupe_keys = cool_keys = rate_keys = None
        if state.dedupe is not None and opts.dedupe is not None and len(rows):
            dedupe_keys = keys.of(_cols(opts.dedupe.key), rows)
            keep = state.dedupe.check(dedupe_keys, times[rows])
            counts.suppressed_dedupe = int((~keep).sum())
            rows, dedupe_keys = rows[keep], dedupe_keys[keep]
        if state.cooldown is not None and len(rows):
            cool_keys = keys.of(_cols(opts.group_by), rows)
            keep = state.cooldown.check(cool_keys, times[rows])
            counts.suppressed_cooldown = int((~keep).sum())
            rows, cool_keys = rows[keep], cool_keys[keep]
            dedupe_keys = dedupe_keys[keep] if dedupe_keys is not None else None
        if state.rate is not None and opts.rate_limit is not None and len(rows):
            rate_keys = keys.of(_cols(opts.rate_limit.key), rows)  # type: ignore[union-attr]
            keep = state.rate.check(rate_keys, now_us)
            counts.suppressed_rate_limit = int((~keep).sum())
            rows, rate_keys = rows[keep], rate_keys[keep]
            dedupe_keys = dedupe_keys[keep] if dedupe_keys is not None else None
            cool_keys = cool_keys[keep] if cool_keys is not None else None
        if state.dedupe is not None:
            state.dedupe.commit(_or_empty(dedupe_keys), times[rows], horizon)
        if state.cooldown is not None:
            state.cooldown.commit(_or_empty(cool_keys), times[rows], horizon)
        if state.rate is not None:
            state.rate.commit(_or_empty(rate_keys), now_us)
        counts.emitted = len(rows)
        return rows

    def _streaks(
        self,
        rule: Rule,
        cond: np.ndarray,
        times: np.ndarray,
        keys: EpochKeys,
    ) -> np.ndarray:
        streaks = rule.state.streaks
        assert streaks is not None
        if not cond.any() and not streaks.open:
            return cond
        return streaks.apply(cond, keys.groups(_cols(rule.options.group_by)), times)

    def _records(
        self,
        rule: Rule,
        epoch_keys: EpochKeys,
        rows: np.ndarray,
        epoch: int,
        counts: RuleCounts,
        fired: FiredRows,
    ) -> RecordGroup | list[ActionRecord]:
        keys = epoch_keys.of(rule.options.ordering_columns(), rows).tolist()
        at = fired.positions(rows).tolist()
        status = AWAITING if rule.options.approval == "required" else PENDING
        expires = (
            self.clock() + duration_us(rule.options.approval_timeout) / 1e6
            if status == AWAITING
            else None
        )
        name, kind, severity = rule.name, rule.type, rule.options.severity
        if rule.payload is None and not rule.fields:
            # the default message, joined from JSON pieces: each row is encoded once per epoch
            texts = self._default_texts(rule, epoch, keys, at, fired)
            lazy = rule.action.batched  # delivered in whole batches: no outbox row each
            return RecordGroup(
                name, kind, severity, status, expires, rows.tolist(), keys, texts, lazy
            )
        out = []
        for index, key, i in zip(rows.tolist(), keys, at, strict=True):
            record = ActionRecord(name, kind, str(index), key, severity, {}, status, None, expires)
            row, reason = orjson.loads(fired.json[i]), orjson.loads(fired.reasons[i])
            try:
                record.message = self._message(rule, row, key, epoch, reason)
            except TemplateRenderError as exc:
                record.status, record.error, record.expires_at = FAILED, str(exc), None
                record.message = {"payload": None, "row": row}
                counts.template_errors += 1
            out.append(record)
        return out

    def _default_texts(
        self, rule: Rule, epoch: int, keys: list[str], at: list[int], fired: FiredRows
    ) -> list[bytes]:
        """The JSON of ``_message``'s default message, one per row, without a dict per row."""
        head = orjson.dumps(
            {
                "action": rule.name,
                "pipeline": self.pipeline,
                "epoch": epoch,
                "severity": rule.options.severity,
            }
        )
        start = b'{"payload":' + head[:-1] + b',"key":'
        starts = {key: start + orjson.dumps(key) for key in set(keys)}  # once per key
        tails = fired.tails()
        return [starts[key] + tails[i] for key, i in zip(keys, at, strict=True)]

    def _message(
        self, rule: Rule, row: dict[str, Any], key: str, epoch: int, reason: str | None
    ) -> dict[str, Any]:
        default = {
            "action": rule.name,
            "pipeline": self.pipeline,
            "epoch": epoch,
            "severity": rule.options.severity,
            "key": key,
            "reason": reason,
            "row": row,
        }
        if rule.payload is None and not rule.fields:  # nothing to render: skip the variables
            return {"payload": default}
        variables = {**row, **default}  # the row's columns, and these names over them
        message = {
            "payload": rule.payload.render(variables) if rule.payload is not None else default
        }
        for name, template in rule.fields.items():
            message[name] = template.render(variables)
        return message

    # -- checkpoint and lifecycle --------------------------------------------------------
    def outbox_writer(self, pending: PendingActions, epoch: int) -> Writer:
        """A writer that inserts ``pending`` in the checkpoint transaction of ``epoch``.

        The rows are made here (messages packed, keys made), so the transaction, on the
        runner's main thread, only inserts them.
        """
        prepared = prepare_pending(self.pipeline, epoch, pending, self.clock())
        self._written = []  # what an earlier, failed transaction wrote is gone

        def write(conn: Connection) -> None:
            self._written = write_prepared(conn, prepared)

        return write

    def notify(self) -> None:
        """After a commit: hand the dispatcher the messages just written (it delivers them
        without reading them back) and wake it."""
        written, self._written = self._written, []
        if written:
            self.dispatcher.remember(written)
        self.dispatcher.wake()

    def state(self) -> bytes:
        """Rule state (for/dedupe/cooldown/rate) as bytes for the checkpoint."""
        return orjson.dumps({r.name: r.state.dump() for r in self.rules})

    def restore(self, blob: bytes) -> None:
        """Restore rule state saved by ``state()``."""
        data = orjson.loads(blob)
        for rule in self.rules:
            if rule.name in data:
                rule.state.load(data[rule.name])

    def close(self, drain_seconds: float = 10.0) -> None:
        """Deliver what is due (bounded in time) if started, stop the dispatcher, release."""
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.stop()
            deadline = time.monotonic() + drain_seconds
            try:
                while time.monotonic() < deadline and dispatcher.run_once() > 0:
                    pass
            except Exception:
                log.exception("draining the outbox failed; pending actions stay queued")
            dispatcher.stop()
        for rule in self.rules:
            rule.action.close()
        self._con.close()


def _cols(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _or_empty(keys: np.ndarray | None) -> np.ndarray:
    return keys if keys is not None else np.zeros(0, dtype=object)


class EpochKeys:
    """The key strings of an epoch's rows, as :func:`key_strings` makes them; a one-column key
    is encoded once per epoch for all rules (dictionary encoding of the whole column)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._encoded: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._groups: dict[tuple[str, ...], GroupIndex] = {}

    def of(self, columns: list[str], rows: np.ndarray) -> np.ndarray:
        """The key of each of ``rows`` (columns joined by ``|``; '' when there are none)."""
        if len(columns) != 1:  # several columns: joined for these rows only
            return key_strings(self.table, columns, rows)
        uniques, codes = self._encode(columns)
        return uniques[codes[rows]]

    def groups(self, columns: list[str]) -> GroupIndex:
        """Every row grouped by its key over ``columns``."""
        found = self._groups.get(tuple(columns))
        if found is None:
            found = self._groups[tuple(columns)] = GroupIndex.build(*self._encode(columns))
        return found

    def _encode(self, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
        found = self._encoded.get(tuple(columns))
        if found is None:
            found = self._encoded[tuple(columns)] = _group_index(self.table, columns)
        return found


class FiredRows:
    """The rows of an epoch that some rule emits, each encoded as JSON once.

    ``json[i]`` is the visible columns of ``rows[i]`` as a JSON object (``orjson``,
    ``default=str``, as a row dict would be encoded), ``reasons[i]`` its first non-empty
    ``<model>_reason`` as JSON; ``positions`` maps table rows to ``i``.
    """

    def __init__(self, table: pa.Table, rows: np.ndarray) -> None:
        self.rows = np.unique(rows)
        visible = [c for c in table.column_names if not c.startswith("__")]
        taken = table.select(visible).take(from_numpy(self.rows.astype(np.int64)))
        dumps = orjson.dumps
        rows = _with_iso_times(taken).to_pylist()
        self.json: list[bytes] = [dumps(row, default=str) for row in rows]
        self.reasons: list[bytes] = [dumps(reason) for reason in _reasons(taken)]
        self._tails: list[bytes] | None = None

    def tails(self) -> list[bytes]:
        """Per fired row, the end of its default message: ``,"reason":...,"row":...}}``.

        Made once per epoch, so each rule emitting the row only prepends its head and key.
        """
        if self._tails is None:
            self._tails = [
                b',"reason":' + reason + b',"row":' + row + b"}}"
                for reason, row in zip(self.reasons, self.json, strict=True)
            ]
        return self._tails

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """The index into ``json``/``reasons`` of each of ``rows`` (all among the fired)."""
        return np.searchsorted(self.rows, rows)


def _with_iso_times(table: pa.Table) -> pa.Table:
    """``table`` with its UTC or naive microsecond timestamps as the text orjson writes.

    Making a Python datetime per value is most of ``to_pylist``'s time; Arrow formats the
    same ISO-8601 text (``2026-01-01T00:00:01.5+00:00`` is written with six digits, and
    none when the microseconds are 0). Other units, zones and years keep their datetimes.
    """
    columns = list(table.columns)
    for i, field in enumerate(table.schema):
        kind = field.type
        if not pa.types.is_timestamp(kind) or kind.unit != "us" or kind.tz not in _ISO_ZONES:
            continue
        column = table.column(i)
        bounds = pc.min_max(column)
        low, high = bounds["min"].value, bounds["max"].value
        if low is None or high is None or low < _YEAR_1000 or high >= _YEAR_10000:
            continue
        # Arrow's cast writes "2026-01-01 00:00:01.500000" (UTC wall time), ~7x faster than
        # strftime("%Y-%m-%dT%H:%M:%S"), which writes the same with a "T"
        text = pc.cast(pc.cast(column, pa.timestamp("us")), pa.string())
        text = pc.replace_substring(text, " ", "T", max_replacements=1)
        text = pc.replace_substring_regex(text, r"\.000000$", "")
        zone, empty = scalar(_ISO_ZONES[kind.tz], pa.string()), scalar("", pa.string())
        columns[i] = pc.binary_join_element_wise(text, zone, empty)
    return pa.table(columns, names=table.column_names)


_ISO_ZONES = {None: "", "UTC": "+00:00", "+00:00": "+00:00", "Etc/UTC": "+00:00"}
_YEAR_1000, _YEAR_10000 = -30_610_224_000_000_000, 253_402_300_800_000_000  # in microseconds


def _reasons(taken: pa.Table) -> list[Any]:
    """The first non-empty ``<model>_reason`` of each row (None when there is none)."""
    columns = [c for c in taken.column_names if c.endswith("_reason")]
    if not columns:
        return [None] * taken.num_rows
    empty, null = scalar("", pa.string()), pa.nulls(1, pa.string())[0]
    parts = [
        pc.if_else(
            pc.equal(pc.cast(taken.column(c), pa.string()), empty),
            null,
            pc.cast(taken.column(c), pa.string()),
        )
        for c in columns
    ]
    merged = pc.coalesce(*parts) if len(parts) > 1 else parts[0]
    return list(merged.to_pylist())


def _filled(values: np.ndarray) -> np.ndarray:
    """A condition column from ``fetchnumpy`` as bools (never NULL: COALESCE'd)."""
    return np.asarray(np.ma.filled(values, False), dtype=bool)


def _group_index(table: pa.Table, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct group keys as strings, group code per row) over the whole table."""
    n = table.num_rows
    if not columns:
        return np.array([""], dtype=object), np.zeros(n, dtype=np.int64)
    if len(columns) == 1:
        encoded = pc.dictionary_encode(contiguous(table.column(columns[0])), null_encoding="encode")
        names = pc.fill_null(pc.cast(encoded.dictionary, pa.string()), scalar("", pa.string()))
        uniques = np.empty(len(names), dtype=object)
        uniques[:] = names.to_pylist()
        return uniques, to_numpy(encoded.indices).astype(np.int64)
    keys = key_strings(table, columns, np.arange(n))
    uniques, codes = np.unique(keys.astype(str), return_inverse=True)
    return uniques.astype(object), codes.astype(np.int64)
