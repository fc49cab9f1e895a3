"""The recommendation: the cheapest point whose domain gain is non-inferior to the best point's, and which passes.

    best = the point with the largest domain gain (items of the domain suites pooled, as `laf compare` ranks)
    non-inferior = the lower end of the paired CI of (point - best) on the domain items is above -margin
    eligible = non-inferior and gated PASS (with no gate in the config: non-inferior only, and the sentence says so)
    recommended = the eligible point with the fewest trainable parameters, then the shortest training time

The best point is always non-inferior to itself, so a sweep whose best point passes always recommends one.
"""

from __future__ import annotations

from ..errors import LafError
from ..gate.deltas import pooled_delta
from ..gate.policy import Policy
from ..gate.runs import load_side
from ..results import BASE


def _pts(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}"


def recommend(eval_dir, points: list[dict], margin_points: float, policy: Policy | None, gated: bool) -> dict:
    """``points``: the sweep's rows (name, model, cost, domain, general, verdict). Returns the recommendation dict
    (also fills each row's ``vs_best`` and ``eligible``)."""
    with_gain = [p for p in points if p.get("domain") and p["domain"].get("improvement") is not None]
    if not with_gain:
        return {"point": None, "sentence": "No recommendation: no domain suite was scored, so there is no gain to compare (add a suite of category domain).",
                "margin_points": margin_points}
    best = max(with_gain, key=lambda p: p["domain"]["improvement"])
    pol = policy or Policy(rules=[{"category": "general", "max_drop": 0.0}])
    base = load_side(f"{eval_dir}#{BASE}", "baseline", default_base=True)
    domain = [s for s, m in base.suites.items() if m.category == "domain"]
    best_side = load_side(f"{eval_dir}#{best['model']}", "candidate", default_base=False)
    for p in with_gain:
        if p is best:
            p["vs_best"] = {"improvement": 0.0, "ci_low": 0.0, "ci_high": 0.0}
        else:
            try:
                d = pooled_delta(best_side, load_side(f"{eval_dir}#{p['model']}", "candidate", default_base=False), domain, pol)
                p["vs_best"] = {"improvement": d.improvement, "ci_low": d.ci_low, "ci_high": d.ci_high}
            except LafError:
                p["vs_best"] = None
        vb = p.get("vs_best")
        p["non_inferior"] = bool(vb and vb["ci_low"] is not None and vb["ci_low"] > -margin_points / 100)
        p["eligible"] = p["non_inferior"] and (not gated or p.get("verdict") == "pass")

    def cost_key(p):
        c = p.get("cost") or {}
        return (c.get("trainable_parameters") or float("inf"), c.get("train_time_s") or 0.0, p["name"])

    eligible = sorted((p for p in with_gain if p["eligible"]), key=cost_key)
    gate_words = "passes the gate" if gated else "no gate was configured, so it is not gated"
    if not eligible:
        why = f"the best point {best['name']} ({_pts(best['domain']['improvement'])} points) " + ("does not pass the gate" if gated else "has no comparison")
        return {"point": None, "best": best["name"], "margin_points": margin_points,
                "sentence": f"No point is recommended: none is within {margin_points:g} points of the best domain gain and passes the gate ({why})."}
    r = eligible[0]
    c, d = r.get("cost") or {}, r["domain"]
    share = f"{c['trainable_percent']:.3g} % of the model's parameters" if c.get("trainable_percent") is not None else "trainable share unknown"
    params = f"{c['trainable_parameters']:,}" if c.get("trainable_parameters") is not None else "?"
    t = f"{c['train_time_s']:.1f} s of training" if c.get("train_time_s") is not None else "training time unknown (merged)"
    sentence = (f"Recommended: {r['name']} ({', '.join(f'{k}={v}' for k, v in r['params'].items())}): {params} trainable parameters ({share}), {t}; "
                f"domain gain {_pts(d['improvement'])} points (CI {_pts(d.get('ci_low'))} to {_pts(d.get('ci_high'))})")
    if r is best:
        sentence += f", the best of the sweep; {gate_words}."
    else:
        vb = r["vs_best"]
        sentence += (f", non-inferior to the best point {best['name']} ({_pts(best['domain']['improvement'])} points) within the "
                     f"{margin_points:g}-point margin (difference {_pts(vb['improvement'])}, CI lower end {_pts(vb['ci_low'])}); {gate_words}.")
    return {"point": r["name"], "model": r["model"], "best": best["name"], "margin_points": margin_points, "rule": (
        "cheapest (fewest trainable parameters, then training time) among the points whose paired CI of the domain gain "
        "difference to the best point stays above -margin" + (" and which pass the gate" if gated else "")), "sentence": sentence}
