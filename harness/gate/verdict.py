"""Turn paired differences into pass / fail / inconclusive, rule by rule, each with a sentence.

For a rule with margin m on the oriented improvement I (positive = better),
with one-sided bounds L and U at the rule's confidence:

    min_gain  m (superiority):     pass if L >= m,   fail if U < m,   else inconclusive
    max_drop / max_increase m      pass if L >= -m,  fail if U < -m,  else inconclusive
    (non-inferiority)

so a 2-point drop on 200 items whose interval straddles the margin is
inconclusive, not a flaky pass or fail. The overall verdict: fail if a
required rule fails, else inconclusive if a required rule is inconclusive,
else pass. Advisory rules are reported and never change the exit code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..env import now_iso
from ..errors import LafError
from ..stats import get_aggregation, minimum_detectable_effect, paired_delta
from ..stats.paired import PairedDelta
from .policy import Policy, Rule
from .runs import RunSide, check_comparable, paired_items

EXIT = {"pass": 0, "fail": 1, "inconclusive": 2}


@dataclass
class RuleResult:
    rule: str
    kind: str
    margin: float
    required: bool
    suite: str
    category: str
    metric: str
    status: str  # pass | fail | inconclusive
    message: str
    delta: PairedDelta | None
    mde: float | None
    min_items: int

    def to_dict(self) -> dict:
        return {
            "rule": self.rule, "kind": self.kind, "margin": self.margin, "required": self.required, "suite": self.suite,
            "category": self.category, "metric": self.metric, "status": self.status, "message": self.message,
            "stats": self.delta.to_dict() if self.delta else None, "minimum_detectable_effect": self.mde, "min_items": self.min_items,
        }


@dataclass
class Verdict:
    status: str
    exit_code: int
    rules: list[RuleResult]
    summaries: dict
    baseline: dict
    candidate: dict
    policy: dict
    created: str = field(default_factory=now_iso)
    contamination: dict | None = None

    def to_dict(self) -> dict:
        return {
            "schema": "laf.verdict/1",
            "verdict": self.status,
            "exit_code": self.exit_code,
            "created": self.created,
            "rules": [r.to_dict() for r in self.rules],
            "summaries": self.summaries,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "policy": self.policy,
            "contamination": self.contamination,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, v: dict) -> "Verdict":
        rules = [RuleResult(r["rule"], r["kind"], r["margin"], r["required"], r["suite"], r["category"], r["metric"], r["status"], r["message"],
                            PairedDelta(**r["stats"]) if r.get("stats") else None, r.get("minimum_detectable_effect"), r.get("min_items", 0)) for r in v["rules"]]
        return cls(v["verdict"], v["exit_code"], rules, v["summaries"], v["baseline"], v["candidate"], v["policy"], v["created"], v.get("contamination"))

    @property
    def warnings(self) -> list[str]:
        """Things a reader must know before trusting the numbers (shown above the rules everywhere)."""
        out = []
        for name, side in (("baseline", self.baseline), ("candidate", self.candidate)):
            a = side.get("adapter") or {}
            if a.get("forced_base_mismatch"):
                out.append(f"the {name} adapter {a.get('ref')} was trained on another base model (fingerprint {str(a.get('trained_on'))[:12]}...) "
                           f"and was scored on {str(side['base_model'].get('fingerprint'))[:12]}... only because the evaluation was forced "
                           f"(--force-base-mismatch): its numbers do not describe the model it was trained as")
        return out

    @property
    def regressions(self) -> list[RuleResult]:
        return [r for r in self.rules if r.status == "fail"]


def metric_meta(side: RunSide, suite: str, metric: str | None) -> tuple[str, dict]:
    meta = side.suites[suite]
    name = metric or meta["primary_metric"]
    if name not in meta["metrics"]:
        raise LafError(f"suite {suite} has no metric '{name}' (it has {', '.join(meta['metrics'])})", "fix the policy's metric")
    return name, meta["metrics"][name]


def _values(records, metric: str) -> list:
    out = []
    for r in records:
        if metric not in r.metrics:
            raise LafError(f"item {r.doc_id} of suite {r.suite} has no per-item value for '{metric}'", "re-run the evaluation")
        out.append(r.metrics[metric])
    return out


def fmt_value(v: float, proportion: bool) -> str:
    return f"{100 * v:.1f}%" if proportion else f"{v:.4g}"


def fmt_change(v: float, proportion: bool) -> str:
    return f"{100 * v:+.1f} points" if proportion else f"{v:+.4g}"


def _amount(v: float, proportion: bool) -> str:
    return f"{100 * abs(v):.1f} points" if proportion else f"{abs(v):.4g}"


def describe_change(d: PairedDelta, proportion: bool) -> str:
    """'2.0 points worse (95% CI: 5.0 worse to 1.0 better)': direction in words, whatever the metric's orientation."""
    def one(v: float) -> str:
        if abs(v) < 1e-12:
            return "no change"
        return f"{_amount(v, proportion)} {'better' if v > 0 else 'worse'}"

    pct = f"{int(round(d.confidence * 100))}% CI"
    return f"{one(d.improvement)} ({pct}: {one(d.ci_low)} to {one(d.ci_high)})"


# metrics that are shares of items (shown in percent and points); anything else keeps its own units
PROPORTION_METRICS = {
    "acc", "acc_norm", "exact_match", "em", "f1", "mc1", "mc2", "pct_stereotype", "hallucination_rate", "abstention_rate", "answer_rate",
    "answer_accuracy", "accuracy_amb", "accuracy_disamb", "answer_changed",
}


def poolable(suite_meta: dict) -> bool:
    """Whether a suite's primary metric can be pooled with others of its category: a per-item share (0/1 or 0..1,
    averaged) with a plain direction. Continuous metrics (log-likelihood gaps, bits per byte) keep their own units
    and ideal-value metrics their own orientation, so pooling them would mix scales."""
    name = suite_meta["primary_metric"]
    m = suite_meta["metrics"][name]
    return name in PROPORTION_METRICS and m.get("aggregation", "mean") == "mean" and m.get("ideal") is None


def is_proportion(d: PairedDelta) -> bool:
    return d.metric in PROPORTION_METRICS and 0.0 <= d.base <= 1.0 and 0.0 <= d.candidate <= 1.0


def compute_delta(a: RunSide, b: RunSide, suites: list[str], metric: str | None, confidence: float, policy: Policy) -> tuple[PairedDelta, dict, str]:
    """Paired delta for one suite, or pooled over several suites' items (mean metrics only)."""
    base_vals, cand_vals = [], []
    name, meta = None, None
    for s in suites:
        n, m = metric_meta(a, s, metric)
        if name is not None and (n != name or m.get("aggregation") != meta.get("aggregation")):
            raise LafError(f"cannot pool suites with different metrics ({name} vs {n})", "name one metric in the rule, or drop pooled: true")
        name, meta = n, m
        ra, rb = paired_items(a, b, s)
        base_vals += _values(ra, name)
        cand_vals += _values(rb, name)
    if len(suites) > 1 and meta.get("aggregation", "mean") != "mean":
        raise LafError(f"metric {name} ({meta.get('aggregation')}) cannot be pooled across suites", "use per-suite rules (pooled: false)")
    agg = get_aggregation(meta.get("aggregation", "mean"))
    d = paired_delta(
        base_vals, cand_vals, agg, metric=name, higher_is_better=bool(meta.get("higher_is_better", True)), ideal=meta.get("ideal"),
        confidence=confidence, n_resamples=policy.resamples, seed=policy.seed,
    )
    return d, meta, name


def decide(rule: Rule, d: PairedDelta, min_items: int) -> str:
    if d.n < min_items:
        return "inconclusive"
    target = rule.margin if rule.kind == "min_gain" else -rule.margin
    if d.lower_bound >= target:
        return "pass"
    if d.upper_bound < target:
        return "fail"
    return "inconclusive"


def sentence(rule: Rule, status: str, target: str, d: PairedDelta, meta: dict, min_items: int, mde: float) -> str:
    prop = is_proportion(d)
    pct = f"{int(round(d.confidence * 100))}%"
    what = f"{target} {d.metric}"
    if meta.get("ideal") is not None:
        what += f" (ideal {meta['ideal']:g}: better = closer to it)"
    base = f"{what}: {fmt_value(d.base, prop)} -> {fmt_value(d.candidate, prop)}, {describe_change(d, prop)}"
    if d.base_only is not None:
        base += f"; McNemar p={d.p_value:.3g}: {d.base_only} items got worse, {d.candidate_only} better"
    base += f"; n={d.n}"
    margin = fmt_change(rule.margin, prop).lstrip("+")
    if d.n < min_items:
        return f"{base}. INCONCLUSIVE: {d.n} paired items is fewer than the {min_items} this rule needs."
    mde_text = f"minimum detectable effect at this size ~{fmt_change(mde, prop).lstrip('+')}"
    if rule.kind == "min_gain":
        need = f"required gain at least {margin}"
        why = {
            "pass": f"the gain is above {margin} with {pct} confidence",
            "fail": f"the gain is below {margin} with {pct} confidence",
            "inconclusive": f"the interval straddles the required {margin}; {mde_text}",
        }[status]
    else:
        # max_drop and max_increase both bound the worsening; the metric says which way is worse
        word = "increase of the distance to the ideal" if d.ideal is not None else ("drop" if d.higher_is_better else "increase")
        need = f"allowed {word} at most {margin}"
        why = {
            "pass": f"any {word} is smaller than {margin} with {pct} confidence",
            "fail": f"it got worse by more than {margin} with {pct} confidence",
            "inconclusive": f"the interval straddles the allowed {margin}; {mde_text}",
        }[status]
    return f"{base}; {need}: {status.upper()}: {why}."


def _expand(rule: Rule, a: RunSide) -> list[tuple[str, list[str]]]:
    if rule.suite:
        if rule.suite not in a.suites:
            raise LafError(f"the policy names suite '{rule.suite}', which these runs did not evaluate (they have {', '.join(a.suites)})", "fix the policy or add the suite to the evaluation")
        return [(rule.suite, [rule.suite])]
    suites = [s for s, m in a.suites.items() if m["category"] == rule.category]
    if not suites:
        cats = sorted({m["category"] for m in a.suites.values()})
        raise LafError(f"the policy has a rule for category '{rule.category}', but no suite of that category was evaluated (categories: {', '.join(cats)})", "fix the policy or evaluate such a suite")
    if rule.pooled:
        return [(f"{rule.category} (pooled)", suites)]
    return [(s, [s]) for s in suites]


def validate_policy_against(policy: Policy, a: RunSide) -> None:
    """Unknown suites, categories and metrics, all reported together before any statistics."""
    problems = []
    for i, rule in enumerate(policy.rules):
        try:
            for _, suites in _expand(rule, a):
                for s in suites:
                    metric_meta(a, s, rule.metric)
        except LafError as e:
            problems.append(f"rules[{i}]: {e.cause}")
    if problems:
        raise LafError("the policy does not fit these runs:\n  " + "\n  ".join(problems), "fix the policy (see the README's gate policy reference)")


def summaries(a: RunSide, b: RunSide, policy: Policy) -> dict:
    """Per suite (primary metric), per category and overall (pooled over share-type primary metrics: see :func:`poolable`)."""
    out = {"suites": {}, "categories": {}, "overall": None}
    pool: dict[str, list[str]] = {}
    for s, meta in a.suites.items():
        d, _, _ = compute_delta(a, b, [s], None, policy.confidence, policy)
        out["suites"][s] = {"category": meta["category"], **d.to_dict(), "minimum_detectable_effect": minimum_detectable_effect(d.se, policy.confidence)}
        if poolable(meta):
            pool.setdefault(meta["category"], []).append(s)
    everything = []
    for cat, suites in pool.items():
        everything += suites
        try:
            d = _pooled(a, b, suites, policy)
            out["categories"][cat] = {"suites": suites, **d.to_dict()}
        except LafError:
            pass
    if everything:
        try:
            out["overall"] = {"suites": everything, **_pooled(a, b, everything, policy).to_dict()}
        except LafError:
            pass
    return out


def _pooled(a: RunSide, b: RunSide, suites: list[str], policy: Policy) -> PairedDelta:
    """Items of several suites pooled on their own primary (mean, higher- or lower-is-better) metrics, oriented."""
    base_vals, cand_vals = [], []
    for s in suites:
        name, meta = metric_meta(a, s, None)
        ra, rb = paired_items(a, b, s)
        sign = 1.0 if meta.get("higher_is_better", True) else -1.0
        base_vals += [sign * float(v) for v in _values(ra, name)]
        cand_vals += [sign * float(v) for v in _values(rb, name)]
    return paired_delta(base_vals, cand_vals, get_aggregation("mean"), metric="primary metrics (pooled)", confidence=policy.confidence,
                        n_resamples=policy.resamples, seed=policy.seed)


def evaluate_gate(a: RunSide, b: RunSide, policy: Policy, policy_source: str, inconclusive_as: str = "inconclusive", contamination: dict | None = None) -> Verdict:
    if a.folder.resolve() != b.folder.resolve():
        check_comparable(a, b)
    validate_policy_against(policy, a)
    results: list[RuleResult] = []
    for rule in policy.rules:
        conf = rule.confidence or policy.confidence
        min_items = rule.min_items or policy.min_items
        for target, suites in _expand(rule, a):
            d, meta, name = compute_delta(a, b, suites, rule.metric, conf, policy)
            status = decide(rule, d, min_items)
            mde = minimum_detectable_effect(d.se, conf)
            category = a.suites[suites[0]]["category"]
            results.append(RuleResult(rule.label(), rule.kind, rule.margin, rule.required, target, category, name, status,
                                      sentence(rule, status, target, d, meta, min_items, mde), d, mde, min_items))
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
        status = "inconclusive" if inconclusive_as == "inconclusive" else inconclusive_as
    else:
        status = "pass"
    return Verdict(
        status=status, exit_code=EXIT[status], rules=results, summaries=summaries(a, b, policy),
        baseline=a.describe(), candidate=b.describe(),
        policy={"source": policy_source, **policy.model_dump(mode="json"), "inconclusive_as": inconclusive_as},
        contamination=contamination,
    )


def _contamination_rule(cur: dict, limit: float) -> RuleResult:
    share = float(cur.get("contaminated_item_share", 0.0))
    suites = cur.get("suites") or {}
    checked = sum(int(v.get("items", 0)) for v in suites.values())
    skipped = cur.get("skipped") or []
    if checked == 0:
        status = "inconclusive"
        msg = ("training data contamination: no evaluation item could be checked"
               + (f" ({'; '.join(skipped)})" if skipped else "") + ": INCONCLUSIVE.")
    else:
        status = "pass" if share <= limit else "fail"
        worst = sorted(((v.get("share", 0.0), k) for k, v in suites.items() if v.get("contaminated_items")), reverse=True)[:3]
        msg = (f"training data contamination: {100 * share:.2f}% of {checked} evaluation items in {len(suites)} suite(s) share a "
               f"{cur.get('ngram', 13)}-gram with the training data (limit {100 * limit:.2f}%)"
               + (f"; most: {', '.join(f'{k} {100 * v:.1f}%' for v, k in worst)}" if worst else "")
               + (f"; not checked: {'; '.join(skipped)}" if skipped else "") + f": {status.upper()}.")
    return RuleResult("training data contamination", "max_contamination", limit, True, "(all suites)", "contamination", "contaminated_item_share",
                      status, msg, None, None, 0)
