"""``laf compare``: several candidates against one baseline on the same items.

For each candidate: the paired change of every quantity the policy gates (or
every suite's primary metric), each in its own unit (points for shares of
items, bits per byte, ...; ideal-value metrics as the change in distance to
the ideal), the domain gain and the general change (items of each category
pooled on their oriented primary metrics), a ranking by domain gain, the
Pareto front over the gated quantities, its verdict, and Holm-corrected tests
when picking a winner (the top candidate must beat every other one on the domain items, and
every candidate's gain over the baseline is Holm-adjusted across candidates).
"""

from __future__ import annotations

from typing import Any

from ..errors import LafError
from ..registry.merge_info import merge_summary
from ..results import BASE, is_proportion, load_results, parse_run_ref
from ..results.artifacts import CompareDoc
from ..stats import holm
from .deltas import compute_delta, pooled_delta
from .policy import Policy, load_policy
from .rules import evaluate_gate
from .runs import RunSide, check_comparable, load_side
from .verdict import Verdict


def _candidates(refs: list[str]) -> list[RunSide]:
    out = []
    for ref in refs:
        run_ref = parse_run_ref(ref)
        folder, model = run_ref.path, run_ref.model
        if model:
            out.append(load_side(ref, "candidate", default_base=False))
            continue
        adapters = load_results(folder).adapters
        if not adapters:
            raise LafError(f"{folder} holds no adapters to compare", "evaluate adapters with --adapter, or name a model with RUN#MODEL")
        out += [load_side(f"{folder}#{m}", "candidate", default_base=False) for m in adapters]
    return out


UNITS = {"bits_per_byte": "bits/byte", "word_perplexity": "perplexity", "byte_perplexity": "perplexity", "nll": "nats", "loss": "nats"}


def metric_unit(metric: str, *values: float | None) -> str:
    """The unit a change of ``metric`` is shown in: points for shares of items, else the metric's own unit."""
    return "points" if is_proportion(metric, *values) else UNITS.get(metric, metric)


def change_cell(d: dict) -> dict:
    """One comparison cell from a paired delta: the change in the metric's own direction and unit.

    Directional metrics show ``candidate - base`` (its CI from the oriented interval); ideal-value metrics
    (pct_stereotype 0.5, bias scores 0) show the change in distance to the ideal, so negative is better there.
    """
    hib, ideal = d.get("higher_is_better", True), d.get("ideal")
    sign = 1.0 if (ideal is None and hib) else -1.0
    lo, hi = sorted((sign * d["ci_low"] + 0.0, sign * d["ci_high"] + 0.0)) if d.get("ci_low") is not None and d.get("ci_high") is not None else (None, None)
    better = "closer to the ideal" if ideal is not None else ("higher" if hib else "lower")
    return {
        "metric": d["metric"], "unit": metric_unit(d["metric"], d.get("base"), d.get("candidate")), "base": d.get("base"), "candidate": d.get("candidate"),
        "shown_as": f"change in distance to {ideal:g}" if ideal is not None else "change", "better": better,
        "change": None if d.get("improvement") is None else sign * d["improvement"] + 0.0, "ci_low": lo, "ci_high": hi,
        "improvement": d.get("improvement"), "improvement_ci": [d.get("ci_low"), d.get("ci_high")], "p_value": d.get("p_value"),
    }


def gated_quantities(policy: Policy | None, base: RunSide) -> list[dict]:
    """What the comparison shows and the Pareto front is drawn on: each quantity a gate rule checks (a suite's metric,
    or a category's pooled items), in rule order; without a policy, every suite's primary metric."""
    out: dict[str, dict] = {}
    if policy is None:
        for s in base.suites:
            out[s] = {"key": s, "suites": [s], "metric": None, "rules": []}
        return list(out.values())
    for rule in policy.rules:
        label = rule.name or (f"{rule.category or rule.suite} {rule.kind}")
        if rule.suite:
            targets = [(rule.suite, [rule.suite])]
        elif rule.pooled:
            members = [s for s, m in base.suites.items() if m.category == rule.category]
            targets = [(f"{rule.category} (pooled)", members)] if members else []
        else:
            targets = [(s, [s]) for s, m in base.suites.items() if m.category == rule.category]
        for name, suites in targets:
            key = name if rule.metric is None else f"{name} {rule.metric}"
            q = out.setdefault(key, {"key": key, "suites": suites, "metric": rule.metric, "rules": []})
            q["rules"].append(label)
    return list(out.values())


def _quantity(base: RunSide, cand: RunSide, q: dict, policy: Policy) -> dict:
    if len(q["suites"]) > 1 and q["metric"] is None:
        try:
            d = compute_delta(base, cand, q["suites"], None, policy.confidence, policy)[0].to_dict()
        except LafError:
            d = {**pooled_delta(base, cand, q["suites"], policy).to_dict(), "higher_is_better": True}
    else:
        d = compute_delta(base, cand, q["suites"], q["metric"], policy.confidence, policy)[0].to_dict()
    return change_cell(d)


def _verdict_cells(v: Verdict) -> dict:
    # every rule that did not pass, with its status: an inconclusive rule is not a failed one, though it fails a verdict under inconclusive: fail
    failed = [(f"{r.rule} [{r.suite}]" if r.suite else r.rule) + ("" if r.status == "fail" else f" ({r.status})")
              for r in v.rules if r.status != "pass"]
    return {"verdict": v.status, "exit_code": v.exit_code, "failed_rules": failed}


def compare_runs(refs: list[str], baseline_ref: str | None, policy_path: Policy | str | None, confidence: float = 0.95,
                 verdicts: dict[str, Verdict] | None = None) -> CompareDoc:
    """Rank the candidates in ``refs`` (runs, every adapter in them, or ``RUN#MODEL``; ``MODEL`` may be ``name``,
    ``name@latest`` or ``name@version``) against the baseline (default: the first run's base).

    Each candidate gets the paired change of every quantity the policy gates (every suite's primary metric without a
    policy) in its own unit, per-category pooled changes, a rank by domain gain, membership of the Pareto front over
    the gated quantities, and Holm-corrected tests for a winner. Its verdict comes from ``verdicts`` (the verdicts by
    model that ``laf run``'s gate stage made), or is computed here when a policy is given.
    Returns ``compare.json``'s document (``to_dict()`` is what the file holds)."""
    base = load_side(baseline_ref or f"{parse_run_ref(refs[0]).path}#{BASE}", "baseline", default_base=True)
    cands = _candidates(refs)
    seen: dict[tuple, str] = {}
    for c in cands:
        key = (c.folder.resolve(), c.model)
        if key in seen:
            twice = "" if seen[key] == c.ref else f" (as {seen[key]} and {c.ref})"
            raise LafError(f"{c.ref} is given twice{twice}: the same candidate cannot be compared with itself",
                           "name each candidate once")
        seen[key] = c.ref
    labels = [f"{c.model}" if c.folder == base.folder else f"{c.ref}" for c in cands]
    if len(set(labels)) != len(labels):
        labels = [c.ref for c in cands]
    policy = Policy(rules=[{"category": "general", "max_drop": 0.0}], confidence=confidence)
    gate_policy: Policy | None = None
    policy_source = None
    if policy_path is not None:
        gate_policy = policy_path if isinstance(policy_path, Policy) else load_policy(policy_path)
        policy_source = "inline" if isinstance(policy_path, Policy) else str(policy_path)
        policy = policy.model_copy(update={"confidence": gate_policy.confidence, "resamples": gate_policy.resamples, "seed": gate_policy.seed})
    for c in cands:
        if c.folder.resolve() != base.folder.resolve():
            check_comparable(base, c)
    categories = sorted({m.category for m in base.suites.values()})
    quantities = gated_quantities(gate_policy, base)
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
        requested = parse_run_ref(c.ref).model
        info = c.results.models[c.model].adapter
        row = {"candidate": label, "ref": c.ref, "model": c.model, "identity": c.identity(), "resolved_from": requested if requested and requested != c.model else None,
               "merge": None if info is None else merge_summary(info.manifest, info.ref),
               "columns": {q["key"]: _quantity(base, c, q, policy) for q in quantities}, "suites": suites, "categories": cats}
        given = (verdicts or {}).get(c.model)
        if given is not None:
            row.update(_verdict_cells(given))
        elif gate_policy is not None:
            row.update(_verdict_cells(evaluate_gate(base, c, gate_policy, policy_source or "inline")))
        rows.append(row)

    def gain(row, cat):
        return row["categories"].get(cat, {}).get("improvement")

    rows.sort(key=lambda r: (-(gain(r, "domain") or 0.0), -(gain(r, "general") or 0.0)))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    # Pareto front over the gated quantities, each oriented so that larger is better
    keys = [q["key"] for q in quantities]
    pts = {r["candidate"]: tuple((r["columns"][k]["improvement"] or 0.0) for k in keys) for r in rows}
    for r in rows:
        me = pts[r["candidate"]]
        r["pareto"] = not any(all(a >= b for a, b in zip(o, me)) and o != me for k, o in pts.items() if k != r["candidate"])
    # Holm: gains over the baseline, adjusted across candidates
    p_base = {r["candidate"]: r["categories"].get("domain", {}).get("p_value") for r in rows}
    p_base = {k: v for k, v in p_base.items() if v is not None}
    adj_base = holm(p_base) if p_base else {}
    for r in rows:
        r["domain_p_holm"] = adj_base.get(r["candidate"])
    winner = _pick_winner(base, cands, labels, rows, policy, confidence)
    return CompareDoc.from_dict({
        "schema": "laf.compare/2",
        "baseline": base.describe(),
        "confidence": confidence,
        "categories": categories,
        "columns": [{"key": q["key"], "suites": q["suites"], "metric": rows[0]["columns"][q["key"]]["metric"] if rows else q["metric"],
                     "unit": rows[0]["columns"][q["key"]]["unit"] if rows else None,
                     "shown_as": rows[0]["columns"][q["key"]]["shown_as"] if rows else None,
                     "better": rows[0]["columns"][q["key"]]["better"] if rows else None, "rules": q["rules"]} for q in quantities],
        "pareto_on": {"quantities": keys, "source": "the policy's rules" if gate_policy is not None else "every suite's primary metric (no policy)",
                      "orientation": "each quantity's improvement (higher-is-better change, reduction of a lower-is-better metric, "
                                     "reduction of the distance to an ideal value)"},
        "ranking": rows,
        "winner": winner,
    })


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


def _num(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    return f"{100 * v:+.1f}" if unit == "points" else f"{v:+.3g}"


def format_cell(cell: dict | None) -> str:
    """``+12.0 (+5.0 to +19.0)``: a change and its CI in the column's unit (the header names it)."""
    if not cell or cell.get("change") is None:
        return "–"
    return f"{_num(cell['change'], cell['unit'])} ({_num(cell['ci_low'], cell['unit'])} to {_num(cell['ci_high'], cell['unit'])})"


def column_header(col: dict) -> str:
    """``general/text: bits_per_byte change (bits/byte, lower is better)``."""
    better = col.get("better")
    better = "closer to the ideal is better" if better == "closer to the ideal" else f"{better} is better"
    return f"{col['key']}: {col.get('metric')} {col.get('shown_as')} ({col.get('unit')}; {better})"


def combined_exit(verdicts: list[dict]) -> tuple[int, str]:
    """The exit code of a run that gated several candidates, and the sentence that explains it.

    0 only when every candidate passed; 1 when any failed (a required rule, or inconclusive counted as a failure);
    2 when none failed but some is inconclusive. Each candidate's own exit code (after ``inconclusive``) decides."""
    if not verdicts:
        return 0, "exit 0: no gate"
    codes = [int(v.get("exit_code", 0)) for v in verdicts]
    code = 1 if 1 in codes else (2 if 2 in codes else 0)
    parts = ", ".join(f"{v.get('model')} {str(v.get('verdict')).upper()}" for v in verdicts)
    if len(verdicts) == 1:
        return code, f"exit {code}: {parts}"
    rule = "0 only when every candidate passes, 1 when any fails, 2 when none fails and some is inconclusive"
    return code, f"exit {code}: {parts} (with several candidates, {rule})"
