"""telemetry streams: the raw rows and both roll-up levels name their stream by an integer

A fleet query groups thousands of roll-up rows; up to 0005 each was keyed by five strings (site, model, agent,
meter, meter kind), and SQLite's sort compared them row by row. ``telemetry_series`` holds each distinct
five once; the raw rows get its ``series_id`` (on SQLite the covering index of 0004 now carries it instead of the
five), and both roll-up levels are rebuilt keyed by (bucket, series_id) from the stored reports. The queries
find a site's, model's or agent's raw rows through their streams, so the raw rows' indexes on those three names,
which every insert kept up, go. The names of
the quality metrics (``quality_metrics``) are no longer needed: the raw rows' metrics are read with json_each.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from edgejoule.registry.migrations import rollup_tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (sums, quality, start column, bucket seconds, index per stream, rowid table): as 0003 and 0005 made them
LEVELS = (("telemetry_hourly", "telemetry_hourly_quality", "hour", 3600, True, True),
          ("telemetry_5min", "telemetry_5min_quality", "start", 300, False, False))
COVERING = ("window_end", "series_id", "inferences", "energy_total_uj", "energy_dynamic_uj", "latency_ms_p50",
            "latency_ms_p95", "estimated_energy_uj", "quality")
COVERING_0004 = ("window_end", "agent_id", "model_id", "site", "meter", "meter_kind", "inferences", "energy_total_uj",
                 "energy_dynamic_uj", "latency_ms_p50", "latency_ms_p95", "estimated_energy_uj", "quality")
STREAM = ("agent_id", "model_id", "site", "meter", "meter_kind")
NAME_INDEXES = ("agent_id", "model_id", "site")  # 0001's indexes on the raw rows' names


def _rebuild_levels(by_series: bool) -> None:
    for sums, quality, start, seconds, filter_indexes, with_rowid in LEVELS:
        op.drop_table(quality)
        op.drop_table(sums)
        rollup_tables.create(sums, quality, start, filter_indexes, with_rowid, by_series=by_series)
        rollup_tables.backfill(sums, quality, start, seconds, by_series=by_series)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table("telemetry_series",
                    sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
                    sa.Column("agent_id", sa.String(length=64), nullable=False),
                    sa.Column("model_id", sa.String(length=128), nullable=False),
                    sa.Column("site", sa.String(length=64), nullable=False),
                    sa.Column("meter", sa.String(length=32), nullable=False),
                    sa.Column("meter_kind", sa.String(length=16), nullable=False),
                    sa.PrimaryKeyConstraint("id"), sa.UniqueConstraint(*STREAM, name="uq_telemetry_series_key"))
    op.create_index("ix_telemetry_series_model_id", "telemetry_series", ["model_id"])
    op.create_index("ix_telemetry_series_site", "telemetry_series", ["site"])
    op.execute("INSERT INTO telemetry_series (agent_id, model_id, site, meter, meter_kind) "
               "SELECT DISTINCT agent_id, COALESCE(model_id, ''), site, meter, meter_kind FROM telemetry "
               "ORDER BY 1, 2, 3, 4, 5")
    op.add_column("telemetry", sa.Column("series_id", sa.Integer(), nullable=True))
    op.execute("UPDATE telemetry SET series_id = (SELECT s.id FROM telemetry_series s WHERE s.agent_id = "
               "telemetry.agent_id AND s.model_id = COALESCE(telemetry.model_id, '') AND s.site = telemetry.site "
               "AND s.meter = telemetry.meter AND s.meter_kind = telemetry.meter_kind)")
    if sqlite:
        op.drop_index("ix_telemetry_window_end_covering", "telemetry")
        op.create_index("ix_telemetry_window_end_covering", "telemetry", list(COVERING))
    else:
        op.alter_column("telemetry", "series_id", existing_type=sa.Integer(), nullable=False)
    for name in NAME_INDEXES:
        op.drop_index(f"ix_telemetry_{name}", "telemetry")
    _rebuild_levels(by_series=True)
    op.drop_table("quality_metrics")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table("quality_metrics", sa.Column("name", sa.String(length=64), nullable=False),
                    sa.PrimaryKeyConstraint("name"))
    op.execute("INSERT INTO quality_metrics (name) SELECT DISTINCT q.key FROM telemetry t, json_each(t.quality) q"
               if sqlite else "INSERT INTO quality_metrics (name) SELECT DISTINCT jsonb_object_keys(quality) FROM telemetry")
    _rebuild_levels(by_series=False)
    if sqlite:
        op.drop_index("ix_telemetry_window_end_covering", "telemetry")
        op.create_index("ix_telemetry_window_end_covering", "telemetry", list(COVERING_0004))
    op.drop_column("telemetry", "series_id")
    for name in NAME_INDEXES:
        op.create_index(f"ix_telemetry_{name}", "telemetry", [name])
    op.drop_table("telemetry_series")
