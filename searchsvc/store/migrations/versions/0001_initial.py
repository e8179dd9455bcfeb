"""Initial schema: users, API tokens, studies, trials and per-epoch reports.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("stop_requested", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("ray_experiment", sa.String(200)),
        sa.Column("dashboard_url", sa.String(300)),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("started_at", ts),
        sa.Column("finished_at", ts),
    )
    op.create_index("ix_studies_owner_id", "studies", ["owner_id"])
    op.create_index("ix_studies_state", "studies", ["state"])
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("ray_trial_id", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("checkpoint_path", sa.Text),
        sa.Column("best_objective", sa.Float),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("started_at", ts),
        sa.Column("finished_at", ts),
        sa.UniqueConstraint("study_id", "ray_trial_id", name="uq_trials_study_ray"),
        sa.UniqueConstraint("study_id", "number", name="uq_trials_study_number"),
    )
    op.create_index("ix_trials_study_id", "trials", ["study_id"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("trial_id", sa.Integer, sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("objective", sa.Float),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("checkpoint_path", sa.Text),
        sa.Column("created_at", ts, nullable=False),
        sa.UniqueConstraint("trial_id", "attempt", "epoch", name="uq_reports_trial_attempt_epoch"),
    )
    op.create_index("ix_reports_trial_id", "reports", ["trial_id"])
    op.create_index("ix_reports_trial_objective", "reports", ["trial_id", "objective"])


def downgrade() -> None:
    for table in ("reports", "trials", "studies", "api_tokens", "users"):
        op.drop_table(table)
