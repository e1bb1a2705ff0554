"""Checkpoints get an ``owner``: the replica that holds a partition task, for fencing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``checkpoints.owner`` unless it is there."""
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("checkpoints")}
    if "owner" not in columns:
        op.add_column("checkpoints", sa.Column("owner", sa.String(100)))


def downgrade() -> None:
    """Drop ``checkpoints.owner``."""
    op.drop_column("checkpoints", "owner")
