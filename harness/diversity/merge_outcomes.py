"""Predicted vs observed: how the merges the harness made in these runs actually did.

A merged candidate is recognised by the lineage its adapter manifest carries
(``results.json`` records each adapter's manifest: ``lineage.method`` and
``lineage.parents[].ref``). When the run also holds its two parents and the
base, its *retained gain* is observed from the runs' own results:

    gain(model)    = mean over the domain suites (all suites when none is a domain suite)
                     of the primary metric's change against the base, oriented so that larger is better;
    retained gain  = gain(merge) / mean(gain(parent 1), gain(parent 2)).

1 means the merge kept the parents' average gain, 0 that it kept none of it,
below 0 that it is worse than the base. It is undefined (said, not NaN) when
the parents gained nothing on average (nothing to retain). The predicted
mergeability of the parents' pair is then compared with it by
:func:`harness.diversity.mergeability.check_predictions` (Spearman's rho with a
bootstrap CI), separately per merge method, because no single predictor works
for every method (arXiv 2601.22285).
"""

from __future__ import annotations

import math

from ..errors import LafError
from .mergeability import check_predictions

MIN_PAIRS = 3


def _lineage(results: dict, model: str) -> dict | None:
    info = (results.get("models") or {}).get(model) or {}
    manifest = (info.get("adapter") or {}).get("manifest") or {}
    lin = manifest.get("lineage") if isinstance(manifest, dict) else None
    return lin if isinstance(lin, dict) and isinstance(lin.get("parents"), list) else None


def _gain_suites(results: dict) -> tuple[list[str], str]:
    suites = results.get("suites") or {}
    usable = [s for s, m in suites.items() if (m.get("metrics") or {}).get(m.get("primary_metric"), {}).get("ideal") is None
              and (m.get("metrics") or {}).get(m.get("primary_metric"), {}).get("aggregation", "mean") == "mean"]
    domain = [s for s in usable if suites[s].get("category") == "domain"]
    return (domain, "domain suites") if domain else (usable, "all suites")


def _gain(results: dict, model: str, suites: list[str]) -> float | None:
    vals = []
    for s in suites:
        meta = results["suites"][s]
        metric = meta.get("primary_metric")
        sign = 1.0 if (meta.get("metrics") or {}).get(metric, {}).get("higher_is_better", True) else -1.0
        res = results.get("results") or {}
        v = ((res.get(model) or {}).get(s) or {}).get(metric) or {}
        b = ((res.get("base") or {}).get(s) or {}).get(metric) or {}
        v, b = v.get("value"), b.get("value")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (v, b)):
            return None
        vals.append(sign * (float(v) - float(b)))
    return sum(vals) / len(vals) if vals else None


def observed_merges(loaded: dict[str, dict], label_of: dict[tuple[str, str], str]) -> list[dict]:
    """Every merged candidate in the runs with its parents, method and observed retained gain (or why there is none).

    ``loaded``: run folder -> results.json dict; ``label_of``: (run folder, model) -> candidate label."""
    rows = []
    for (folder, model), label in label_of.items():
        results = loaded[folder]
        lin = _lineage(results, model)
        if lin is None:
            continue
        parents = [p.get("ref") for p in lin["parents"] if isinstance(p, dict) and isinstance(p.get("ref"), str)]
        row: dict = {"merged": label, "method": str(lin.get("method") or "unknown"), "parents": parents}
        rows.append(row)
        if len(parents) != 2:
            row["reason"] = f"{len(parents)} parents: the prediction is pairwise"
            continue
        missing = [p for p in parents if (folder, p) not in label_of]
        if missing:
            row["reason"] = f"parent {', '.join(missing)} is not a candidate in the same run"
            continue
        row["pair"] = [label_of[folder, p] for p in parents]
        if "base" not in (results.get("models") or {}):
            row["reason"] = "the run has no base model to measure gains against"
            continue
        suites, scope = _gain_suites(results)
        gains = [_gain(results, m, suites) for m in (model, *parents)]
        if any(g is None for g in gains):
            row["reason"] = "a model has no finite score on every suite the gain is measured on"
            continue
        g_merge, g1, g2 = gains
        row.update(gain_scope=scope, merged_gain=round(g_merge, 6), parent_gains=[round(g1, 6), round(g2, 6)])
        parent_mean = (g1 + g2) / 2
        if parent_mean <= 1e-12:
            row["reason"] = f"the parents gained nothing on average ({parent_mean:+.4f}) on the {scope}: there is no gain to retain"
            continue
        row["retained_gain"] = round(g_merge / parent_mean, 6)
    return rows


def prediction_check(predictions: dict, merges: list[dict], confidence: float = 0.95) -> dict:
    """Per merge method: the table of predicted score vs observed retained gain, and Spearman's rho with its CI when
    at least three pairs have both; otherwise the table and the reason there is no correlation."""
    if not merges:
        return {"skipped": "no merged candidate (an adapter whose manifest records merge lineage) is in the runs"}
    scored = {frozenset(r["pair"]): r for r in predictions.get("pairs", []) if r.get("score") is not None}
    by_method: dict[str, dict] = {}
    for m in merges:
        by_method.setdefault(m["method"], {"merges": []})["merges"].append(m)
    summaries = []
    for method, entry in sorted(by_method.items()):
        rows = entry["merges"]
        for r in rows:
            p = scored.get(frozenset(r.get("pair") or ()))
            r["predicted"] = None if p is None else p["score"]
            if p is None and "reason" not in r:
                r["reason"] = "no mergeability prediction for this pair (no signal measured for it)"
        usable = {"+".join(r["pair"]): r["retained_gain"] for r in rows if "retained_gain" in r and r.get("predicted") is not None}
        if len(usable) < MIN_PAIRS:
            entry["skipped"] = (f"{len(usable)} merged pair(s) with both a prediction and an observed retained gain; "
                                f"a rank correlation needs at least {MIN_PAIRS}")
            summaries.append(f"{method}: no verdict ({entry['skipped']})")
            continue
        try:
            entry["check"] = check_predictions(predictions, usable, confidence)
        except LafError as e:  # e.g. a pair merged twice with the same method: said, not raised
            entry["skipped"] = e.cause
            summaries.append(f"{method}: no verdict ({e.cause})")
            continue
        summaries.append(f"{method}: {entry['check']['summary']}")
    return {"observed": "retained gain = gain(merge) / mean(gain(parents)) against the base, on the domain suites (all suites without one)",
            "methods": by_method, "summary": "; ".join(summaries)}
