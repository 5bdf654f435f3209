"""broker credentials, telemetry window start/fallback/p99/idle power, quality metric names

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("mqtt_password_hash", sa.String(length=256), nullable=True))
        batch.create_index(batch.f("ix_agents_token_hash"), ["token_hash"], unique=False)
    with op.batch_alter_table("telemetry") as batch:
        batch.add_column(sa.Column("window_start", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("fallback", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("idle_power_w", sa.Float(), nullable=True))
        batch.add_column(sa.Column("latency_ms_p99", sa.Float(), nullable=True))
    op.create_table("quality_metrics", sa.Column("name", sa.String(length=64), nullable=False),
                    sa.PrimaryKeyConstraint("name"))


def downgrade() -> None:
    op.drop_table("quality_metrics")
    with op.batch_alter_table("telemetry") as batch:
        for column in ("latency_ms_p99", "idle_power_w", "fallback", "window_start"):
            batch.drop_column(column)
    with op.batch_alter_table("agents") as batch:
        batch.drop_index(batch.f("ix_agents_token_hash"))
        batch.drop_column("mqtt_password_hash")
