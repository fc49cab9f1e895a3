"""One model's score on one suite with its confidence interval (the release history's trend needs absolute values,
where the gate needs paired changes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .aggregations import Aggregation


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float

    def to_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n, "confidence": self.confidence}


def estimate(values: list, agg: Aggregation, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> Estimate:
    """The aggregate of ``values`` and a seeded percentile bootstrap interval over items (resampled in chunks, so
    10k items x 2000 resamples stay a few MB). A non-finite aggregate or bound is an error, never a score."""
    n = len(values)
    if n == 0:
        raise ValueError("no items")
    x = agg.columns(values)
    point = float(agg.finish(x.sum(axis=0), n))
    rng = np.random.default_rng(seed)
    boots = []
    chunk = max(1, min(n_resamples, 2_000_000 // max(1, n)))
    left = n_resamples
    while left > 0:
        k = min(chunk, left)
        idx = rng.integers(0, n, size=(k, n))
        boots.append(np.asarray(agg.finish(x[idx].sum(axis=1), n), dtype=float))
        left -= k
    boot = np.concatenate(boots)
    boot = boot[np.isfinite(boot)]
    alpha = 1.0 - confidence
    lo, hi = (np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if boot.size else (math.nan, math.nan))
    if not all(math.isfinite(v) for v in (point, float(lo), float(hi))):
        raise ValueError("the aggregate or its interval is not finite")
    return Estimate(point, float(lo), float(hi), n, confidence)
