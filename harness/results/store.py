"""The results store of one evaluation run: ``DIR/results.sqlite`` (+ ``results.json``, ``records.jsonl``).

Per-item records go into SQLite suite by suite as they finish; ``results.json``
(aggregates and provenance) and the JSONL export are written atomically at
the end, so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import LafError
from ..io import atomic_write_json, atomic_write_text, read_json, read_jsonl
from .document import ResultsDoc
from .records import ItemRecord

RESULTS = "results.json"
RECORDS = "records.jsonl"
STORE = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
  model TEXT NOT NULL,
  suite TEXT NOT NULL,
  doc_id INTEGER NOT NULL,
  doc_hash TEXT NOT NULL,
  record TEXT NOT NULL,
  PRIMARY KEY (model, suite, doc_id)
);
CREATE INDEX IF NOT EXISTS items_by_hash ON items (suite, doc_hash);
"""


class ResultsStore:
    """``partial=True``: a new run writes ``results.sqlite.partial`` and :meth:`publish` renames it over the
    old store at the end, so an earlier run's results stay whole until the new ones are complete."""

    def __init__(self, folder: str | Path, partial: bool = False):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LafError(f"cannot create output folder {self.folder}: {e.strerror or e}", "choose a writable --out") from e
        self.path = self.folder / (STORE + ".partial" if partial else STORE)
        if partial:
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)  # a crashed run's leftovers
        self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)

    def write(self, records: Iterable[ItemRecord]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO items (model, suite, doc_id, doc_hash, record) VALUES (?, ?, ?, ?, ?)",
                [(r.model, r.suite, r.doc_id, r.doc_hash, json.dumps(r.to_dict(), ensure_ascii=False)) for r in records],
            )

    def records(self, model: str | None = None, suite: str | None = None) -> Iterator[ItemRecord]:
        q, args = "SELECT record FROM items", []
        where = []
        if model is not None:
            where.append("model = ?")
            args.append(model)
        if suite is not None:
            where.append("suite = ?")
            args.append(suite)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY model, suite, doc_id"
        for (rec,) in self.conn.execute(q, args):
            yield ItemRecord.from_dict(json.loads(rec))

    def export_jsonl(self, path: Path | None = None) -> Path:
        path = path or self.folder / RECORDS
        atomic_write_text(path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in self.records()))
        return path

    def close(self) -> None:
        self.conn.close()

    def publish(self) -> None:
        """Fold the write-ahead log in, close, and rename the partial store into place."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
        final = self.folder / STORE
        for suffix in ("-wal", "-shm"):
            Path(str(final) + suffix).unlink(missing_ok=True)
            Path(str(self.path) + suffix).unlink(missing_ok=True)
        os.replace(self.path, final)
        self.path = final
        self.conn = sqlite3.connect(str(final), timeout=60, isolation_level=None)


def write_results(folder: str | Path, doc: ResultsDoc) -> Path:
    """Write ``results.json`` atomically."""
    return atomic_write_json(Path(folder) / RESULTS, doc.to_dict())


def read_records_jsonl(path: Path) -> list[ItemRecord]:
    """The per-item records of a ``records.jsonl`` export."""
    rows = read_jsonl(path, "re-run the evaluation to rewrite it")
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
    if bad is not None:
        raise LafError(f"{path}: record {bad} is not a JSON object", "re-run the evaluation to rewrite it")
    return [ItemRecord.from_dict(r) for r in rows]


def load_results(folder: str | Path) -> ResultsDoc:
    """``results.json`` of a finished run, typed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LafError(f"run folder not found: {folder}", "pass the --out folder of a `laf eval` run")
    if not (folder / RESULTS).exists():
        raise LafError(f"{folder} holds no {RESULTS}: not a finished evaluation run", "run `laf eval --out` into it first (an interrupted run is finished by re-running it)")
    return ResultsDoc.from_dict(read_json(folder / RESULTS), str(folder / RESULTS))


def load_run(folder: str | Path) -> tuple[ResultsDoc, list[ItemRecord]]:
    """Read a finished run: ``results.json`` (typed) and every per-item record (SQLite, else ``records.jsonl``)."""
    folder = Path(folder)
    results = load_results(folder)
    if (folder / STORE).exists():
        store = ResultsStore(folder)
        try:
            records = list(store.records())
        finally:
            store.close()
    elif (folder / RECORDS).exists():
        records = read_records_jsonl(folder / RECORDS)
    else:
        raise LafError(f"{folder} has results but no per-item records", "re-run the evaluation")
    return results, records
