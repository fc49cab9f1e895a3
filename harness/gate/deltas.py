"""Paired deltas between two sides: per suite, pooled over suites, and the per-suite / category / overall summaries."""

from __future__ import annotations

import math

from ..errors import LafError
from ..results import MetricMeta
from ..stats import PairedDelta, get_aggregation, minimum_detectable_effect, paired_delta
from .policy import Policy
from .runs import RunSide, paired_items


def _nonfinite(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, (list, tuple)):
        return any(isinstance(x, float) and not math.isfinite(x) for x in v)
    return False


def _values(records, metric: str) -> list:
    """The per-item values of ``metric``; a missing or non-finite one (NaN, infinity, null) is an error for the
    whole comparison, never a number that could let a broken model pass."""
    out = []
    bad = []
    for r in records:
        if metric not in r.metrics:
            raise LafError(f"item {r.doc_id} of suite {r.suite} has no per-item value for '{metric}'", "re-run the evaluation")
        v = r.metrics[metric]
        if _nonfinite(v) or (r.loglikelihoods and any(not isinstance(x, (int, float)) or not math.isfinite(x) for x in r.loglikelihoods)):
            bad.append(r)
        out.append(v)
    if bad:
        r = bad[0]
        raise LafError(f"model {r.model}: {len(bad)} of {len(records)} items of suite {r.suite} have a non-finite or missing '{metric}' "
                       f"or log-likelihood (first: item {r.doc_id}); such a model has no valid score and cannot be gated",
                       "re-evaluate it; if it scores NaN again its weights are broken (retrain it)")
    return out


def compute_delta(a: RunSide, b: RunSide, suites: list[str], metric: str | None, confidence: float, policy: Policy) -> tuple[PairedDelta, MetricMeta, str]:
    """Paired delta of ``metric`` (default: the primary) for one suite, or pooled over several suites' items (mean
    metrics only); returns the delta, the metric's meaning and its name."""
    base_vals: list = []
    cand_vals: list = []
    name: str | None = None
    meta: MetricMeta | None = None
    for s in suites:
        n, m = a.suites[s].metric(metric)
        if name is not None and meta is not None and (n != name or m.aggregation != meta.aggregation):
            raise LafError(f"cannot pool suites with different metrics ({name} vs {n})", "name one metric in the rule, or drop pooled: true")
        name, meta = n, m
        ra, rb = paired_items(a, b, s)
        base_vals += _values(ra, name)
        cand_vals += _values(rb, name)
    if meta is None or name is None:
        raise LafError("a rule names no suite", "name at least one suite in the rule")
    if len(suites) > 1 and not meta.is_mean:
        raise LafError(f"metric {name} ({meta.aggregation}) cannot be pooled across suites", "use per-suite rules (pooled: false)")
    d = paired_delta(
        base_vals, cand_vals, get_aggregation(meta.aggregation), metric=name, higher_is_better=meta.higher_is_better, ideal=meta.ideal,
        confidence=confidence, n_resamples=policy.resamples, seed=policy.seed,
    )
    return d, meta, name


def pooled_delta(a: RunSide, b: RunSide, suites: list[str], policy: Policy) -> PairedDelta:
    """Items of several suites pooled on their own primary (mean, higher- or lower-is-better) metrics, oriented."""
    base_vals, cand_vals = [], []
    for s in suites:
        name, meta = a.suites[s].metric(None)
        ra, rb = paired_items(a, b, s)
        base_vals += [meta.sign * float(v) for v in _values(ra, name)]
        cand_vals += [meta.sign * float(v) for v in _values(rb, name)]
    return paired_delta(base_vals, cand_vals, get_aggregation("mean"), metric="primary metrics (pooled)", confidence=policy.confidence,
                        n_resamples=policy.resamples, seed=policy.seed)


def summaries(a: RunSide, b: RunSide, policy: Policy) -> dict:
    """Per suite (primary metric), per category and overall (pooled over share-type primary metrics: see
    :attr:`harness.results.SuiteMeta.poolable`)."""
    out: dict = {"suites": {}, "categories": {}, "overall": None}
    pool: dict[str, list[str]] = {}
    for s, meta in a.suites.items():
        d, _, _ = compute_delta(a, b, [s], None, policy.confidence, policy)
        out["suites"][s] = {"category": meta.category, **d.to_dict(), "minimum_detectable_effect": minimum_detectable_effect(d.se, policy.confidence)}
        if meta.poolable:
            pool.setdefault(meta.category, []).append(s)
    everything = []
    for cat, suites in pool.items():
        everything += suites
        try:
            out["categories"][cat] = {"suites": suites, **pooled_delta(a, b, suites, policy).to_dict()}
        except LafError:
            pass
    if everything:
        try:
            out["overall"] = {"suites": everything, **pooled_delta(a, b, everything, policy).to_dict()}
        except LafError:
            pass
    return out
