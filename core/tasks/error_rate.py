r"""Error rates with their errors counted: a stopping rule, Clopper-Pearson intervals, and the SNR at a target
rate with an interval over seeds. Used by the receiver (``edgejoule distill``) and detector (``edgejoule detect``)
experiments for bit and block error rates alike.

**Stopping rule**: at each operating point, fresh draws (slots, detections, code blocks) are made in chunks
until at least ``min_errors`` (100) errors are counted or the draw cap is reached, and at least ``min_draws``
are made. 100 errors put the relative half-width of the 95 % interval near 20 % whatever the rate (Jeruchim,
IEEE JSAC 1984: the relative precision of a Monte-Carlo error-rate estimate is about :math:`1/\sqrt{k}`).
The interval below treats the trials as independent; bits of one OFDM slot are not (a deep fade or a poor
channel estimate errs on many of them at once), so a BER over slots also needs enough slots to sample the
channel (``min_draws``), and where ``draw`` gives the errors of each draw (each with the same number of
trials), a second interval is reported over draws: the mean of the per-draw rates :math:`x_i` plus or minus
:math:`z_{1-a/2}\, s_x/\sqrt m` over m draws (a cluster sample's ratio estimate, Cochran, Sampling
Techniques, 3rd ed. 1977, ch. 9; normal, since m >= 500 here). Where errors cluster, it is the wider and
the honest one. Blocks of a coded BLER are one per draw, independent.

**Interval** (Clopper and Pearson, Biometrika 1934): for k errors in n trials, the exact 1 - a interval is

.. math::

    p_{lo} = B^{-1}\!\left(\tfrac a2;\, k,\, n-k+1\right), \qquad
    p_{hi} = B^{-1}\!\left(1-\tfrac a2;\, k+1,\, n-k\right)

with :math:`B^{-1}(q; \alpha, \beta)` the quantile of the beta distribution (:math:`p_{lo} = 0` when k = 0,
:math:`p_{hi} = 1` when k = n). Its coverage is at least 1 - a for every p. Where fewer than ``min_errors``
errors are seen, the point estimate is not reported as a rate: :math:`p_{hi}` is, as the stated upper bound.

**SNR at a target rate over seeds**: each seed's curve is interpolated linearly in log10(rate) between the two
points around the first crossing (:func:`snr_at_ber`); over S seeds the mean
crossing :math:`\bar x` and the Student-t interval :math:`\bar x \pm t_{1-a/2,\,S-1}\, s/\sqrt S` (s the sample
standard deviation). It is given only when every seed crosses (a mean over the seeds that do would be biased
toward the good ones) and S >= 2.

scipy is imported where an interval is computed: it comes with the ``train`` extra, and core must import on an
edge device without it.
"""

from __future__ import annotations

from typing import Annotated, Callable

import numpy as np
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from edgejoule.errors import EdgejouleError

MIN_ERRORS = 100
CONFIDENCE = 0.95

# An operating point's SNR or SINR: the experiments draw noise of variance 10^(-x/10) and score float32 nets, so
# an infinite, NaN or astronomically large x gives NaN symbols (scored as wrong bits, or an index error) instead
# of a curve. 100 dB is far past any floor and still a normal float32 noise level; -50 dB buries any signal.
SnrDb = Annotated[float, Field(ge=-50.0, le=100.0, allow_inf_nan=False)]
_SNR_LIST = TypeAdapter(list[SnrDb])


def parse_snr_list(text: str, option: str) -> list[float]:
    """``'0,5,10'`` -> [0.0, 5.0, 10.0] (sorted), or an error naming ``option`` and the bad value."""
    try:
        values = sorted(_SNR_LIST.validate_python([float(s) for s in text.split(",") if s.strip()]))
    except ValueError as exc:
        bad = exc.errors()[0]["input"] if isinstance(exc, ValidationError) else text
        raise EdgejouleError(f"{option} must be comma-separated finite numbers from -50 to 100 dB, "
                             f"got '{bad}'") from None
    if not values:
        raise EdgejouleError(f"{option} needs at least one value")
    return values


def clopper_pearson(errors: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(low, high): the exact binomial interval of the module docstring."""
    from scipy.stats import beta

    a = 1.0 - confidence
    low = 0.0 if errors == 0 else float(beta.ppf(a / 2, errors, trials - errors + 1))
    high = 1.0 if errors == trials else float(beta.ppf(1 - a / 2, errors + 1, trials - errors))
    return low, high


class ErrorCount(BaseModel):
    """Errors counted at one operating point and what is reported from them."""

    errors: int = Field(ge=0)
    trials: int = Field(ge=1, description="bits or blocks scored")
    draws: int = Field(ge=1, description="slots, detections or blocks drawn")
    min_errors: int | None = Field(MIN_ERRORS, description="the stopping rule's error count; None: fixed budget")
    draw_errors: list[int] | None = Field(None, description="errors of each draw, when ``draw`` gives them")

    @property
    def rate(self) -> float:
        return self.errors / self.trials

    @property
    def interval(self) -> tuple[float, float]:
        return clopper_pearson(self.errors, self.trials)

    @property
    def bounded(self) -> bool:
        """True when too few errors were seen to state a rate: the upper bound is stated instead."""
        return self.min_errors is not None and self.errors < self.min_errors

    @property
    def draw_interval(self) -> tuple[float, float] | None:
        """The interval over draws (module docstring), or None without per-draw errors."""
        if self.draw_errors is None or len(self.draw_errors) < 2:
            return None
        from scipy.stats import norm

        x = np.asarray(self.draw_errors, float) * self.draws / self.trials
        half = float(norm.ppf(1 - (1 - CONFIDENCE) / 2) * x.std(ddof=1) / np.sqrt(len(x)))
        return max(0.0, self.rate - half), self.rate + half

    def report(self) -> dict:
        low, high = self.interval
        over_draws = self.draw_interval
        return {"rate": self.rate, "errors": self.errors, "trials": self.trials, "draws": self.draws,
                "ci_low": low, "ci_high": high, "upper_bound": high if self.bounded else None,
                "draw_ci": list(over_draws) if over_draws else None}


def format_rate(point: dict) -> str:
    """'1.23e-03 [1.1e-03, 1.4e-03]' (with an interval over draws: '... / [9.8e-04, 1.5e-03]') or, below the
    error count, '<= 3.1e-05 (12 err)' (a ``report()`` dict)."""
    if point["upper_bound"] is not None:
        return f"<= {point['upper_bound']:.1e} ({point['errors']} err)"
    text = f"{point['rate']:.2e} [{point['ci_low']:.1e}, {point['ci_high']:.1e}]"
    if point.get("draw_ci"):
        text += f" / [{point['draw_ci'][0]:.1e}, {point['draw_ci'][1]:.1e}]"
    return text


def count_errors(draw: Callable[[int], tuple[int | np.ndarray, int]], max_draws: int, chunk: int,
                 min_errors: int | None = MIN_ERRORS, min_draws: int = 0) -> ErrorCount:
    """Calls ``draw(n) -> (errors, trials)`` on chunks of n fresh draws until ``min_errors`` errors are counted
    and ``min_draws`` made, or ``max_draws`` are drawn (``min_errors`` None: all ``max_draws``). ``errors`` may
    be the array of each draw's errors (each draw with trials / n trials): then the interval over draws too."""
    errors = trials = draws = 0
    per_draw: list[int] | None = []
    while draws < max_draws and (min_errors is None or errors < min_errors or draws < min_draws):
        n = min(chunk, max_draws - draws)
        e, t = draw(n)
        if per_draw is not None and np.ndim(e) == 1:
            per_draw.extend(int(v) for v in e)
        else:
            per_draw = None
        errors, trials, draws = errors + int(np.sum(e)), trials + t, draws + n
    return ErrorCount(errors=errors, trials=trials, draws=draws, min_errors=min_errors, draw_errors=per_draw)


def snr_at_ber(snr_db: np.ndarray, ber: np.ndarray, target: float) -> float | None:
    """SNR (dB) where the BER curve first falls to ``target``, by log-linear interpolation; None if never."""
    snr_db, ber = np.asarray(snr_db, float), np.asarray(ber, float)
    below = np.nonzero(ber <= target)[0]
    if not len(below):
        return None
    i = below[0]
    if i == 0:
        return float(snr_db[0])
    lo, hi = np.log10(max(ber[i - 1], 1e-12)), np.log10(max(ber[i], 1e-12))
    t = (lo - np.log10(target)) / (lo - hi) if lo != hi else 1.0
    return float(snr_db[i - 1] + t * (snr_db[i] - snr_db[i - 1]))


def t_interval(values: list[float] | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` (two or more) and its Student-t interval (module docstring)."""
    from scipy.stats import t

    x = np.asarray(values, float)
    mean = float(x.mean())
    half = float(t.ppf(1 - (1 - confidence) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return mean, mean - half, mean + half


class Crossing(BaseModel):
    """The SNR at a target rate per seed, and their mean with its t-interval (module docstring)."""

    target: float
    per_seed: list[float | None]
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


def snr_at_target(snr_db: list[float], curves: list[list[float]], target: float,
                  confidence: float = CONFIDENCE) -> Crossing:
    """Crossing of ``target`` by each seed's rate curve (``curves[seed][point]``) and the interval over seeds."""
    per_seed = [snr_at_ber(np.asarray(snr_db), np.asarray(c), target) for c in curves]
    if any(x is None for x in per_seed):
        return Crossing(target=target, per_seed=per_seed)
    x = np.asarray(per_seed, float)
    if len(x) < 2:
        return Crossing(target=target, per_seed=per_seed, mean=float(x.mean()))
    mean, low, high = t_interval(x, confidence)
    return Crossing(target=target, per_seed=per_seed, mean=mean, ci_low=low, ci_high=high)
