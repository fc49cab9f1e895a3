"""Export parity without a model: compare two forms' records, read ``parity.json``, decide parity rules.

``laf parity`` (:mod:`harness.merge.parity`) scores the forms of one candidate
(on the fly, merged, merged + NF4) and measures the next-token KL; what needs
only the per-item records lives here, torch-free:

- flips: items whose prediction (the chosen answer, or the generation) differs;
- mean |Δ log-likelihood| per item: each item's mean over its continuations;
- the paired change of every suite metric with its CI (:func:`compute_delta`).

Parity rules read ``parity.json`` (in the run folder, or its ``parity/``
subfolder as ``laf run`` writes it):

    - {parity: merged_nf4, max_kl: 0.01}     # mean KL(on the fly || merged_nf4) per scored position, nats
    - {parity: merged_nf4, max_flips: 0.01}  # share of items whose prediction flips
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LafError
from ..results.artifacts import ParityDoc, ParityPair, read
from .deltas import compute_delta
from .policy import Policy, Rule
from .runs import RunSide, paired_items
from .verdict import RuleResult

PARITY_FILE = "parity.json"
REFERENCE = "on_the_fly"


def _mean_abs_dll(ra, rb) -> float | None:
    a, b = ra.loglikelihoods, rb.loglikelihoods
    if not a or not b or len(a) != len(b):
        return None
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def compare_records(a: RunSide, b: RunSide, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """Flips, mean |Δ log-likelihood| and every metric's paired delta of form ``b`` against form ``a``, per suite."""
    policy = Policy.model_construct(rules=[], resamples=resamples, seed=seed)
    suites: dict = {}
    items = flips = 0
    dll: list[float] = []
    for s, meta in a.suites.items():
        ra, rb = paired_items(a, b, s)
        f = sum(1 for x, y in zip(ra, rb) if x.prediction != y.prediction)
        d = [v for v in (_mean_abs_dll(x, y) for x, y in zip(ra, rb)) if v is not None]
        metrics = {}
        for m in meta.metrics:
            try:
                delta, _, _ = compute_delta(a, b, [s], m, confidence, policy)
            except LafError:
                continue  # a metric with no per-item values (e.g. a corpus-level one)
            metrics[m] = delta.to_dict()
        suites[s] = {"items": len(ra), "flips": f, "mean_abs_delta_ll": (sum(d) / len(d)) if d else None, "metrics": metrics}
        items += len(ra)
        flips += f
        dll += d
    return {"items": items, "flips": flips, "flip_share": flips / items if items else None,
            "mean_abs_delta_ll": (sum(dll) / len(dll)) if dll else None, "suites": suites}


def find_parity(folder: str | Path) -> Path | None:
    """``FOLDER/parity.json`` or ``FOLDER/parity/parity.json``, whichever exists."""
    for p in (Path(folder) / PARITY_FILE, Path(folder) / "parity" / PARITY_FILE):
        if p.is_file():
            return p
    return None


def load_parity(path: str | Path) -> ParityDoc:
    """``parity.json`` read and checked by the one artifact reader: a mapping with a list of pairs, each naming its
    reference and form, whose numbers are finite and whose counts are counts (it is untrusted input)."""
    return read(path, ParityDoc)


def parity_pair(doc: ParityDoc, form: str, reference: str = REFERENCE) -> ParityPair | None:
    return doc.pair(form, reference)


def decide_parity(rule: Rule, doc: ParityDoc | None, source: str, candidate: str | None = None) -> RuleResult:
    """pass when the measured drift is at most the bound, fail above it; inconclusive when nothing was measured
    (or parity.json measured another adapter than ``candidate``)."""
    form = str(rule.parity)
    kind = rule.kind
    label = rule.label()
    metric = "kl_mean" if kind == "max_kl" else "flip_share"
    if doc is None:
        raise LafError(f"the policy has a parity rule ({label}) but no parity.json was found ({source})",
                       "run `laf parity ADAPTER --out RUN/parity` (or a parity: block in `laf run`), or pass --parity PARITY.json")
    pair = parity_pair(doc, form)
    if pair is None:
        known = sorted({p.form for p in doc.pairs})
        raise LafError(f"parity.json has no form '{form}' compared with {REFERENCE} (it has {', '.join(known) or 'none'})",
                       f"use one of them in the rule, or run `laf parity --form {form}`")
    value = pair.kl_mean if kind == "max_kl" else pair.flip_share
    n = (pair.positions if kind == "max_kl" else pair.items) or 0
    what = "mean next-token KL per scored position" if kind == "max_kl" else "share of items whose prediction flips"
    if candidate is not None and doc.adapter not in (None, candidate):
        status = "inconclusive"
        msg = f"parity.json measured {doc.adapter}, not the candidate {candidate}. INCONCLUSIVE."
    elif value is None or n == 0:
        status = "inconclusive"
        msg = f"{form} vs {REFERENCE}: {what} was not measured (no scored positions or items). INCONCLUSIVE."
    else:
        status = "pass" if value <= rule.margin else "fail"
        extra = f" ({pair.flips} of {pair.items} items)" if kind == "max_flips" else (f" over {n} positions, p99 {pair.kl_p99:.3g}" if pair.kl_p99 is not None else f" over {n} positions")
        msg = (f"{form} vs {REFERENCE}: {what} {value:.4g}{extra}; bound {rule.margin:g}. "
               + ("PASS: within the bound." if status == "pass" else "FAIL: the exported form drifts more than the bound allows."))
    return RuleResult(label, kind, rule.margin, rule.required, f"parity: {form}", "parity", metric, status, msg, None, None, 0)
