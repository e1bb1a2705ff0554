"""Incremental operator state: ``operator_state_delta`` holds the deltas since a snapshot.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``operator_state_delta`` unless it is there."""
    if not sa.inspect(op.get_bind()).has_table("operator_state_delta"):
        op.create_table(
            "operator_state_delta",
            sa.Column("pipeline", sa.String(200), primary_key=True),
            sa.Column("operator", sa.String(200), primary_key=True),
            sa.Column("epoch", sa.Integer, primary_key=True),
            sa.Column("data", sa.LargeBinary, nullable=False),
        )


def downgrade() -> None:
    """Drop ``operator_state_delta``."""
    op.drop_table("operator_state_delta")
