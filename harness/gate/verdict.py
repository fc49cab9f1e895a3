"""The verdict of a gate: one result per rule, the summaries, both sides and the policy (``verdict.json``).

How it is decided lives in :mod:`harness.gate.rules`; the sentences in :mod:`harness.gate.sentences`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..env import now_iso
from ..errors import LafError
from ..io import sha256_json
from ..results.artifacts import VerdictDoc, parse, read_raw
from ..results.checks import is_finite_number
from ..stats import PairedDelta

EXIT = {"pass": 0, "fail": 1, "inconclusive": 2}
SCHEMA = "laf.verdict/1"
SEAL = "verdict_sha256"  # sha256 of the canonical verdict without this key: a hand edit (fail -> pass) is caught
MAX_VERDICT_BYTES = 32 << 20


def at_margin(bound: float, target: float) -> bool:
    """``bound`` equals ``target`` but for floating-point rounding (far finer than any sample's resolution: an
    accuracy moves in steps of about 1/n, so n would need a billion items before this tolerance hides a real step)."""
    return math.isclose(bound, target, rel_tol=1e-9, abs_tol=1e-12)


def clears(kind: str | None, bound: float, target: float) -> bool:
    """Whether a rule's one-sided ``bound`` passes its ``target``: strictly above for a superiority rule
    (``min_gain``), at or above for non-inferiority (``max_drop``, ``max_increase``), a bound on the target up to
    rounding being the target (:func:`at_margin`). The one place the gate, checkpoint selection and the frontier
    read this rule from."""
    on = at_margin(bound, target)
    return (bound > target and not on) if kind == "min_gain" else (bound >= target or on)


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
        """The verdict document, sealed: ``verdict_sha256`` over everything else (see :func:`read_verdict`)."""
        return seal_verdict(self._body())

    def _body(self) -> dict:
        return {
            "schema": SCHEMA,
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


def seal_verdict(body: dict) -> dict:
    """``body`` with its seal. Like ``integrity.json`` it catches edits, not a writer who recomputes the digest:
    that needs the signature (``laf gate --sign``, :mod:`harness.gate.signing`)."""
    body = json.loads(json.dumps({k: v for k, v in body.items() if k != SEAL}, default=str))  # the digest is of what a reader loads
    return {**body, SEAL: sha256_json(body)}


def derived_status(rules: list[dict], inconclusive_as: str) -> str:
    """The overall status the rules imply (the rule of :func:`harness.gate.rules.evaluate_gate`)."""
    required = [r for r in rules if r.get("required")]
    if any(r.get("status") == "fail" for r in required):
        return "fail"
    if any(r.get("status") == "inconclusive" for r in required):
        return inconclusive_as
    return "pass"


def _finite_tree(x, where: str, depth: int = 0) -> None:
    if depth > 50:
        raise ValueError(f"{where}: nested too deeply")
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"{where}: not a finite number")
    if isinstance(x, dict):
        for k, v in x.items():
            _finite_tree(v, f"{where}.{k}", depth + 1)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _finite_tree(v, f"{where}[{i}]", depth + 1)


def check_verdict(v: object, where: str, suites: dict | None = None, models: list[str] | None = None) -> dict:
    """A verdict document that is what ``laf gate`` wrote, or one ``LafError`` naming what is wrong: its seal
    (an edit), its shape, a status the rules do not imply, non-finite numbers, and (given the run's ``suites``,
    suite -> metric names, and ``models``) a suite, metric or model the run does not have."""
    fix = "run `laf gate` again to rewrite it (a verdict is never edited by hand)"
    if not isinstance(v, dict) or v.get("schema") != SCHEMA:
        raise LafError(f"{where} is not a {SCHEMA} document", fix)
    if SEAL not in v:
        raise LafError(f"{where} has no {SEAL}: written by an older laf or by hand, so an edit could not be told apart", fix)
    if v[SEAL] != sha256_json({k: x for k, x in v.items() if k != SEAL}):
        raise LafError(f"{where} was edited after `laf gate` wrote it (its {SEAL} does not match its content)", fix)
    try:
        _finite_tree(v, "verdict")
        verdict = Verdict.from_dict(v)
        rules = v["rules"]
        if verdict.status not in EXIT or verdict.exit_code != EXIT[verdict.status]:
            raise ValueError(f"verdict {verdict.status!r} with exit code {verdict.exit_code!r}")
        if not all(isinstance(r, dict) and r.get("status") in EXIT for r in rules):
            raise ValueError("a rule without a pass / fail / inconclusive status")
        inconclusive_as = (v.get("policy") or {}).get("inconclusive_as", "inconclusive")
        if derived_status(rules, inconclusive_as) != verdict.status:
            raise ValueError(f"it says {verdict.status!r} but its rules give {derived_status(rules, inconclusive_as)!r}")
        for side in ("baseline", "candidate"):
            if not isinstance(v[side], dict) or not isinstance(v[side].get("model"), str):
                raise ValueError(f"{side} names no model")
        if models is not None:
            for side in ("baseline", "candidate"):
                if side == "baseline" and v["baseline"].get("run") != v["candidate"].get("run"):
                    continue  # a baseline from another run folder (laf gate --baseline released / RUN#MODEL): its own run has it
                if v[side]["model"] not in models:
                    raise ValueError(f"its {side} {v[side]['model']!r} is not a model of this run")
        _check_shapes(v)
        summ = v.get("summaries")
        if suites is not None:
            for r in rules:
                if r.get("stats") and r.get("suite") in suites and r.get("metric") not in suites[r["suite"]]:
                    raise ValueError(f"rule {r.get('rule')!r} names metric {r.get('metric')!r}, which suite {r['suite']} does not have")
            for name, st in ((summ or {}).get("suites") or {}).items():
                if name not in suites or not isinstance(st, dict) or st.get("metric") not in suites[name]:
                    raise ValueError(f"its summary names suite {name!r} / metric {(st or {}).get('metric')!r}, which the run does not have")
        from .artifacts import junit_xml, markdown_summary

        parse(v, VerdictDoc, where)  # the typed shape (laf schema verdict): every part, its types, no unknown keys
        markdown_summary(verdict)  # the renderers every reader uses, on this document: a shape they cannot show is refused here
        junit_xml(verdict)
    except LafError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise LafError(f"{where} does not describe a gate decision on this run ({type(e).__name__}: {e})", fix) from None
    return v


_STATS_NUMBERS = ("base", "candidate", "delta", "improvement", "ci_low", "ci_high", "lower_bound", "upper_bound", "confidence", "se")


_is_num = is_finite_number


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _check_shapes(v: dict) -> None:
    """The typed shape of every part a reader shows (the seal only proves who wrote it, not that it is well formed)."""
    pol = v.get("policy")
    if not isinstance(pol, dict):
        raise ValueError("policy is not an object")
    _need(_is_num(pol.get("confidence")) and 0 < pol["confidence"] < 1, "policy.confidence is not a number in (0, 1)")
    _need(pol.get("source") is None or isinstance(pol.get("source"), str), "policy.source is not text")
    _need(isinstance(v.get("created"), str), "created is not text")
    _need(isinstance(v.get("rules"), list), "rules is not a list")
    for i, r in enumerate(v["rules"]):
        _need(isinstance(r, dict), f"rules[{i}] is not an object")
        for key in ("rule", "kind", "suite", "category", "metric", "message"):
            _need(isinstance(r.get(key), str), f"rules[{i}].{key} is not text")
        _need(isinstance(r.get("required"), bool), f"rules[{i}].required is not true/false")
        _need(_is_num(r.get("margin")), f"rules[{i}].margin is not a finite number")
        _need(isinstance(r.get("min_items", 0), int) and not isinstance(r.get("min_items", 0), bool), f"rules[{i}].min_items is not a whole number")
        mde = r.get("minimum_detectable_effect")
        _need(mde is None or _is_num(mde), f"rules[{i}].minimum_detectable_effect is not a number")
        st = r.get("stats")
        if st is not None:
            _check_delta(st, f"rules[{i}].stats")
    summ = v.get("summaries")
    if summ is None:
        return
    _need(isinstance(summ, dict) and isinstance(summ.get("suites"), dict), "summaries without suites")
    for name, st in summ["suites"].items():
        _check_delta(st, f"summaries.suites.{name}")
        _need(isinstance(st.get("category"), str), f"summaries.suites.{name}.category is not text")
    cats = summ.get("categories") or {}
    _need(isinstance(cats, dict), "summaries.categories is not an object")
    for name, st in cats.items():
        _check_delta(st, f"summaries.categories.{name}")
        _need(isinstance(st.get("suites"), list) and all(isinstance(x, str) for x in st["suites"]), f"summaries.categories.{name}.suites is not a list of names")
    if summ.get("overall") is not None:
        _check_delta(summ["overall"], "summaries.overall")


def _check_delta(st, where: str) -> None:
    """A paired delta as ``PairedDelta.to_dict`` writes it (finite numbers where the renderers compute)."""
    _need(isinstance(st, dict), f"{where} is not an object")
    fields = set(PairedDelta.__dataclass_fields__)
    _need(set(st) - {"category", "suites", "minimum_detectable_effect"} <= fields, f"{where} has unknown fields")
    _need(isinstance(st.get("metric"), str), f"{where}.metric is not text")
    _need(isinstance(st.get("n"), int) and not isinstance(st.get("n"), bool) and st["n"] >= 0, f"{where}.n is not a count")
    for key in _STATS_NUMBERS:
        _need(_is_num(st.get(key)), f"{where}.{key} is not a finite number")
    for key in ("p_value", "ideal", "minimum_detectable_effect"):
        _need(st.get(key) is None or _is_num(st.get(key)), f"{where}.{key} is not a number")
    for key in ("base_only", "candidate_only"):
        _need(st.get(key) is None or (isinstance(st.get(key), int) and not isinstance(st.get(key), bool)), f"{where}.{key} is not a count")
    _need(isinstance(st.get("higher_is_better", True), bool) and isinstance(st.get("test", ""), str), f"{where}: higher_is_better / test of the wrong type")


def read_verdict(path: str | Path, suites: dict | None = None, models: list[str] | None = None) -> dict:
    """``verdict.json`` read by the one artifact reader (size bound, strict JSON, a plain file) and checked by
    :func:`check_verdict`."""
    path = Path(path)
    v = read_raw(path, "run `laf gate` again to rewrite it", max_bytes=MAX_VERDICT_BYTES, symlinks=False)
    return check_verdict(v, str(path), suites, models)


def load_verdict(path: str | Path, suites: dict | None = None, models: list[str] | None = None) -> Verdict:
    """``verdict.json`` checked by :func:`read_verdict`, as the :class:`Verdict` the gate made."""
    return Verdict.from_dict(read_verdict(path, suites, models))
