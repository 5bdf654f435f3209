"""rollouts: gated rollouts of a candidate against a site's incumbent, and their events

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    moment = sa.DateTime(timezone=True)
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(64), nullable=False, index=True),
        sa.Column("active_site", sa.String(64), nullable=True, unique=True),
        sa.Column("candidate", sa.String(128), nullable=False),
        sa.Column("incumbent", sa.String(128), nullable=False),
        sa.Column("stages", sa.JSON, nullable=False),
        sa.Column("agent_order", sa.JSON, nullable=False),
        sa.Column("gate", sa.String(256), nullable=False),
        sa.Column("quality_metric", sa.String(64), nullable=False),
        sa.Column("min_inferences", sa.Integer, nullable=False),
        sa.Column("min_windows", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("timeout_s", sa.Float, nullable=False),
        sa.Column("on_timeout", sa.String(16), nullable=False),
        sa.Column("started_by", sa.String(64), nullable=False),
        sa.Column("started_at", moment, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("ended_at", moment, nullable=True),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("stage_started_at", moment, nullable=False),
        sa.Column("deadline", moment, nullable=False),
        sa.Column("paused_at", moment, nullable=True),
        sa.Column("events_after", sa.Integer, nullable=False),
        sa.Column("looks", sa.Integer, nullable=False),
        sa.Column("look_windows", sa.Integer, nullable=False),
        sa.Column("readings", sa.JSON, nullable=True),
    )
    op.create_table(
        "rollout_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False, index=True),
        sa.Column("at", moment, nullable=False),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("readings", sa.JSON, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("rollout_events")
    op.drop_table("rollouts")
