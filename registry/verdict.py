"""What a site's fleet measured, said in words: the DNN beside the classical methods served on the same site.

Read from ``GET /fleet?group_by=model&site=S``: each group's achieved sum rate (the agents compute it on the
channels they served), its estimated energy per inference (the ``implemented`` counting, which packages and
methods both carry) and its metered energy. The verdict compares the best DNN by sum rate with

- a classical method that dominates it (at least its sum rate at no more energy), if one does, the one with the
  most sum rate: the DNN should not be deployed;
- else the cheapest classical method below it: what the DNN's extra sum rate costs, as an energy ratio.

Percentages are of the best WMMSE group's sum rate when the site runs one (the agents served the same channels
only if they served the same number of them from the same source: the demo does).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from edgejoule.registry.schemas import FleetRow
from edgejoule.schemas.targets import parse_target

FALLBACK = "zf (classical fallback)"


class Served(BaseModel):
    """One model or method of the site as the fleet measured it."""

    name: str = Field(description="package id or method target id")
    classical: bool
    inferences: int
    sum_rate: float
    percent_of_wmmse: float | None
    estimated_uj: float | None = Field(description="per inference, the implemented counting")
    measured_uj: float | None = Field(description="per inference, the agents' meters (idle power included)")
    measured_is_estimate: bool = Field(description="a meter without a sensor (cpu_time) produced it")
    latency_ms_p95: float | None


class SiteVerdict(BaseModel):
    site: str
    served: list[Served]
    sentence: str


def _method_name(model_id: str | None) -> str | None:
    if model_id is None:
        return "zf"
    method = parse_target(model_id)
    return None if method is None else method.name


def verdict(site: str, rows: list[FleetRow]) -> SiteVerdict:
    """The comparison and its sentence for ``site`` from its fleet rows grouped by model."""
    rated = [r for r in rows if r["site"] == site and r["inferences"] and "sum_rate" in r["quality"]]
    wmmse = max((r["quality"]["sum_rate"] for r in rated if _method_name(r.get("model_id")) == "wmmse"), default=None)
    served = [Served(name=r.get("model_id") or FALLBACK, classical=_method_name(r.get("model_id")) is not None,
                     inferences=r["inferences"], sum_rate=r["quality"]["sum_rate"],
                     percent_of_wmmse=None if wmmse is None else 100 * r["quality"]["sum_rate"] / wmmse,
                     estimated_uj=r["estimated_energy_uj"], measured_uj=r["energy_total_uj"],
                     measured_is_estimate=any(m.endswith("(estimated)") for m in r["meters"]),
                     latency_ms_p95=r["latency_ms_p95"]) for r in rated]
    served.sort(key=lambda s: -s.sum_rate)
    return SiteVerdict(site=site, served=served, sentence=_sentence(site, served))


def _rate(s: Served) -> str:
    return f"{s.percent_of_wmmse:.1f} % of WMMSE" if s.percent_of_wmmse is not None else f"{s.sum_rate:.3f} bit/s/Hz"


def _energy(s: Served) -> str:
    return f"{s.estimated_uj:.3g} uJ" if s.estimated_uj is not None else "an unknown energy"


def _sentence(site: str, served: list[Served]) -> str:
    dnns = [s for s in served if not s.classical]
    classical = [s for s in served if s.classical and s.estimated_uj is not None]
    if not dnns or not classical:
        return f"{site}: no DNN and classical method both reported sum rate and energy here; nothing to compare"
    dnn = dnns[0]
    if dnn.estimated_uj is None:
        return f"{site}: the DNN {dnn.name} carries no energy estimate; nothing to compare"
    said = f"{site}: the DNN reaches {_rate(dnn)} at {_energy(dnn)} (implemented counting)"
    dominating = [c for c in classical if c.sum_rate >= dnn.sum_rate and c.estimated_uj <= dnn.estimated_uj]
    if dominating:
        best = dominating[0]  # the most sum rate of those (``served`` is sorted by it)
        return (f"{said}; {best.name} reaches {_rate(best)} at {_energy(best)}: it dominates the DNN "
                f"(more sum rate for less energy), so the DNN should not be deployed here{_metered(dnn, best)}")
    below = [c for c in classical if c.sum_rate < dnn.sum_rate]
    if not below:
        cheapest = min(classical, key=lambda c: c.estimated_uj)
        return (f"{said}; {cheapest.name} reaches {_rate(cheapest)} at {_energy(cheapest)}: the DNN saves "
                f"{cheapest.estimated_uj / dnn.estimated_uj:.3g}x the energy for "
                f"{100 * (1 - dnn.sum_rate / cheapest.sum_rate):.2g} % less sum rate{_metered(dnn, cheapest)}")
    cheapest = min(below, key=lambda c: c.estimated_uj)
    return (f"{said}; {cheapest.name} reaches {_rate(cheapest)} at {_energy(cheapest)}: the DNN buys "
            f"+{100 * (dnn.sum_rate / cheapest.sum_rate - 1):.2g} % sum rate for "
            f"{dnn.estimated_uj / cheapest.estimated_uj:.3g}x the energy{_metered(dnn, cheapest)}")


def _metered(dnn: Served, other: Served) -> str:
    """The agents' meters on the same two, which include what the counting leaves out (the runtime's overhead)."""
    if dnn.measured_uj is None or other.measured_uj is None:
        return ""
    kind = "estimated by a meter without a sensor" if dnn.measured_is_estimate or other.measured_is_estimate else "measured"
    said = (f". Metered on the agents ({kind}): {dnn.measured_uj:.3g} uJ per inference for the DNN, "
            f"{other.measured_uj:.3g} uJ for {other.name}")
    if (dnn.measured_uj < other.measured_uj) != (dnn.estimated_uj < other.estimated_uj):  # type: ignore[operator]
        said += (": the other order than the counting's, as each call's cost in the serving runtime, which the "
                 "counting leaves out, outweighs the arithmetic here")
    return said
