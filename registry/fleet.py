"""Fleet queries: energy per inference (measured and estimated), latency, quality and counts per site,
model and agent over a time window; energy and quality over time; each site's Pareto front; eCAL per model.

Every aggregate is computed by the database (GROUP BY), weighted by the inferences of each window, so a
query over a million reports moves only the groups to Python.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, case, cast, extract, func, select
from sqlalchemy.orm import Session

from core.energy.ecal import LifecycleStages, ecal_j_per_bit
from registry.db import ModelRow, QualityMetricRow, TelemetryRow

T = TelemetryRow
GROUPINGS = {"site": (T.site,), "model": (T.site, T.model_id), "agent": (T.site, T.model_id, T.agent_id)}


def _filtered(query, site: str | None, model_id: str | None, agent_id: str | None, since: datetime | None,
              until: datetime | None):
    for column, value in ((T.site, site), (T.model_id, model_id), (T.agent_id, agent_id)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(T.window_end >= since)
    if until is not None:
        query = query.where(T.window_end <= until)
    return query


def _weighted_columns(session: Session) -> tuple[list, list[str]]:
    """SUM(x * inferences) for each per-inference column and each quality metric, with its weight."""
    names = list(session.scalars(select(QualityMetricRow.name).order_by(QualityMetricRow.name)))
    columns = [func.sum(T.inferences), func.count()]
    for column in (T.energy_total_uj, T.energy_dynamic_uj, T.latency_ms_p50, T.latency_ms_p95):
        columns.append(func.sum(column * T.inferences))
    columns += [func.avg(T.estimated_energy_uj)]
    for name in names:
        value = T.quality[name].as_float()
        columns += [func.sum(value * T.inferences), func.sum(case((value.is_not(None), T.inferences), else_=0))]
    return columns, names


def _unpack(values, names: list[str]) -> dict[str, Any]:
    n, windows, total, dynamic, p50, p95, estimated, *quality = values
    n = n or 0

    def per(x):
        return None if not n or x is None else x / n

    return {"windows": windows, "inferences": n, "energy_total_uj": per(total), "energy_dynamic_uj": per(dynamic),
            "estimated_energy_uj": estimated, "latency_ms_p50": per(p50), "latency_ms_p95": per(p95),
            "quality": {name: s / w for name, s, w in zip(names, quality[::2], quality[1::2]) if w}}


def fleet(session: Session, group_by: str = "model", site: str | None = None, model_id: str | None = None,
          agent_id: str | None = None, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    keys = GROUPINGS[group_by]
    columns, names = _weighted_columns(session)
    query = _filtered(select(*keys, *columns), site, model_id, agent_id, since, until).group_by(*keys).order_by(*keys)
    meters: dict[tuple, list[str]] = {}
    meter_query = _filtered(select(*keys, T.meter, T.meter_kind), site, model_id, agent_id, since, until).distinct()
    for *key, meter, kind in session.execute(meter_query):
        meters.setdefault(tuple(key), []).append(f"{meter} ({kind})")
    out = []
    for row in session.execute(query):
        key = tuple(row[: len(keys)])
        out.append({k.key: v for k, v in zip(keys, key)} | _unpack(row[len(keys):], names)
                   | {"meters": sorted(meters.get(key, []))})
    return out


def _epoch_seconds(session: Session):
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.strftime("%s", T.window_end), BigInteger)
    return cast(extract("epoch", T.window_end), BigInteger)


def series(session: Session, bucket_s: int, site: str | None = None, model_id: str | None = None,
           since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    """Energy per inference and quality per site and model in time buckets of ``bucket_s`` seconds."""
    bucket = (_epoch_seconds(session) // bucket_s * bucket_s).label("bucket")
    columns, names = _weighted_columns(session)
    query = _filtered(select(T.site, T.model_id, bucket, *columns), site, model_id, None, since, until)
    query = query.group_by(T.site, T.model_id, bucket).order_by(T.site, T.model_id, bucket)
    return [{"site": row[0], "model_id": row[1], "bucket_start": int(row[2])} | _unpack(row[3:], names)
            for row in session.execute(query)]


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
