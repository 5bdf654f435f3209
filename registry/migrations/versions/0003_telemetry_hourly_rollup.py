"""hourly telemetry roll-up (telemetry_hourly, telemetry_hourly_quality), backfilled from the stored reports

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from edgejoule.registry.migrations import rollup_tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rollup_tables.create("telemetry_hourly", "telemetry_hourly_quality", "hour")
    rollup_tables.backfill("telemetry_hourly", "telemetry_hourly_quality", "hour", 3600)


def downgrade() -> None:
    op.drop_table("telemetry_hourly_quality")
    op.drop_table("telemetry_hourly")
