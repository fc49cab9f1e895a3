"""Predict which pairs will merge well, then check the prediction against merges the harness made.

The rule (stated in diversity.json with its sources): a pair's mergeability
score is the mean of the signals measured for it, each mapped to [0, 1] with
higher = a parameter average is expected to keep more of both parents' gains:

* ``(1 + task-vector cosine) / 2``: aligned task vectors average without
  cancelling; orthogonal ones are each halved; opposed ones cancel
  (task arithmetic, Ilharco et al. 2023; "Demystifying Mergeability",
  arXiv 2601.22285, lists it among the predictors);
* ``(1 + Cohen's kappa) / 2`` on the domain items (all items when there is no
  domain suite): parents that answer alike sit in one basin (prediction
  agreement, arXiv 2601.22285);
* ``exp(-KL(ensemble || merged))`` on the probe set: the merge-vs-ensemble gap
  ("M-Loss", arXiv 2602.08564): a merge that behaves like its parents'
  ensemble keeps what the ensemble keeps.

"Demystifying Mergeability" finds that no single predictor works for every
merge method, so this is a ranking to be checked, not a promise:
:func:`check_predictions` compares it with the retained gains of real merges.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import LafError

RULE = ("score = mean of the available signals, each in [0, 1]: (1 + task-vector cosine) / 2, "
        "(1 + Cohen's kappa on the domain items, all items without a domain suite) / 2, exp(-KL(ensemble || parameter average)) on the probe set; "
        "label 'likely' >= 0.75, 'uncertain' 0.5-0.75, 'unlikely' < 0.5 (thresholds are conventions: the check is rank-based)")
SOURCES = [
    "Ilharco et al. 2023, Editing Models with Task Arithmetic (task-vector cosine)",
    "Demystifying Mergeability, arXiv 2601.22285 (cosine, subspace overlap, prediction agreement; no single predictor works for every method)",
    "M-Loss, arXiv 2602.08564 (gap between the parameter-averaged model and the ensemble of its parents)",
]


class _Lookup:
    """A labelled matrix of diversity.json, indexed once (pairs are looked up many times)."""

    def __init__(self, matrix: dict | None):
        ok = bool(matrix) and "labels" in matrix
        self.values = matrix["values"] if ok else []
        self.index = {lab: i for i, lab in enumerate(matrix["labels"])} if ok else {}

    def __call__(self, a: str, b: str):
        i, j = self.index.get(a), self.index.get(b)
        return None if i is None or j is None else self.values[i][j]


def predict_mergeability(pairs: list[tuple[str, str]], *, weight_cosine: dict | None = None, kappa: dict | None = None,
                 merge_gap_kl: dict | None = None, kappa_scope: str = "all") -> dict:
    """Score every pair from whichever signals exist for it."""
    rows = []
    cos_of, kappa_of, gap_of = _Lookup(weight_cosine), _Lookup(kappa), _Lookup(merge_gap_kl)
    for a, b in pairs:
        comps = {}
        c = cos_of(a, b)
        if c is not None:
            comps["weight_cosine"] = {"value": c, "component": (1 + c) / 2}
        k = kappa_of(a, b)
        if k is not None:
            comps["kappa"] = {"value": k, "component": (1 + k) / 2, "scope": kappa_scope}
        g = gap_of(a, b)
        if g is not None:
            comps["merge_ensemble_gap"] = {"value": g, "component": math.exp(-g)}
        if comps:
            score = math.fsum(v["component"] for v in comps.values()) / len(comps)
            label = "likely" if score >= 0.75 else "uncertain" if score >= 0.5 else "unlikely"
            rows.append({"pair": [a, b], "score": round(score, 6), "prediction": label,
                         "signals": {k: {kk: round(vv, 6) if isinstance(vv, float) else vv for kk, vv in v.items()} for k, v in comps.items()}})
        else:
            rows.append({"pair": [a, b], "score": None, "prediction": None, "signals": {},
                         "reason": "no signal was measured for this pair (run labels and adapter refs must match to combine them)"})
    rows.sort(key=lambda r: -(r["score"] if r["score"] is not None else -1))
    return {"rule": RULE, "sources": SOURCES, "pairs": rows}


def _pair_key(pair) -> frozenset:
    if isinstance(pair, str):
        parts = pair.split("+")
    else:
        parts = list(pair)
    if len(parts) != 2:
        raise LafError(f"'{pair}' does not name a pair", "write pairs as 'a+b' or [a, b]")
    return frozenset(parts)


def _spearman_rows(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Spearman's rho of every row pair at once (Pearson on average ranks, as scipy.stats.spearmanr); NaN where a row is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(X, axis=1), rankdata(Y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def check_predictions(predictions: dict | list, observed_retained_gain: dict, confidence: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """Predicted score against the merged model's retained gain, per pair: a table, Spearman's rho and its bootstrap CI.

    ``predictions``: diversity.json's ``predictions`` (or its ``pairs`` list);
    ``observed_retained_gain``: ``{"a+b": value}`` or ``{(a, b): value}``
    (e.g. the merge's domain gain over the base divided by the mean of its parents' gains).
    """
    from scipy.stats import spearmanr

    rows_in = predictions.get("pairs", []) if isinstance(predictions, dict) else predictions
    scored = {_pair_key(r["pair"]): r for r in rows_in if r.get("score") is not None}
    observed = {}
    for k, v in observed_retained_gain.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise LafError(f"the observed retained gain of {k} is {v!r}, not a finite number", "pass a number for every merged pair")
        observed[_pair_key(k)] = float(v)
    table = []
    for key, obs in observed.items():
        if key in scored:
            r = scored[key]
            table.append({"pair": r["pair"], "score": r["score"], "prediction": r["prediction"], "observed_retained_gain": round(obs, 6)})
    unmatched = sorted("+".join(sorted(k)) for k in observed if k not in scored)
    if len(table) < 3:
        raise LafError(f"only {len(table)} merged pairs have a prediction (a correlation needs at least 3)"
                       + (f"; no prediction for {', '.join(unmatched)}" if unmatched else ""),
                       "merge and evaluate at least three predicted pairs")
    x = np.array([r["score"] for r in table])
    y = np.array([r["observed_retained_gain"] for r in table])
    out = {"table": table, "n": len(table), "unmatched": unmatched, "confidence": confidence}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        which = "predicted scores" if np.ptp(x) == 0 else "observed retained gains"
        out.update(spearman=None, p_value=None, ci=None, reason=f"the {which} are all equal, so a rank correlation is undefined",
                   summary=f"no verdict: the {which} are all equal")
        return out
    res = spearmanr(x, y)
    rho = float(res.statistic)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boots = _spearman_rows(x[idx], y[idx])
    boots = boots[np.isfinite(boots)]  # resamples with a constant side have no rank correlation
    alpha = 1 - confidence
    ci = [round(float(np.quantile(boots, alpha / 2)), 6), round(float(np.quantile(boots, 1 - alpha / 2)), 6)] if boots.size >= 20 else None
    if ci is None:
        summary = f"Spearman rho {rho:+.2f} on {len(x)} pairs; too few distinct resamples for a confidence interval"
    elif ci[0] > 0:
        summary = f"the prediction ranked the merges better than chance: Spearman rho {rho:+.2f} ({int(confidence * 100)}% CI {ci[0]:+.2f} to {ci[1]:+.2f}, {len(x)} pairs)"
    elif ci[1] < 0:
        summary = f"the prediction did badly: it ranked the merges in the wrong order, Spearman rho {rho:+.2f} ({int(confidence * 100)}% CI {ci[0]:+.2f} to {ci[1]:+.2f}, {len(x)} pairs)"
    else:
        summary = f"the prediction is not distinguishable from chance: Spearman rho {rho:+.2f} ({int(confidence * 100)}% CI {ci[0]:+.2f} to {ci[1]:+.2f}, {len(x)} pairs)"
    out.update(spearman=round(rho, 6), p_value=round(float(res.pvalue), 6), ci=ci, bootstrap={"resamples": int(n_boot), "valid": int(boots.size), "seed": seed},
               summary=summary)
    return out
