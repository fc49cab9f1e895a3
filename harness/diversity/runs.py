"""Reading finished evaluation runs for the diversity analysis, without the model stack.

This is the ONE place that reads run folders. It mirrors
``harness.evaluate.store.load_run`` (results.json, then results.sqlite or
records.jsonl) with the standard library only, because importing
``harness.evaluate`` pulls in torch. When the torch-free ``harness.results``
package exists, this body becomes
``results, recs = harness.results.load_run(folder); return results, [r.to_dict() for r in recs]``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ..errors import LafError
from ..io import read_json

RESULTS = "results.json"
RECORDS = "records.jsonl"
STORE = "results.sqlite"


def read_run(folder: str | Path) -> tuple[dict, list[dict]]:
    """``(results.json, per-item records as dicts)`` of a finished ``laf eval`` run."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LafError(f"run folder not found: {folder}", "pass the --out folder of a `laf eval` run")
    if not (folder / RESULTS).exists():
        raise LafError(f"{folder} holds no {RESULTS}: not a finished evaluation run",
                       "run `laf eval --out` into it first (an interrupted run is finished by re-running it)")
    results = read_json(folder / RESULTS)
    if not isinstance(results, dict) or not isinstance(results.get("models"), dict) or not isinstance(results.get("suites"), dict):
        raise LafError(f"{folder / RESULTS} is not a `laf eval` results file (no 'models' / 'suites' tables)", "re-run the evaluation")
    if (folder / STORE).exists():
        records = _from_sqlite(folder / STORE)
    elif (folder / RECORDS).exists():
        records = _from_jsonl(folder / RECORDS)
    else:
        raise LafError(f"{folder} has results but no per-item records", "re-run the evaluation")
    return results, records


def _from_sqlite(path: Path) -> list[dict]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT record FROM items ORDER BY model, suite, doc_id").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise LafError(f"{path} is not a readable results store: {e}", "re-run the evaluation") from e
    out = []
    for (text,) in rows:
        try:
            rec = json.loads(text)
        except ValueError as e:
            raise LafError(f"{path} holds a corrupt record: {e}", "re-run the evaluation") from e
        out.append(_checked(rec, path))
    return out


def _from_jsonl(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise LafError(f"{path}, line {n}: not valid JSON ({e})", "re-run the evaluation, or restore the file") from e
            out.append(_checked(rec, f"{path}, line {n}"))
    return out


def _checked(rec, where) -> dict:
    if not isinstance(rec, dict):
        raise LafError(f"{where}: a record must be a JSON object", "re-run the evaluation")
    for key in ("model", "suite", "doc_hash"):
        if not isinstance(rec.get(key), str):
            raise LafError(f"{where}: record has no '{key}' string", "re-run the evaluation")
    if not isinstance(rec.get("doc_id"), int) or isinstance(rec.get("doc_id"), bool):
        raise LafError(f"{where}: record has no integer 'doc_id'", "re-run the evaluation")
    if not isinstance(rec.get("metrics"), dict):
        raise LafError(f"{where}: record has no 'metrics' object", "re-run the evaluation")
    return rec
