"""telemetry edge scans: a covering window_end index on SQLite, quality as jsonb on PostgreSQL

The fleet queries read the partial hours at a window's edges from raw telemetry rows, found by window_end. On
SQLite the covering index holds every column those sums read, so the scan never visits the table. On
PostgreSQL a covering index would not help the rows that matter (the newest are not yet all-visible, so an
index-only scan fetches them from the table anyway); there the cost is parsing the ``json`` text of
``quality`` for every row, which ``jsonb`` parses once, at insert.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# window_end first (the range), then everything edgejoule.registry.fleet sums over the raw rows, in GROUP BY order
COVERING = ("window_end", "agent_id", "model_id", "site", "meter", "meter_kind", "inferences", "energy_total_uj",
            "energy_dynamic_uj", "latency_ms_p50", "latency_ms_p95", "estimated_energy_uj", "quality")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index("ix_telemetry_window_end_covering", "telemetry", list(COVERING))
        op.drop_index("ix_telemetry_window_end", "telemetry")  # a prefix of the covering one
    else:
        op.alter_column("telemetry", "quality", type_=postgresql.JSONB(), existing_type=sa.JSON(),
                        existing_nullable=False, postgresql_using="quality::jsonb")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index("ix_telemetry_window_end", "telemetry", ["window_end"])
        op.drop_index("ix_telemetry_window_end_covering", "telemetry")
    else:
        op.alter_column("telemetry", "quality", type_=sa.JSON(), existing_type=postgresql.JSONB(),
                        existing_nullable=False, postgresql_using="quality::json")
