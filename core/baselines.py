"""Running a registered precoding baseline on a site's dataset, with its sum rate and its energy under each
counting (``implemented``, the default where the baseline reports it, and ``paper``;
:mod:`edgejoule.energy.counting`)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel

from edgejoule import plugin_manager
from edgejoule.energy.accelerator import EnergyBreakdown
from edgejoule.energy.counting import Counting, OperationCount, operations_energy
from edgejoule.errors import EdgejouleError
from edgejoule.interfaces import BaselineResult
from edgejoule.schemas.targets import MethodTarget
from edgejoule.sites.dataset import ChannelDataset, Split
from edgejoule.tasks.precoding import sum_rate


class BaselineReport(BaseModel):
    site: str
    method: str
    split: str
    samples: int
    sum_rate_mean: float
    sum_rate_std: float
    iterations_mean: float | None
    bisection_steps_mean: float | None = None
    macs_mean: float
    operations: OperationCount | None = None
    energy: EnergyBreakdown
    energy_by_counting: dict[str, EnergyBreakdown] = {}
    options: dict[str, Any] = {}

    @property
    def energy_efficiency(self) -> float:
        """bit/s/Hz per microjoule, the paper's figure of merit (``energy``: the default counting)."""
        return self.sum_rate_mean / self.energy.total_uj

    def energy_uj(self, counting: Counting) -> float:
        return self.energy_by_counting[counting].total_uj


#: ``(H [B, N_U, N_T], noise power, P_max) -> W [B, N_T, N_U]``: a classical method as the agent serves it
Precode = Callable[[np.ndarray, float, float], np.ndarray]


def _checked_options(method: str, baseline: Any, options: dict[str, Any]) -> None:
    accepted = inspect.signature(baseline.run).parameters
    for option in options:
        if option not in accepted or option in ("H", "noise_power", "p_max"):
            known = [p for p in accepted if p not in ("self", "H", "noise_power", "p_max")]
            raise EdgejouleError(f"baseline '{method}' takes no option '{option}' "
                                 f"(its options: {', '.join(known) or 'none'})")


def _baseline_of(target: MethodTarget) -> Any:
    """The precoding baseline ``target`` names, its options checked against its ``run``."""
    baseline = plugin_manager.get("baselines", target.name, task="precoding")
    _checked_options(target.name, baseline, target.options)
    return baseline


def served_method(target: MethodTarget) -> Precode:
    """The precoder ``target`` names, checked (a precoding baseline, options it takes) and ready to serve.

    A baseline's ``precode`` (same arguments as ``run``, returns the precoders alone) is used where it has one:
    ``run`` also counts its operations, work that is not the method's and would be measured as its energy.
    A baseline without one is served through ``run``."""
    baseline = _baseline_of(target)
    options = dict(target.options)
    precode = getattr(baseline, "precode", None)
    if precode is not None:
        return lambda H, noise_power, p_max: precode(H, noise_power, p_max, **options)
    return lambda H, noise_power, p_max: baseline.run(H, noise_power, p_max, **options).output


def checked_method(target: MethodTarget) -> Precode:
    """``served_method(target)`` after one run on a probe channel: a method that fails, or whose precoder is not
    finite or misses the power budget with these options (``max_iterations=0``, ``tol='x'``), is refused here,
    when it is deployed, not on every agent it is sent to."""
    precode = served_method(target)
    rng = np.random.default_rng(0)
    H = rng.normal(size=(1, 4, 8)) + 1j * rng.normal(size=(1, 4, 8))
    try:
        W = np.asarray(precode(H, 0.1, 1.0))
        power = float(np.sum(np.abs(W) ** 2))
    except Exception as exc:  # noqa: BLE001 - whatever the baseline raises on bad options, told in one line
        raise EdgejouleError(f"{target.id}: the method fails with these options: {type(exc).__name__}: {exc}") from None
    if W.shape != (1, 8, 4) or not np.all(np.isfinite(W)) or not np.isclose(power, 1.0, rtol=1e-3):
        raise EdgejouleError(f"{target.id}: the method's precoder on a probe channel is not a finite [N_T, N_U] "
                             f"matrix at the power budget (power {power:.3g} of 1)")
    return precode


def method_energy_uj(target: MethodTarget, H: np.ndarray, noise_power: float, p_max: float) -> float | None:
    """The energy per inference of ``target`` on the channels ``H`` under the ``implemented`` counting (None for a
    baseline that does not report its operations)."""
    result = _baseline_of(target).run(H, noise_power, p_max, **target.options)
    if getattr(result, "operations", None) is None:
        return None
    return operations_energy(OperationCount.mean_of(result.operations)).total_uj


def run_precoding_baseline(
    dataset: ChannelDataset,
    method: str,
    split: Split = "test",
    limit: int | None = None,
    estimator: str = "accelerator",
    **options: Any,
) -> BaselineReport:
    baseline = plugin_manager.get("baselines", method, task="precoding")
    _checked_options(method, baseline, options)
    H = dataset.H(split, limit)
    result = baseline.run(H, dataset.noise_power, dataset.p_max, **options)
    if not isinstance(result, BaselineResult):
        raise EdgejouleError(f"baseline '{method}' (plugin {plugin_manager.get_manager().provider('baselines', method)}) "
                             f"returned {type(result).__name__}, not the BaselineResult of edgejoule.interfaces")
    rates = sum_rate(H, result.output, dataset.noise_power)
    macs = float(np.mean(result.macs_per_sample))
    paper = plugin_manager.get("energy_estimators", estimator).estimate_ops(macs)
    by_counting = {"paper": paper}
    operations = None
    if result.operations is not None:
        operations = OperationCount.mean_of(result.operations)
        by_counting = {"implemented": operations_energy(operations)} | by_counting
    return BaselineReport(
        site=dataset.site.name,
        method=method,
        split=split,
        samples=len(H),
        sum_rate_mean=float(np.mean(rates)),
        sum_rate_std=float(np.std(rates)),
        iterations_mean=None if result.iterations is None else float(np.mean(result.iterations)),
        bisection_steps_mean=None if result.bisection_steps is None else float(np.mean(result.bisection_steps)),
        macs_mean=macs,
        operations=operations,
        energy=next(iter(by_counting.values())),
        energy_by_counting=by_counting,
        options=options,
    )
