"""What one ``laf gate``, ``laf compare`` or ``laf run`` leaves in the history, built from its verdicts or its
comparison, and :func:`record_outcome`, the one function all three record through.

An entry's ``run_id`` is the digest of its content without the time and place it was recorded, so recording the
same run twice (a re-run with the same inputs and the same decision) is one entry.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Callable

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


def record_outcome(url: str | None, kind: str, verdicts: list[dict] | None = None, compare: dict | None = None, *, config_fingerprint: str | None = None,
                   run_folder: str | Path | None = None, trend_dir: str | Path | None = None, artifacts: dict | None = None,
                   log: Callable[[str], None] = lambda m: None) -> dict | None:
    """Record a gate, comparison or run into the history at ``url`` (None: recording is off) and write each gated
    adapter's trend next to its verdict (``trend_dir/trend.json``, which the report shows). Returns what was
    recorded: ``{"store", "run_id", "new", "trend"}``. ``artifacts``: {candidate: {"verdict": path, "report": path}}, the
    files an export attaches (not part of the run's identity)."""
    if url is None:
        return None
    from .store import HistoryStore

    entry = build_entry(kind, verdicts, compare, config_fingerprint=config_fingerprint, run_folder=run_folder, artifacts=artifacts)
    if not entry["candidates"]:
        return None
    with HistoryStore(url, write=True) as store:
        new = store.record(entry)
        log(f"history: {'recorded' if new else 'already recorded'} run {entry['run_id']} in {store.shown}")
        trend = None
        if trend_dir is not None:
            trend = write_trend(store, entry, Path(trend_dir))
    return {"store": store.shown, "run_id": entry["run_id"], "new": new, "trend": None if trend is None else str(trend)}


def write_trend(store, entry: dict, folder: Path) -> Path:
    """``trend.json``: for each candidate of ``entry``, its adapter's versions in the history (the report's trend
    section), marking this run's candidate and keeping only the suites its rules gated (all when none)."""
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
    return atomic_write_json(folder / TREND, out)
