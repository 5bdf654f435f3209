"""Fleet queries: energy per inference (measured and estimated), latency, quality and counts per site,
model and agent over a time window; energy and quality over time; each site's Pareto front; eCAL per model.

Every aggregate is a sum the database computes (GROUP BY), weighted by the inferences of each window, so a
query moves only groups to Python. The ingest keeps the same sums per hour and per 5 minutes (``ROLLUP_LEVELS``);
a window ``[since, until]`` (on ``window_end``, both ends included) is covered coarse to fine: the hourly level
serves the whole hours ``[ceil_h(since), floor_h(until))``, the 5-minute level the whole 5 minutes of what is
left at each edge, and raw reports only the rest (under 5 minutes on each side). A window with no whole bucket
of a level goes to the next finer one whole. Sums from all sources add up, then are divided.

Every source names its stream of reports (an agent's, with one model, at one site, from one meter) by an integer
(``TelemetrySeriesRow``): the sources' rows are summed per stream first, so the database sorts integers, and
only the streams' sums are joined with their names and summed per group. One statement sums the energy,
latency and counts of all sources, one the quality metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import BigInteger, Float, and_, cast, extract, func, or_, select, true, union_all
from sqlalchemy.orm import Session

from edgejoule.energy.ecal import LifecycleStages, ecal_j_per_bit
from edgejoule.registry.db import ROLLUP_LEVELS, ModelRow, RollupLevel, TelemetryRow, TelemetrySeriesRow
from edgejoule.registry.schemas import utc
from edgejoule.registry.service import ROLLUP_SUMS

T = TelemetryRow
S = TelemetrySeriesRow
# a bucket starting later would end after the last datetime
LATEST = datetime.max.replace(tzinfo=timezone.utc).timestamp() - max(level.seconds for level in ROLLUP_LEVELS)
GROUPINGS = {"site": ("site",), "model": ("site", "model_id"), "agent": ("site", "model_id", "agent_id")}


class _Groups:
    """Sums per group key (ROLLUP_SUMS order), the meters seen and the quality sums.

    Rows arrive as Core rows (not ORM results), one per group and meter (or metric), and are merged in plain
    loops, with no call per row: a per-agent query has 1000 groups, so every step per row counts."""

    def __init__(self, width: int, meters: bool) -> None:
        self.width, self.with_meters = width, meters
        self.sums: dict[tuple, list] = {}
        self.meters: dict[tuple, set[tuple[str, str]]] = {}
        self.quality: dict[tuple, dict[str, list]] = {}

    def add(self, rows) -> None:
        """Rows of (the key, [meter, meter_kind,] the ROLLUP_SUMS)."""
        width = self.width
        start = width + 2 if self.with_meters else width
        sums, meters = self.sums, self.meters
        for row in rows:
            key = tuple(row[:width])
            values = row[start:]
            acc = sums.get(key)
            sums[key] = list(values) if acc is None else [a + b for a, b in zip(acc, values)]
            if start > width:
                meters.setdefault(key, set()).add(row[width:start])

    def add_quality(self, rows) -> None:
        """Rows of (the key, metric, weighted sum, inferences), from the quality roll-up."""
        width = self.width
        quality = self.quality
        for row in rows:
            if row[-1]:
                q = quality.setdefault(tuple(row[:width]), {}).setdefault(row[width], [0.0, 0])
                q[0] += row[-2]
                q[1] += row[-1]

    def rows(self, names: tuple) -> list[dict[str, Any]]:
        """One dict per group, ``names`` naming the key's columns, in key order (None first)."""
        out = []
        no_quality: dict = {}
        labels: dict[frozenset, list[str]] = {}  # most groups share their meters: format each set once
        keys = list(self.sums)  # a key function per key only where a None needs it (the fallback's model_id)
        for key in sorted(keys, key=_none_first) if any(None in key for key in keys) else sorted(keys):
            windows, n, total, dynamic, p50, p95, estimated, estimated_windows = self.sums[key]
            quality = self.quality.get(key, no_quality)
            row = {**dict(zip(names, key)), "windows": windows, "inferences": n,
                   "energy_total_uj": total / n if n else None, "energy_dynamic_uj": dynamic / n if n else None,
                   "estimated_energy_uj": estimated / estimated_windows if estimated_windows else None,
                   "latency_ms_p50": p50 / n if n else None, "latency_ms_p95": p95 / n if n else None,
                   "quality": {name: quality[name][0] / quality[name][1] for name in sorted(quality)}}
            if self.with_meters:
                meters = frozenset(self.meters[key])
                row["meters"] = labels.get(meters) or labels.setdefault(
                    meters, sorted(f"{meter} ({kind})" for meter, kind in meters))
            out.append(row)
        return out


def _none_first(key: tuple) -> tuple:
    return tuple((0,) if v is None else (1, v) for v in key)


Buckets = dict[RollupLevel, list[tuple[int | None, int | None]]]


def _plan(since: datetime | None, until: datetime | None, levels: Sequence[RollupLevel] = ROLLUP_LEVELS):
    """(for each level used, its bucket starts as [lo, hi) ranges in epoch seconds, None for an open end; the
    condition on raw rows, or None when no raw row is needed). ``levels`` coarsest first."""
    buckets: Buckets = {}
    raw: list = []

    def cover(lo: datetime | None, hi: datetime | None, closed: bool, levels: Sequence[RollupLevel]) -> None:
        """``[lo, hi]`` (``[lo, hi)`` unless ``closed``) by whole buckets of ``levels[0]``, the edges finer."""
        if lo is not None and hi is not None and (lo > hi or lo == hi and not closed):
            return
        if not levels:
            bounds = ([T.window_end >= lo] if lo is not None else []) + (
                [(T.window_end <= hi) if closed else (T.window_end < hi)] if hi is not None else [])
            raw.append(and_(*bounds) if bounds else True)
            return
        size = levels[0].seconds
        first = None if lo is None else -int(-lo.timestamp() // size) * size  # start of the first whole bucket
        last = None if hi is None else int(hi.timestamp() // size) * size  # end of the last whole bucket
        if first is not None and (first > LATEST or last is not None and first >= last):
            cover(lo, hi, closed, levels[1:])
            return
        buckets.setdefault(levels[0], []).append((first, last))
        if first is not None:
            cover(lo, _at(first), False, levels[1:])
        if last is not None:
            cover(_at(last), hi, closed, levels[1:])

    cover(None if since is None else utc(since), None if until is None else utc(until), True, levels)
    if any(condition is True for condition in raw):
        return buckets, True
    return buckets, (or_(*raw) if raw else None)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def _streams(query, column, site: str | None, model_id: str | None, agent_id: str | None):
    """``query`` restricted to the streams (``column`` names them) of that site, model and agent."""
    conditions = [c == v for c, v in ((S.site, site), (S.model_id, model_id), (S.agent_id, agent_id)) if v is not None]
    return query.where(column.in_(select(S.id).where(*conditions))) if conditions else query


def _within(query, table, ranges: list[tuple[int | None, int | None]]):
    """``query`` restricted to the buckets of a roll-up table that start in one of the [lo, hi) ``ranges``."""
    spans = []
    for lo, hi in ranges:
        bounds = ([table.start >= lo] if lo is not None else []) + ([table.start < hi] if hi is not None else [])
        if not bounds:
            return query  # every bucket
        spans.append(and_(*bounds))
    return query.where(or_(*spans))


def _per_group(connection, sources: list, extra: int, names: Sequence[str], meters: bool, bucket: bool) -> list:
    """Sum ``sources`` (rows of stream id, [bucket start,] ``extra`` grouping columns, then values) per group:
    rows of (the names' columns, [bucket start,] [meter, meter_kind,] the extra columns, the sums).

    Without time buckets a stream has many rows (one per roll-up bucket and raw report), so they are summed
    per stream first: the database sorts integers, and joins the names once per stream. With time buckets a
    stream has about one row per bucket, and the rows are joined with their names directly. Keys go to GROUP BY
    most selective first (agent, model, site), which spares SQLite's sort comparisons; PostgreSQL sums BIGINT
    as NUMERIC: cast back, so counts stay integers in Python."""
    rows = (union_all(*sources) if len(sources) > 1 else sources[0]).subquery()
    grouped = 1 + bucket + extra
    if not bucket:
        columns = list(rows.c)
        rows = select(*columns[:grouped], *(cast(func.sum(c), c.type).label(c.name) for c in columns[grouped:])) \
            .group_by(*columns[:grouped]).subquery()
    columns = list(rows.c)
    keys = [func.nullif(S.model_id, "").label("model_id") if name == "model_id" else getattr(S, name) for name in names]
    keys += columns[1:1 + bucket] + ([S.meter, S.meter_kind] if meters else []) + columns[1 + bucket:grouped]
    query = select(*keys, *(cast(func.sum(c), c.type) for c in columns[grouped:])) \
        .join_from(rows, S, S.id == rows.c.series_id) \
        .group_by(*reversed(keys[:len(names)]), *keys[len(names):])
    return connection.execute(query).all()


def _grouped_sums(session: Session, groups: _Groups, names: Sequence[str], buckets: Buckets, condition,
                  filters: tuple, bucket_s: int | None = None) -> None:
    """The sums and the quality of each group of ``names`` (and time bucket of ``bucket_s``) over the roll-up
    levels' ``buckets`` and the raw rows matching ``condition`` (None: no raw row)."""
    connection = session.connection()  # Core rows: no ORM bookkeeping per row

    def bucket_of(start) -> list:
        return [] if bucket_s is None else [(start // bucket_s * bucket_s).label("bucket")]

    sums, quality = [], []
    for level, ranges in buckets.items():
        table, metrics = level.sums, level.quality
        sums.append(_within(_streams(select(
            table.series_id, *bucket_of(table.start), *(table.__table__.c[c] for c in ROLLUP_SUMS)),
            table.series_id, *filters), table, ranges))
        quality.append(_within(_streams(select(
            metrics.series_id, *bucket_of(metrics.start), metrics.metric, metrics.weighted_sum, metrics.inferences),
            metrics.series_id, *filters), metrics, ranges))
    if condition is not None:
        n, raw_bucket = T.inferences, bucket_of(_epoch_seconds(session))
        by = [T.series_id, *raw_bucket]
        types = [ROLLUP_LEVELS[0].sums.__table__.c[c].type for c in ROLLUP_SUMS]
        values = [func.count(), func.sum(n), func.sum(T.energy_total_uj * n), func.sum(T.energy_dynamic_uj * n),
                  func.sum(T.latency_ms_p50 * n), func.sum(T.latency_ms_p95 * n),
                  func.coalesce(func.sum(T.estimated_energy_uj), 0.0), func.count(T.estimated_energy_uj)]
        raw = _streams(select(*by, *(cast(v, t) for v, t in zip(values, types))), T.series_id, *filters)
        sums.append((raw if condition is True else raw.where(condition)).group_by(*by))
        metric = _metrics(session)
        value = cast(metric.c.value, Float)
        raw = _streams(select(*by, metric.c.key.label("metric"), cast(func.sum(value * n), Float),
                              cast(func.sum(n), BigInteger)).select_from(T).join(metric, true()),
                       T.series_id, *filters)
        quality.append((raw if condition is True else raw.where(condition)).group_by(*by, metric.c.key))
    if not sums:
        return
    bucket = bucket_s is not None
    groups.add(_per_group(connection, sums, 0, names, groups.with_meters, bucket))
    groups.add_quality(_per_group(connection, quality, 1, names, False, bucket))


def _metrics(session: Session):
    """Each (key, value) of a raw row's ``quality``, as a table joined to the row (``json_each`` on SQLite,
    ``jsonb_each_text`` of the jsonb column on PostgreSQL)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.json_each(T.quality).table_valued("key", "value")
    return func.jsonb_each_text(T.quality).table_valued("key", "value")


def fleet(session: Session, group_by: str = "model", site: str | None = None, model_id: str | None = None,
          agent_id: str | None = None, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    names = GROUPINGS[group_by]
    buckets, condition = _plan(since, until)
    groups = _Groups(len(names), meters=True)
    _grouped_sums(session, groups, names, buckets, condition, (site, model_id, agent_id))
    return groups.rows(names)


def _epoch_seconds(session: Session):
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.strftime("%s", T.window_end), BigInteger)
    return cast(func.floor(extract("epoch", T.window_end)), BigInteger)


def series(session: Session, bucket_s: int, site: str | None = None, model_id: str | None = None,
           since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    """Energy per inference and quality per site and model in time buckets of ``bucket_s`` seconds (from the
    roll-up levels whose buckets divide ``bucket_s``)."""
    buckets, condition = _plan(since, until, [level for level in ROLLUP_LEVELS if bucket_s % level.seconds == 0])
    groups = _Groups(3, meters=False)
    _grouped_sums(session, groups, ("site", "model_id"), buckets, condition, (site, model_id, None), bucket_s)
    rows = groups.rows(("site", "model_id", "bucket_start"))
    for row in rows:
        row["bucket_start"] = int(row["bucket_start"])
    return rows


def pareto(session: Session, site: str, metric: str = "sum_rate") -> list[dict[str, Any]]:
    """The site's models as (estimated energy, quality on the test split, measured energy) points, marking
    those no other model beats on both energy and quality. Estimates of two counting rules are not compared: a
    package from before the ``implemented`` counting (``paper``) is on a front of such packages only."""
    measured = {r["model_id"]: r["energy_total_uj"] for r in fleet(session, "model", site=site)}
    points = [{"model_id": m.id, "version": m.version, "estimated_energy_uj": m.estimated_energy_uj,
               "energy_counting": m.manifest.get("energy", {}).get("counting", "paper"),
               "measured_energy_uj": measured.get(m.id), "quality": m.manifest.get("metrics", {}).get(metric)}
              for m in session.scalars(select(ModelRow).where(ModelRow.site == site).order_by(ModelRow.version))]
    for p in points:
        p["on_front"] = p["quality"] is not None and not any(
            q is not p and q["quality"] is not None and q["energy_counting"] == p["energy_counting"]
            and q["estimated_energy_uj"] <= p["estimated_energy_uj"]
            and q["quality"] >= p["quality"]
            and (q["estimated_energy_uj"], q["quality"]) != (p["estimated_energy_uj"], p["quality"]) for q in points)
    return points


def ecal(session: Session, model_id: str) -> dict[str, Any]:
    """eCAL of a model (edgejoule.energy.ecal): its training energy from the manifest plus the fleet's measured
    energy per inference, amortized over the inferences the fleet has run with it."""
    model = session.get(ModelRow, model_id)
    rows = fleet(session, "model", model_id=model_id)
    inferences = sum(r["inferences"] for r in rows)
    per_inference_j = (sum(r["energy_total_uj"] * r["inferences"] for r in rows if r["inferences"]) / inferences * 1e-6
                       if inferences else 0.0)
    values = 1
    inputs = model.manifest.get("inputs") or [{"shape": []}]
    for d in inputs[0]["shape"][1:]:
        values *= max(d, 1)
    n_train = int(model.manifest.get("metrics", {}).get("n_train", 0))
    stages = LifecycleStages(training_j=model.training_energy_j, inference_j=per_inference_j, values_per_sample=values,
                             n_train=n_train)
    return {"model_id": model_id, "inferences": inferences, "training_energy_j": model.training_energy_j,
            "inference_energy_j": per_inference_j, "n_train": n_train,
            "ecal_j_per_bit": ecal_j_per_bit(stages, inferences) if inferences or n_train else None}
