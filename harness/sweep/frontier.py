"""The found-vs-lost frontier of a sweep: each candidate as a point (what it found on x, what it lost on y, both
with their paired CIs), the Pareto front, the gate's pass region, each point's verdict.

    found = the policy's first required min_gain rule (the domain gain, in the metric's units)
    lost  = the policy's required non-inferiority rule on a general suite that the candidates come closest to
            failing, by default the one with max_increase (bits per byte on general prose), as a change in the
            metric's units (positive = worse), so the chart reads "right is better, down is better"

Read from the verdicts the gate wrote (``verdict.json`` rule stats), so it needs no model stack and shows exactly
the numbers the gate decided on (the confirmation split when ``select:`` chose the checkpoints).
"""

from __future__ import annotations

import math


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _axes(verdicts: list[dict]) -> tuple[dict | None, dict | None]:
    """The found rule and the lost rule (their descriptions in the first verdict that has them)."""
    found = lost = None
    for v in verdicts:
        rules = [r for r in v.get("rules") or [] if isinstance(r, dict) and r.get("required") and isinstance(r.get("stats"), dict)]
        found = found or next((r for r in rules if r.get("kind") == "min_gain"), None)
        general = [r for r in rules if r.get("category") == "general" and r.get("kind") in ("max_increase", "max_drop")]
        lost = lost or next((r for r in general if r.get("kind") == "max_increase"), None) or (general[0] if general else None)
        if found and lost:
            break
    return found, lost


def _cell(rule: dict | None, *, lost: bool) -> dict | None:
    """(value, low, high) in the metric's units: found as the oriented gain, lost as the oriented loss."""
    if rule is None or not isinstance(rule.get("stats"), dict):
        return None
    st = rule["stats"]
    imp, lo, hi = _num(st.get("improvement")), _num(st.get("ci_low")), _num(st.get("ci_high"))
    if imp is None:
        return None
    lo = imp if lo is None else lo
    hi = imp if hi is None else hi
    if lost:  # a loss is minus the improvement
        return {"value": -imp, "ci_low": -hi, "ci_high": -lo, "n": st.get("n")}
    return {"value": imp, "ci_low": lo, "ci_high": hi, "n": st.get("n")}


def frontier(points: list[dict], verdicts: dict[str, dict]) -> dict | None:
    """``points``: the sweep rows (``name``, ``model``); ``verdicts``: model -> verdict dict. Returns the frontier
    document (``None`` when the policy has no found or no lost rule)."""
    found_rule, lost_rule = _axes(list(verdicts.values()))
    if found_rule is None or lost_rule is None:
        return None
    rows = []
    for p in points:
        v = verdicts.get(p.get("model"))
        if not isinstance(v, dict):
            continue
        by_label = {(r.get("rule"), r.get("suite")): r for r in v.get("rules") or [] if isinstance(r, dict)}
        f = _cell(by_label.get((found_rule.get("rule"), found_rule.get("suite"))), lost=False)
        lo = _cell(by_label.get((lost_rule.get("rule"), lost_rule.get("suite"))), lost=True)
        if f is None or lo is None:
            continue
        rows.append({"name": p.get("name"), "model": p.get("model"), "params": p.get("params"), "found": f, "lost": lo,
                     "verdict": v.get("status"), "failed_rules": [r.get("rule") for r in v.get("rules") or [] if isinstance(r, dict) and r.get("status") != "pass"]})
    for r in rows:  # on the front when no other point finds at least as much and loses at most as much, one of them strictly
        x, y = r["found"]["value"], r["lost"]["value"]
        r["pareto"] = not any(q is not r and q["found"]["value"] >= x and q["lost"]["value"] <= y
                              and (q["found"]["value"] > x or q["lost"]["value"] < y) for q in rows)
    found_margin = _num(found_rule.get("margin"))
    lost_margin = _num(lost_rule.get("margin"))
    closest = None
    if rows and found_margin is not None and lost_margin is not None:
        # how far each point is from the pass region, in units of each margin: 0 inside it
        def gap(r):
            return max(0.0, (found_margin - r["found"]["value"]) / (found_margin or 1)) + max(0.0, (r["lost"]["value"] - lost_margin) / (lost_margin or 1))

        best = min(rows, key=gap)
        closest = {"name": best["name"], "found_short_by": max(0.0, found_margin - best["found"]["value"]),
                   "lost_over_by": max(0.0, best["lost"]["value"] - lost_margin)}
    return {
        "found": {"rule": found_rule.get("rule"), "suite": found_rule.get("suite"), "metric": found_rule.get("metric"), "margin": found_margin,
                  "meaning": "gain, oriented (positive = better), in the metric's units"},
        "lost": {"rule": lost_rule.get("rule"), "suite": lost_rule.get("suite"), "metric": lost_rule.get("metric"), "margin": lost_margin,
                 "meaning": "loss, oriented (positive = worse), in the metric's units"},
        "pass_region": {"found_at_least": found_margin, "lost_at_most": lost_margin,
                        "note": "the point estimates inside it; the gate also needs the CI bounds inside (its verdict is shown per point)"},
        "points": rows, "pareto": [r["name"] for r in rows if r["pareto"]], "passing": [r["name"] for r in rows if r["verdict"] == "pass"],
        "closest": closest,
    }


def markdown(doc: dict | None) -> str:
    """The frontier as a Markdown table (for a CI summary or a PR comment)."""
    if not doc:
        return ""
    f, lo = doc["found"], doc["lost"]
    out = [f"### Found vs lost ({f['suite']} {f['metric']} gain; {lo['suite']} {lo['metric']} loss)", "",
           f"| point | found: {f['metric']} gain (95 % CI) | lost: {lo['metric']} (95 % CI) | Pareto | verdict |", "|---|---|---|---|---|"]
    for r in doc["points"]:
        a, b = r["found"], r["lost"]
        out.append(f"| {str(r['name']).replace('|', '/')} | {a['value']:+.3f} ({a['ci_low']:+.3f} to {a['ci_high']:+.3f}) | "
                   f"{b['value']:+.3f} ({b['ci_low']:+.3f} to {b['ci_high']:+.3f}) | {'yes' if r['pareto'] else ''} | {str(r['verdict']).upper()} |")
    out.append("")
    out.append(f"Pass region: found >= {f['margin']}, lost <= {lo['margin']}. " + (
        f"Passing: {', '.join(doc['passing'])}." if doc["passing"] else
        (f"No point passes; the closest, {doc['closest']['name']}, is {doc['closest']['found_short_by']:.3f} short on found and "
         f"{doc['closest']['lost_over_by']:.3f} over on lost." if doc.get("closest") else "No point passes.")))
    return "\n".join(out) + "\n"
