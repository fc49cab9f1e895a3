"""The sentence each rule's result is reported in: the numbers, the direction in words, and why it passed or not."""

from __future__ import annotations

from ..results import MetricMeta, fmt_change, fmt_value, is_proportion
from ..results.format import fmt_amount
from ..stats import PairedDelta
from .policy import Rule
from .verdict import at_margin


def delta_is_proportion(d: PairedDelta) -> bool:
    """Whether a delta's metric is a share of items (shown in percent and points)."""
    return is_proportion(d.metric, d.base, d.candidate)


def describe_change(d: PairedDelta, proportion: bool) -> str:
    """'2.0 points worse (95% CI: 5.0 worse to 1.0 better)': direction in words, whatever the metric's orientation."""
    def one(v: float) -> str:
        if abs(v) < 1e-12:
            return "no change"
        return f"{fmt_amount(v, proportion)} {'better' if v > 0 else 'worse'}"

    pct = f"{int(round(d.confidence * 100))}% CI"
    return f"{one(d.improvement)} ({pct}: {one(d.ci_low)} to {one(d.ci_high)})"


def rule_sentence(rule: Rule, status: str, target: str, d: PairedDelta, meta: MetricMeta, min_items: int, mde: float) -> str:
    prop = delta_is_proportion(d)
    pct = f"{int(round(d.confidence * 100))}%"
    what = f"{target} {d.metric}"
    if meta.ideal is not None:
        what += f" (ideal {meta.ideal:g}: better = closer to it)"
    base = f"{what}: {fmt_value(d.base, prop)} -> {fmt_value(d.candidate, prop)}, {describe_change(d, prop)}"
    if d.base_only is not None:
        base += f"; McNemar p={d.p_value:.3g}: {d.base_only} items got worse, {d.candidate_only} better"
    base += f"; n={d.n}"
    margin = fmt_change(rule.margin, prop).lstrip("+")
    if d.n < min_items:
        return f"{base}. INCONCLUSIVE: {d.n} paired items is fewer than the {min_items} this rule needs."
    mde_text = f"minimum detectable effect at this size ~{fmt_change(mde, prop).lstrip('+')}"
    if rule.kind == "min_gain":
        need = f"required gain above {margin}"
        why = {
            "pass": f"the gain is above {margin} with {pct} confidence",
            "fail": f"the gain is below {margin} with {pct} confidence",
            "inconclusive": (f"the one-sided lower bound is exactly {margin}, and the gain must be above it; {mde_text}"
                             if at_margin(d.lower_bound, rule.margin) else f"the interval straddles the required {margin}; {mde_text}"),
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


def contamination_sentence(cur: dict, limit: float, status: str, checked: int) -> str:
    suites = cur.get("suites") or {}
    skipped = cur.get("skipped") or []
    if checked == 0:
        return ("training data contamination: no evaluation item could be checked"
                + (f" ({'; '.join(skipped)})" if skipped else "") + ": INCONCLUSIVE.")
    share = float(cur.get("contaminated_item_share", 0.0))
    worst = sorted(((v.get("share", 0.0), k) for k, v in suites.items() if v.get("contaminated_items")), reverse=True)[:3]
    return (f"training data contamination: {100 * share:.2f}% of {checked} evaluation items in {len(suites)} suite(s) share a "
            f"{cur.get('ngram', 13)}-gram with the training data (limit {100 * limit:.2f}%)"
            + (f"; most: {', '.join(f'{k} {100 * v:.1f}%' for v, k in worst)}" if worst else "")
            + (f"; not checked: {'; '.join(skipped)}" if skipped else "") + f": {status.upper()}.")
