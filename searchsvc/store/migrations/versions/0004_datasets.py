"""Uploaded datasets (task folders) per owner, so specs can name tasks without server paths.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("folder", sa.String(200), nullable=False),
        sa.Column("train_bytes", sa.BigInteger, nullable=False),
        sa.Column("dev_bytes", sa.BigInteger, nullable=False),
        sa.Column("meta_bytes", sa.BigInteger, nullable=False),
        sa.Column("train_rows", sa.Integer, nullable=False),
        sa.Column("dev_rows", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner_id", "name", name="uq_datasets_owner_name"),
    )
    op.create_index("ix_datasets_owner_id", "datasets", ["owner_id"])


def downgrade() -> None:
    op.drop_index("ix_datasets_owner_id", table_name="datasets")
    op.drop_table("datasets")
