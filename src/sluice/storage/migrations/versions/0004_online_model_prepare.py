"""Online models get ``prepare``: the stateless transform steps that precede them in their
pipeline, so predict can take a record as it is ingested.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``online_models.prepare`` unless it is there."""
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("online_models")}
    if "prepare" not in columns:
        op.add_column("online_models", sa.Column("prepare", sa.Text()))


def downgrade() -> None:
    """Drop ``online_models.prepare``."""
    op.drop_column("online_models", "prepare")
