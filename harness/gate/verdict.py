"""The verdict of a gate: one result per rule, the summaries, both sides and the policy (``verdict.json``).

How it is decided lives in :mod:`harness.gate.rules`; the sentences in :mod:`harness.gate.sentences`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..env import now_iso
from ..stats import PairedDelta

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
    baseline_kind: str = "base"  # base | released (laf gate --baseline released)
    notes: list[str] = field(default_factory=list)  # how the baseline was found (a release, a fallback, a re-score): shown with the warnings
    history: dict | None = None  # the release history the baseline came from (store URL with its password redacted)

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
            "baseline_kind": self.baseline_kind,
            "notes": list(self.notes),
            "history": self.history,
            "marks": self.marks,
        }

    @classmethod
    def from_dict(cls, v: dict) -> "Verdict":
        rules = [RuleResult(r["rule"], r["kind"], r["margin"], r["required"], r["suite"], r["category"], r["metric"], r["status"], r["message"],
                            PairedDelta(**r["stats"]) if r.get("stats") else None, r.get("minimum_detectable_effect"), r.get("min_items", 0)) for r in v["rules"]]
        return cls(v["verdict"], v["exit_code"], rules, v["summaries"], v["baseline"], v["candidate"], v["policy"], v["created"], v.get("contamination"),
                   v.get("baseline_kind") or "base", list(v.get("notes") or []), v.get("history"))

    @property
    def warnings(self) -> list[str]:
        """Things a reader must know before trusting the numbers (shown above the rules everywhere)."""
        out = list(self.notes)
        for name, side in (("baseline", self.baseline), ("candidate", self.candidate)):
            integrity = str(side.get("integrity") or "")
            if integrity.startswith("modified"):
                out.append(f"the {name} run folder {side.get('run')} failed its integrity check and was read only because of "
                           f"--allow-modified ({integrity[len('modified: '):]}): its records may not be what the evaluation wrote")
            a = side.get("adapter") or {}
            if a.get("forced_base_mismatch"):
                out.append(f"the {name} adapter {a.get('ref')} was trained on another base model (fingerprint {str(a.get('trained_on'))[:12]}...) "
                           f"and was scored on {str(side['base_model'].get('fingerprint'))[:12]}... only because the evaluation was forced "
                           f"(--force-base-mismatch): its numbers do not describe the model it was trained as")
            m = a.get("merge") or {}
            if m.get("approximate"):
                out.append(f"approximate merge: the {name} adapter {a.get('ref')} is a {m.get('method')} merge re-factored to rank {m.get('rank')}, "
                           f"off its method's update by a relative error of up to {m.get('relative_error_max'):.3g} (mean {m.get('relative_error_mean'):.3g}): "
                           f"its numbers describe that approximation, not the {m.get('method')} merge itself")
        return out

    @property
    def marks(self) -> list[str]:
        """Short marks on the verdict itself (verdict.json ``marks``), e.g. 'approximate merge'."""
        cand = self.candidate.get("adapter") or {}
        return ["approximate merge"] if (cand.get("merge") or {}).get("approximate") else []

    @property
    def regressions(self) -> list[RuleResult]:
        return [r for r in self.rules if r.status == "fail"]
