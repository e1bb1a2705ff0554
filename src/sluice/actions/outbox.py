"""The actions outbox, the attempt log and per-epoch counts in the metadata database.

An epoch's actions are inserted in the checkpoint transaction of that epoch. Their
messages are written once per (epoch, action) into ``action_batches`` (parts of at most
8 MB of newline-separated JSON, from 4 KB on stored as one Zstandard frame); the rows are
made before the transaction (``prepare_pending``), which only inserts them. Each action
keeps a narrow ``actions_outbox`` row (status, attempts, key, ``batch_id``/``batch_index``
of its message), so marking it delivered does not rewrite its message. An epoch whose
batches are already recorded (a replay) inserts nothing: its actions are recorded exactly
once. Each row's ``idempotency_key`` is a hash of (pipeline, action, epoch, row), the same
in any replay, for receivers to deduplicate an at-least-once delivery.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TextClause,
    UniqueConstraint,
    bindparam,
    delete,
    event,
    func,
    insert,
    select,
    text,
)

from sluice.actions import KEY_WIDTH
from sluice.storage.db import METADATA, ensure_tables
from sluice.storage.upsert import insert_ignore, insert_rows

PENDING, DELIVERED, FAILED, DEAD = "pending", "delivered", "failed", "dead"
AWAITING, EXPIRED, REJECTED = "awaiting_approval", "expired", "rejected"
STATUSES = (PENDING, DELIVERED, FAILED, DEAD, AWAITING, EXPIRED, REJECTED)


def _status_index(name: str, column: str, status: str) -> Index:
    """An index on (pipeline, ``column``) of the rows in ``status`` only (a partial index)."""
    where = text(f"status = '{status}'")
    index = Index(name, "pipeline", column, sqlite_where=where)
    # ``postgresql_where`` given here would import SQLAlchemy's PostgreSQL dialect in every
    # process that declares the tables; it is added when the index is created on PostgreSQL.
    event.listen(index, "before_create", _postgresql_where)
    return index


def _postgresql_where(index: Index, connection: Connection, **_kw: Any) -> None:
    """Give ``index`` its SQLite ``where`` on PostgreSQL too, before it is created there."""
    if connection.dialect.name == "postgresql":
        index.dialect_kwargs["postgresql_where"] = index.dialect_kwargs["sqlite_where"]


outbox = Table(
    "actions_outbox",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(200), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("action", String(200), nullable=False),
    Column("type", String(50), nullable=False),
    Column("key", String(500), nullable=False, default=""),
    Column("severity", String(50), nullable=False, default="info"),
    Column("idempotency_key", String(64), nullable=False),
    Column("payload", Text),  # rows from before action_batches; else NULL
    Column("status", String(30), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("batch_id", Integer),
    Column("batch_index", Integer),
    _status_index("ix_actions_outbox_pending", "id", PENDING),
    _status_index("ix_actions_outbox_awaiting", "expires_at", AWAITING),
)
batches = Table(
    "action_batches",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(200), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("action", String(200), nullable=False),
    Column("part", Integer, nullable=False),
    Column("count", Integer, nullable=False),
    Column("messages", LargeBinary, nullable=False),
    # JSON array: per message its idempotency key (40 characters) then its ordering key
    Column("message_keys", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("pipeline", "epoch", "action", "part", name="uq_action_batches_part"),
)
# A lazy batch: its actions (of a type delivered in whole batches) have no outbox rows;
# they all have the status, attempts and times of this narrow row (kept apart from the
# messages, so marking them delivered does not rewrite those) and the ids first_id ..
# first_id + count - 1. Deleted when its actions get outbox rows (``materialise``).
states = Table(
    "action_batch_states",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=False),  # action_batches.id
    Column("pipeline", String(200), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("action", String(200), nullable=False),
    Column("type", String(50), nullable=False),
    Column("severity", String(50), nullable=False),
    Column("first_id", Integer, nullable=False, index=True),
    Column("count", Integer, nullable=False),
    Column("status", String(30), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    _status_index("ix_action_batch_states_pending", "id", PENDING),
)
attempts = Table(
    "action_attempts",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("outbox_id", Integer, nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("status", String(30), nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("error", Text),
    Column("at", DateTime(timezone=True), nullable=False),
    # one attempt of the outbox rows outbox_id..last_outbox_id of batch_id (one call)
    Column("last_outbox_id", Integer),
    Column("batch_id", Integer, index=True),
)
counts = Table(
    "action_counts",
    METADATA,
    Column("pipeline", String(200), primary_key=True),
    Column("action", String(200), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("fired", Integer, nullable=False),
    Column("emitted", Integer, nullable=False),
    Column("suppressed_dedupe", Integer, nullable=False),
    Column("suppressed_cooldown", Integer, nullable=False),
    Column("suppressed_rate_limit", Integer, nullable=False),
    Column("template_errors", Integer, nullable=False),
    Column("rule_errors", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
TABLES = (
    "actions_outbox",
    "action_batches",
    "action_batch_states",
    "action_attempts",
    "action_counts",
)
PART_BYTES = 8 << 20  # the most message bytes one action_batches row holds
_PACK_MIN = 4096  # parts with fewer message bytes are stored as they are
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first bytes of a Zstandard frame


@functools.cache
def _zstd() -> pa.Codec | None:
    """Arrow's Zstandard codec at level 1, if this pyarrow build has it (PyPI's do).

    On an epoch's messages level 1 took 3.0 ms for 3.2 MB (to 0.25 MB) and level 3 3.8 ms
    (to 0.26 MB).
    """
    return pa.Codec("zstd", compression_level=1) if pa.Codec.is_available("zstd") else None


def pack_messages(texts: list[bytes]) -> bytes:
    """The stored ``messages`` of a batch part: ``texts`` one per line, and from
    ``_PACK_MIN`` bytes on one Zstandard frame.

    The messages of an epoch repeat each other (the rows several rules emit, the same
    keys): 3 MB pack into ~0.25 MB in 3-6 ms with the interpreter lock released, so the
    checkpoint's transaction writes and syncs a tenth of the bytes.
    """
    joined = b"\n".join(texts)
    codec = _zstd()
    if len(joined) < _PACK_MIN or codec is None:
        return joined
    return codec.compress(joined, asbytes=True)


def unpack_messages(blob: bytes | memoryview) -> list[bytes]:
    """The messages of a stored batch part (``pack_messages``), in order.

    A message is a JSON object, so plain text starts with ``{``, never with the frame's
    magic number.
    """
    data = bytes(blob)
    if data[:4] == _ZSTD_MAGIC:
        data = pa.input_stream(pa.py_buffer(data), compression="zstd").read()
    return data.split(b"\n")


def ensure_outbox(engine: Engine) -> None:
    """Create the outbox, attempt and count tables if needed."""
    ensure_tables(engine, *TABLES)


def idempotency_key(pipeline: str, action: str, epoch: int, row: str) -> str:
    """Deterministic key of one action for one row of one epoch (40 hex digits).

    For a row number (what the engine makes): a hash of (pipeline, action, epoch), then
    the number, so a batch hashes once; any other row id: a hash of all four.
    """
    return keyed_row(idempotency_prefix(pipeline, action, epoch), pipeline, action, epoch, row)


def idempotency_prefix(pipeline: str, action: str, epoch: int) -> str:
    """The first 28 hex digits of the idempotency keys of one action's numbered rows."""
    text = "\x1f".join((pipeline, action, str(epoch)))
    return hashlib.sha256(text.encode()).hexdigest()[:28]


def keyed_row(prefix: str, pipeline: str, action: str, epoch: int, row: str) -> str:
    """``idempotency_key`` given the action's ``idempotency_prefix``."""
    if row.isdecimal() and len(row) <= 14:
        return prefix + format(int(row), "012x")
    text = "\x1f".join((pipeline, action, str(epoch), row))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class ActionRecord:
    """One action to insert into the outbox (before it has an id).

    The message is either a dict or ``text``, the same already encoded as JSON (the engine
    joins it from each fired row's JSON, encoded once per epoch, as bytes); each is derived
    from the other on first use.
    """

    __slots__ = (
        "_message",
        "_text",
        "action",
        "error",
        "expires_at",
        "key",
        "row",
        "severity",
        "status",
        "type",
    )

    def __init__(
        self,
        action: str,
        type: str,
        row: str,
        key: str,
        severity: str,
        message: dict[str, Any] | None = None,
        status: str = PENDING,
        error: str | None = None,
        expires_at: float | None = None,
        *,
        text: str | bytes | None = None,
    ) -> None:
        self.action, self.type, self.row, self.key, self.severity = action, type, row, key, severity
        self.status, self.error, self.expires_at = status, error, expires_at
        self._message = message if message is not None or text is not None else {}
        self._text = text.encode() if isinstance(text, str) else text

    @property
    def message(self) -> dict[str, Any]:
        """The message: ``payload`` and the rendered template fields."""
        if self._message is None:
            self._message = orjson.loads(self._text or b"{}")
        return self._message

    @message.setter
    def message(self, value: dict[str, Any]) -> None:
        self._message, self._text = value, None

    def encoded(self) -> str:
        """The message as JSON text (what a delivery hands the action type)."""
        return self.encoded_bytes().decode()

    def encoded_bytes(self) -> bytes:
        """The message as the UTF-8 JSON stored in its batch (one line: no raw newline)."""
        if self._text is None:
            self._text = orjson.dumps(self._message, default=str)
        return self._text


@dataclass
class RuleCounts:
    """What one rule did with one epoch."""

    action: str
    fired: int = 0
    emitted: int = 0
    suppressed_dedupe: int = 0
    suppressed_cooldown: int = 0
    suppressed_rate_limit: int = 0
    template_errors: int = 0
    rule_errors: int = 0


@dataclass
class RecordGroup:
    """The actions one rule emits in one epoch with its default message, column by column.

    ``rows`` are the table's row numbers, ``keys`` the ordering keys, ``texts`` the encoded
    messages; status, expiry and severity are the rule's. The outbox writes a group
    without an ``ActionRecord`` per row; ``records()`` makes them when someone asks.
    """

    action: str
    type: str
    severity: str
    status: str
    expires_at: float | None
    rows: list[int]
    keys: list[str]
    texts: list[bytes]
    # the action type delivers whole batches: its actions get no outbox rows (status per
    # batch in ``action_batches``) while they are pending or delivered
    lazy: bool = False

    def __len__(self) -> int:
        return len(self.rows)

    def records(self) -> list[ActionRecord]:
        """The group as one ``ActionRecord`` per action."""
        return [
            ActionRecord(
                self.action,
                self.type,
                str(row),
                key,
                self.severity,
                None,
                self.status,
                None,
                self.expires_at,
                text=text,
            )
            for row, key, text in zip(self.rows, self.keys, self.texts, strict=True)
        ]


class PendingActions:
    """The outcome of ``ActionEngine.evaluate`` for one epoch: records and counts.

    Records are kept as the engine made them, per rule: a ``RecordGroup`` or a list of
    ``ActionRecord``; ``records`` lists them all (made on first use), the outbox writes
    the groups as they are.
    """

    def __init__(
        self, records: list[ActionRecord] | None = None, counts: list[RuleCounts] | None = None
    ) -> None:
        self.counts: list[RuleCounts] = counts if counts is not None else []
        self.parts: list[RecordGroup | list[ActionRecord]] = []
        if records:
            self.parts.append(records)
        self._records: list[ActionRecord] | None = None

    def add(self, part: RecordGroup | list[ActionRecord]) -> None:
        """Append one rule's records of the epoch."""
        if len(part):
            self.parts.append(part)
            self._records = None

    @property
    def records(self) -> list[ActionRecord]:
        """Every record, in the order the rules emitted them."""
        if self._records is None:
            self._records = [
                r for p in self.parts for r in (p.records() if isinstance(p, RecordGroup) else p)
            ]
        return self._records

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)


_COLUMNS = (
    "pipeline",
    "epoch",
    "action",
    "type",
    "key",
    "severity",
    "idempotency_key",
    "status",
    "attempts",
    "next_attempt_at",
    "expires_at",
    "last_error",
    "created_at",
    "updated_at",
    "batch_id",
    "batch_index",
)


_INSERT_BATCH = insert(batches).returning(batches.c.id)


@dataclass
class PreparedPart:
    """One ``action_batches`` row to insert, made before the transaction: its messages
    packed, the keys of its messages, and what the outbox rows of its actions need.

    ``texts`` and ``keys`` are the messages and the (idempotency + ordering) keys as they
    are packed; ``batch_id`` is set once the row is inserted.
    """

    pipeline: str
    epoch: int
    action: str
    part: int
    type: str
    severity: str
    status: str
    error: str | None
    expires_at: float | None
    lazy: bool
    messages: bytes
    message_keys: str
    others: list[int]  # indices whose status, error or expiry differ from the first's
    records: list[ActionRecord]  # the part's records (none for a group)
    texts: list[bytes]
    keys: list[str]
    size: int  # bytes of the messages before packing
    batch_id: int | None = None

    @property
    def count(self) -> int:
        """The number of messages (actions) in the part."""
        return len(self.texts)


@dataclass
class PreparedActions:
    """An epoch's actions made ready to insert (``prepare_pending``): the work that needs
    no database, done before the checkpoint transaction (by the thread that ran the rules)."""

    pipeline: str
    epoch: int
    now: float
    counts: list[RuleCounts]
    parts: list[PreparedPart]


def prepare_pending(
    pipeline: str, epoch: int, pending: PendingActions, now: float
) -> PreparedActions:
    """Cut ``pending``'s messages into batch parts, pack them and make their keys."""
    prepared = PreparedActions(pipeline, epoch, now, list(pending.counts), [])
    parts: dict[str, int] = {}  # action -> parts made
    for item in _by_action(pending.parts):
        action = item.action if isinstance(item, RecordGroup) else item[0].action
        prefix = idempotency_prefix(pipeline, action, epoch)
        if isinstance(item, RecordGroup):
            keys = _group_keys(prefix, pipeline, item, epoch)
            texts = item.texts
        else:
            keys = [keyed_row(prefix, pipeline, action, epoch, r.row) + r.key[:500] for r in item]
            texts = [r.encoded_bytes() for r in item]
        lengths = np.fromiter(map(len, texts), np.int64, len(texts)) + 1  # and a newline
        for start, end in _cuts(lengths):
            part = parts.get(action, 0)
            parts[action] = part + 1
            if isinstance(item, RecordGroup):
                kind, severity, status = item.type, item.severity, item.status
                error, expires, others = None, item.expires_at, []
                chunk: list[ActionRecord] = []
            else:
                chunk = item[start:end]
                first = chunk[0]
                kind, severity, status = first.type, first.severity, first.status
                error, expires = first.error, first.expires_at
                same = (status, error, expires)
                others = [
                    i for i, r in enumerate(chunk) if (r.status, r.error, r.expires_at) != same
                ]
            texts_part, keys_part = texts[start:end], keys[start:end]
            prepared.parts.append(
                PreparedPart(
                    pipeline,
                    epoch,
                    action,
                    part,
                    kind,
                    severity,
                    status,
                    error,
                    expires,
                    isinstance(item, RecordGroup) and item.lazy and status == PENDING,
                    pack_messages(texts_part),
                    orjson.dumps(keys_part).decode(),
                    others,
                    chunk,
                    texts_part,
                    keys_part,
                    int(lengths[start:end].sum()),
                )
            )
    return prepared


def write_pending(
    conn: Connection, pipeline: str, epoch: int, pending: PendingActions, now: float
) -> None:
    """Record an epoch's actions and counts in ``conn``'s transaction, once per epoch
    (``prepare_pending`` then ``write_prepared``)."""
    write_prepared(conn, prepare_pending(pipeline, epoch, pending, now))


def write_prepared(conn: Connection, prepared: PreparedActions) -> list[PreparedPart]:
    """Record an epoch's prepared actions and counts in ``conn``'s transaction, once;
    return the parts inserted (``batch_id`` set).

    The messages of each action go into ``action_batches`` (one row per part, with the
    idempotency and ordering keys of its messages as one JSON array). A lazy group (a
    batched type's pending actions) stops there: the batch row holds their status. Other
    actions get narrow outbox rows, made from that array by one ``INSERT ... SELECT`` in
    the database. Every action's id is reserved here (``first_id`` + its index in its
    batch). A replayed epoch whose batches are already there writes nothing.
    """
    pipeline, epoch, now = prepared.pipeline, prepared.epoch, prepared.now
    if not prepared.parts and not prepared.counts:
        return []
    stamp = datetime.fromtimestamp(now, UTC)
    insert_ignore(
        conn,
        counts,
        [{"pipeline": pipeline, "epoch": epoch, "at": stamp, **vars(c)} for c in prepared.counts],
        ["pipeline", "action", "epoch"],
    )
    if not prepared.parts or _recorded(conn, pipeline, epoch):
        return []
    sql = _FROM_KEYS["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    ids = _Ids(conn)
    lazy_states: list[tuple[Any, ...]] = []
    odd: list[tuple[Any, ...]] = []
    for part in prepared.parts:
        first_id = ids.reserve(part.count)
        batch_id = conn.execute(
            _INSERT_BATCH,  # one statement with parameters: compiled once
            {
                "pipeline": pipeline,
                "epoch": epoch,
                "action": part.action,
                "part": part.part,
                "count": part.count,
                "messages": part.messages,
                "message_keys": part.message_keys,
                "created_at": stamp,
            },
        ).scalar_one()
        part.batch_id = batch_id
        if part.lazy:
            lazy_states.append(
                (
                    *(batch_id, pipeline, epoch, part.action, part.type, part.severity),
                    *(first_id, part.count, PENDING, 0, now, stamp, stamp),
                )
            )
            continue
        conn.execute(
            sql,
            {
                "first": first_id,
                "pipeline": pipeline,
                "epoch": epoch,
                "action": part.action,
                "type": part.type,
                "severity": part.severity,
                "status": part.status,
                "attempts": 0,
                "now": now,
                "expires": part.expires_at,
                "error": part.error,
                "created": stamp,
                "stamp": stamp,
                "batch": batch_id,
                "others": orjson.dumps(part.others).decode(),
            },
        )
        if part.others:
            keys = part.keys  # idempotency key, then ordering key
            odd.extend(
                (
                    first_id + i,
                    pipeline,
                    epoch,
                    part.action,
                    part.records[i].type,
                    keys[i][KEY_WIDTH:],
                    part.records[i].severity,
                    keys[i][:KEY_WIDTH],
                    part.records[i].status,
                    0,
                    now,
                    part.records[i].expires_at,
                    part.records[i].error,
                    stamp,
                    stamp,
                    batch_id,
                    i,
                )
                for i in part.others
            )
    insert_rows(conn, outbox, ("id", *_COLUMNS), odd)
    if lazy_states:  # through SQLAlchemy: times stored as the outbox's (a few rows)
        names = [c.name for c in states.c]
        conn.execute(insert(states), [dict(zip(names, r, strict=True)) for r in lazy_states])
    return prepared.parts


class _Ids:
    """Reserves outbox ids in a checkpoint transaction: each action's, outbox row or not.

    SQLite: after the largest id in use (an outbox row or a batch's range); the
    transaction holds the database's write lock. PostgreSQL: from the outbox's id
    sequence, moved past the range under a transaction-scoped advisory lock.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._next: int | None = None  # SQLite: the next free id, once read
        self._locked = False  # PostgreSQL: the advisory lock is held

    def reserve(self, n: int) -> int:
        """The first of ``n`` new consecutive ids."""
        if self.conn.dialect.name == "postgresql":
            if not self._locked:
                self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ID_LOCK})
                self._locked = True
            last = self.conn.execute(_PG_RESERVE, {"n": n}).scalar_one()
            return int(last) - n + 1
        if self._next is None:
            used = self.conn.execute(select(func.max(outbox.c.id))).scalar()
            ranges = self.conn.execute(
                select(states.c.first_id + states.c.count)
                .order_by(states.c.first_id.desc())
                .limit(1)
            ).scalar()
            self._next = max(int(used or 0) + 1, int(ranges or 1))
        first = self._next
        self._next += n
        return first


_ID_LOCK = 0x5C1CE0B0  # pg_advisory_xact_lock key of the outbox id reservation
_PG_RESERVE = text(
    "SELECT setval(pg_get_serial_sequence('actions_outbox', 'id'), "
    "nextval(pg_get_serial_sequence('actions_outbox', 'id')) + :n - 1)"
)


def _by_action(
    parts: list[RecordGroup | list[ActionRecord]],
) -> list[RecordGroup | list[ActionRecord]]:
    """``parts`` with the records of each action together (an action's rows stay in order)."""
    out: list[RecordGroup | list[ActionRecord]] = []
    for part in parts:
        if isinstance(part, RecordGroup):
            out.append(part)
            continue
        routes: dict[str, list[ActionRecord]] = {}
        for record in part:
            routes.setdefault(record.action, []).append(record)
        out.extend(routes.values())
    actions = [p.action if isinstance(p, RecordGroup) else p[0].action for p in out]
    if len(set(actions)) == len(actions):
        return out
    merged: dict[str, list[ActionRecord]] = {}
    for part in out:
        records = part.records() if isinstance(part, RecordGroup) else part
        merged.setdefault(records[0].action, []).extend(records)
    return list(merged.values())


def _group_keys(prefix: str, pipeline: str, group: RecordGroup, epoch: int) -> list[str]:
    """Each action's idempotency key followed by its ordering key (``keyed_row``'s keys)."""
    if group.rows and max(group.rows) >= 10**14:
        return [
            keyed_row(prefix, pipeline, group.action, epoch, str(r)) + k[:500]
            for r, k in zip(group.rows, group.keys, strict=True)
        ]
    keys = group.keys
    if keys and max(map(len, keys)) > 500:
        keys = [k[:500] for k in keys]
    return [f"{prefix}{r:012x}{k}" for r, k in zip(group.rows, keys, strict=True)]


def _from_keys(elements: str, others: str) -> TextClause:
    """The outbox rows of a batch from its ``message_keys`` (``elements``: index, value);
    row ``i`` gets the id ``first + i``."""
    return text(
        f"INSERT INTO actions_outbox (id, {', '.join(_COLUMNS)}) "
        f"SELECT :first + e.idx, :pipeline, :epoch, :action, :type, "
        f"substr(e.value, {KEY_WIDTH + 1}), :severity, substr(e.value, 1, {KEY_WIDTH}), "
        f":status, :attempts, :now, :expires, :error, :created, :stamp, :batch, e.idx "
        f"FROM {elements} WHERE e.idx NOT IN ({others}) ORDER BY e.idx"
    ).bindparams(
        bindparam("created", type_=outbox.c.created_at.type),
        bindparam("stamp", type_=outbox.c.created_at.type),
        bindparam("expires", type_=Float()),
        bindparam("error", type_=Text()),
    )


_FROM_KEYS = {
    "sqlite": _from_keys(
        "(SELECT key AS idx, value FROM json_each((SELECT message_keys FROM action_batches "
        "WHERE id = :batch))) AS e",
        "SELECT value FROM json_each(:others)",
    ),
    "postgresql": _from_keys(
        "(SELECT CAST(n AS INTEGER) - 1 AS idx, value FROM json_array_elements_text("
        "(SELECT CAST(message_keys AS json) FROM action_batches WHERE id = :batch)) "
        "WITH ORDINALITY AS t(value, n)) AS e",
        "SELECT CAST(value AS INTEGER) FROM json_array_elements_text(CAST(:others AS json))",
    ),
}


def _recorded(conn: Connection, pipeline: str, epoch: int) -> bool:
    """Whether the actions of ``epoch`` are already in the outbox (a replayed epoch)."""
    query = (
        select(batches.c.id)
        .where(batches.c.pipeline == pipeline, batches.c.epoch == epoch)
        .limit(1)
    )
    return conn.execute(query).first() is not None


def _cuts(lengths: np.ndarray) -> Iterable[tuple[int, int]]:
    """(start, end) runs of messages of ``lengths`` bytes holding at most ``PART_BYTES``
    each (at least one message each), filled in order."""
    ends = np.cumsum(lengths, dtype=np.int64)
    start = 0
    while start < len(lengths):
        before = int(ends[start - 1]) if start else 0
        end = int(np.searchsorted(ends, before + PART_BYTES, side="right"))
        end = max(end, start + 1)
        yield start, end
        start = end


def batch_messages(conn: Connection, ids: Iterable[int]) -> dict[int, list[bytes]]:
    """The messages of the given ``action_batches`` rows, in order, by batch id."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    query = select(batches.c.id, batches.c.messages).where(batches.c.id.in_(wanted))
    return {i: unpack_messages(blob) for i, blob in conn.execute(query)}


def materialise(conn: Connection, batch_id: int, now: float) -> bool:
    """Write the outbox rows of a lazy batch's actions (with its status); False if it has
    them already. Its actions keep their ids; its ``action_batch_states`` row is deleted."""
    head = conn.execute(select(*_LAZY_HEAD).where(states.c.id == batch_id)).first()
    if head is None:
        return False
    sql = _FROM_KEYS["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    conn.execute(
        sql,
        {
            "first": head.first_id,
            "pipeline": head.pipeline,
            "epoch": head.epoch,
            "action": head.action,
            "type": head.type,
            "severity": head.severity,
            "status": head.status,
            "attempts": head.attempts,
            "now": head.next_attempt_at,
            "expires": None,
            "error": None,
            "created": head.created_at,
            "stamp": datetime.fromtimestamp(now, UTC),
            "batch": batch_id,
            "others": "[]",
        },
    )
    conn.execute(delete(states).where(states.c.id == batch_id))
    return True


_LAZY_HEAD = [c for c in states.c if c.name != "count"] + [states.c.count.label("n")]  # not
# "count": a Row's tuple method


def lazy_head_columns() -> list[Any]:
    """The ``action_batch_states`` columns ``lazy_rows`` needs (``count`` as ``n``)."""
    return list(_LAZY_HEAD)


def lazy_rows(conn: Connection, wanted: list[tuple[Any, int]]) -> list[dict[str, Any]]:
    """Outbox-shaped row dicts (payload included) of lazy batches' actions.

    ``wanted``: (batch head from ``lazy_head_columns()``, index in the batch) pairs.
    """
    ids = sorted({head.id for head, _ in wanted})
    if not ids:
        return []
    bodies = {
        row.id: (orjson.loads(row.message_keys), unpack_messages(row.messages))
        for row in conn.execute(
            select(batches.c.id, batches.c.message_keys, batches.c.messages).where(
                batches.c.id.in_(ids)
            )
        )
    }
    out = []
    for head, i in wanted:
        keys, messages = bodies[head.id]
        out.append(
            {
                "id": head.first_id + i,
                "pipeline": head.pipeline,
                "epoch": head.epoch,
                "action": head.action,
                "type": head.type,
                "key": keys[i][KEY_WIDTH:],
                "severity": head.severity,
                "idempotency_key": keys[i][:KEY_WIDTH],
                "payload": messages[i].decode(),
                "status": head.status,
                "attempts": head.attempts,
                "next_attempt_at": head.next_attempt_at,
                "expires_at": None,
                "last_error": None,
                "created_at": head.created_at,
                "updated_at": head.updated_at,
                "batch_id": head.id,
                "batch_index": i,
            }
        )
    return out


def all_actions(conn: Connection, pipeline: str | None = None) -> list[dict[str, Any]]:
    """Every action, by id: outbox rows and the actions of lazy batches, with payloads."""
    rows = select(outbox).order_by(outbox.c.id)
    heads = select(*_LAZY_HEAD)
    if pipeline is not None:
        rows = rows.where(outbox.c.pipeline == pipeline)
        heads = heads.where(states.c.pipeline == pipeline)
    found = with_payloads(conn, as_dicts(conn.execute(rows)))
    found += lazy_rows(conn, [(h, i) for h in conn.execute(heads) for i in range(h.n)])
    return sorted(found, key=lambda r: int(r["id"]))


def with_payloads(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outbox row dicts with ``payload`` read from their batch where the row has none."""
    messages = batch_messages(
        conn, (r["batch_id"] for r in rows if r["payload"] is None and r["batch_id"] is not None)
    )
    for row in rows:
        if row["payload"] is None and row["batch_id"] in messages:
            row["payload"] = messages[row["batch_id"]][row["batch_index"]].decode()
    return rows


def decode_payload(text: str) -> dict[str, Any]:
    """The stored message of an outbox row."""
    value: dict[str, Any] = orjson.loads(text)
    return value


def as_dicts(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """SQLAlchemy rows as plain dicts."""
    return [dict(r._mapping) for r in rows]
