"""Tables (SQLAlchemy 2) and the engine: SQLite in WAL mode by default, PostgreSQL by URL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("site", "task", "version"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    task: Mapped[str] = mapped_column(String(32))
    family: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    estimated_energy_uj: Mapped[float] = mapped_column(Float)
    training_energy_j: Mapped[float] = mapped_column(Float, default=0.0)
    manifest: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AliasRow(Base):
    __tablename__ = "aliases"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), index=True)
    hardware: Mapped[dict] = mapped_column(JSON, default=dict)
    runtime: Mapped[str] = mapped_column(String(128), default="")
    plugins: Mapped[list] = mapped_column(JSON, default=list)
    current_model_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeploymentRow(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[str] = mapped_column(String(128), doc="a package id or a method target (method:rzf)")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AssignmentRow(Base):
    """Which model (package or classical method, :mod:`edgejoule.schemas.targets`) each agent should run;
    ``previous_model_id`` is where a rollback goes."""

    __tablename__ = "assignments"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(128))
    previous_model_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    deployment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TelemetrySeriesRow(Base):
    """One stream of reports: an agent's windows with one model at one site, measured by one meter. The raw
    rows and the roll-up tables name their stream by ``id`` (migration 0006), so the fleet queries group and sort
    integers and join the five names once per group, not per row. ``model_id`` is '' for the classical fallback
    (a key column cannot be NULL). Streams are never deleted, so no foreign key guards the ids (it would cost
    every upsert of the ingest a lookup)."""

    __tablename__ = "telemetry_series"
    __table_args__ = (UniqueConstraint("agent_id", "model_id", "site", "meter", "meter_kind",
                                       name="uq_telemetry_series_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(128), index=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    meter: Mapped[str] = mapped_column(String(32))
    meter_kind: Mapped[str] = mapped_column(String(16))


class TelemetryRow(Base):
    """One report. Migrations 0004 and 0006 shape it for the fleet queries' scans of raw rows by ``window_end``:
    on SQLite a covering index (every column those sums read; the table is never visited), on PostgreSQL a plain
    index and ``quality`` as jsonb (parsed once at insert, not at every read). ``series_id`` names its stream
    (``TelemetrySeriesRow``), and the queries find a site's, model's or agent's rows through it (0006 dropped
    the indexes on the three names, which every insert had to keep up); on SQLite the column stays nullable in
    the DDL (ALTER TABLE cannot add a NOT NULL column without a default), but the ingest always sets it."""

    __tablename__ = "telemetry"
    __table_args__ = (Index("ix_telemetry_window_end", "window_end").ddl_if(dialect="postgresql"),
                      Index("ix_telemetry_window_end_covering", "window_end", "series_id", "inferences",
                            "energy_total_uj", "energy_dynamic_uj", "latency_ms_p50", "latency_ms_p95",
                            "estimated_energy_uj", "quality").ddl_if(dialect="sqlite"))

    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    series_id: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fallback: Mapped[str | None] = mapped_column(String(32), nullable=True)
    idle_power_w: Mapped[float | None] = mapped_column(Float, nullable=True)
    inferences: Mapped[int] = mapped_column(Integer)
    meter: Mapped[str] = mapped_column(String(32))
    meter_kind: Mapped[str] = mapped_column(String(16))
    energy_total_uj: Mapped[float] = mapped_column(Float)
    energy_dynamic_uj: Mapped[float] = mapped_column(Float)
    estimated_energy_uj: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_ms_p50: Mapped[float] = mapped_column(Float)
    latency_ms_p95: Mapped[float] = mapped_column(Float)
    latency_ms_p99: Mapped[float | None] = mapped_column(Float, nullable=True)
    quality: Mapped[dict] = mapped_column(JSON().with_variant(JSONB(), "postgresql"), default=dict)


class _RollupKey:
    """The key every roll-up table shares: a bucket of one stream of reports (``TelemetrySeriesRow``).

    ``start`` is the UTC epoch second where the bucket of ``window_end`` starts (the hourly tables call that
    column ``hour``). (``sort_order``: ``start`` first, then the stream, as in migration 0006.)"""

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=-1)


class _RollupSums(_RollupKey):
    """Sums of the telemetry per key. Only sums are kept (they add up across batches and buckets); the fleet
    queries divide."""

    windows: Mapped[int] = mapped_column(BigInteger)
    inferences: Mapped[int] = mapped_column(BigInteger)
    energy_total_uj: Mapped[float] = mapped_column(Float, doc="sum of energy_total_uj x inferences")
    energy_dynamic_uj: Mapped[float] = mapped_column(Float, doc="sum of energy_dynamic_uj x inferences")
    latency_ms_p50: Mapped[float] = mapped_column(Float, doc="sum of latency_ms_p50 x inferences")
    latency_ms_p95: Mapped[float] = mapped_column(Float, doc="sum of latency_ms_p95 x inferences")
    estimated_energy_uj: Mapped[float] = mapped_column(Float, doc="sum of the estimates of the windows carrying one")
    estimated_windows: Mapped[int] = mapped_column(BigInteger, doc="windows carrying an estimate")


class _RollupQuality(_RollupKey):
    """Each quality metric per key: the inference-weighted sum and the inferences that reported it."""

    metric: Mapped[str] = mapped_column(String(64), primary_key=True)
    weighted_sum: Mapped[float] = mapped_column(Float, doc="sum of value x inferences")
    inferences: Mapped[int] = mapped_column(BigInteger)


class TelemetryHourRow(_RollupSums, Base):
    """Hourly roll-up of the telemetry, kept by the ingest in the transaction that stores the raw rows."""

    __tablename__ = "telemetry_hourly"
    __table_args__ = (Index("ix_telemetry_hourly_series", "series_id", "hour"),)

    start: Mapped[int] = mapped_column("hour", BigInteger, primary_key=True, sort_order=-2)


class TelemetryHourQualityRow(_RollupQuality, Base):
    __tablename__ = "telemetry_hourly_quality"
    __table_args__ = (Index("ix_telemetry_hourly_quality_series", "series_id", "hour"),)

    start: Mapped[int] = mapped_column("hour", BigInteger, primary_key=True, sort_order=-2)


class Telemetry5MinRow(_RollupSums, Base):
    """The same sums per 5 minutes (migration 0005), so the partial hours at a window's edges are read from
    a dozen rows per agent and hour instead of every report.

    The 5-minute tables are only read over the short edges of a window, by ``start``: they get no index per
    stream, and on SQLite their rows live in the primary key's B-tree (WITHOUT ROWID), so each upsert
    of the ingest writes one B-tree, not two to four."""

    __tablename__ = "telemetry_5min"
    __table_args__ = ({"sqlite_with_rowid": False},)

    start: Mapped[int] = mapped_column(BigInteger, primary_key=True, sort_order=-2)


class Telemetry5MinQualityRow(_RollupQuality, Base):
    __tablename__ = "telemetry_5min_quality"
    __table_args__ = ({"sqlite_with_rowid": False},)

    start: Mapped[int] = mapped_column(BigInteger, primary_key=True, sort_order=-2)


@dataclass(frozen=True)
class RollupLevel:
    """One granularity of the roll-up: buckets of ``seconds`` starting at multiples of ``seconds`` after the
    epoch (UTC), their sums table and their quality table."""

    seconds: int
    sums: type[_RollupSums]
    quality: type[_RollupQuality]

    @property
    def start_column(self) -> str:
        """The database name of the tables' ``start`` (``hour`` in the hourly ones)."""
        return self.sums.__mapper__.columns["start"].name


# coarsest first; each size divides the one before it, so a coarse bucket is a whole number of finer ones
ROLLUP_LEVELS = (RollupLevel(3600, TelemetryHourRow, TelemetryHourQualityRow),
                 RollupLevel(300, Telemetry5MinRow, Telemetry5MinQualityRow))


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeadLetterRow(Base):
    """An MQTT message the ingest refused (malformed, out of range, or not its sender's to send), kept for the
    admin to read: the newest :data:`DEAD_LETTERS_KEPT`, its payload cut to :data:`DEAD_LETTER_BYTES`."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(String(512))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


DEAD_LETTERS_KEPT = 10_000
DEAD_LETTER_BYTES = 4096


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection, _record) -> None:  # concurrent writers need WAL
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # The fleet queries sum a few thousand rows and answer in tens of ms: a parallel plan's worker processes
    # (which PostgreSQL picks once the tables are analyzed) and JIT compilation (above its cost threshold, which
    # the per-agent query nears at a million reports) each cost more than the query itself, and the workers take
    # cores from the ingest. "Per agent, last hour" over 1,000,000 reports: p50 61-77 -> 38-41 ms in-process.
    return create_engine(url, pool_pre_ping=True,
                         connect_args={"options": "-c max_parallel_workers_per_gather=0 -c jit=off"})


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


class RolloutRow(Base):
    """A gated rollout of ``candidate`` on a site against its ``incumbent`` (``edgejoule.registry.rollouts``): the
    request as written (stages, gate, minimum sample, confidence, timeout) and where it stands, so a restarted
    registry continues it. ``active_site`` is the site while the rollout runs or is paused and NULL after: its
    unique key is what allows one rollout per site at a time, on both databases, even between registry workers."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    active_site: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    candidate: Mapped[str] = mapped_column(String(128))
    incumbent: Mapped[str] = mapped_column(String(128))
    stages: Mapped[list] = mapped_column(JSON, doc="fractions of the site's agents, increasing, the last 1.0")
    agent_order: Mapped[list] = mapped_column(JSON, doc="the site's agents in the order stages take them")
    gate: Mapped[str] = mapped_column(String(256))
    quality_metric: Mapped[str] = mapped_column(String(64))
    min_inferences: Mapped[int] = mapped_column(Integer)
    min_windows: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    timeout_s: Mapped[float] = mapped_column(Float, doc="per stage")
    on_timeout: Mapped[str] = mapped_column(String(16))
    started_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16), doc="running, paused, promoted, rolled_back, aborted, reverted")
    reason: Mapped[str] = mapped_column(Text, default="")
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    stage: Mapped[int] = mapped_column(Integer, doc="index into stages")
    stage_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True), doc="the stage's timeout, moved by pauses")
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    events_after: Mapped[int] = mapped_column(Integer, doc="load events with a larger id count against the candidate")
    looks: Mapped[int] = mapped_column(Integer, default=0, doc="gate looks taken in this stage")
    look_windows: Mapped[int] = mapped_column(Integer, default=0, doc="the smaller side's windows at the last look")
    readings: Mapped[dict | None] = mapped_column(JSON, nullable=True, doc="the gate's latest reading")


class RolloutEventRow(Base):
    """A step of a rollout: started, a stage entered, a gate decision with its readings, paused, resumed, ended."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stage: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    readings: Mapped[dict | None] = mapped_column(JSON, nullable=True)
