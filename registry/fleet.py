"""Fleet queries: energy per inference (measured and estimated), latency, quality and counts per site,
model and agent over a time window; energy and quality over time; each site's Pareto front; eCAL per model.

Every aggregate is a sum the database computes (GROUP BY), weighted by the inferences of each window, so a
query moves only groups to Python. The ingest keeps the same sums per hour and per 5 minutes (``ROLLUP_LEVELS``);
a window ``[since, until]`` (on ``window_end``, both ends included) is covered coarse to fine: the hourly level
serves the whole hours ``[ceil_h(since), floor_h(until))``, the 5-minute level the whole 5 minutes of what is
left at each edge, and raw reports only the rest (under 5 minutes on each side). A window with no whole bucket
of a level goes to the next finer one whole. Sums from all sources add up, then are divided.
"""

from __future__ import annotations

from datetime import datetime, timezone
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, and_, case, cast, extract, func, or_, select, union_all
from sqlalchemy.orm import Session

from core.energy.ecal import LifecycleStages, ecal_j_per_bit
from registry.db import ROLLUP_LEVELS, ModelRow, QualityMetricRow, RollupLevel, TelemetryRow
from registry.schemas import utc
from registry.service import ROLLUP_SUMS

T = TelemetryRow
# a bucket starting later would end after the last datetime
LATEST = datetime.max.replace(tzinfo=timezone.utc).timestamp() - max(level.seconds for level in ROLLUP_LEVELS)
GROUPINGS = {"site": ("site",), "model": ("site", "model_id"), "agent": ("site", "model_id", "agent_id")}


class _Groups:
    """Sums per group key (ROLLUP_SUMS order), the meters seen and the quality sums, from either source.

    Rows arrive as Core rows (not ORM results) and are merged in plain loops, with no call per row: a per-agent
    query has 1000 groups, so every step per row counts."""

    def __init__(self, width: int, meters: bool) -> None:
        self.width, self.with_meters = width, meters
        self.sums: dict[tuple, list] = {}
        self.meters: dict[tuple, set[tuple[str, str]]] = {}
        self.quality: dict[tuple, dict[str, list]] = {}

    def add(self, rows, names: Sequence[str] = ()) -> None:
        """Rows of (the key, [meter, meter_kind,] the ROLLUP_SUMS[, each of ``names``' weighted sum and
        inferences]); every sum is a number (the raw query coalesces the NULL of an empty sum)."""
        width = self.width
        start = width + 2 if self.with_meters else width
        end = start + len(ROLLUP_SUMS)
        sums, meters, quality = self.sums, self.meters, self.quality
        for row in rows:
            key = tuple(row[:width])
            values = row[start:end]
            acc = sums.get(key)
            sums[key] = list(values) if acc is None else [a + b for a, b in zip(acc, values)]
            if start > width:
                meters.setdefault(key, set()).add(row[width:start])
            for i, name in enumerate(names):
                inferences = row[end + 2 * i + 1]
                if inferences:
                    q = quality.setdefault(key, {}).setdefault(name, [0.0, 0])
                    q[0] += row[end + 2 * i]
                    q[1] += inferences

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
        keys = list(self.sums)  # a key function per key only where a None needs it (the fallback's model_id)
        for key in sorted(keys, key=_none_first) if any(None in key for key in keys) else sorted(keys):
            windows, n, total, dynamic, p50, p95, estimated, estimated_windows = self.sums[key]
            row = dict(zip(names, key))
            row["windows"], row["inferences"] = windows, n
            row["energy_total_uj"], row["energy_dynamic_uj"] = (total / n, dynamic / n) if n else (None, None)
            row["estimated_energy_uj"] = estimated / estimated_windows if estimated_windows else None
            row["latency_ms_p50"], row["latency_ms_p95"] = (p50 / n, p95 / n) if n else (None, None)
            quality = self.quality.get(key, no_quality)
            row["quality"] = {name: quality[name][0] / quality[name][1] for name in sorted(quality)}
            if self.with_meters:
                row["meters"] = sorted(f"{meter} ({kind})" for meter, kind in self.meters[key])
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


def _where(query, table, site: str | None, model_id: str | None, agent_id: str | None):
    for column, value in ((table.site, site), (table.model_id, model_id), (table.agent_id, agent_id)):
        if value is not None:
            query = query.where(column == value)
    return query


def _raw_sums(session: Session, groups: _Groups, keys: list, condition, filters: tuple) -> None:
    """One scan of the raw rows matching ``condition``: the sums per key (and meter), each quality metric's too.
    Keys go to GROUP BY most selective first (agent, model, site), which spares SQLite's sort comparisons."""
    connection = session.connection()  # Core rows: no ORM bookkeeping per row
    names = list(connection.scalars(select(QualityMetricRow.name).order_by(QualityMetricRow.name)))
    n = T.inferences
    columns = [func.count(), func.sum(n), func.sum(T.energy_total_uj * n), func.sum(T.energy_dynamic_uj * n),
               func.sum(T.latency_ms_p50 * n), func.sum(T.latency_ms_p95 * n),
               func.coalesce(func.sum(T.estimated_energy_uj), 0.0), func.count(T.estimated_energy_uj)]
    for name in names:
        value = T.quality[name].as_float()
        columns += [func.sum(value * n), func.sum(case((value.is_not(None), n), else_=0))]
    meter_columns = [T.meter, T.meter_kind] if groups.with_meters else []
    query = _where(select(*keys, *meter_columns, *columns), T, *filters)
    if condition is not True:
        query = query.where(condition)
    groups.add(connection.execute(query.group_by(*reversed(keys), *meter_columns)).all(), names)


def _rolled_up_sums(session: Session, groups: _Groups, buckets: Buckets, keys, filters: tuple) -> None:
    """The same sums over whole buckets of the roll-up levels: one statement for the sums and one for the
    quality, each summing the levels' rows (UNION ALL) per key in the database, so Python merges one row per
    key and meter (and per key and metric) whatever the number of levels; ``keys(table)`` gives the key
    columns of any roll-up table."""
    connection = session.connection()

    def within(query, table, ranges):
        query = _where(query, table, *filters)
        spans = []
        for lo, hi in ranges:
            bounds = ([table.start >= lo] if lo is not None else []) + ([table.start < hi] if hi is not None else [])
            if not bounds:
                return query  # every bucket
            spans.append(and_(*bounds))
        return query.where(or_(*spans))

    def summed(parts: list, grouped: int):
        """``SELECT`` the first ``grouped`` columns and the sum of each other one, per group, over ``parts``."""
        rows = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()
        columns = list(rows.c)
        group = columns[:grouped]
        # keys most selective first (agent, model, site) spare SQLite's sort comparisons; PostgreSQL sums BIGINT
        # as NUMERIC: cast back, so counts stay integers in Python
        width = groups.width
        return connection.execute(select(*group, *(cast(func.sum(c), c.type) for c in columns[grouped:]))
                                  .group_by(*reversed(group[:width]), *group[width:])).all()

    def labelled(table) -> list:
        return [column.label(f"k{i}") for i, column in enumerate(keys(table))]

    meters = groups.with_meters
    sums = [within(select(*labelled(level.sums), *([level.sums.meter, level.sums.meter_kind] if meters else []),
                          *(level.sums.__table__.c[c] for c in ROLLUP_SUMS)), level.sums, ranges)
            for level, ranges in buckets.items()]
    groups.add(summed(sums, groups.width + (2 if meters else 0)))
    quality = [within(select(*labelled(level.quality), level.quality.metric, level.quality.weighted_sum,
                             level.quality.inferences), level.quality, ranges)
               for level, ranges in buckets.items()]
    groups.add_quality(summed(quality, groups.width + 1))


def _columns(table, names) -> list:
    """The roll-up's key columns; its '' for the fallback's model_id reads as NULL, like the raw rows'."""
    return [func.nullif(table.model_id, "") if name == "model_id" else getattr(table, name) for name in names]


def fleet(session: Session, group_by: str = "model", site: str | None = None, model_id: str | None = None,
          agent_id: str | None = None, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    names = GROUPINGS[group_by]
    filters = (site, model_id, agent_id)
    buckets, condition = _plan(since, until)
    groups = _Groups(len(names), meters=True)
    if buckets:
        _rolled_up_sums(session, groups, buckets, lambda table: _columns(table, names), filters)
    if condition is not None:
        _raw_sums(session, groups, [getattr(T, k) for k in names], condition, filters)
    return groups.rows(names)


def _epoch_seconds(session: Session):
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.strftime("%s", T.window_end), BigInteger)
    return cast(func.floor(extract("epoch", T.window_end)), BigInteger)


def series(session: Session, bucket_s: int, site: str | None = None, model_id: str | None = None,
           since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    """Energy per inference and quality per site and model in time buckets of ``bucket_s`` seconds (from the
    roll-up levels whose buckets divide ``bucket_s``)."""
    filters = (site, model_id, None)
    buckets, condition = _plan(since, until, [level for level in ROLLUP_LEVELS if bucket_s % level.seconds == 0])
    groups = _Groups(3, meters=False)
    if buckets:
        _rolled_up_sums(session, groups, buckets,
                        lambda table: [*_columns(table, ("site", "model_id")), table.start // bucket_s * bucket_s], filters)
    if condition is not None:
        bucket = _epoch_seconds(session) // bucket_s * bucket_s
        _raw_sums(session, groups, [T.site, T.model_id, bucket], condition, filters)
    rows = groups.rows(("site", "model_id", "bucket_start"))
    for row in rows:
        row["bucket_start"] = int(row["bucket_start"])
    return rows


def pareto(session: Session, site: str, metric: str = "sum_rate") -> list[dict[str, Any]]:
    """The site's models as (estimated energy, quality on the test split, measured energy) points, marking
    those no other model beats on both energy and quality."""
    measured = {r["model_id"]: r["energy_total_uj"] for r in fleet(session, "model", site=site)}
    points = [{"model_id": m.id, "version": m.version, "estimated_energy_uj": m.estimated_energy_uj,
               "measured_energy_uj": measured.get(m.id), "quality": m.manifest.get("metrics", {}).get(metric)}
              for m in session.scalars(select(ModelRow).where(ModelRow.site == site).order_by(ModelRow.version))]
    for p in points:
        p["on_front"] = p["quality"] is not None and not any(
            q is not p and q["quality"] is not None and q["estimated_energy_uj"] <= p["estimated_energy_uj"]
            and q["quality"] >= p["quality"]
            and (q["estimated_energy_uj"], q["quality"]) != (p["estimated_energy_uj"], p["quality"]) for q in points)
    return points


def ecal(session: Session, model_id: str) -> dict[str, Any]:
    """eCAL of a model (core.energy.ecal): its training energy from the manifest plus the fleet's measured
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
