"""Fleet queries: energy per inference (measured and estimated), latency, quality and counts per site,
model and agent over a time window; and eCAL per model."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.energy.ecal import LifecycleStages, ecal_j_per_bit
from registry.db import ModelRow, TelemetryRow

GROUPINGS = {"site": ("site",), "model": ("site", "model_id"), "agent": ("site", "model_id", "agent_id")}


def fleet(session: Session, group_by: str = "model", site: str | None = None, model_id: str | None = None,
          agent_id: str | None = None, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    query = select(TelemetryRow)
    for column, value in (("site", site), ("model_id", model_id), ("agent_id", agent_id)):
        if value is not None:
            query = query.where(getattr(TelemetryRow, column) == value)
    if since is not None:
        query = query.where(TelemetryRow.window_end >= since)
    if until is not None:
        query = query.where(TelemetryRow.window_end <= until)
    keys = GROUPINGS[group_by]
    groups: dict[tuple, list[TelemetryRow]] = defaultdict(list)
    for row in session.scalars(query):
        groups[tuple(getattr(row, k) for k in keys)].append(row)
    out = []
    for key, rows in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        n = sum(r.inferences for r in rows) or 1

        def weighted(attr: str) -> float:
            return sum(getattr(r, attr) * r.inferences for r in rows) / n

        qualities = defaultdict(float)
        for r in rows:
            for name, value in r.quality.items():
                qualities[name] += value * r.inferences / n
        estimated = [r.estimated_energy_uj for r in rows if r.estimated_energy_uj is not None]
        out.append(dict(zip(keys, key)) | {
            "windows": len(rows), "inferences": sum(r.inferences for r in rows),
            "energy_total_uj": weighted("energy_total_uj"), "energy_dynamic_uj": weighted("energy_dynamic_uj"),
            "estimated_energy_uj": sum(estimated) / len(estimated) if estimated else None,
            "meters": sorted({f"{r.meter} ({r.meter_kind})" for r in rows}),
            "latency_ms_p50": weighted("latency_ms_p50"), "latency_ms_p95": weighted("latency_ms_p95"),
            "quality": dict(qualities),
        })
    return out


def ecal(session: Session, model_id: str) -> dict[str, Any]:
    """eCAL of a model: its training energy amortized over the fleet's inferences, measured energy per inference."""
    model = session.get(ModelRow, model_id)
    if model is None:
        return {}
    rows = fleet(session, "model", model_id=model_id)
    inferences = sum(r["inferences"] for r in rows)
    per_inference_j = (sum(r["energy_total_uj"] * r["inferences"] for r in rows) / inferences * 1e-6) if inferences else 0.0
    shape = model.manifest["inputs"][0]["shape"]
    values = 1
    for d in shape[1:]:
        values *= d
    stages = LifecycleStages(training_j=model.training_energy_j, inference_j=per_inference_j,
                             values_per_sample=values, n_train=int(model.manifest.get("metrics", {}).get("n_train", 0)))
    return {"model_id": model_id, "inferences": inferences, "training_energy_j": model.training_energy_j,
            "inference_energy_j": per_inference_j,
            "ecal_j_per_bit": ecal_j_per_bit(stages, inferences) if inferences or stages.n_train else None}
