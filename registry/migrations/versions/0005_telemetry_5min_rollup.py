"""5-minute telemetry roll-up (telemetry_5min, telemetry_5min_quality), backfilled from the stored reports

The hourly level serves the whole hours of a fleet query's window; what is left at its edges (up to an hour on
each side, e.g. the 20 minutes before the first whole hour of "the last hour") was summed from every raw
report in it. This level serves whole 5-minute buckets of those edges, so raw reports are read for at most
5 minutes on each side.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from edgejoule.registry.migrations import rollup_tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rollup_tables.create("telemetry_5min", "telemetry_5min_quality", "start", filter_indexes=False, sqlite_with_rowid=False)
    rollup_tables.backfill("telemetry_5min", "telemetry_5min_quality", "start", 300)


def downgrade() -> None:
    op.drop_table("telemetry_5min_quality")
    op.drop_table("telemetry_5min")
