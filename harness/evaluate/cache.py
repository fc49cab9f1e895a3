"""Our response cache: SQLite, keyed by content, never lm-eval's.

A key is the sha256 of (model identity, request kind, request arguments): the
model identity covers base fingerprint, quantisation, adapter weights and
config, batch size, max length and scoring version, so two models sharing a
store can never see each other's answers (lm-eval's own cache is keyed by the
request only: EleutherAI/lm-evaluation-harness issues 2715 and 4063). Each
batch is committed as soon as it is scored, so a killed run (even
``kill -9``) loses at most the batch in flight.

Beside the responses, the same file keeps each finished (model, suite): its
records, aggregates and suite description (table ``suite_results``), keyed by
the model identity, the suite's content and the code that turns responses into
records (:func:`suite_result_key`). A re-run whose every (model, suite) is
there is answered from those rows alone: no lm-eval task is built and no model
stack is imported, so it costs about a second. A row that fails validation is
a miss, and the run takes the response-level path (which rewrites the row).

Each row carries ``seal``: the sha256 of (key, kind, value text), checked on
read. A value edited in place (every score rewritten to one plausible number),
moved to another key, or a row from a cache written before the seal, is a
miss: re-scored, overwritten, and counted (``bad_rows``, the run's
``requests.cache_rejected``). Like ``integrity.json`` it catches edits, not a
writer who recomputes the digest: the cache is a speed-up, never evidence.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import math
import sqlite3
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import LafError
from ..io import sha256_json
from ..results import INTEGRITY, RESULTS, STORE, ItemRecord, SuiteMeta
from ..results.checks import is_finite_number

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
  key TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  value TEXT NOT NULL,
  created REAL NOT NULL,
  seal TEXT
);
CREATE TABLE IF NOT EXISTS suite_results (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  created REAL NOT NULL,
  seal TEXT
);
"""
SUITE_RESULT_VERSION = "laf-suite-result-1"
SUITE_RESULT_KIND = "suite_result"  # the kind a stored suite result's seal binds
# packages whose code shapes a suite's records from its responses (task building, filters, metrics, templates)
SUITE_RESULT_PACKAGES = ("lm_eval", "datasets", "evaluate", "jinja2", "numpy")
HARNESS_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RequestStats:
    requests: int = 0
    cache_hits: int = 0
    computed: int = 0
    forward_batches: int = 0
    cache_rejected: int = 0  # cached rows that failed their seal or shape check: re-scored
    preamble_reused: int = 0  # computed requests that ran on a shared preamble's states (scoring.py)
    preamble_fallback: int = 0  # computed requests whose tokens do not start with their call's preamble: scored in full

    def add(self, other: "RequestStats") -> None:
        self.preamble_reused += other.preamble_reused
        self.preamble_fallback += other.preamble_fallback
        self.cache_rejected += other.cache_rejected
        self.requests += other.requests
        self.cache_hits += other.cache_hits
        self.computed += other.computed
        self.forward_batches += other.forward_batches


_finite = is_finite_number


def valid_value(kind: str, v) -> bool:
    """A cached (or about to be cached) response of ``kind`` has the shape and finite values scoring produces."""
    if kind == "loglikelihood":
        return isinstance(v, list) and len(v) == 2 and _finite(v[0]) and v[0] <= 0 and isinstance(v[1], bool)
    if kind == "loglikelihood_rolling":
        return _finite(v) and v <= 0
    if kind == "generate_until":
        return isinstance(v, str)
    if kind == "adapter_probe":
        from .identity import valid_figure

        return valid_figure(v)
    return False


def _reject_constant(name: str):
    raise ValueError(name)


def request_key(identity: str, kind: str, args) -> str:
    return sha256_json({"model": identity, "kind": kind, "args": args})


@lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of the harness's Python sources and the versions of the packages that shape records: any change
    to the code invalidates the stored suite results (never the responses, which only scoring changes).
    Tens of milliseconds for the whole package (143 files, 1 MB), once per process."""
    h = hashlib.sha256(SUITE_RESULT_VERSION.encode())
    for p in sorted(HARNESS_ROOT.rglob("*.py")):
        h.update(p.relative_to(HARNESS_ROOT).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    for name in SUITE_RESULT_PACKAGES:
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            version = "-"
        h.update(f"{name}={version}\0".encode())
    return h.hexdigest()


def suite_result_key(identity: str, suite_content: dict) -> str:
    """The key of one (model, suite) result: the model identity (base, load, adapter, scoring settings), the
    suite's content (its description, spec, data digest, limit and seed) and :func:`code_digest`."""
    return sha256_json({"model": identity, "suite": suite_content, "code": code_digest()})


def _has_nonfinite(v) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, dict):
        return any(_has_nonfinite(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_nonfinite(x) for x in v)
    return False


_RECORD_FIELDS = {"model": str, "suite": str, "category": str, "doc_id": int, "doc_hash": str, "prompt_hash": str,
                  "metrics": dict, "doc": dict}


def valid_suite_result(v) -> bool:
    """A stored suite result has the shape the engine writes, with finite numbers only (``1e999`` parses to
    infinity, so a hand-edited row could carry one)."""
    if not isinstance(v, dict) or set(v) != {"records", "results", "breakdown", "meta", "requests"}:
        return False
    records, requests = v["records"], v["requests"]
    if not isinstance(records, list) or not records or isinstance(requests, bool) or not isinstance(requests, int) or requests < 0:
        return False
    if not isinstance(v["results"], dict) or not isinstance(v["meta"], dict) or not (v["breakdown"] is None or isinstance(v["breakdown"], dict)):
        return False
    for r in records:
        if not isinstance(r, dict) or any(not isinstance(r.get(k), t) or (t is int and isinstance(r.get(k), bool)) for k, t in _RECORD_FIELDS.items()):
            return False
    if len({r["suite"] for r in records}) != 1:
        return False  # one suite's items (which suite: the engine checks it is the one asked for); a doc_id may repeat: one record per filter
    try:  # what the run folder's reader will refuse (a metric that is not a number, a doc nested too deep) is a miss here
        for r in records:
            ItemRecord.from_dict(r)
    except LafError:
        return False
    for m in v["results"].values():  # {metric: {value, filter, stderr, n}} as suite_aggregates writes it
        if not isinstance(m, dict) or not all(m.get(k) is None or (isinstance(m[k], (int, float)) and not isinstance(m[k], bool)) for k in ("value", "stderr")):
            return False
        if isinstance(m.get("n"), bool) or not isinstance(m.get("n"), int):
            return False
    try:
        SuiteMeta.from_dict(v["meta"])
    except LafError:
        return False
    return not _has_nonfinite(v)


def row_seal(key: str, kind: str, value_text: str) -> str:
    """The digest that binds a cached value to its key (see the module doc)."""
    return sha256_json(["laf.cache/1", key, kind, value_text])


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.name == STORE and any((self.path.parent / f).exists() for f in (RESULTS, INTEGRITY)):
            raise LafError(f"{self.path} is a finished run's results store, not a response cache: writing the cache there would change the run",
                           "pass --cache with a path of its own (the default is shared by every run)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
            cols = {r[1] for r in self.conn.execute("PRAGMA table_info(responses)")}
            if "seal" not in cols and {"key", "kind", "value", "created"} <= cols:
                self.conn.execute("ALTER TABLE responses ADD COLUMN seal TEXT")  # a cache from before the seal: its rows are re-scored
                cols.add("seal")
            if not {"key", "kind", "value", "created", "seal"} <= cols:
                raise sqlite3.DatabaseError(f"its 'responses' table has other columns ({', '.join(sorted(cols))}): not a laf response cache")
            cols = {r[1] for r in self.conn.execute("PRAGMA table_info(suite_results)")}
            if "seal" not in cols and {"key", "value", "created"} <= cols:
                self.conn.execute("ALTER TABLE suite_results ADD COLUMN seal TEXT")  # stored before the seal: re-derived from the responses
                cols.add("seal")
            if not {"key", "value", "created", "seal"} <= cols:
                raise sqlite3.DatabaseError(f"its 'suite_results' table has other columns ({', '.join(sorted(cols))}): not a laf response cache")
            self.conn.execute("SELECT key, kind, value FROM responses LIMIT 1").fetchall()
            self.conn.execute("SELECT key, value FROM suite_results LIMIT 1").fetchall()
        except (OSError, sqlite3.Error) as e:
            raise LafError(f"cannot use the response cache {self.path}: {e}",
                           "delete or move that file (it is only a cache), pass --cache with another path, or --no-cache") from None
        self.bad_rows = 0  # rows that failed validation on read (treated as misses, re-scored)
        self.locked: str | None = None  # another process held the cache when a write was due: writes skipped since

    def _write_failed(self, e: sqlite3.Error) -> None:
        """A write the cache could not take. Locked by another process (after the 60 s busy wait): the run goes on
        without storing (the cache is only a speed-up) and says so; anything else is the disk or the file: an error."""
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e).lower():
            self.locked = str(e)
            return
        raise LafError(f"cannot write to the response cache {self.path} ({e})",
                       "free disk space or fix permissions, delete the cache file, or pass --no-cache") from None

    def get_many(self, keys: list[str]) -> dict[str, object]:
        out: dict[str, object] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, kind, value, seal FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
            try:
                rows = self.conn.execute(q, chunk).fetchall()
            except sqlite3.Error as e:
                raise LafError(f"the response cache {self.path} cannot be read ({e})",
                               "delete or move that file (it is only a cache), or pass --no-cache") from None
            for k, kind, v, seal in rows:
                try:
                    sealed = isinstance(v, str) and isinstance(kind, str) and seal == row_seal(k, kind, v)
                    value = json.loads(v, parse_constant=_reject_constant) if sealed else None
                except (ValueError, RecursionError):
                    value = None
                if valid_value(kind, value):
                    out[k] = value
                else:
                    self.bad_rows += 1  # a miss: the request is scored again and the row overwritten
        return out

    def put_many(self, items: list[tuple[str, str, object]]) -> None:
        now = time.time()
        texts = [(k, kind, json.dumps(v)) for k, kind, v in items if valid_value(kind, v)]  # never cache a broken score
        rows = [(k, kind, t, now, row_seal(k, kind, t)) for k, kind, t in texts]
        if self.locked:
            return
        try:
            with self.conn:  # one transaction per batch
                self.conn.executemany("INSERT OR REPLACE INTO responses (key, kind, value, created, seal) VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as e:
            self._write_failed(e)

    def get_suite_results(self, keys: list[str]) -> dict[str, dict]:
        """The stored (model, suite) results among ``keys`` that pass :func:`valid_suite_result`."""
        out: dict[str, dict] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            try:
                rows = self.conn.execute(f"SELECT key, value, seal FROM suite_results WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            except sqlite3.Error as e:
                raise LafError(f"the response cache {self.path} cannot be read ({e})",
                               "delete or move that file (it is only a cache), or pass --no-cache") from None
            for k, v, seal in rows:
                try:  # sealed like a response row: an edited or moved stored result is a miss, counted
                    sealed = isinstance(v, str) and seal == row_seal(k, SUITE_RESULT_KIND, v)
                    value = json.loads(v, parse_constant=_reject_constant) if sealed else None
                    ok = valid_suite_result(value)
                except (ValueError, RecursionError):  # not JSON, or nested too deep to check
                    ok = False
                if ok:
                    out[k] = value
                else:
                    self.bad_rows += 1  # a miss: the suite is scored from the responses and the row rewritten
        return out

    def put_suite_result(self, key: str, value: dict) -> None:
        try:
            if not valid_suite_result(value):
                return
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return  # a value JSON cannot hold exactly: the response-level path serves this suite next time
        if self.locked:
            return
        try:
            with self.conn:
                self.conn.execute("INSERT OR REPLACE INTO suite_results (key, value, created, seal) VALUES (?, ?, ?, ?)",
                                  (key, text, time.time(), row_seal(key, SUITE_RESULT_KIND, text)))
        except sqlite3.Error as e:
            self._write_failed(e)

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.conn.close()


class NullCache:
    """``--no-cache``: same interface, remembers nothing."""

    path = None
    bad_rows = 0

    def get_many(self, keys):
        return {}

    def put_many(self, items):
        pass

    def get_suite_results(self, keys):
        return {}

    def put_suite_result(self, key, value):
        pass

    def __len__(self):
        return 0

    def close(self):
        pass
