"""``laf compare``: several candidates against one baseline on the same items.

For each candidate: the paired change of every suite's primary metric, the
domain gain and the general change (items of each category pooled on their
oriented primary metrics), a ranking by domain gain, the Pareto front of
domain gain against forgetting, and Holm-corrected tests when picking a
winner (the top candidate must beat every other one on the domain items, and
every candidate's gain over the baseline is Holm-adjusted across candidates).
"""

from __future__ import annotations

from typing import Any

from ..errors import LafError
from ..results import BASE, load_results
from ..stats import holm
from .deltas import compute_delta, pooled_delta
from .policy import Policy, load_policy
from .rules import evaluate_gate
from .runs import RunSide, check_comparable, load_side, parse_ref


def _candidates(refs: list[str]) -> list[RunSide]:
    out = []
    for ref in refs:
        folder, model = parse_ref(ref)
        if model:
            out.append(load_side(ref, "candidate", default_base=False))
            continue
        adapters = load_results(folder).adapters
        if not adapters:
            raise LafError(f"{folder} holds no adapters to compare", "evaluate adapters with --adapter, or name a model with RUN#MODEL")
        out += [load_side(f"{folder}#{m}", "candidate", default_base=False) for m in adapters]
    return out


def compare_runs(refs: list[str], baseline_ref: str | None, policy_path: str | None, confidence: float = 0.95) -> dict:
    """Rank the candidates in ``refs`` (runs, every adapter in them, or ``RUN#MODEL``) against the baseline (default:
    the first run's base): per-suite and per-category paired changes, the ranking by domain gain, the Pareto front
    and a Holm-corrected winner. With ``policy_path`` each candidate is also gated. Returns ``compare.json``'s dict."""
    base = load_side(baseline_ref or f"{parse_ref(refs[0])[0]}#{BASE}", "baseline", default_base=True)
    cands = _candidates(refs)
    labels = [f"{c.model}" if c.folder == base.folder else f"{c.ref}" for c in cands]
    if len(set(labels)) != len(labels):
        labels = [c.ref for c in cands]
    policy = Policy(rules=[{"category": "general", "max_drop": 0.0}], confidence=confidence)
    for c in cands:
        if c.folder.resolve() != base.folder.resolve():
            check_comparable(base, c)
    categories = sorted({m.category for m in base.suites.values()})
    rows: list[dict[str, Any]] = []
    for label, c in zip(labels, cands):
        suites = {}
        for s in base.suites:
            d, _, _ = compute_delta(base, c, [s], None, confidence, policy)
            suites[s] = d.to_dict()
        cats = {}
        for cat in categories:
            members = [s for s, m in base.suites.items() if m.category == cat and m.poolable]
            if members:
                cats[cat] = {"suites": members, **pooled_delta(base, c, members, policy).to_dict()}
        row = {"candidate": label, "ref": c.ref, "model": c.model, "suites": suites, "categories": cats}
        if policy_path:
            v = evaluate_gate(base, c, load_policy(policy_path), policy_path)
            row["verdict"] = v.status
            row["failed_rules"] = [r.rule + f" [{r.suite}]" for r in v.regressions]
        rows.append(row)

    def gain(row, cat):
        return row["categories"].get(cat, {}).get("improvement")

    rows.sort(key=lambda r: (-(gain(r, "domain") or 0.0), -(gain(r, "general") or 0.0)))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    # Pareto front: maximise domain gain and general change (less forgetting)
    pts = {r["candidate"]: (gain(r, "domain") or 0.0, gain(r, "general") or 0.0) for r in rows}
    for r in rows:
        me = pts[r["candidate"]]
        r["pareto"] = not any(o[0] >= me[0] and o[1] >= me[1] and o != me for k, o in pts.items() if k != r["candidate"])
    # Holm: gains over the baseline, adjusted across candidates
    p_base = {r["candidate"]: r["categories"].get("domain", {}).get("p_value") for r in rows}
    p_base = {k: v for k, v in p_base.items() if v is not None}
    adj_base = holm(p_base) if p_base else {}
    for r in rows:
        r["domain_p_holm"] = adj_base.get(r["candidate"])
    winner = _pick_winner(base, cands, labels, rows, policy, confidence)
    return {
        "schema": "laf.compare/1",
        "baseline": base.describe(),
        "confidence": confidence,
        "categories": categories,
        "ranking": rows,
        "winner": winner,
    }


def _pick_winner(base, cands, labels, rows, policy, confidence) -> dict:
    alpha = 1 - confidence
    domain = [s for s, m in base.suites.items() if m.category == "domain"]
    if not domain or not rows:
        return {"candidate": None, "reason": "no domain suite to rank on"}
    top = rows[0]["candidate"]
    if len(rows) == 1:
        ok = (rows[0].get("domain_p_holm") or 1) < alpha and rows[0]["categories"]["domain"]["improvement"] > 0
        return {"candidate": top if ok else None, "reason": "the only candidate" + ("" if ok else ", and its domain gain is not significant"), "pairwise": {}}
    side = dict(zip(labels, cands))
    pvals, details = {}, {}
    for other in (r["candidate"] for r in rows[1:]):
        try:
            d = pooled_delta(side[other], side[top], domain, policy)
        except LafError:
            continue
        # one-sided: is `top` better than `other`?
        if d.p_value is None:
            continue
        p = d.p_value / 2 if d.improvement > 0 else 1 - d.p_value / 2
        pvals[other] = min(1.0, p)
        details[other] = {"improvement": d.improvement, "ci_low": d.ci_low, "ci_high": d.ci_high, "p_one_sided": pvals[other]}
    adj = holm(pvals)
    for k in details:
        details[k]["p_holm"] = adj[k]
    beaten = all(p < alpha for p in adj.values())
    if beaten:
        return {"candidate": top, "reason": f"better than every other candidate on the domain items (Holm-adjusted p < {alpha:g})", "pairwise": details}
    tied = [k for k, p in adj.items() if p >= alpha]
    return {"candidate": None, "reason": f"no significant winner: {top} is not significantly better than {', '.join(tied)} (Holm, alpha {alpha:g})", "pairwise": details}
