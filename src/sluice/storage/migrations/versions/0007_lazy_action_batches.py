"""Batched actions (``log``) without outbox rows: ``action_batch_states``.

The pending actions of a type that delivers a whole batch in one call get no
``actions_outbox`` rows: one narrow ``action_batch_states`` row per batch holds the
status, attempts and times of all of them (apart from the messages, so marking them
delivered does not rewrite those), and their ids ``first_id .. first_id + count - 1``
(reserved when the batch is written). A failed delivery writes their outbox rows with
those ids and deletes the state row.

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


def upgrade() -> None:
    """Create ``action_batch_states`` and its indexes (once)."""
    if sa.inspect(op.get_bind()).has_table("action_batch_states"):
        return
    op.create_table(
        "action_batch_states",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("severity", sa.String(50), nullable=False),
        sa.Column("first_id", sa.Integer, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_action_batch_states_first_id", "action_batch_states", ["first_id"])
    op.create_index(
        "ix_action_batch_states_pending",
        "action_batch_states",
        ["pipeline", "id"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    """Write the outbox rows of every lazy batch's actions, then drop the table."""
    bind = op.get_bind()
    lazy = bind.execute(
        sa.text(
            "SELECT s.id, s.pipeline, s.epoch, s.action, s.type, s.severity, s.status, "
            "s.attempts, s.next_attempt_at, s.created_at, s.updated_at, s.first_id, "
            "b.message_keys FROM action_batch_states s JOIN action_batches b ON b.id = s.id "
            "ORDER BY s.id"
        )
    ).all()
    insert = sa.text(
        "INSERT INTO actions_outbox (id, pipeline, epoch, action, type, key, severity, "
        "idempotency_key, status, attempts, next_attempt_at, created_at, updated_at, "
        "batch_id, batch_index) VALUES (:id, :pipeline, :epoch, :action, :type, :key, "
        ":severity, :ikey, :status, :attempts, :next, :created, :updated, :batch, :index)"
    )  # the times as stored (no type: SQLite's come back as text)
    for b in lazy:
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
                for i, key in enumerate(json.loads(b.message_keys))
            ],
        )
    # PostgreSQL: the id sequence is already past the reserved ids
    op.drop_index("ix_action_batch_states_pending", "action_batch_states")
    op.drop_index("ix_action_batch_states_first_id", "action_batch_states")
    op.drop_table("action_batch_states")
