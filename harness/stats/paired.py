"""Paired statistics between a baseline and a candidate scored on the same items.

* Binary per-item metrics (accuracy): McNemar's exact test on the discordant
  pairs, and a paired bootstrap of the difference drawn from the multinomial
  of the four (baseline, candidate) outcomes, which is exactly the item
  bootstrap and costs O(resamples).
* Anything else: a paired bootstrap that resamples items (the same indices
  for both sides) and recomputes each side's aggregate, in chunks of resamples
  so 10,000 x 10,000 fits in memory and runs in about a second.

Everything is seeded. ``improvement`` is oriented so that positive is better:
``cand - base`` for higher-is-better metrics, ``base - cand`` for
lower-is-better ones, and the reduction in distance to the ideal value for
ideal-value metrics (CrowS-Pairs' pct_stereotype, ideal 0.5).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from ..errors import LafError
from .aggregations import Aggregation, is_binary

CHUNK_CELLS = 4_000_000  # resample-items per chunk (16 MB of int32 indices)


@dataclass
class PairedDelta:
    metric: str
    n: int
    base: float
    candidate: float
    delta: float  # candidate - base, in the metric's units
    improvement: float  # oriented: > 0 is better
    ci_low: float  # two-sided interval of the improvement at `confidence`
    ci_high: float
    lower_bound: float  # one-sided lower bound of the improvement at `confidence`
    upper_bound: float  # one-sided upper bound of the improvement at `confidence`
    confidence: float
    p_value: float | None  # McNemar exact (binary) or bootstrap two-sided
    test: str
    base_only: int | None = None  # binary: items the baseline got right and the candidate wrong
    candidate_only: int | None = None
    se: float = 0.0  # bootstrap standard error of the improvement
    higher_is_better: bool = True
    ideal: float | None = None

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def orient(base: np.ndarray, cand: np.ndarray, higher_is_better: bool, ideal: float | None) -> np.ndarray:
    if ideal is not None:
        return np.abs(base - ideal) - np.abs(cand - ideal)
    return cand - base if higher_is_better else base - cand


def mcnemar_exact(base_only: int, cand_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (baseline-only and candidate-only successes)."""
    n = base_only + cand_only
    if n == 0:
        return 1.0
    return float(sps.binomtest(cand_only, n, 0.5).pvalue)


def _bootstrap_sums(xa: np.ndarray, xb: np.ndarray, n_resamples: int, rng: np.random.Generator, second: bool = True):
    """Column sums of ``n_resamples`` item resamples (the same indices for both sides)."""
    n = xa.shape[0]
    chunk = max(1, CHUNK_CELLS // max(1, n))
    sa = np.empty((n_resamples, xa.shape[1]))
    sb = np.empty((n_resamples, xb.shape[1])) if second else None
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(r, n), dtype=np.int32)
        for x, out in ((xa, sa), (xb, sb)) if second else ((xa, sa),):
            assert out is not None
            if x.shape[1] == 1:
                out[start : start + r, 0] = x[:, 0][idx].sum(axis=1)
            else:
                out[start : start + r] = x[idx].sum(axis=1)
    return sa, sb


def paired_delta(
    base_values: list,
    cand_values: list,
    agg: Aggregation,
    *,
    metric: str = "metric",
    higher_is_better: bool = True,
    ideal: float | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedDelta:
    """The paired change from baseline to candidate on the same items, aggregated by ``agg``.

    ``improvement`` is oriented so that positive is better (``higher_is_better``, or closer to ``ideal``);
    the two-sided interval and the one-sided bounds are at ``confidence``. Binary per-item values get
    McNemar's exact test and a multinomial bootstrap; anything else a seeded paired item bootstrap of
    ``n_resamples`` resamples.
    """
    if len(base_values) != len(cand_values):
        raise ValueError("paired statistics need the same items on both sides")
    n = len(base_values)
    if n == 0:
        raise ValueError("no items")
    xa, xb = agg.columns(base_values), agg.columns(cand_values)
    point_a = float(agg.finish(xa.sum(axis=0), n))
    point_b = float(agg.finish(xb.sum(axis=0), n))
    improvement = float(orient(np.array(point_a), np.array(point_b), higher_is_better, ideal))
    rng = np.random.default_rng(seed)
    alpha = 1.0 - confidence
    base_only = cand_only = None
    if agg.name == "mean" and is_binary(xa) and is_binary(xb):
        a, b = xa[:, 0].astype(bool), xb[:, 0].astype(bool)
        base_only, cand_only = int((a & ~b).sum()), int((~a & b).sum())
        both = int((a & b).sum())
        counts = rng.multinomial(n, np.array([both, base_only, cand_only, n - both - base_only - cand_only]) / n, size=n_resamples)
        ra = (counts[:, 0] + counts[:, 1]) / n
        rb = (counts[:, 0] + counts[:, 2]) / n
        p_value = mcnemar_exact(base_only, cand_only)
        test = "McNemar exact + paired bootstrap"
        boot = orient(ra, rb, higher_is_better, ideal)
    elif agg.name == "mean" and ideal is None:
        # a linear statistic: bootstrap the per-item differences directly (one gather, not two)
        d = (xb[:, 0] - xa[:, 0]) * (1.0 if higher_is_better else -1.0)
        sums, _ = _bootstrap_sums(d[:, None], d[:, None][:0], n_resamples, rng, second=False)
        boot = sums[:, 0] / n
        p_value = None
        test = "paired bootstrap"
    else:
        sa, sb = _bootstrap_sums(xa, xb, n_resamples, rng)
        boot = orient(np.asarray(agg.finish(sa, n), dtype=float), np.asarray(agg.finish(sb, n), dtype=float), higher_is_better, ideal)
        p_value = None
        test = "paired bootstrap"
    boot = np.asarray(boot, dtype=float)
    finite = np.isfinite(boot)
    if not (math.isfinite(point_a) and math.isfinite(point_b) and math.isfinite(improvement)) or finite.sum() < max(2, boot.size // 2):
        # values near the float range (1e308) overflow in a mean or a difference: no interval can be formed from them
        raise LafError(f"{metric}: the per-item values overflow the paired statistics (base {point_a:g}, candidate {point_b:g}, "
                       f"{boot.size - int(finite.sum())} of {boot.size} resamples not finite)",
                       "these are not scores an evaluation produces: re-run the evaluation that wrote them")
    boot = boot[finite]
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    lower, upper = np.quantile(boot, [alpha, 1 - alpha])
    if p_value is None:  # two-sided bootstrap p-value for "no change"
        frac = min((boot <= 0).mean(), (boot >= 0).mean())
        p_value = float(min(1.0, 2 * frac))
    return PairedDelta(
        metric=metric, n=n, base=point_a, candidate=point_b, delta=point_b - point_a, improvement=improvement,
        ci_low=float(lo), ci_high=float(hi), lower_bound=float(lower), upper_bound=float(upper), confidence=confidence,
        p_value=p_value, test=test, base_only=base_only, candidate_only=cand_only, se=float(boot.std(ddof=1)) if boot.size > 1 else 0.0,
        higher_is_better=higher_is_better, ideal=ideal,
    )


def minimum_detectable_effect(se: float, confidence: float = 0.95, power: float = 0.8) -> float:
    """Smallest true change a one-sided test at `confidence` detects with `power`, for this standard error."""
    return float((sps.norm.ppf(confidence) + sps.norm.ppf(power)) * se)


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (monotone)."""
    items = sorted(p_values.items(), key=lambda kv: kv[1])
    m = len(items)
    out, running = {}, 0.0
    for i, (k, p) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out
