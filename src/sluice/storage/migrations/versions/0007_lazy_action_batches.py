"""Batched actions (``log``) without outbox rows: their status is kept per batch.

A batch whose action type delivers a whole batch in one call keeps the status, attempts
and times of all its actions in its ``action_batches`` row (``status`` not NULL); its
actions have the outbox ids ``first_id .. first_id + count - 1`` and no
``actions_outbox`` row until one is needed (a failed delivery writes them, and the batch's
``status`` becomes NULL). Older batches keep NULL: their actions are outbox rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
_PENDING = sa.text("status = 'pending'")
_COLUMNS = (
    ("first_id", sa.Integer),
    ("status", sa.String(30)),
    ("type", sa.String(50)),
    ("severity", sa.String(50)),
    ("attempts", sa.Integer),
    ("next_attempt_at", sa.Float),
    ("updated_at", TZ),
)


def upgrade() -> None:
    """Add the per-batch status columns and their indexes (once)."""
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("action_batches")}
    if "first_id" in have:
        return
    for name, kind in _COLUMNS:
        op.add_column("action_batches", sa.Column(name, kind))
    op.create_index("ix_action_batches_first_id", "action_batches", ["first_id"])
    op.create_index(
        "ix_action_batches_pending",
        "action_batches",
        ["pipeline", "id"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    """Write an outbox row for every action of a batch without them; drop the columns."""
    bind = op.get_bind()
    lazy = bind.execute(
        sa.text(
            "SELECT id, pipeline, epoch, action, type, severity, status, attempts, "
            "next_attempt_at, created_at, updated_at, first_id, message_keys "
            "FROM action_batches WHERE status IS NOT NULL ORDER BY id"
        )
    ).all()
    insert = sa.text(
        "INSERT INTO actions_outbox (id, pipeline, epoch, action, type, key, severity, "
        "idempotency_key, status, attempts, next_attempt_at, created_at, updated_at, "
        "batch_id, batch_index) VALUES (:id, :pipeline, :epoch, :action, :type, :key, "
        ":severity, :ikey, :status, :attempts, :next, :created, :updated, :batch, :index)"
    ).bindparams(sa.bindparam("created", type_=TZ), sa.bindparam("updated", type_=TZ))
    for b in lazy:
        keys = json.loads(b.message_keys)
        bind.execute(
            insert,
            [
                {
                    "id": b.first_id + i,
                    "pipeline": b.pipeline,
                    "epoch": b.epoch,
                    "action": b.action,
                    "type": b.type,
                    "key": key[40:],
                    "severity": b.severity,
                    "ikey": key[:40],
                    "status": b.status,
                    "attempts": b.attempts,
                    "next": b.next_attempt_at,
                    "created": b.created_at,
                    "updated": b.updated_at,
                    "batch": b.id,
                    "index": i,
                }
                for i, key in enumerate(keys)
            ],
        )
    if bind.dialect.name == "postgresql" and lazy:
        bind.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('actions_outbox', 'id'), "
                "(SELECT max(id) FROM actions_outbox))"
            )
        )
    op.drop_index("ix_action_batches_pending", "action_batches")
    op.drop_index("ix_action_batches_first_id", "action_batches")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("action_batches", name)
