"""Action messages in ``action_batches``; narrow outbox rows; partial pending indexes.

An epoch's messages are written once per (epoch, action) into ``action_batches``; the
outbox row of each action no longer holds its message (``payload`` stays for older rows)
but points at it (``batch_id``, ``batch_index``), so marking it delivered rewrites ~150
bytes instead of the message. Replays are recognised per epoch (its batches exist), so the
unique index on ``idempotency_key`` goes; ``status`` is indexed only where a round looks
(pending rows, awaiting approval). An attempt can cover a run of outbox rows
(``last_outbox_id``) of one batch.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
_PENDING = sa.text("status = 'pending'")
_AWAITING = sa.text("status = 'awaiting_approval'")
_KEPT = (
    "id, pipeline, epoch, action, type, key, severity, idempotency_key, payload, status, "
    "attempts, next_attempt_at, expires_at, last_error, created_at, updated_at"
)


def upgrade() -> None:
    """Create ``action_batches``, narrow the outbox and widen the attempt log (once)."""
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if not inspector.has_table("action_batches"):
        op.create_table(
            "action_batches",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("pipeline", sa.String(200), nullable=False),
            sa.Column("epoch", sa.Integer, nullable=False),
            sa.Column("action", sa.String(200), nullable=False),
            sa.Column("part", sa.Integer, nullable=False),
            sa.Column("count", sa.Integer, nullable=False),
            sa.Column("messages", sa.LargeBinary, nullable=False),
            sa.Column("message_keys", sa.Text, nullable=False),
            sa.Column("created_at", TZ, nullable=False),
            sa.UniqueConstraint(
                "pipeline", "epoch", "action", "part", name="uq_action_batches_part"
            ),
        )
    if "batch_id" not in {c["name"] for c in inspector.get_columns("actions_outbox")}:
        if bind.dialect.name == "sqlite":
            _rebuild_outbox_sqlite()
        else:
            op.execute(
                "ALTER TABLE actions_outbox "
                "DROP CONSTRAINT IF EXISTS actions_outbox_idempotency_key_key"
            )
            op.alter_column("actions_outbox", "payload", existing_type=sa.Text, nullable=True)
            op.add_column("actions_outbox", sa.Column("batch_id", sa.Integer))
            op.add_column("actions_outbox", sa.Column("batch_index", sa.Integer))
            op.execute("DROP INDEX IF EXISTS ix_actions_outbox_status")
        _outbox_indexes()
    if "batch_id" not in {c["name"] for c in inspector.get_columns("action_attempts")}:
        op.add_column("action_attempts", sa.Column("last_outbox_id", sa.Integer))
        op.add_column("action_attempts", sa.Column("batch_id", sa.Integer))
        op.create_index("ix_action_attempts_batch_id", "action_attempts", ["batch_id"])


def _rebuild_outbox_sqlite() -> None:
    """SQLite cannot drop a column constraint: copy the rows into the new table."""
    op.create_table(
        "_actions_outbox_new",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("severity", sa.String(50), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("batch_id", sa.Integer),
        sa.Column("batch_index", sa.Integer),
    )
    op.execute(f"INSERT INTO _actions_outbox_new ({_KEPT}) SELECT {_KEPT} FROM actions_outbox")
    op.drop_table("actions_outbox")
    op.rename_table("_actions_outbox_new", "actions_outbox")


def _outbox_indexes() -> None:
    op.create_index(
        "ix_actions_outbox_pending",
        "actions_outbox",
        ["pipeline", "id"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )
    op.create_index(
        "ix_actions_outbox_awaiting",
        "actions_outbox",
        ["pipeline", "expires_at"],
        sqlite_where=_AWAITING,
        postgresql_where=_AWAITING,
    )


def downgrade() -> None:
    """Copy batch messages back into ``payload``, drop the new columns, indexes and table.

    The unique constraint on ``idempotency_key`` is not restored.
    """
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT o.id, o.batch_id, o.batch_index, b.messages FROM actions_outbox o "
            "JOIN action_batches b ON b.id = o.batch_id WHERE o.payload IS NULL"
        )
    ).all()
    split: dict[int, list[bytes]] = {}
    for row_id, batch_id, index, blob in rows:
        if batch_id not in split:
            split[batch_id] = bytes(blob).split(b"\n")
        lines = split[batch_id]
        bind.execute(
            sa.text("UPDATE actions_outbox SET payload = :p WHERE id = :i"),
            {"p": lines[index].decode(), "i": row_id},
        )
    op.drop_index("ix_action_attempts_batch_id", "action_attempts")
    op.drop_column("action_attempts", "batch_id")
    op.drop_column("action_attempts", "last_outbox_id")
    op.drop_index("ix_actions_outbox_pending", "actions_outbox")
    op.drop_index("ix_actions_outbox_awaiting", "actions_outbox")
    op.drop_column("actions_outbox", "batch_index")
    op.drop_column("actions_outbox", "batch_id")
    op.create_index("ix_actions_outbox_status", "actions_outbox", ["status", "pipeline", "id"])
    op.drop_table("action_batches")
