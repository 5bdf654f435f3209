"""Running a registered precoding baseline on a site's dataset, with its sum rate and its energy under each
counting (``implemented``, the default where the baseline reports it, and ``paper``;
:mod:`edgejoule.energy.counting`)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from pydantic import BaseModel

from edgejoule import plugin_manager
from edgejoule.energy.accelerator import EnergyBreakdown
from edgejoule.energy.counting import Counting, OperationCount, operations_energy
from edgejoule.errors import EdgejouleError
from edgejoule.interfaces import BaselineResult
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


def run_precoding_baseline(
    dataset: ChannelDataset,
    method: str,
    split: Split = "test",
    limit: int | None = None,
    estimator: str = "accelerator",
    **options: Any,
) -> BaselineReport:
    baseline = plugin_manager.get("baselines", method, task="precoding")
    accepted = inspect.signature(baseline.run).parameters
    for option in options:
        if option not in accepted:
            raise EdgejouleError(f"baseline '{method}' takes no option '{option}'")
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
