"""The actions outbox, the attempt log and per-epoch counts in the metadata database.

Outbox rows are inserted in the checkpoint transaction of their epoch. Each row's
``idempotency_key`` is a hash of (pipeline, action, epoch, row), so a replayed epoch
produces the same keys and its insert is ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from sluice.storage.db import METADATA, ensure_tables
from sluice.storage.upsert import insert_ignore, insert_rows

PENDING, DELIVERED, FAILED, DEAD = "pending", "delivered", "failed", "dead"
AWAITING, EXPIRED, REJECTED = "awaiting_approval", "expired", "rejected"
STATUSES = (PENDING, DELIVERED, FAILED, DEAD, AWAITING, EXPIRED, REJECTED)

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
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("payload", Text, nullable=False),
    Column("status", String(30), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_actions_outbox_status", "status", "pipeline", "id"),
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
TABLES = ("actions_outbox", "action_attempts", "action_counts")


def ensure_outbox(engine: Engine) -> None:
    """Create the outbox, attempt and count tables if needed."""
    ensure_tables(engine, *TABLES)


def idempotency_key(pipeline: str, action: str, epoch: int, row: str) -> str:
    """Deterministic key of one action for one row of one epoch."""
    text = "\x1f".join((pipeline, action, str(epoch), row))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class ActionRecord:
    """One action to insert into the outbox (before it has an id).

    The message is either a dict or ``text``, the same already encoded as JSON (the engine
    joins it from each fired row's JSON, encoded once per epoch); each is derived from the
    other on first use.
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
        text: str | None = None,
    ) -> None:
        self.action, self.type, self.row, self.key, self.severity = action, type, row, key, severity
        self.status, self.error, self.expires_at = status, error, expires_at
        self._message = message if message is not None or text is not None else {}
        self._text = text

    @property
    def message(self) -> dict[str, Any]:
        """The message: ``payload`` and the rendered template fields."""
        if self._message is None:
            self._message = orjson.loads(self._text or "{}")
        return self._message

    @message.setter
    def message(self, value: dict[str, Any]) -> None:
        self._message, self._text = value, None

    def encoded(self) -> str:
        """The message as the JSON text stored in the outbox."""
        if self._text is None:
            self._text = orjson.dumps(self._message, default=str).decode()
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
class PendingActions:
    """The outcome of ``ActionEngine.evaluate`` for one epoch: records and counts."""

    records: list[ActionRecord] = field(default_factory=list)
    counts: list[RuleCounts] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


_COLUMNS = (
    "pipeline",
    "epoch",
    "action",
    "type",
    "key",
    "severity",
    "idempotency_key",
    "payload",
    "status",
    "attempts",
    "next_attempt_at",
    "expires_at",
    "last_error",
    "created_at",
    "updated_at",
)


def write_pending(
    conn: Connection, pipeline: str, epoch: int, pending: PendingActions, now: float
) -> None:
    """Insert an epoch's records (ignoring replays) and counts in ``conn``'s transaction."""
    stamp = datetime.fromtimestamp(now, UTC)
    rows = [
        (
            pipeline,
            epoch,
            r.action,
            r.type,
            r.key[:500],
            r.severity,
            idempotency_key(pipeline, r.action, epoch, r.row),
            r.encoded(),
            r.status,
            0,
            now,
            r.expires_at,
            r.error,
            stamp,
            stamp,
        )
        for r in pending.records
    ]
    insert_rows(conn, outbox, _COLUMNS, rows, ["idempotency_key"])
    insert_ignore(
        conn,
        counts,
        [{"pipeline": pipeline, "epoch": epoch, "at": stamp, **vars(c)} for c in pending.counts],
        ["pipeline", "action", "epoch"],
    )


def decode_payload(text: str) -> dict[str, Any]:
    """The stored message of an outbox row."""
    value: dict[str, Any] = orjson.loads(text)
    return value


def as_dicts(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """SQLAlchemy rows as plain dicts."""
    return [dict(r._mapping) for r in rows]
