"""15-minute telemetry roll-up (telemetry_15min, telemetry_15min_quality), backfilled from the stored reports

Between the hourly and the 5-minute level: a window that does not start on an hour ("the last hour" from any
minute) left up to 11 five-minute buckets per stream at its edge; it now reads up to 3 fifteen-minute buckets
and 2 five-minute ones on each side.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

from registry.migrations import rollup_tables

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rollup_tables.create("telemetry_15min", "telemetry_15min_quality", "start", filter_indexes=False,
                         sqlite_with_rowid=False, by_series=True)
    rollup_tables.backfill("telemetry_15min", "telemetry_15min_quality", "start", 900, by_series=True)


def downgrade() -> None:
    op.drop_table("telemetry_15min_quality")
    op.drop_table("telemetry_15min")
