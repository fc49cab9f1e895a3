"""``run_gate``: the one way to gate a candidate, used by ``laf gate`` and by ``laf run``'s gate stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import LafError
from ..io import sha256_json
from ..results import BASE
from ..results.artifacts import read_curation
from .artifacts import write_artifacts
from .policy import Policy, load_policy
from .released import KEYWORD, adapter_name, refusal, released_baseline
from .rules import evaluate_gate
from .runs import load_side
from .verdict import Verdict


def contamination_from(curation: str | Path | None) -> dict | None:
    """The contamination block of a curation manifest (``curation.json``), read and checked like every artifact
    (bounded, a plain file, finite shares in [0, 1], whole counts): a bad file is one error naming it and the
    field; None when no manifest is named or it holds no contamination check."""
    if curation is None:
        return None
    return read_curation(curation).get("contamination")


def check_run_folder(ref: str, role: str) -> None:
    """A reference whose run folder is a file (not a folder) is said to be one, before anything reads it."""
    from ..results import parse_run_ref

    folder = parse_run_ref(ref).path
    if folder.exists() and not folder.is_dir():
        raise LafError(f"the {role} {folder} is a file, not a run folder",
                       "pass the folder a finished `laf eval --out` wrote (it holds results.json and records.jsonl), optionally as RUN#MODEL")


def run_gate(baseline: str | None, candidate: str, policy: Policy | str | Path, *, policy_source: str | None = None,
             inconclusive_as: str = "inconclusive", curation: str | Path | None = None, out: str | Path | None = None,
             junit: str | Path | None = None, summary: str | Path | None = None, parity: str | Path | None = None,
             allow_modified: bool = False, history: str | None = None, record: bool = False, baseline_kind: str = "base",
             notes: list[str] | None = None, sign: str | Path | None = None, history_info: dict | None = None) -> tuple[Verdict, Path]:
    """Gate ``candidate`` (``RUN[#MODEL]``, default model: the run's only adapter) against ``baseline`` (``RUN[#MODEL]``,
    default model: base; None or ``base``: the candidate run's base; ``released``: the last released version of the
    candidate's adapter in the release history ``history``, see :mod:`harness.gate.released`) under ``policy`` (a
    Policy or a YAML path), with the contamination record of ``curation`` when given, and the parity.json of
    ``parity`` (default: found in the candidate's run folder) for parity rules.
    ``allow_modified``: read run folders that fail their integrity check (said in the verdict). Writes ``verdict.json``
    (default: in the candidate's run folder), and JUnit XML / a Markdown summary where paths are given; with
    ``record``, records the verdict in ``history`` and writes the adapter's trend beside verdict.json. ``history_info``:
    the history block a caller (``laf run``) puts in the verdict. ``sign``: an Ed25519 private key (``laf keygen``):
    ``verdict.json.sig`` is written beside the final verdict (:mod:`harness.gate.signing`). Returns the verdict and the
    verdict.json path."""
    if sign is not None:
        from .signing import load_private_key

        load_private_key(sign)  # a missing or loose key is refused before anything is computed or written
    if not isinstance(policy, Policy):
        policy_source = policy_source or str(policy)
        policy = load_policy(policy)
    contamination = contamination_from(curation)  # a bad manifest is refused before any statistics
    for ref, role in ((candidate, "candidate"), (baseline, "baseline")):
        if ref not in (None, "", BASE, KEYWORD):
            check_run_folder(ref, role)
    b = load_side(candidate, "candidate", default_base=False, allow_modified=allow_modified)
    notes = list(notes or [])
    hist: dict[str, Any] = {}
    if baseline in (None, "", BASE):
        a = load_side(f"{b.folder}#{BASE}", "baseline", default_base=True, allow_modified=allow_modified)
    elif baseline == KEYWORD:
        if history is None:
            raise LafError("--baseline released reads the release history, which is switched off here",
                           "name it with --history URL (or LAF_HISTORY_URL), or gate against a run folder")
        rb = released_baseline(b, history)
        hist = {"store": rb.store}
        if rb.release is None:
            a = load_side(f"{b.folder}#{BASE}", "baseline", default_base=True, allow_modified=allow_modified)
            notes.append(f"no version of {adapter_name(b.model)} has been released yet (history {rb.store}): gated against the base model instead")
        elif rb.side is None:
            raise refusal(rb, b.model)
        else:
            a, baseline_kind = rb.side, "released"
            r = rb.release
            hist["release"] = {k: r.get(k) for k in ("candidate", "released_at", "released_by", "git_commit", "run_id")}
            notes.append(f"baseline: the last release {rb.ref} (released {r.get('released_at')} by {r.get('released_by')}); its records in "
                         f"{rb.folder} match the history and are paired with the candidate's on the same items")
    else:
        a = load_side(baseline, "baseline", default_base=True, allow_modified=allow_modified)
    v = evaluate_gate(a, b, policy, policy_source or "inline", inconclusive_as, contamination, parity)
    v.baseline_kind, v.notes, v.history = baseline_kind, notes, (hist or history_info or None)
    verdict_path = Path(out) if out else b.folder / "verdict.json"
    from .signing import signature_path, signed_envelope, write_signature

    signature_path(verdict_path).unlink(missing_ok=True)  # a signature of an earlier verdict never sits beside this one
    if record and history is not None:  # recorded first: what it adds to the verdict is in the file that is written and signed
        from ..history import record_outcome

        rec = record_outcome(history, "gate", [v.to_dict()], config_fingerprint=sha256_json({"policy": policy.model_dump(mode="json"), "inconclusive_as": inconclusive_as}),
                             trend_dir=verdict_path.parent,
                             artifacts={b.model: {"verdict": str(verdict_path.resolve()), "report": str((verdict_path.parent / "report.html").resolve())}})
        if rec is not None:
            v.history = {**(hist or {}), "store": rec["store"], "recorded": rec}
    envelope = None
    if sign is not None:  # built (and refused) before the verdict is written
        envelope = signed_envelope(v.to_dict(), {s: meta.to_dict() for s, meta in b.suites.items()},
                                   {s: [r.doc_hash for r in recs] for s, recs in b.records.items()}, sign)
    write_artifacts(v, verdict_path, Path(junit) if junit else None, Path(summary) if summary else None)
    if envelope is not None:
        write_signature(verdict_path, envelope)
    return v, verdict_path
