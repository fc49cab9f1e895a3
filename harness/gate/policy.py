"""The gate policy: rules per category or suite, validated against the runs before any statistics.

    confidence: 0.95          # default for every rule
    min_items: 30             # fewer paired items than this: inconclusive
    rules:
      - {category: domain, min_gain: 0.05}                    # superiority
      - {category: general, max_drop: 0.02}                   # non-inferiority
      - {suite: hallucination/abstention, metric: hallucination_rate, max_increase: 0.05}
      - {suite: bias/crows-pairs, metric: pct_stereotype, max_increase: 0.03, required: false}
    max_contamination: 0.01   # optional: share of eval items contaminated by training data

Export parity rules (``laf parity``'s parity.json; see :mod:`harness.gate.parity`)::

      - {parity: merged_nf4, max_kl: 0.01}      # mean next-token KL vs the adapter on the fly, nats
      - {parity: merged_nf4, max_flips: 0.01}   # share of items whose prediction flips

Margins are in the metric's units (0.02 = 2 points of accuracy, or 0.02 bits
per byte). ``max_drop`` and ``max_increase`` both bound how much worse the
candidate may be; which way is worse comes from the metric (higher-is-better,
lower-is-better, or the distance to an ideal value such as 0.5), so a
category rule covers suites of either direction. Use the name that reads
best: ``max_drop`` for accuracy, ``max_increase`` for hallucination rates and
bias scores.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from ..config import StrictModel, load_yaml, validate

PARITY_BOUNDS = ("max_kl", "max_flips")
BOUNDS = ("min_gain", "max_drop", "max_increase", *PARITY_BOUNDS)


class Rule(StrictModel):
    name: str | None = None
    category: str | None = None
    suite: str | None = None
    parity: str | None = None  # a form of laf parity (merged, merged_nf4, merged_original), compared with the adapter on the fly
    metric: str | None = None  # default: the suite's primary metric
    min_gain: float | None = Field(None, ge=0)
    max_drop: float | None = Field(None, ge=0)
    max_increase: float | None = Field(None, ge=0)
    max_kl: float | None = Field(None, ge=0)
    max_flips: float | None = Field(None, ge=0, le=1)
    confidence: float | None = Field(None, gt=0.5, lt=1)
    min_items: int | None = Field(None, ge=1)
    required: bool = True
    pooled: bool = False  # a category rule on the items of all its suites together (mean metrics)

    @model_validator(mode="after")
    def _one_target_one_bound(self):
        if sum(x is not None for x in (self.category, self.suite, self.parity)) != 1:
            raise ValueError("a rule needs exactly one of 'category', 'suite' or 'parity'")
        bounds = [k for k in BOUNDS if getattr(self, k) is not None]
        if self.parity is not None:
            if len(bounds) != 1 or bounds[0] not in PARITY_BOUNDS:
                raise ValueError("a parity rule needs exactly one of max_kl, max_flips")
            if self.metric is not None or self.pooled:
                raise ValueError("a parity rule takes no metric or pooled")
        elif len(bounds) != 1 or bounds[0] in PARITY_BOUNDS:
            raise ValueError("a rule needs exactly one of min_gain, max_drop, max_increase (max_kl / max_flips go with parity:)")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in BOUNDS if getattr(self, k) is not None)

    @property
    def margin(self) -> float:
        return float(getattr(self, self.kind))

    def label(self) -> str:
        if self.name:
            return self.name
        target = self.suite or (f"parity {self.parity}" if self.parity else f"{self.category} suites")
        return f"{target}: {self.kind.replace('_', ' ')} {self.margin:g}"


class Policy(StrictModel):
    confidence: float = Field(0.95, gt=0.5, lt=1)
    min_items: int = Field(30, ge=1)
    resamples: int = Field(10_000, ge=100, le=1_000_000)  # 1e9 resamples would run for days
    seed: int = Field(0, ge=0, le=2**32 - 1)
    rules: list[Rule] = Field(min_length=1)
    max_contamination: float | None = Field(None, ge=0, le=1)


def load_policy(path: str | Path) -> Policy:
    """The policy YAML at ``path``, validated (every problem named with its key); a run config or another kind of
    file is named as such, with where its policy goes."""
    from ..config_schema import check_shape

    raw = load_yaml(path)
    check_shape(raw, ("policy",), path, "laf gate --policy", sorted(Policy.model_fields))
    return validate(Policy, raw, path)
