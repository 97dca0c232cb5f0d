"""P(T3) as a probability: Platt scaling of the volume logit, its expected calibration error
and the reliability table behind a reliability diagram.

Paper 002 reports AUC, accuracy and recalls only; it says nothing of calibration, so this is
OncoSeg's addition (issue 20): the network's own sigmoid is a ranking score (the demo's spans
0.490-0.515), and a radiologist reads a number shown as "P(T3)" as a probability.

The calibrated P(T3) is ``sigmoid(slope * z + intercept)`` with ``z`` the volume logit
averaged over the test-time passes. Platt scaling (Platt 1999) rather than a temperature: a
temperature has no intercept, and a model whose two stages meet away from logit 0 needs one.
The fit is the maximum of the likelihood of the validation stages; where the model separates
the two stages perfectly that maximum does not exist (the slope grows without bound), and the fit
then uses Platt's smoothed targets, (N+ + 1) / (N+ + 2) for T3 and 1 / (N- + 2) for T2, which
keep it finite. Not the smoothed targets always: fitted on 71 of the demo's validation
phantoms (AUC 0.998) they shrank the slope to a quarter of the likelihood's and left P(T3)
underconfident (ECE 0.085 against 0.034 on 57 unseen phantoms, measured while choosing).
A model file keeps the fit in ``outputs.calibration``; a model without one runs as before and
says that its P(T3) is uncalibrated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from oncoseg.errors import InputError

METHOD = "platt"
ECE_BINS = 10
BINNING = "10 equal-width bins of P(T3) on [0, 1]; ECE = sum over bins of (cases in bin / " \
    "cases) x |observed T3 share - mean P(T3)|"


@dataclass(frozen=True)
class Calibration:
    """P(T3) = sigmoid(slope * z + intercept), z the volume logit averaged over ``tta``
    test-time passes; fitted on ``cases`` cases (``fitted_on`` says which)."""

    slope: float
    intercept: float
    cases: int
    tta: int
    fitted_on: str = "validation fold"
    method: str = METHOD

    def probability(self, logit: float | np.ndarray) -> float | np.ndarray:
        """The calibrated P(T3) of a (TTA-averaged) volume logit."""
        return _sigmoid(self.slope * np.asarray(logit, np.float64) + self.intercept)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"Platt scaling fitted on {self.cases} cases ({self.fitted_on})"

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, Any], source: str = "model"
                     ) -> Calibration | None:
        """The calibration a model file's ``outputs`` hold; None for a model without one. A
        malformed one is bad input naming the field (it is never silently ignored)."""
        stored = outputs.get("calibration")
        if stored is None:
            return None
        field = "outputs.calibration"
        if not isinstance(stored, Mapping) or stored.get("method") != METHOD:
            raise InputError(source, f"field '{field}' is not a Platt calibration "
                             f"(method '{METHOD}', slope, intercept)")
        try:
            calibration = cls(slope=float(stored["slope"]),
                              intercept=float(stored["intercept"]),
                              cases=int(stored["cases"]), tta=int(stored["tta"]),
                              fitted_on=str(stored.get("fitted_on", "")))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(source, f"field '{field}' lacks or misstates {error}") from None
        if not (math.isfinite(calibration.slope) and calibration.slope > 0
                and math.isfinite(calibration.intercept)):
            raise InputError(source, f"field '{field}' needs a finite slope above 0 and a "
                             "finite intercept")
        return calibration


def _sigmoid(x: np.ndarray) -> Any:
    out = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))  # no overflow warning
    return float(out) if out.ndim == 0 else out


def fit_platt(logits: np.ndarray, is_t3: np.ndarray, iterations: int = 100
              ) -> tuple[float, float]:
    """(slope, intercept) minimising the log loss of sigmoid(slope z + intercept) against the
    stages (1 for T3, 0 for T2), or against Platt's smoothed targets when the logits separate
    the stages perfectly (no T2 logit above the lowest T3 one: the plain loss has no minimum
    then); Newton steps on the standardised logits (the demo's span 0.1, so the raw slope is
    in the hundreds). Refuses data that cannot give a ranking calibration: one stage only,
    constant logits, or logits that rank T2 above T3 (slope <= 0)."""
    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(is_t3, bool).ravel()
    if z.shape != y.shape:
        raise ValueError(f"logits and stages differ in size: {z.size} vs {y.size}")
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        raise InputError("calibration", "needs cases of both stages (T2 and T3); these hold "
                         f"{positives} T3 and {negatives} T2")
    centre, scale = float(z.mean()), float(z.std())
    if not scale > 0:
        raise InputError("calibration", "the model gives every case the same logit; there is "
                         "nothing to calibrate")
    x = (z - centre) / scale
    if separated(z, y):
        target = np.where(y, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    else:
        target = y.astype(np.float64)
    a, b = 0.0, math.log((positives + 1.0) / (negatives + 1.0))

    def loss(a: float, b: float) -> float:
        f = a * x + b  # log(1 + e^f) - t f, stably
        return float(np.sum(np.logaddexp(0.0, f) - target * f))

    current = loss(a, b)
    for _ in range(iterations):
        p = _sigmoid(a * x + b)
        residual, weight = p - target, np.maximum(p * (1 - p), 1e-12)
        gradient = np.array([np.sum(residual * x), np.sum(residual)])
        hessian = np.array([[np.sum(weight * x * x), np.sum(weight * x)],
                            [np.sum(weight * x), np.sum(weight)]]) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        shrink, trial = 1.0, math.inf
        while shrink > 1e-8:  # step halving keeps every Newton step a descent
            trial = loss(a - shrink * step[0], b - shrink * step[1])
            if trial <= current:
                break
            shrink /= 2
        if trial > current:  # no descent left: the minimum
            break
        a, b = a - shrink * step[0], b - shrink * step[1]
        improvement, current = current - trial, trial
        if improvement < 1e-12 or np.max(np.abs(shrink * step)) < 1e-10:
            break
    if not a > 0:
        raise InputError("calibration", "the model ranks these T2 cases above their T3 cases "
                         "(the fitted slope is not positive); calibration would invert it")
    return float(a / scale), float(b - a * centre / scale)


def separated(logits: np.ndarray, is_t3: np.ndarray) -> bool:
    """True when every T3 logit lies at or above every T2 one: the log loss then falls for
    ever as the slope grows, and only smoothed targets give a fit."""
    z, y = np.asarray(logits, np.float64).ravel(), np.asarray(is_t3, bool).ravel()
    return bool(z[~y].max() <= z[y].min())


def reliability_table(p_t3: np.ndarray, is_t3: np.ndarray, bins: int = ECE_BINS
                      ) -> list[dict[str, Any]]:
    """Per equal-width bin of P(T3) on [0, 1] (the last bin includes 1): its edges, how many
    cases fall in it, their mean P(T3) and the share of them that are T3 (None when empty:
    JSON has no NaN)."""
    p = np.clip(np.asarray(p_t3, np.float64).ravel(), 0.0, 1.0)
    y = np.asarray(is_t3, bool).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probabilities and stages differ in size: {p.size} vs {y.size}")
    index = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for k in range(bins):
        inside = index == k
        count = int(inside.sum())
        rows.append({"low": k / bins, "high": (k + 1) / bins, "cases": count,
                     "mean_p_t3": float(p[inside].mean()) if count else None,
                     "t3_share": float(y[inside].mean()) if count else None})
    return rows


def expected_calibration_error(p_t3: np.ndarray, is_t3: np.ndarray, bins: int = ECE_BINS
                               ) -> float:
    """ECE of P(T3) over ``bins`` equal-width bins (:data:`BINNING`): 0 for a calibrated
    model, up to 1; NaN without cases."""
    rows = reliability_table(p_t3, is_t3, bins)
    total = sum(r["cases"] for r in rows)
    if not total:
        return math.nan
    return float(sum(r["cases"] / total * abs(r["t3_share"] - r["mean_p_t3"])
                     for r in rows if r["cases"]))
