"""What one ``laf gate``, ``laf compare`` or ``laf run`` leaves in the history, built from its verdicts or its
comparison, and :func:`record_outcome`, the one function all three record through.

An entry's ``run_id`` is the digest of its content without the time and place it was recorded, so recording the
same run twice (a re-run with the same inputs and the same decision) is one entry.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import stat
import subprocess
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator

from ..env import now_iso
from ..io import atomic_write_json, canonical_json

SCHEMA = "laf.history.entry/1"
TREND = "trend.json"


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the git working tree around ``cwd`` (``+dirty`` when it has uncommitted changes), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def who() -> str:
    """Who records or releases: LAF_USER, CI's actor (GITHUB_ACTOR, GITLAB_USER_LOGIN), else the login name."""
    for var in ("LAF_USER", "GITHUB_ACTOR", "GITLAB_USER_LOGIN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _with_deltas(identity: dict, deltas: dict) -> dict:
    suites = {}
    for s, x in (identity.get("suites") or {}).items():
        d = deltas.get(s) or {}
        suites[s] = {**x, "improvement": d.get("improvement"), "improvement_ci_low": d.get("ci_low"), "improvement_ci_high": d.get("ci_high")}
    return {**identity, "suites": suites}


def _rule(r: dict) -> dict:
    st = r.get("stats") or {}
    return {"rule": r.get("rule"), "suite": r.get("suite"), "metric": r.get("metric"), "kind": r.get("kind"), "margin": r.get("margin"),
            "required": r.get("required"), "status": r.get("status"), "improvement": st.get("improvement"), "ci_low": st.get("ci_low"), "ci_high": st.get("ci_high")}


def build_entry(kind: str, verdicts: list[dict] | None = None, compare: dict | None = None, *, config_fingerprint: str | None = None,
                run_folder: str | Path | None = None, artifacts: dict | None = None) -> dict:
    """The history entry of one run: from its verdicts (verdict.json dicts: ``laf gate``, ``laf run``) or, where
    nothing was gated, from its comparison (compare.json: ``laf compare``). Holds the run's identity, every model's
    suites (fingerprint, item-set digest, n, primary metric with CI, change against its baseline), each candidate's
    rules and verdict."""
    models: dict[str, dict] = {}
    cands: list[dict] = []
    first: dict = {}
    for v in verdicts or []:
        b, c = v["baseline"], v["candidate"]
        first = first or b
        bi, ci = b.get("identity") or {}, c.get("identity") or {}
        models.setdefault(b["model"], bi)
        models[c["model"]] = _with_deltas(ci, (v.get("summaries") or {}).get("suites") or {})
        cands.append({"candidate": c["model"], "baseline": b["model"], "baseline_kind": v.get("baseline_kind") or "base", "verdict": v.get("verdict"),
                      "exit_code": v.get("exit_code"), "rules": [_rule(r) for r in v.get("rules") or []], "policy": (v.get("policy") or {}).get("source")})
    if not verdicts and compare is not None:
        b = compare["baseline"]
        first = b
        models.setdefault(b["model"], b.get("identity") or {})
        for row in compare.get("ranking") or []:
            models[row["model"]] = _with_deltas(row.get("identity") or {}, row.get("suites") or {})
            cands.append({"candidate": row["model"], "baseline": b["model"], "baseline_kind": "base", "verdict": row.get("verdict"),
                          "exit_code": row.get("exit_code"), "rules": [], "policy": None})
    statuses = [c["verdict"] for c in cands if c.get("verdict")]
    verdict = None if not statuses else ("fail" if "fail" in statuses else "inconclusive" if "inconclusive" in statuses else "pass")
    codes = [int(c["exit_code"]) for c in cands if c.get("exit_code") is not None and c.get("verdict")]
    bm = first.get("base_model") or {}
    folder = str(Path(run_folder).resolve()) if run_folder else (models.get(cands[0]["candidate"], {}).get("run") if cands else None)
    body = {
        "schema": SCHEMA, "kind": kind, "run_folder": folder, "config_fingerprint": config_fingerprint,
        "base_fingerprint": bm.get("fingerprint"), "base_model": bm.get("spec"), "precision": (first.get("load") or {}).get("precision"),
        "policy_source": next((c["policy"] for c in cands if c.get("policy")), None), "verdict": verdict,
        "exit_code": (1 if 1 in codes else 2 if 2 in codes else 0) if codes else None, "models": models, "candidates": cands,
    }
    from .. import __version__

    created = next((v.get("created") for v in verdicts or [] if v.get("created")), None)
    return {**body, "run_id": hashlib.sha256(canonical_json(body).encode("utf-8", "surrogatepass")).hexdigest()[:32], "artifacts": artifacts or {}, "recorded_at": now_iso(precise=True), "created": created, "recorded_by": who(),
            "git_commit": git_commit(), "laf_version": __version__}


class _Held:
    """What a :func:`held_records` block recorded: one store per URL, each holding its write transaction open, and the
    trend.json files to write when the block succeeds."""

    def __init__(self) -> None:
        self.stores: dict[str, Any] = {}  # url -> HistoryStore (imported late: the store pulls in SQLAlchemy)
        self.trends: list[tuple[Path, dict]] = []

    def store(self, url: str):
        from .store import HistoryStore

        if url not in self.stores:
            store = HistoryStore(url, write=True)
            try:
                store.hold()
            except BaseException:
                store.close()
                raise
            self.stores[url] = store
        return self.stores[url]

    def commit(self) -> None:
        """Write the trends (keeping what each file held), then commit every store; if anything fails, the trend
        files are put back and nothing is committed that was not already."""
        from .. import io as laf_io

        before = [(path, _snapshot(path)) for path, _ in self.trends]
        try:
            for path, doc in self.trends:
                atomic_write_json(path, doc)
            for store in self.stores.values():
                store.commit()
        except BaseException:
            for path, old in before:
                _restore(path, old, laf_io)
            self.rollback()
            raise
        self.close()

    def rollback(self) -> None:
        for store in self.stores.values():
            store.rollback()
        self.close()

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores.clear()


_HELD: ContextVar[_Held | None] = ContextVar("laf_history_held", default=None)
_KEEP_LIMIT = 64 << 20  # a trend.json bigger than this is not one laf wrote: not snapshotted, never restored


def _snapshot(path: Path) -> bytes | None | bool:
    """What ``path`` holds now: its bytes (a regular file), None (nothing there), or False (something laf leaves alone)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size > _KEEP_LIMIT:
        return False
    try:
        return Path(path).read_bytes()
    except OSError:
        return False


def _restore(path: Path, old: bytes | None | bool, laf_io) -> None:
    """Put ``path`` back as :func:`_snapshot` found it (best effort: a failure here must not hide the first error)."""
    try:
        if old is None:
            if Path(path).is_file() and not Path(path).is_symlink():
                Path(path).unlink()
        elif old is not False:
            laf_io.atomic_write_bytes(path, old)
    except (OSError, Exception):  # noqa: BLE001 - the error that made us restore is the one the user sees
        pass


@contextmanager
def held_records() -> Iterator[None]:
    """Within this block, :func:`record_outcome` records into a transaction that is committed only when the block
    ends without an error, and writes trend.json only then: a ``laf gate`` that fails after recording (a key that
    cannot sign this candidate, an unwritable verdict path) leaves no run in the history (none to release) and no
    trend.json."""
    held = _Held()
    token = _HELD.set(held)
    try:
        yield
    except BaseException:
        _HELD.reset(token)
        held.rollback()
        raise
    _HELD.reset(token)
    held.commit()


def record_outcome(url: str | None, kind: str, verdicts: list[dict] | None = None, compare: dict | None = None, *, config_fingerprint: str | None = None,
                   run_folder: str | Path | None = None, trend_dir: str | Path | None = None, artifacts: dict | None = None,
                   log: Callable[[str], None] = lambda m: None) -> dict | None:
    """Record a gate, comparison or run into the history at ``url`` (None: recording is off) and write each gated
    adapter's trend next to its verdict (``trend_dir/trend.json``, which the report shows). Returns what was
    recorded: ``{"store", "run_id", "new", "trend"}``. ``artifacts``: {candidate: {"verdict": path, "report": path}}, the
    files an export attaches (not part of the run's identity). Inside :func:`held_records`, the record and the trend
    become real only when that block succeeds."""
    if url is None:
        return None
    from .store import HistoryStore

    entry = build_entry(kind, verdicts, compare, config_fingerprint=config_fingerprint, run_folder=run_folder, artifacts=artifacts)
    if not entry["candidates"]:
        return None
    held = _HELD.get()
    if held is not None:
        store = held.store(url)
        new = store.record(entry)
        log(f"history: {'recording' if new else 'already recorded'} run {entry['run_id']} in {store.shown}")
        trend = None
        if trend_dir is not None:
            trend = Path(trend_dir) / TREND
            held.trends.append((trend, trend_doc(store, entry)))
        return {"store": store.shown, "run_id": entry["run_id"], "new": new, "trend": None if trend is None else str(trend)}
    with HistoryStore(url, write=True) as store:
        new = store.record(entry)
        log(f"history: {'recorded' if new else 'already recorded'} run {entry['run_id']} in {store.shown}")
        trend = None
        if trend_dir is not None:
            trend = write_trend(store, entry, Path(trend_dir))
    return {"store": store.shown, "run_id": entry["run_id"], "new": new, "trend": None if trend is None else str(trend)}


def trend_doc(store, entry: dict) -> dict:
    """The ``trend.json`` document: for each candidate of ``entry``, its adapter's versions in the history (the report's
    trend section), marking this run's candidate and keeping only the suites its rules gated (all when none)."""
    from .store import split_candidate

    out = {"schema": "laf.trend/1", "store": store.shown, "run_id": entry["run_id"], "adapters": []}
    for c in entry["candidates"]:
        name, version = split_candidate(c["candidate"])
        t = store.trend(name)
        gated = [r["suite"] for r in c.get("rules") or [] if r.get("suite")]
        suites = [s for s in (entry["models"][c["candidate"]].get("suites") or {}) if not gated or s in gated]
        for v in t["versions"]:
            v["current"] = v["version"] == version
            v["suites"] = {s: x for s, x in v["suites"].items() if s in suites}
        out["adapters"].append({"name": name, "candidate": c["candidate"], "baseline": c.get("baseline"), "baseline_kind": c.get("baseline_kind"),
                                "suites": suites, "versions": t["versions"]})
    return out


def write_trend(store, entry: dict, folder: Path) -> Path:
    """Write :func:`trend_doc` to ``folder/trend.json``."""
    return atomic_write_json(folder / TREND, trend_doc(store, entry))
