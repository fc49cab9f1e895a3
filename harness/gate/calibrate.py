"""``laf calibrate``: how much do two runs that should agree differ, and what margins does that suggest?

Give it two evaluations of the same model that differ only in what should not
matter (batch size 4 vs 8, two training seeds of one config). For each suite
it reports the paired change of the primary metric with its interval, the
share of items whose outcome flipped, and the minimum detectable effect at
that size, then suggests a margin per suite: the larger of the noise's
interval bound and the minimum detectable effect, rounded up to half a point,
so that two runs that differ only by noise pass.

A suite with fewer paired items than the policy's ``min_items`` (or fewer than two, where no noise can be
estimated at all) gets a ``warning`` in its entry, in the document's ``warnings`` and as a comment in the
suggested policy: a 0.0 margin from one item is no measurement of noise.
"""

from __future__ import annotations

import math

import yaml

from ..results.artifacts import CalibrationDoc
from ..stats import minimum_detectable_effect
from .deltas import compute_delta
from .policy import Policy
from .runs import load_side
from .sentences import delta_is_proportion


def _round_up(x: float, step: float) -> float:
    return math.ceil(x / step - 1e-9) * step


def calibrate(ref_a: str, ref_b: str, confidence: float = 0.95) -> CalibrationDoc:
    """Run-to-run noise between two runs of the same model, per suite, and the policy margins it suggests
    (``calibration.json``'s document; ``suggested_policy_yaml`` is ready to save)."""
    a = load_side(ref_a, "first run", default_base=True)
    b = load_side(ref_b, "second run", default_base=True)
    policy = Policy(rules=[{"category": "general", "max_drop": 0.0}], confidence=confidence)
    suites, rules, warnings = {}, [], []
    for s, meta in a.suites.items():
        d, m, name = compute_delta(a, b, [s], None, confidence, policy)
        mde = minimum_detectable_effect(d.se, confidence)
        noise = max(abs(d.ci_low), abs(d.ci_high))
        proportion = delta_is_proportion(d)
        step = 0.005 if proportion else 10 ** (math.floor(math.log10(max(noise, mde, 1e-12))) - 1)
        margin = _round_up(max(noise, mde), step)
        flips = None if d.base_only is None or d.candidate_only is None else (d.base_only + d.candidate_only) / d.n
        suites[s] = {"category": meta.category, "metric": name, **d.to_dict(), "flip_rate": flips, "minimum_detectable_effect": mde, "suggested_margin": margin}
        warning = _too_few(s, d.n, policy.min_items, margin)
        if warning:
            suites[s]["warning"] = warning
            warnings.append(warning)
        kind = "min_gain" if meta.category == "domain" else ("max_drop" if m.higher_is_better and m.ideal is None else "max_increase")
        if kind != "min_gain":
            rules.append({"suite": s, "metric": name, kind: round(margin, 6)})
    suggested = {"confidence": confidence, "min_items": policy.min_items, "rules": [{"category": "domain", "min_gain": 0.05}, *rules]}
    head = "# margins suggested by `laf calibrate` from run-to-run noise; the domain gain is yours to choose\n"
    head += "".join(f"# WARNING: {' '.join(w.splitlines())}\n" for w in warnings)  # a suite name never ends the comment line
    return CalibrationDoc.from_dict({
        "schema": "laf.calibration/1",
        "runs": [a.describe(), b.describe()],
        "confidence": confidence,
        "suites": suites,
        "suggested_policy": suggested,
        "suggested_policy_yaml": head + yaml.safe_dump(suggested, sort_keys=False),
        "warnings": warnings,
    })


def _too_few(suite: str, n: int, min_items: int, margin: float) -> str | None:
    """The warning for a suite whose item count cannot measure noise (None when it can)."""
    if n >= max(2, min_items):
        return None
    why = "no run-to-run noise can be estimated from fewer than 2" if n < 2 else f"fewer than the policy's min_items ({min_items})"
    return (f"suite {suite} has only {n} paired item(s), {why}: its suggested margin {margin:g} is not a measurement of noise "
            f"(a gate on it would be inconclusive); calibrate on at least {max(2, min_items)} items")
