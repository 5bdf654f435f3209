"""Running a registered precoding baseline on a site's dataset, with its sum rate and energy."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from pydantic import BaseModel

from edgejoule import plugin_manager
from edgejoule.energy.accelerator import EnergyBreakdown
from edgejoule.errors import EdgejouleError
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
    macs_mean: float
    energy: EnergyBreakdown
    options: dict[str, Any] = {}

    @property
    def energy_efficiency(self) -> float:
        """bit/s/Hz per microjoule, the paper's figure of merit."""
        return self.sum_rate_mean / self.energy.total_uj


def run_precoding_baseline(
    dataset: ChannelDataset,
    method: str,
    split: Split = "test",
    limit: int | None = None,
    estimator: str = "accelerator",
    **options: Any,
) -> BaselineReport:
    baseline = plugin_manager.get("baselines", method)
    accepted = inspect.signature(baseline.run).parameters
    for option in options:
        if option not in accepted:
            raise EdgejouleError(f"baseline '{method}' takes no option '{option}'")
    H = dataset.H(split, limit)
    result = baseline.run(H, dataset.noise_power, dataset.p_max, **options)
    rates = sum_rate(H, result.output, dataset.noise_power)
    macs = float(np.mean(result.macs_per_sample))
    return BaselineReport(
        site=dataset.site.name,
        method=method,
        split=split,
        samples=len(H),
        sum_rate_mean=float(np.mean(rates)),
        sum_rate_std=float(np.std(rates)),
        iterations_mean=None if result.iterations is None else float(np.mean(result.iterations)),
        macs_mean=macs,
        energy=plugin_manager.get("energy_estimators", estimator).estimate_ops(macs),
        options=options,
    )
