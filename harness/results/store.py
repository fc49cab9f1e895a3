"""The results store of one evaluation run: ``DIR/results.sqlite`` (+ ``results.json``, ``records.jsonl``).

Per-item records go into ``results.sqlite.partial`` suite by suite as they
finish. At the end :func:`commit_run` publishes the three files as one unit:
``.publishing`` is created and ``integrity.json`` removed, the three files
are renamed into place, and ``integrity.json`` (the digests of all three) is
written last, then ``.publishing`` removed. A reader (:func:`load_run`)
checks the digests, so it sees either a whole run or a clear error ("being
written or interrupted"), never a mix of two runs. A writer holds
:class:`RunLock` (``DIR/.laf.lock``) for the life of the run, so two runs never
write one folder at once.

``integrity.json`` proves that the files are the ones the run wrote, against
accidental and naive edits (a changed record, a truncated export). It is not a
signature: whoever can rewrite the files can rewrite the digests too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import LafError
from ..io import atomic_write_text, exclusive_lock, protect_inputs, read_jsonl
from .document import ResultsDoc
from .records import ItemRecord

RESULTS = "results.json"
RECORDS = "records.jsonl"
STORE = "results.sqlite"
INTEGRITY = "integrity.json"
PUBLISHING = ".publishing"
INTEGRITY_SCHEMA = "laf.integrity/1"

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

_MODIFIED_FIX = "re-run `laf eval` into this folder; to read it anyway, pass --allow-modified (the verdict and report then say so)"


def dumps_strict(obj: Any, **kw) -> str:
    """JSON without bare NaN/Infinity (not JSON): a non-finite number here is a bug upstream, said plainly."""
    try:
        return json.dumps(obj, allow_nan=False, ensure_ascii=False, **kw)
    except ValueError as e:
        raise LafError(f"refusing to write a non-finite number (NaN or infinity) into a results file: {e}",
                       "this is a bug: non-finite scores must be reported as an error before they are written") from None


def _has_nonfinite(v: Any) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, dict):
        return any(_has_nonfinite(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_has_nonfinite(x) for x in v)
    return False


# ---------------------------------------------------------------- the lock


def RunLock(folder: str | Path, what: str = "laf eval"):
    """An exclusive lock on an output folder for the life of a run: :func:`harness.io.exclusive_lock` (one lock
    helper for eval, train and run folders; the kernel drops it when the holder exits, even on ``kill -9``)."""
    return exclusive_lock(folder, what)


# ---------------------------------------------------------------- the store


def _connect_ro(path: Path) -> sqlite3.Connection:
    """Read-only, never creating anything beside the file (works on a read-only folder)."""
    from urllib.parse import quote

    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1", uri=True)


class ResultsStore:
    """``partial=True``: a new run writes ``results.sqlite.partial``; :func:`commit_run` publishes it with the
    other two files, so an earlier run's results stay whole until the new ones are complete. ``readonly=True``:
    open a finished store for reading only (no write access needed)."""

    def __init__(self, folder: str | Path, partial: bool = False, readonly: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / (STORE + ".partial" if partial else STORE)
        if readonly:
            try:
                self.conn = _connect_ro(self.path)
                self.conn.execute("SELECT model, suite, doc_id, doc_hash, record FROM items LIMIT 1").fetchall()
            except sqlite3.Error as e:
                with contextlib.suppress(Exception):
                    self.conn.close()
                raise LafError(f"{self.path} is not a readable results store ({e})", "re-run `laf eval` into this folder") from None
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LafError(f"cannot create output folder {self.folder}: {e.strerror or e}", "choose a writable --out") from e
        if partial:
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)  # a crashed run's leftovers
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise _store_error(self.path, e) from None

    def write(self, records: Iterable[ItemRecord]) -> None:
        rows = [(r.model, r.suite, r.doc_id, r.doc_hash, dumps_strict(r.to_dict())) for r in records]
        try:
            with self.conn:
                self.conn.executemany("INSERT OR REPLACE INTO items (model, suite, doc_id, doc_hash, record) VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as e:  # a full disk is SQLITE_FULL, not an OSError: the run's earlier results stay as they were
            raise _store_error(self.path, e) from None

    def _rows(self, model: str | None = None, suite: str | None = None) -> Iterator[tuple[str, str, int, str]]:
        q, args = "SELECT model, suite, doc_id, record FROM items", []
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
        try:
            yield from self.conn.execute(q, args)
        except sqlite3.Error as e:
            raise LafError(f"{self.path}: cannot read the records ({e})", "re-run `laf eval` into this folder") from None

    def records(self, model: str | None = None, suite: str | None = None) -> Iterator[ItemRecord]:
        for _m, _s, _d, rec in self._rows(model, suite):
            yield ItemRecord.from_dict(_record_json(rec, self.path))

    def content_digest(self) -> str:
        """sha256 over every row's key and record text, in key order (independent of the file's page layout)."""
        h = hashlib.sha256()
        for m, s, d, rec in self._rows():
            h.update(json.dumps([m, s, d, rec], ensure_ascii=False).encode("utf-8") + b"\n")
        return h.hexdigest()

    def jsonl_text(self) -> str:
        return "".join(dumps_strict(r.to_dict()) + "\n" for r in self.records())

    def export_jsonl(self, path: Path | None = None) -> Path:
        return atomic_write_text(path or self.folder / RECORDS, self.jsonl_text())

    def close(self) -> None:
        self.conn.close()


def _store_error(path: Path, e: sqlite3.Error) -> LafError:
    return LafError(f"writing {path} failed: {e}; the folder's published results (if any) are unchanged",
                    "free disk space (or choose another --out) and run again: finished suites are kept in the score cache")


def _record_json(text: str, where) -> dict:
    try:
        d = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise LafError(f"{where}: a record is not valid JSON ({e})", "re-run `laf eval` into this folder") from None
    if not isinstance(d, dict):
        raise LafError(f"{where}: a record is not a JSON object", "re-run `laf eval` into this folder")
    return d


def _reject_constant(name: str):
    raise ValueError(f"bare {name} is not JSON")


# ---------------------------------------------------------------- publishing a run as one unit


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def commit_run(store: ResultsStore, doc: ResultsDoc) -> dict:
    """Publish ``results.sqlite``, ``records.jsonl`` and ``results.json`` as one unit and seal them with
    ``integrity.json`` (see the module doc). ``store`` is the run's partial store; it is closed."""
    folder = store.folder
    results_text = dumps_strict(doc.to_dict(), indent=2) + "\n"
    records_text = store.jsonl_text()
    digests = {"schema": INTEGRITY_SCHEMA, RESULTS: _sha256_text(results_text), RECORDS: _sha256_text(records_text),
               STORE: store.content_digest()}
    try:
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as e:
        raise _store_error(store.path, e) from None
    store.close()
    staged = [atomic_write_text(folder / f".{RECORDS}.staged", records_text), atomic_write_text(folder / f".{RESULTS}.staged", results_text)]
    (folder / PUBLISHING).write_text(str(os.getpid()))
    (folder / INTEGRITY).unlink(missing_ok=True)
    final = folder / STORE
    for suffix in ("-wal", "-shm"):
        Path(str(final) + suffix).unlink(missing_ok=True)
    os.replace(store.path, final)
    os.replace(staged[0], folder / RECORDS)
    os.replace(staged[1], folder / RESULTS)
    atomic_write_text(folder / INTEGRITY, json.dumps(digests, indent=2) + "\n")
    (folder / PUBLISHING).unlink(missing_ok=True)
    store.path = final
    return digests


def seal_run(folder: str | Path) -> dict:
    """Write ``integrity.json`` for a run folder whose files were written otherwise (tests' synthetic runs,
    imports). Only for files you trust: it declares the present content to be the run's."""
    folder = Path(folder)
    digests: dict[str, str] = {"schema": INTEGRITY_SCHEMA, RESULTS: _sha256_text((folder / RESULTS).read_text("utf-8"))}
    if (folder / RECORDS).exists():
        digests[RECORDS] = hashlib.sha256((folder / RECORDS).read_bytes()).hexdigest()
    if (folder / STORE).exists():
        s = ResultsStore(folder, readonly=True)
        try:
            digests[STORE] = s.content_digest()
        finally:
            s.close()
    atomic_write_text(folder / INTEGRITY, json.dumps(digests, indent=2) + "\n")
    return digests


def write_results(folder: str | Path, doc: ResultsDoc) -> Path:
    """Write ``results.json`` atomically (strict JSON). A run's results are published by :func:`commit_run`."""
    return atomic_write_text(Path(folder) / RESULTS, dumps_strict(doc.to_dict(), indent=2) + "\n")


# ---------------------------------------------------------------- reading


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
    doc, _ = _read_results(folder)
    return doc


def _read_results(folder: Path) -> tuple[ResultsDoc, str]:
    if not folder.is_dir():
        raise LafError(f"run folder not found: {folder}", "pass the --out folder of a `laf eval` run")
    if not (folder / RESULTS).exists():
        raise LafError(f"{folder} holds no {RESULTS}: not a finished evaluation run", "run `laf eval --out` into it first (an interrupted run is finished by re-running it)")
    try:
        with open(folder / RESULTS, "rb") as f:  # check_run_files refused a FIFO or a device before this open
            data = f.read(MAX_RESULTS_BYTES + 1)
        if len(data) > MAX_RESULTS_BYTES:  # the per-item records live elsewhere: this is a summary and its provenance
            raise LafError(f"{folder / RESULTS} is larger than {MAX_RESULTS_BYTES:,} bytes: not a results document laf wrote",
                           "re-run the evaluation to rewrite it")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LafError(f"cannot read {folder / RESULTS}: {e}", "re-run the evaluation") from None
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise LafError(f"{folder / RESULTS} is not valid JSON ({e})", "re-run the evaluation to rewrite it") from None
    except RecursionError:
        raise LafError(f"{folder / RESULTS}: JSON nested too deeply", "re-run the evaluation to rewrite it") from None
    return ResultsDoc.from_dict(raw, str(folder / RESULTS)), text


RUN_FILES = (RESULTS, RECORDS, STORE, INTEGRITY, "verdict.json", "verdict.sig", "compare.json")
MAX_RESULTS_BYTES = 64 << 20


def check_run_files(folder: Path) -> None:
    """The files a reader takes from a run folder are plain files inside it: a symlink (to another run's records,
    to a system file) or a FIFO would make a verified-looking run read bytes from elsewhere, or hang."""
    if folder.is_symlink():
        raise LafError(f"run folder {folder} is a symlink", "pass the run folder itself, not a link to it")
    bad = []
    for name in RUN_FILES:
        try:  # one lstat per file: a file a publishing run swaps out between two calls is simply absent, never a crash
            st = (folder / name).lstat()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise LafError(f"cannot read run folder {folder}: {e}", "check the folder's permissions") from None
        if stat.S_ISLNK(st.st_mode):
            bad.append(f"{name} (symlink)")
        elif not stat.S_ISREG(st.st_mode):
            bad.append(f"{name} (not a regular file)")
        elif st.st_nlink > 1:
            bad.append(f"{name} (hard link)")
    if bad:
        raise LafError(f"run folder {folder} holds {', '.join(bad)}: a run's files must be its own plain files",
                       "re-run the evaluation into a fresh folder")


def check_integrity(folder: Path, found: dict[str, str]) -> str | None:
    """None when ``found`` (file -> digest) matches ``integrity.json``; else what is wrong, in words."""
    if (folder / PUBLISHING).exists():
        return "an evaluation is publishing into this folder now, or was killed while publishing"
    path = folder / INTEGRITY
    if not path.exists():
        return f"it has no {INTEGRITY} (written by an older laf, by hand, or the run was interrupted)"
    try:
        sealed = json.loads(path.read_text("utf-8"))
        if not isinstance(sealed, dict):
            raise ValueError("not an object")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"its {INTEGRITY} is unreadable ({e})"
    changed = [name for name, digest in found.items() if sealed.get(name) != digest]
    if changed:
        return f"{', '.join(changed)} changed after the run wrote {'them' if len(changed) > 1 else 'it'} (the digests in {INTEGRITY} do not match)"
    return None


def load_run(folder: str | Path, allow_modified: bool = False) -> tuple[ResultsDoc, list[ItemRecord]]:
    """Read a finished run: ``results.json`` (typed) and every per-item record (SQLite, else ``records.jsonl``),
    checked against ``integrity.json``. A mismatch is an error unless ``allow_modified`` (then the returned
    document's ``integrity`` says what was wrong). Needs no write access to the folder."""
    folder = Path(folder)
    check_run_files(folder)
    protect_inputs(*(folder / name for name in (RESULTS, RECORDS, STORE, INTEGRITY)))  # no -o of this process replaces them
    problem = None
    for attempt in range(3):  # a run publishing at this moment: read again
        try:
            results, records, problem = _read_once(folder)
        except FileNotFoundError as e:  # a publishing run swapped a file out while we read it
            problem = f"{Path(e.filename).name if e.filename else 'a file'} vanished while it was read (a run was publishing into the folder)"
            if attempt == 2:
                raise LafError(f"run folder {folder} changed while it was read: {problem}", "read it again when the run has finished publishing") from None
            time.sleep(0.5 * (attempt + 1))
            continue
        if problem is None or not (folder / PUBLISHING).exists():
            break
        time.sleep(0.5 * (attempt + 1))
    if problem is not None:
        if not allow_modified:
            raise LafError(f"run folder {folder} failed its integrity check: {problem}", _MODIFIED_FIX)
        results = dataclasses.replace(results, integrity="modified: " + problem)
    else:
        results = dataclasses.replace(results, integrity="verified")
    bad = sum(1 for r in records if _has_nonfinite(r.loglikelihoods) or _has_nonfinite(r.metrics))
    if bad:
        raise LafError(f"{folder}: {bad} per-item record(s) hold non-finite numbers (NaN or infinity)",
                       "re-run the evaluation; a model that produces non-finite scores is broken")
    return results, records


def _read_once(folder: Path) -> tuple[ResultsDoc, list[ItemRecord], str | None]:
    """One read of a run folder's results and records, and what its integrity check says (None: verified)."""
    results, results_text = _read_results(folder)
    found = {RESULTS: _sha256_text(results_text)}
    if (folder / STORE).exists():
        store = ResultsStore(folder, readonly=True)
        try:
            found[STORE] = store.content_digest()
            records = list(store.records())
        finally:
            store.close()
        if (folder / RECORDS).exists():  # the export is checked too: other tools read it
            found[RECORDS] = hashlib.sha256((folder / RECORDS).read_bytes()).hexdigest()
    elif (folder / RECORDS).exists():
        records = read_records_jsonl(folder / RECORDS)
        found[RECORDS] = hashlib.sha256((folder / RECORDS).read_bytes()).hexdigest()
    else:
        raise LafError(f"{folder} has results but no per-item records", "re-run the evaluation")
    return results, records, check_integrity(folder, found)
