"""Trial attempts (retries stay visible), study control requests, artifact path, restart count.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "trial_attempts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("started_at", ts),
        sa.Column("finished_at", ts),
        sa.UniqueConstraint("trial_id", "attempt", name="uq_attempts_trial_attempt"),
    )
    op.create_index("ix_trial_attempts_trial_id", "trial_attempts", ["trial_id"])
    # Every trial recorded before this revision ran exactly once.
    op.execute(
        "INSERT INTO trial_attempts (trial_id, attempt, state, error, started_at, finished_at) "
        "SELECT id, attempt, state, error, started_at, finished_at FROM trials"
    )
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("control", sa.String(20)))
        batch.add_column(sa.Column("artifact_path", sa.Text))
        batch.add_column(sa.Column("restarts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("restarts")
        batch.drop_column("artifact_path")
        batch.drop_column("control")
    op.drop_table("trial_attempts")
