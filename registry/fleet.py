"""Fleet queries: energy per inference (measured and estimated), latency, quality and counts per site,
model and agent over a time window; energy and quality over time; each site's Pareto front; eCAL per model.

Every aggregate is a sum the database computes (GROUP BY), weighted by the inferences of each window, so a
query moves only groups to Python. Whole hours come from the hourly roll-up the ingest keeps
(``telemetry_hourly``, ``telemetry_hourly_quality``); only the partial hours at the edges of a window are
summed from raw reports. For a window ``[since, until]`` (on ``window_end``, both ends included) the roll-up
serves the hours ``[ceil_h(since), floor_h(until))`` and the raw rows serve ``[since, ceil_h(since))`` and
``[floor_h(until), until]``; a window inside one hour is all raw. Sums from both add up, then are divided.
"""

from __future__ import annotations

from datetime import datetime, timezone
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, and_, case, cast, extract, func, or_, select
from sqlalchemy.orm import Session

from core.energy.ecal import LifecycleStages, ecal_j_per_bit
from registry.db import ModelRow, QualityMetricRow, TelemetryHourQualityRow, TelemetryHourRow, TelemetryRow
from registry.service import HOUR_S, ROLLUP_SUMS, utc

T, R, Q = TelemetryRow, TelemetryHourRow, TelemetryHourQualityRow
LATEST = datetime.max.replace(tzinfo=timezone.utc).timestamp() - HOUR_S  # a later hour has no datetime
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


def _plan(since: datetime | None, until: datetime | None, roll_up: bool = True):
    """(the roll-up's hours as (lo, hi) epoch seconds, None for an open end, or None when it is not used;
    the condition on raw rows, True for all of them, or None when no raw row is needed)."""
    since = utc(since) if since is not None else None
    until = utc(until) if until is not None else None
    lo = None if since is None else -int(-since.timestamp() // HOUR_S) * HOUR_S  # start of the first whole hour
    hi = None if until is None else int(until.timestamp() // HOUR_S) * HOUR_S  # end of the last whole hour
    if not roll_up or (lo is not None and (lo > LATEST or hi is not None and lo >= hi)):
        whole = [T.window_end >= since] if since is not None else []
        whole += [T.window_end <= until] if until is not None else []
        return None, and_(*whole) if whole else True
    edges = []
    if since is not None and since.timestamp() < lo:
        edges.append(and_(T.window_end >= since, T.window_end < _at(lo)))
    if until is not None:
        edges.append(and_(T.window_end >= _at(hi), T.window_end <= until))
    return (lo, hi), (or_(*edges) if edges else None)


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


def _rolled_up_sums(session: Session, groups: _Groups, keys: list, quality_keys: list, hours: tuple,
                    filters: tuple) -> None:
    """The same sums over whole hours, from the roll-up tables (a few rows per agent and hour)."""
    lo, hi = hours
    connection = session.connection()

    def within(query, table):
        query = _where(query, table, *filters)
        if lo is not None:
            query = query.where(table.hour >= lo)
        return query if hi is None else query.where(table.hour < hi)

    meter_columns = [R.meter, R.meter_kind] if groups.with_meters else []
    # PostgreSQL sums BIGINT as NUMERIC: cast back, so counts stay integers in Python
    query = within(select(*keys, *meter_columns, *(cast(func.sum(R.__table__.c[c]), R.__table__.c[c].type)
                                                   for c in ROLLUP_SUMS)), R)
    groups.add(connection.execute(query.group_by(*reversed(keys), *meter_columns)).all())
    query = within(select(*quality_keys, Q.metric, func.sum(Q.weighted_sum), cast(func.sum(Q.inferences), BigInteger)), Q)
    groups.add_quality(connection.execute(query.group_by(*reversed(quality_keys), Q.metric)).all())


def _columns(table, names) -> list:
    """The roll-up's key columns; its '' for the fallback's model_id reads as NULL, like the raw rows'."""
    return [func.nullif(table.model_id, "") if name == "model_id" else getattr(table, name) for name in names]


def fleet(session: Session, group_by: str = "model", site: str | None = None, model_id: str | None = None,
          agent_id: str | None = None, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    names = GROUPINGS[group_by]
    filters = (site, model_id, agent_id)
    hours, condition = _plan(since, until)
    groups = _Groups(len(names), meters=True)
    if hours is not None:
        _rolled_up_sums(session, groups, _columns(R, names), _columns(Q, names), hours, filters)
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
    roll-up where the buckets are whole hours)."""
    filters = (site, model_id, None)
    hours, condition = _plan(since, until, roll_up=bucket_s % HOUR_S == 0)
    groups = _Groups(3, meters=False)
    if hours is not None:
        _rolled_up_sums(session, groups, [*_columns(R, ("site", "model_id")), R.hour // bucket_s * bucket_s],
                        [*_columns(Q, ("site", "model_id")), Q.hour // bucket_s * bucket_s], hours, filters)
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
