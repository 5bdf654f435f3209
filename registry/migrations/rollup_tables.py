"""The DDL and the backfill of one roll-up level (a sums table and a quality table per bucket size), shared by
the migrations that add a level (0003: hours, 0005: 5 minutes) and the one that keys every level by stream
(0006), so every level has the same shape at each revision.

Up to 0005 a bucket's key is its site, model ('' for the fallback) and agent, and the sums table adds the meter
and its kind; from 0006 it is the stream (``telemetry_series``: those five names in one integer)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

SUMS = ("windows", "inferences", "energy_total_uj", "energy_dynamic_uj", "latency_ms_p50", "latency_ms_p95",
        "estimated_energy_uj", "estimated_windows")


def create(sums: str, quality: str, start: str, filter_indexes: bool = True, sqlite_with_rowid: bool = True,
           by_series: bool = False) -> None:
    """The two tables, keyed by ``start`` (the bucket's first epoch second) and the stream (``by_series``) or
    its names; ``filter_indexes``: an index per stream (or per agent and per model) for fleet queries filtered
    by them over long spans; ``sqlite_with_rowid=False``: on SQLite the rows live in the primary key's B-tree."""

    def key_columns() -> list[sa.Column]:
        names = ([sa.Column("series_id", sa.Integer(), nullable=False)] if by_series else
                 [sa.Column("site", sa.String(length=64), nullable=False),
                  sa.Column("model_id", sa.String(length=128), nullable=False),
                  sa.Column("agent_id", sa.String(length=64), nullable=False)])
        return [sa.Column(start, sa.BigInteger(), nullable=False), *names]

    stream = (start, "series_id") if by_series else (start, "site", "model_id", "agent_id")
    meters = [] if by_series else [sa.Column("meter", sa.String(length=32), nullable=False),
                                   sa.Column("meter_kind", sa.String(length=16), nullable=False)]
    op.create_table(
        sums, *key_columns(), *meters,
        sa.Column("windows", sa.BigInteger(), nullable=False),
        sa.Column("inferences", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in
          ("energy_total_uj", "energy_dynamic_uj", "latency_ms_p50", "latency_ms_p95", "estimated_energy_uj")),
        sa.Column("estimated_windows", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*stream, *(c.name for c in meters)), sqlite_with_rowid=sqlite_with_rowid)
    op.create_table(
        quality, *key_columns(),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("weighted_sum", sa.Float(), nullable=False),
        sa.Column("inferences", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*stream, "metric"), sqlite_with_rowid=sqlite_with_rowid)
    if filter_indexes:
        for table in (sums, quality):
            if by_series:
                op.create_index(f"ix_{table}_series", table, ["series_id", start])
            else:
                op.create_index(f"ix_{table}_agent", table, ["agent_id", start])
                op.create_index(f"ix_{table}_model", table, ["model_id", start])


def backfill(sums: str, quality: str, start: str, seconds: int, by_series: bool = False) -> None:
    """The level's sums of the reports stored so far, in SQL (the same sums the ingest adds per batch)."""
    if op.get_bind().dialect.name == "sqlite":
        bucket = f"CAST(strftime('%s', t.window_end) AS INTEGER) / {seconds} * {seconds}"  # stored as UTC text
        quality_source, value = "telemetry t, json_each(t.quality) q", "CAST(q.value AS REAL)"
    else:
        bucket = f"CAST(floor(extract(epoch FROM t.window_end) / {seconds}) AS BIGINT) * {seconds}"
        # json before 0004, jsonb after it
        quality_source, value = "telemetry t, json_each_text(t.quality::json) q", "CAST(q.value AS DOUBLE PRECISION)"
    names = "series_id" if by_series else "site, model_id, agent_id"
    keys = f"{bucket}, t.series_id" if by_series else f"{bucket}, t.site, COALESCE(t.model_id, ''), t.agent_id"
    meters = "" if by_series else ", t.meter, t.meter_kind"
    op.execute(
        f"INSERT INTO {sums} ({start}, {names}{meters.replace('t.', '')}, {', '.join(SUMS)}) "
        f"SELECT {keys}{meters}, COUNT(*), SUM(t.inferences), SUM(t.energy_total_uj * t.inferences), "
        f"SUM(t.energy_dynamic_uj * t.inferences), SUM(t.latency_ms_p50 * t.inferences), "
        f"SUM(t.latency_ms_p95 * t.inferences), COALESCE(SUM(t.estimated_energy_uj), 0), COUNT(t.estimated_energy_uj) "
        f"FROM telemetry t GROUP BY {keys}{meters}")
    op.execute(
        f"INSERT INTO {quality} ({start}, {names}, metric, weighted_sum, inferences) "
        f"SELECT {keys}, q.key, SUM({value} * t.inferences), SUM(t.inferences) FROM {quality_source} "
        f"WHERE q.value IS NOT NULL GROUP BY {keys}, q.key")
