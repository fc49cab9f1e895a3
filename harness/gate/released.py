"""``--baseline released``: the last released version of the candidate's adapter, from the release history, paired
on the same items.

The released version's per-item records come from the run folder the history recorded for it, and only when
their digest still matches the history, every suite the candidate was scored on has the same suite fingerprint
and item set, and the folder passes its integrity check. Anything else is a :class:`ReleasedBaseline` with a
``reason`` (``laf gate`` refuses with it; ``laf run`` re-scores the released adapter next to the candidate), never
a comparison on different items.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import LafError
from .runs import COMPARABLE_KEYS, RunSide, item_digest, load_side, records_digest

KEYWORD = "released"


@dataclass
class ReleasedBaseline:
    release: dict | None  # the releases row (None: nothing of this name was released yet)
    store: str  # the store, password redacted
    side: RunSide | None = None  # the released version's records, verified (None: see reason)
    reason: str | None = None  # why the recorded records cannot be used
    folder: Path | None = None  # where the history says they are

    @property
    def ref(self) -> str | None:
        return None if self.release is None else str(self.release["candidate"])


def adapter_name(model: str) -> str:
    return model.rsplit("@", 1)[0]


def find_release(name: str, history_url: str) -> tuple[dict | None, dict | None, str]:
    """The last release of ``name`` and the recorded candidate row of its run (with per-suite fingerprints)."""
    from ..history import HistoryStore, redact
    from ..history.store import NoHistory

    try:
        store = HistoryStore(history_url)
    except NoHistory:
        return None, None, redact(history_url)
    with store:
        rel = store.last_release(name)
        row = None if rel is None else store.candidate_row(rel["run_id"], rel["candidate"])
        return rel, row, store.shown


def suite_mismatch(recorded: dict, candidate: RunSide, released: RunSide | None = None) -> str | None:
    """Why the release's recorded suites do not pair with the candidate's (a changed or missing suite), or None."""
    for s, meta in candidate.suites.items():
        r = recorded.get(s)
        if r is None:
            return f"suite {s} was not scored for the release"
        if r.get("suite_fingerprint") != meta.fingerprint():
            return f"suite {s} changed since the release (suite fingerprint {str(r.get('suite_fingerprint'))[:12]}... then, {meta.fingerprint()[:12]}... now)"
        if r.get("item_digest") != item_digest(candidate.records.get(s, [])):
            return f"suite {s} was scored on other items for the release (item-set digest {str(r.get('item_digest'))[:12]}... then)"
    return None


def released_baseline(candidate: RunSide, history_url: str, rewritten: Path | None = None) -> ReleasedBaseline:
    """The verified records of the last release of ``candidate``'s adapter name (see the module doc). ``rewritten``:
    a folder this run is about to overwrite (its records cannot be trusted to stay)."""
    name = adapter_name(candidate.model)
    rel, row, shown = find_release(name, history_url)
    out = ReleasedBaseline(rel, shown)
    if rel is None:
        return out
    if row is None:
        out.reason = f"the history {shown} has no recorded run {rel['run_id']} for {rel['candidate']}"
        return out
    out.folder = Path(str(row["run_folder"])) if row.get("run_folder") else None
    if rel["candidate"] == candidate.model:
        raise LafError(f"the candidate {candidate.model} is itself the last release of {name}",
                       "gate a newer version, or gate against the base (--baseline RUN)")
    if out.folder is None:
        out.reason = "the history records no run folder for it"
        return out
    if rewritten is not None and out.folder.resolve() == Path(rewritten).resolve():
        out.reason = f"its run folder {out.folder} is this run's evaluation folder, which this run rewrites"
        return out
    try:
        side = load_side(f"{out.folder}#{rel['candidate']}", "released baseline", default_base=False)
    except LafError as e:
        out.reason = f"its run folder {out.folder} cannot be used ({e.cause})"
        return out
    if side.model != rel["candidate"]:
        out.reason = f"its run folder {out.folder} holds no records of {rel['candidate']}"
        return out
    digest = records_digest(side.records)
    if digest != row.get("records_digest"):
        out.reason = (f"its records in {out.folder} no longer match the history (digest {digest[:12]}... now, "
                      f"{str(row.get('records_digest'))[:12]}... recorded): the folder was re-used or edited")
        return out
    mismatch = suite_mismatch(row.get("suites") or {}, candidate)
    if mismatch is None:
        ca, cb = side.comparable(), candidate.comparable()
        diff = [k for k in COMPARABLE_KEYS if ca.get(k) != cb.get(k)]
        if diff:
            mismatch = "it was scored differently from the candidate (" + "; ".join(f"{k}: {ca.get(k)} vs {cb.get(k)}" for k in diff) + ")"
    if mismatch:
        out.reason = mismatch
        return out
    keep = set(candidate.suites)
    results = dataclasses.replace(side.results, suites={s: m for s, m in side.results.suites.items() if s in keep})
    out.side = RunSide(side.ref, side.folder, side.model, results, {s: r for s, r in side.records.items() if s in keep})
    return out


def refusal(b: ReleasedBaseline, candidate: str) -> LafError:
    return LafError(f"cannot gate {candidate} against its last release {b.ref} from {b.store}: {b.reason}",
                    f"re-score the release next to the candidate on the same items (`laf eval ... --adapter {b.ref} --adapter {candidate}`, then "
                    f"`laf gate --baseline RUN#{b.ref} --candidate RUN#{candidate}`), or let `laf run` with gate: {{baseline: released}} do it")
