"""hourly telemetry roll-up (telemetry_hourly, telemetry_hourly_quality), backfilled from the stored reports

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

KEYS = ("hour", "site", "model_id", "agent_id")


def _key_columns() -> list[sa.Column]:
    return [sa.Column("hour", sa.BigInteger(), nullable=False), sa.Column("site", sa.String(length=64), nullable=False),
            sa.Column("model_id", sa.String(length=128), nullable=False),
            sa.Column("agent_id", sa.String(length=64), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "telemetry_hourly", *_key_columns(),
        sa.Column("meter", sa.String(length=32), nullable=False),
        sa.Column("meter_kind", sa.String(length=16), nullable=False),
        sa.Column("windows", sa.BigInteger(), nullable=False),
        sa.Column("inferences", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in
          ("energy_total_uj", "energy_dynamic_uj", "latency_ms_p50", "latency_ms_p95", "estimated_energy_uj")),
        sa.Column("estimated_windows", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*KEYS, "meter", "meter_kind"))
    op.create_index("ix_telemetry_hourly_agent", "telemetry_hourly", ["agent_id", "hour"])
    op.create_index("ix_telemetry_hourly_model", "telemetry_hourly", ["model_id", "hour"])
    op.create_table(
        "telemetry_hourly_quality", *_key_columns(),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("weighted_sum", sa.Float(), nullable=False),
        sa.Column("inferences", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*KEYS, "metric"))
    op.create_index("ix_telemetry_hourly_quality_agent", "telemetry_hourly_quality", ["agent_id", "hour"])
    op.create_index("ix_telemetry_hourly_quality_model", "telemetry_hourly_quality", ["model_id", "hour"])
    _backfill()


def _backfill() -> None:
    """The roll-up of the reports stored so far, in SQL (the same sums the ingest adds per batch)."""
    if op.get_bind().dialect.name == "sqlite":
        hour = "CAST(strftime('%s', t.window_end) AS INTEGER) / 3600 * 3600"  # stored as UTC text
        quality_source, value = "telemetry t, json_each(t.quality) q", "CAST(q.value AS REAL)"
    else:
        hour = "CAST(floor(extract(epoch FROM t.window_end) / 3600) AS BIGINT) * 3600"
        quality_source, value = "telemetry t, json_each_text(t.quality) q", "CAST(q.value AS DOUBLE PRECISION)"
    keys = f"{hour}, t.site, COALESCE(t.model_id, ''), t.agent_id"
    op.execute(
        f"INSERT INTO telemetry_hourly (hour, site, model_id, agent_id, meter, meter_kind, windows, inferences, "
        f"energy_total_uj, energy_dynamic_uj, latency_ms_p50, latency_ms_p95, estimated_energy_uj, estimated_windows) "
        f"SELECT {keys}, t.meter, t.meter_kind, COUNT(*), SUM(t.inferences), SUM(t.energy_total_uj * t.inferences), "
        f"SUM(t.energy_dynamic_uj * t.inferences), SUM(t.latency_ms_p50 * t.inferences), "
        f"SUM(t.latency_ms_p95 * t.inferences), COALESCE(SUM(t.estimated_energy_uj), 0), COUNT(t.estimated_energy_uj) "
        f"FROM telemetry t GROUP BY {keys}, t.meter, t.meter_kind")
    op.execute(
        f"INSERT INTO telemetry_hourly_quality (hour, site, model_id, agent_id, metric, weighted_sum, inferences) "
        f"SELECT {keys}, q.key, SUM({value} * t.inferences), SUM(t.inferences) FROM {quality_source} "
        f"WHERE q.value IS NOT NULL GROUP BY {keys}, q.key")


def downgrade() -> None:
    op.drop_table("telemetry_hourly_quality")
    op.drop_table("telemetry_hourly")
