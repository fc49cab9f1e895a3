"""``run_gate``: the one way to gate a candidate, used by ``laf gate`` and by ``laf run``'s gate stage."""

from __future__ import annotations

from pathlib import Path

from ..io import read_json
from .artifacts import write_artifacts
from .policy import Policy, load_policy
from .rules import evaluate_gate
from .runs import load_side
from .verdict import Verdict


def contamination_from(curation: str | Path | None) -> dict | None:
    """The contamination block of a curation manifest (``curation.json``); None when no manifest is named."""
    if curation is None:
        return None
    return read_json(curation).get("contamination")


def run_gate(baseline: str, candidate: str, policy: Policy | str | Path, *, policy_source: str | None = None,
             inconclusive_as: str = "inconclusive", curation: str | Path | None = None, out: str | Path | None = None,
             junit: str | Path | None = None, summary: str | Path | None = None, parity: str | Path | None = None,
             allow_modified: bool = False, sign: str | Path | None = None) -> tuple[Verdict, Path]:
    """Gate ``candidate`` (``RUN[#MODEL]``, default model: the run's only adapter) against ``baseline`` (default
    model: base) under ``policy`` (a Policy or a YAML path), with the contamination record of ``curation`` when
    given, and the parity.json of ``parity`` (default: found in the candidate's run folder) for parity rules.
    ``allow_modified``: read run folders that fail their integrity check (said in the verdict). Writes ``verdict.json`` (default: in the candidate's run folder), and JUnit XML / a Markdown summary
    where paths are given; returns the verdict and the verdict.json path. ``sign``: an Ed25519 private key (``laf keygen``):
    ``verdict.json.sig`` is written beside the verdict (:mod:`harness.gate.signing`)."""
    if sign is not None:
        from .signing import load_private_key

        load_private_key(sign)  # a missing or loose key is refused before anything is computed or written
    if not isinstance(policy, Policy):
        policy_source = policy_source or str(policy)
        policy = load_policy(policy)
    a = load_side(baseline, "baseline", default_base=True, allow_modified=allow_modified)
    b = load_side(candidate, "candidate", default_base=False, allow_modified=allow_modified)
    v = evaluate_gate(a, b, policy, policy_source or "inline", inconclusive_as, contamination_from(curation), parity)
    verdict_path = Path(out) if out else b.folder / "verdict.json"
    from .signing import signature_path, signed_envelope, write_signature

    envelope = None
    if sign is not None:  # built (and refused) before anything is written
        envelope = signed_envelope(v.to_dict(), {s: meta.to_dict() for s, meta in b.suites.items()},
                                   {s: [r.doc_hash for r in recs] for s, recs in b.records.items()}, sign)
    signature_path(verdict_path).unlink(missing_ok=True)  # a signature of an earlier verdict never sits beside this one
    write_artifacts(v, verdict_path, Path(junit) if junit else None, Path(summary) if summary else None)
    if envelope is not None:
        write_signature(verdict_path, envelope)
    return v, verdict_path
