"""The metadata tables as of the first migration.

Databases made before migrations existed already hold some of these tables (created on
first use by ``create_all``); only the missing ones are created, so such a database is
adopted as it is.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _checkpoints() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("position", sa.Text, nullable=False),
        sa.Column("planned_epoch", sa.Integer),
        sa.Column("planned_position", sa.Text),
        sa.Column("updated_at", TZ, nullable=False),
    )


def _operator_state() -> None:
    op.create_table(
        "operator_state",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("operator", sa.String(200), primary_key=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def _pipeline_runs() -> None:
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(200), nullable=False, index=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
        sa.Column("stats", sa.Text),
        sa.Column("error", sa.Text),
    )


def _actions_outbox() -> None:
    op.create_table(
        "actions_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("severity", sa.String(50), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Index("ix_actions_outbox_status", "status", "pipeline", "id"),
    )


def _action_attempts() -> None:
    op.create_table(
        "action_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", sa.Integer, nullable=False, index=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("at", TZ, nullable=False),
    )


def _action_counts() -> None:
    op.create_table(
        "action_counts",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("action", sa.String(200), primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        *(
            sa.Column(name, sa.Integer, nullable=False)
            for name in (
                "fired",
                "emitted",
                "suppressed_dedupe",
                "suppressed_cooldown",
                "suppressed_rate_limit",
                "template_errors",
                "rule_errors",
            )
        ),
        sa.Column("at", TZ, nullable=False),
    )


def _job_runs() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(200), nullable=False, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("interval_start", TZ, nullable=False),
        sa.Column("interval_end", TZ, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires", TZ),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("params", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
        sa.UniqueConstraint("job", "kind", "interval_start", name="uq_job_runs_interval"),
    )


def _task_runs() -> None:
    op.create_table(
        "task_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, nullable=False, index=True),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
        sa.Column("log", sa.Text),
        sa.Column("error", sa.Text),
    )


def _model_versions() -> None:
    op.create_table(
        "model_versions",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("format", sa.String(40), nullable=False),
        sa.Column("artifact", sa.String(400), nullable=False),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("data_range", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("promoted_at", TZ),
    )


def _online_models() -> None:
    op.create_table(
        "online_models",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("key", sa.String(200)),
        sa.Column("updated_at", TZ, nullable=False),
    )


def _drift_events() -> None:
    op.create_table(
        "drift_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(200), nullable=False, index=True),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("feature", sa.String(200), nullable=False),
        sa.Column("detector", sa.String(40), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("detected_at", TZ, nullable=False),
    )


TABLES: dict[str, Callable[[], None]] = {
    "checkpoints": _checkpoints,
    "operator_state": _operator_state,
    "pipeline_runs": _pipeline_runs,
    "actions_outbox": _actions_outbox,
    "action_attempts": _action_attempts,
    "action_counts": _action_counts,
    "job_runs": _job_runs,
    "task_runs": _task_runs,
    "model_versions": _model_versions,
    "online_models": _online_models,
    "drift_events": _drift_events,
}


def upgrade() -> None:
    """Create every table the database does not have yet."""
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in TABLES.items():
        if name not in existing:
            create()


def downgrade() -> None:
    """Drop every table."""
    for name in reversed(TABLES):
        op.drop_table(name)
