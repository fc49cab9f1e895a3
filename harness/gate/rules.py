"""Turn paired differences into pass / fail / inconclusive, rule by rule, each with a sentence.

For a rule with margin m on the oriented improvement I (positive = better),
with one-sided bounds L and U at the rule's confidence:

    min_gain  m (superiority):     pass if L > m,    fail if U < m,   else inconclusive
                                   (strictly above: "the gain is above m" is false at L = m, and a
                                   candidate that changed no item never passes a superiority rule)
    max_drop / max_increase m      pass if L >= -m,  fail if U < -m,  else inconclusive
    (non-inferiority)

so a 2-point drop on 200 items whose interval straddles the margin is inconclusive, not a flaky pass or fail. A
bound equal to the margin up to floating-point rounding counts as equal (:func:`at_margin`): the bound of an
accuracy lies on (or, interpolated, between) multiples of 1/n, and 11/110 computed as a difference of means came
out 0.10000000000000003 for one candidate and 0.09999999999999998 for another (the quickstart-preserve run), which
the strict rule would have passed and held inconclusive. The overall verdict: fail if a required rule fails, else
inconclusive if a required rule is inconclusive,
else pass. Advisory rules are reported and never change the exit code.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LafError
from ..results.artifacts import check_contamination
from ..stats import PairedDelta, minimum_detectable_effect
from .deltas import compute_delta, summaries
from .parity import decide_parity, find_parity, load_parity
from .policy import Policy, Rule
from .runs import RunSide, check_comparable
from .sentences import contamination_sentence, rule_sentence
from .verdict import EXIT, RuleResult, Verdict, at_margin, clears


def decide(rule: Rule, d: PairedDelta, min_items: int) -> str:
    """``pass``, ``fail`` or ``inconclusive`` for one rule on one paired delta (see the module's table)."""
    if d.n < min_items:
        return "inconclusive"
    target = rule.margin if rule.kind == "min_gain" else -rule.margin
    unchanged = d.improvement == 0 and d.se == 0 and d.ci_low == d.ci_high == 0 and not (d.base_only or d.candidate_only)
    if clears(rule.kind, d.lower_bound, target) and not (rule.kind == "min_gain" and unchanged):
        return "pass"
    if d.upper_bound < target and not at_margin(d.upper_bound, target):
        return "fail"
    return "inconclusive"


def _expand(rule: Rule, a: RunSide) -> list[tuple[str, list[str]]]:
    """The (target, suites) pairs a rule applies to: one suite, each suite of a category, or a category pooled."""
    if rule.suite:
        if rule.suite not in a.suites:
            raise LafError(f"the policy names suite '{rule.suite}', which these runs did not evaluate (they have {', '.join(a.suites)})", "fix the policy or add the suite to the evaluation")
        return [(rule.suite, [rule.suite])]
    suites = [s for s, m in a.suites.items() if m.category == rule.category]
    if not suites:
        cats = sorted({m.category for m in a.suites.values()})
        raise LafError(f"the policy has a rule for category '{rule.category}', but no suite of that category was evaluated (categories: {', '.join(cats)})", "fix the policy or evaluate such a suite")
    if rule.pooled:
        return [(f"{rule.category} (pooled)", suites)]
    return [(s, [s]) for s in suites]


def validate_policy_against(policy: Policy, a: RunSide) -> None:
    """Unknown suites, categories and metrics, all reported together before any statistics."""
    problems = []
    for i, rule in enumerate(policy.rules):
        if rule.parity is not None:
            continue  # checked against parity.json when decided
        try:
            for _, suites in _expand(rule, a):
                for s in suites:
                    a.suites[s].metric(rule.metric)
        except LafError as e:
            problems.append(f"rules[{i}]: {e.cause}")
    if problems:
        raise LafError("the policy does not fit these runs:\n  " + "\n  ".join(problems), "fix the policy (see docs/gate-policy.md)")


def evaluate_gate(a: RunSide, b: RunSide, policy: Policy, policy_source: str, inconclusive_as: str = "inconclusive", contamination: dict | None = None,
                  parity: str | Path | None = None) -> Verdict:
    """The verdict of candidate ``b`` against baseline ``a`` under ``policy``: every rule's paired delta, decision and
    sentence, the summaries, and the overall status and exit code (``inconclusive_as`` maps an inconclusive verdict
    to ``fail`` or ``pass`` where CI wants that). ``contamination``: the curation manifest's contamination block,
    needed when the policy sets ``max_contamination``; ``parity``: a parity.json for parity rules (default: the one in
    the candidate's run folder, see :func:`harness.gate.parity.find_parity`)."""
    if a.folder.resolve() != b.folder.resolve():
        check_comparable(a, b)
    validate_policy_against(policy, a)
    if contamination is not None:  # verdict.json keeps it and the rule reads it: finite, of the checked shape
        contamination = check_contamination(contamination)
    results: list[RuleResult] = []
    parity_doc, parity_source = None, ""
    if any(r.parity is not None for r in policy.rules):
        parity_path = Path(parity) if parity is not None else find_parity(b.folder)
        if parity is None and parity_path is not None and parity_path.is_symlink():  # found in the run folder: its own file, never a link
            raise LafError(f"{parity_path} is a symlink, not a plain file of the run folder {b.folder}",
                           "copy the parity.json into the run folder, name it with --parity, or re-run `laf parity`")
        parity_doc = load_parity(parity_path) if parity_path is not None else None
        parity_source = str(parity_path) if parity_path is not None else f"looked in {b.folder} and {b.folder / 'parity'}"
    for rule in policy.rules:
        if rule.parity is not None:
            results.append(decide_parity(rule, parity_doc, parity_source, b.model))
            continue
        conf = rule.confidence or policy.confidence
        min_items = rule.min_items or policy.min_items
        for target, suites in _expand(rule, a):
            d, meta, name = compute_delta(a, b, suites, rule.metric, conf, policy)
            status = decide(rule, d, min_items)
            mde = minimum_detectable_effect(d.se, conf)
            results.append(RuleResult(rule.label(), rule.kind, rule.margin, rule.required, target, a.suites[suites[0]].category, name, status,
                                      rule_sentence(rule, status, target, d, meta, min_items, mde), d, mde, min_items))
    if policy.max_contamination is not None:
        if not contamination:
            raise LafError("the policy sets max_contamination but no contamination record was given",
                           "pass --curation CURATION.json written by `laf data check DATA --against SUITES` "
                           "(laf run does this itself when its config has data), or remove max_contamination from the policy")
        results.append(_contamination_rule(contamination, policy.max_contamination))
    required = [r for r in results if r.required]
    if any(r.status == "fail" for r in required):
        status = "fail"
    elif any(r.status == "inconclusive" for r in required):
        status = inconclusive_as
    else:
        status = "pass"
    return Verdict(
        status=status, exit_code=EXIT[status], rules=results, summaries=summaries(a, b, policy),
        baseline=a.describe(), candidate=b.describe(),
        policy={"source": policy_source, **policy.model_dump(mode="json"), "inconclusive_as": inconclusive_as},
        contamination=contamination,
    )


def _contamination_rule(cur: dict, limit: float) -> RuleResult:
    """``cur``: a contamination block checked by :func:`check_contamination` (a share in [0, 1], whole counts)."""
    share = cur["contaminated_item_share"]
    checked = sum(v.get("items", 0) for v in (cur.get("suites") or {}).values())
    status = "inconclusive" if checked == 0 else ("pass" if share <= limit else "fail")
    return RuleResult("training data contamination", "max_contamination", limit, True, "(all suites)", "contamination", "contaminated_item_share",
                      status, contamination_sentence(cur, limit, status, checked), None, None, 0)
