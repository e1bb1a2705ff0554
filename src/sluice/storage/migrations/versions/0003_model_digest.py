"""Model versions get a ``digest``: the SHA-256 of the stored artifact, checked on load.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``model_versions.digest`` unless it is there."""
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("model_versions")}
    if "digest" not in columns:
        op.add_column("model_versions", sa.Column("digest", sa.String(64)))


def downgrade() -> None:
    """Drop ``model_versions.digest``."""
    op.drop_column("model_versions", "digest")
