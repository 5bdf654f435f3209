"""The gate of a rollout stage: does the candidate meet the policy against the incumbent, beyond the noise?

Each side (the canary agents running the candidate, the other agents running the incumbent, over the same time)
is a set of telemetry windows. For a metric x (sum rate, energy per inference, latency p95) a side's value is the
inference-weighted mean m = sum(w x) / sum(w) over its windows, and the gate reads the ratio r = m_c / m_i of
candidate to incumbent. Its interval is Welch's on the log ratio: the variance of each weighted mean by
linearization over windows, var(m) = n/(n-1) sum(w^2 (x - m)^2) / (sum w)^2, the delta method
var(log m) = var(m) / m^2, Welch-Satterthwaite degrees of freedom, and Student's t quantile.

A criterion ``energy<=1.0`` passes when the whole interval lies at or below 1.0, fails when it lies above, and
waits otherwise (``>=`` mirrors it). The gate fails when any criterion fails, passes when all pass.

The gate is read again and again while windows arrive, and each reading is a chance to decide by noise alone. So
a decision is taken only at a *look*: the first once both sides hold the minimum sample, each next one when the
smaller side's windows have doubled since; look k spends alpha_k = (1 - confidence) 6 / (pi^2 k^2) split over the
criteria (Bonferroni). The alpha_k sum to 1 - confidence, so over the whole stage the chance that noise alone
decides against the truth stays within what the confidence allows, however long the stage waits."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

Metric = Literal["quality", "energy", "latency"]
Verdict = Literal["pass", "fail", "wait"]
POLICY_TERM = re.compile(r"^\s*(quality|energy|latency)\s*(>=|<=)\s*([0-9]*\.?[0-9]+)\s*$")
POLICY_HELP = ("write the gate as comma-separated criteria on the candidate/incumbent ratios, e.g. "
               "'quality>=0.99,energy<=1.0' (metrics quality, energy, latency; operators >= and <=; positive bounds)")


class Criterion(BaseModel):
    """One term of a policy: ``metric op bound`` on the ratio candidate / incumbent."""

    metric: Metric
    op: Literal[">=", "<="]
    bound: float = Field(gt=0)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def parse_policy(text: str) -> list[Criterion]:
    """The criteria of a gate such as ``quality>=0.99,energy<=1.0``; ValueError saying how to write it."""
    criteria = []
    for term in text.split(","):
        match = POLICY_TERM.match(term)
        if match is None or float(match[3]) <= 0:
            raise ValueError(f"gate {text!r}: cannot read {term.strip()!r}: {POLICY_HELP}")
        criteria.append(Criterion(metric=match[1], op=match[2], bound=float(match[3])))
    if len({c.metric for c in criteria}) != len(criteria):
        raise ValueError(f"gate {text!r}: each metric at most once: {POLICY_HELP}")
    return criteria


class Reading(BaseModel):
    """One criterion read on the windows: the ratio, its interval at the look's level, and what it says."""

    criterion: str
    candidate: float | None = Field(description="the canaries' inference-weighted mean")
    incumbent: float | None = Field(description="the incumbent agents' inference-weighted mean")
    ratio: float | None
    low: float | None
    high: float | None
    verdict: Verdict


class Side(BaseModel):
    """What one side of the comparison holds."""

    agents: list[str]
    windows: int
    inferences: int


class GateResult(BaseModel):
    """A gate's reading of a stage: each criterion, both sides, and the verdict with its reason."""

    verdict: Verdict
    reason: str
    look: int = Field(description="the look this decision was taken at (0: no look yet)")
    level: float | None = Field(description="each interval's level at this look (alpha spent over looks and criteria)")
    energy_basis: Literal["measured", "estimated", "mixed", "none"] = Field(
        description="what the energies compared are: both sides measured by meters, or estimates")
    canary: Side
    incumbent: Side
    load_failures: list[str]
    readings: list[Reading]


class Windows:
    """One side's telemetry windows as arrays: inferences per window and each metric per window (NaN where a
    window does not report it)."""

    def __init__(self, agents: list[str], inferences: list[int], values: dict[Metric, list[float]],
                 meter_kinds: set[str]) -> None:
        self.agents = agents
        self.weights = np.asarray(inferences, dtype=float)
        self.values = {metric: np.asarray(v, dtype=float) for metric, v in values.items()}
        self.meter_kinds = meter_kinds

    @property
    def side(self) -> Side:
        return Side(agents=self.agents, windows=len(self.weights), inferences=int(self.weights.sum()))


def weighted_mean(weights: np.ndarray, x: np.ndarray) -> tuple[float, float, int]:
    """(mean, variance of the mean, windows) of ``x`` weighted by ``weights``, over the windows reporting it."""
    keep = np.isfinite(x) & (weights > 0)
    w, x = weights[keep], x[keep]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float((w * x).sum() / w.sum())
    var = float(n / max(n - 1, 1) * (w ** 2 * (x - mean) ** 2).sum() / w.sum() ** 2)
    return mean, var, n


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (p > 1/2) by bisection on its tail, P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2), the
    regularized incomplete beta function (the registry has no scipy)."""
    tail = 2 * (1 - p)
    low, high = 0.0, 1e8
    for _ in range(200):
        mid = math.sqrt(low * high) if low > 0 else high / 1e8
        if _incomplete_beta(df / (df + mid * mid), df / 2, 0.5) > tail:
            low = mid
        else:
            high = mid
        if high - low < 1e-9 * high:
            break
    return (low + high) / 2


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by its continued fraction (Lentz's method, as in Numerical Recipes' betacf)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1 - _incomplete_beta(1 - x, b, a)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return front * result


def ratio_interval(candidate: tuple[float, float, int], incumbent: tuple[float, float, int],
                   level: float) -> tuple[float, float, float]:
    """(ratio, low, high) of candidate / incumbent means, Welch's interval on the log ratio at ``level``."""
    (mc, vc, nc), (mi, vi, ni) = candidate, incumbent
    a, b = vc / mc ** 2, vi / mi ** 2
    log_ratio, se = math.log(mc / mi), math.sqrt(a + b)
    if se == 0:
        return mc / mi, mc / mi, mc / mi
    df = (a + b) ** 2 / (a ** 2 / max(nc - 1, 1) + b ** 2 / max(ni - 1, 1))
    # degrees of freedom rounded down (a slightly wider interval), so the quantiles of a stage come from a cache
    df = max(math.floor(df * 10) / 10 if df < 100 else float(min(math.floor(df), 10 ** 6)), 1.0)
    half = t_quantile(0.5 + level / 2, df) * se
    return mc / mi, math.exp(log_ratio - half), math.exp(log_ratio + half)


def look_level(confidence: float, look: int, criteria: int) -> float:
    """The level of each interval at look ``look`` (1, 2, ...): alpha spent as 6 / (pi^2 k^2) of 1 - confidence
    per look, split over the criteria."""
    return 1 - (1 - confidence) * 6 / (math.pi ** 2 * look ** 2) / criteria


def verdict_of(criterion: Criterion, low: float, high: float) -> Verdict:
    if criterion.op == ">=":
        return "pass" if low >= criterion.bound else "fail" if high < criterion.bound else "wait"
    return "pass" if high <= criterion.bound else "fail" if low > criterion.bound else "wait"


def is_look(windows: int, last_look_windows: int, min_windows: int) -> bool:
    """Whether the smaller side's ``windows`` make a new look: the first at the minimum, then at each doubling."""
    return windows >= max(min_windows, 2 * last_look_windows)


def judge(criteria: list[Criterion], canary: Windows, incumbent: Windows, *, confidence: float, min_windows: int,
          min_inferences: int, looks: int, last_look_windows: int,
          load_failures: list[str]) -> GateResult:
    """The gate's reading now. ``looks`` and ``last_look_windows`` say which looks were taken before; the result's
    ``look`` is the new count (unchanged when this reading is no look: then it waits, whatever the intervals say)."""
    sides = dict(canary=canary.side, incumbent=incumbent.side, load_failures=load_failures,
                 energy_basis=_energy_basis(canary, incumbent))
    if load_failures:
        return GateResult(verdict="fail", reason=f"the candidate failed to load: {'; '.join(load_failures)}",
                          look=looks, level=None, readings=[], **sides)
    short = [f"{name} has {side.windows} windows and {side.inferences} inferences"
             for name, side in (("canary", sides["canary"]), ("incumbent", sides["incumbent"]))
             if side.windows < min_windows or side.inferences < min_inferences]
    if short:
        return GateResult(verdict="wait", reason=f"too few to decide ({'; '.join(short)}; the minimum is "
                          f"{min_windows} windows and {min_inferences} inferences per side)",
                          look=looks, level=None, readings=[], **sides)
    smaller = min(sides["canary"].windows, sides["incumbent"].windows)
    look = looks + 1 if is_look(smaller, last_look_windows, min_windows) else looks
    level = look_level(confidence, max(look, 1), len(criteria))
    readings = [_read(c, canary, incumbent, level) for c in criteria]
    if look == looks:
        verdict, reason = "wait", (f"no look due: the next decision at {2 * last_look_windows} windows per side "
                                   f"(looks are spent as the sample doubles)")
    elif any(r.verdict == "fail" for r in readings):
        verdict, reason = "fail", "outside the policy: " + ", ".join(_said(r) for r in readings if r.verdict == "fail")
    elif all(r.verdict == "pass" for r in readings):
        verdict, reason = "pass", "within the policy: " + ", ".join(_said(r) for r in readings)
    else:
        verdict, reason = "wait", "within the noise: " + ", ".join(_said(r) for r in readings if r.verdict == "wait")
    return GateResult(verdict=verdict, reason=reason, look=look, level=level, readings=readings, **sides)


def _read(criterion: Criterion, canary: Windows, incumbent: Windows, level: float) -> Reading:
    c = weighted_mean(canary.weights, canary.values[criterion.metric])
    i = weighted_mean(incumbent.weights, incumbent.values[criterion.metric])
    blank = Reading(criterion=str(criterion), candidate=_finite(c[0]), incumbent=_finite(i[0]), ratio=None, low=None,
                    high=None, verdict="wait")
    if c[2] < 2 or i[2] < 2 or not (c[0] > 0 and i[0] > 0):  # no ratio of a side without values or at/below 0
        return blank
    ratio, low, high = ratio_interval(c, i, level)
    return blank.model_copy(update=dict(ratio=ratio, low=low, high=high, verdict=verdict_of(criterion, low, high)))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _said(reading: Reading) -> str:
    if reading.ratio is None:
        return f"{reading.criterion} (no ratio: a side lacks values)"
    return f"{reading.criterion} (ratio {reading.ratio:.4g}, interval {reading.low:.4g}-{reading.high:.4g})"


def _energy_basis(canary: Windows, incumbent: Windows) -> Literal["measured", "estimated", "mixed", "none"]:
    kinds = canary.meter_kinds | incumbent.meter_kinds
    if not kinds:
        return "none"
    return "mixed" if len(kinds) > 1 else "measured" if kinds == {"measured"} else "estimated"
