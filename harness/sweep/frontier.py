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

from ..results import is_proportion


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
    """(value, low, high) in the metric's units: found as the oriented gain, lost as the oriented loss; ``bound``:
    the one the gate decided on, the one-sided lower bound of the improvement (the gain's lower bound, or minus it:
    the loss's upper bound); a verdict without it falls back to the two-sided CI's end."""
    if rule is None or not isinstance(rule.get("stats"), dict):
        return None
    st = rule["stats"]
    imp, lo, hi, lb = _num(st.get("improvement")), _num(st.get("ci_low")), _num(st.get("ci_high")), _num(st.get("lower_bound"))
    if imp is None:
        return None
    lo = imp if lo is None else lo
    hi = imp if hi is None else hi
    lb = lo if lb is None else lb
    if lost:  # a loss is minus the improvement
        return {"value": -imp, "ci_low": -hi, "ci_high": -lo, "bound": -lb, "n": st.get("n")}
    return {"value": imp, "ci_low": lo, "ci_high": hi, "bound": lb, "n": st.get("n")}


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
                     "verdict": v.get("verdict") or v.get("status"), "failed_rules": [r.get("rule") for r in v.get("rules") or [] if isinstance(r, dict) and r.get("status") != "pass"]})
    for r in rows:  # on the front when no other point finds at least as much and loses at most as much, one of them strictly
        x, y = r["found"]["value"], r["lost"]["value"]
        r["pareto"] = not any(q is not r and q["found"]["value"] >= x and q["lost"]["value"] <= y
                              and (q["found"]["value"] > x or q["lost"]["value"] < y) for q in rows)
    found_margin = _num(found_rule.get("margin"))
    lost_margin = _num(lost_rule.get("margin"))
    axes = {}
    for key, rule, margin, meaning in (("found", found_rule, found_margin, "gain, oriented (positive = better)"),
                                       ("lost", lost_rule, lost_margin, "loss, oriented (positive = worse)")):
        vals = [v for r in rows for v in (r[key]["value"], r[key]["ci_low"], r[key]["ci_high"])]
        points = is_proportion(str(rule.get("metric"))) and all(-1.0 <= v <= 1.0 for v in vals)  # changes of a share lie in [-1, 1]
        axes[key] = {"rule": rule.get("rule"), "suite": rule.get("suite"), "metric": rule.get("metric"), "margin": margin,
                     "unit": "points" if points else str(rule.get("metric")), "scale": 100.0 if points else 1.0,
                     "meaning": meaning + ", in the metric's units (shown times scale, in unit)"}
    closest = None
    if rows and found_margin is not None and lost_margin is not None:
        from ..gate.verdict import at_margin, clears

        def gap(r):  # margins short, on the bounds the gate decides on; a gain bound on its margin has not cleared it
            f, lo = r["found"]["bound"], r["lost"]["bound"]
            short = 0.0 if clears("min_gain", f, found_margin) or at_margin(f, found_margin) else (found_margin - f) / (abs(found_margin) or 1)
            over = 0.0 if clears("max_increase", -lo, -lost_margin) else (lo - lost_margin) / (abs(lost_margin) or 1)
            return short + over, at_margin(f, found_margin)

        best = min(rows, key=gap)
        f, lo = best["found"]["bound"], best["lost"]["bound"]
        on = at_margin(f, found_margin)
        closest = {"name": best["name"], "found_short_by": 0.0 if on else max(0.0, found_margin - f),
                   "found_on_margin": on,  # a gain must be above its margin (gate/verdict.py clears): on it is not enough
                   "lost_over_by": 0.0 if clears("max_increase", -lo, -lost_margin) else lo - lost_margin,
                   "estimate_found_short_by": max(0.0, found_margin - best["found"]["value"]),
                   "estimate_lost_over_by": max(0.0, best["lost"]["value"] - lost_margin),
                   "other_failed_rules": [x for x in best["failed_rules"] if x not in (found_rule.get("rule"), lost_rule.get("rule"))]}
    doc = {
        "found": axes["found"], "lost": axes["lost"],
        "pass_region": {"found_at_least": found_margin, "lost_at_most": lost_margin,
                        "note": "the gate needs the gain's one-sided lower bound above found_at_least and the loss's one-sided upper bound at "
                                "or below lost_at_most (and every other required rule); the chart shows two-sided 95 % CIs"},
        "points": rows, "pareto": [r["name"] for r in rows if r["pareto"]], "passing": [r["name"] for r in rows if r["verdict"] == "pass"],
        "closest": closest,
    }
    doc["sentence"] = sentence(doc)
    return doc


def shown(value: float | None, axis: dict, signed: bool = True) -> str:
    """A value of an axis in its display unit (points, one decimal, for shares of items; else three decimals)."""
    if value is None:
        return "–"
    scale = axis.get("scale") or 1.0
    return f"{value * scale:{'+' if signed else ''}{'.1f' if scale != 1.0 else '.3f'}}"


def cell(c: dict, axis: dict) -> str:
    return f"{shown(c['value'], axis)} ({shown(c['ci_low'], axis)} to {shown(c['ci_high'], axis)})"


def sentence(doc: dict) -> str:
    """What the frontier says, with its numbers: which points pass, or how close the closest comes."""
    f, lo = doc["found"], doc["lost"]
    if doc["passing"]:
        return f"Passing: {', '.join(map(str, doc['passing']))}."
    c = doc.get("closest")
    if not c:
        return "No point passes."
    by = {r["name"]: r for r in doc["points"]}[c["name"]]
    parts = []
    if c["found_short_by"] > 0:
        parts.append(f"its {f['suite']} gain's one-sided lower bound {shown(by['found']['bound'], f)} is {shown(c['found_short_by'], f, False)} {f['unit']} "
                     f"short of the {shown(f['margin'], f, False)} margin")
    elif c.get("found_on_margin"):
        parts.append(f"its {f['suite']} gain's one-sided lower bound {shown(by['found']['bound'], f)} is exactly the {shown(f['margin'], f, False)} margin, "
                     "and a gain must be above it")
    if c["lost_over_by"] > 0:
        parts.append(f"its {lo['suite']} loss's one-sided upper bound {shown(by['lost']['bound'], lo)} is {shown(c['lost_over_by'], lo, False)} {lo['unit']} "
                     f"over the {shown(lo['margin'], lo, False)} margin")
    if c["other_failed_rules"]:
        parts.append("it also fails or is inconclusive on " + ", ".join(map(str, c["other_failed_rules"])))
    return f"No point passes. The closest is {c['name']}: " + ("; ".join(parts) or "its other rules decide") + "."


def markdown(doc: dict | None) -> str:
    """The frontier as a Markdown table (for a CI summary or a PR comment)."""
    if not doc:
        return ""
    f, lo = doc["found"], doc["lost"]
    from ..present import markdown_table, md_escape

    out = [md_escape(f"### Found vs lost ({f['suite']} {f['metric']} gain; {lo['suite']} {lo['metric']} loss)"), ""]
    out += markdown_table(["point", f"found: {f['suite']} gain, {f['unit']} (95 % CI)", f"lost: {lo['suite']} {lo['metric']} increase, {lo['unit']} (95 % CI)",
                           "Pareto", "verdict", "failed or inconclusive"],
                          [[str(r["name"]), cell(r["found"], f), cell(r["lost"], lo), "yes" if r["pareto"] else "", str(r["verdict"]).upper(),
                            ", ".join(map(str, r["failed_rules"]))] for r in doc["points"]])
    out += ["", f"Pass region: the gain's one-sided 95 % lower bound above {shown(f['margin'], f, False)} {f['unit']}, the loss's one-sided upper bound at "
            f"most {shown(lo['margin'], lo, False)} {lo['unit']} (the table shows two-sided CIs). "
            + doc.get("sentence", sentence(doc))]
    return "\n".join(out) + "\n"
