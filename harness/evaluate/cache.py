"""Our response cache: SQLite, keyed by content, never lm-eval's.

A key is the sha256 of (model identity, request kind, request arguments): the
model identity covers base fingerprint, quantisation, adapter weights and
config, batch size, max length and scoring version, so two models sharing a
store can never see each other's answers (lm-eval's own cache is keyed by the
request only: EleutherAI/lm-evaluation-harness issues 2715 and 4063). Each
batch is committed as soon as it is scored, so a killed run (even
``kill -9``) loses at most the batch in flight.

Each row carries ``seal``: the sha256 of (key, kind, value text), checked on
read. A value edited in place (every score rewritten to one plausible number),
moved to another key, or a row from a cache written before the seal, is a
miss: re-scored, overwritten, and counted (``bad_rows``, the run's
``requests.cache_rejected``). Like ``integrity.json`` it catches edits, not a
writer who recomputes the digest: the cache is a speed-up, never evidence.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

from ..errors import LafError
from ..io import sha256_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
  key TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  value TEXT NOT NULL,
  created REAL NOT NULL,
  seal TEXT
);
"""


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def valid_value(kind: str, v) -> bool:
    """A cached (or about to be cached) response of ``kind`` has the shape and finite values scoring produces."""
    if kind == "loglikelihood":
        return isinstance(v, list) and len(v) == 2 and _finite(v[0]) and v[0] <= 0 and isinstance(v[1], bool)
    if kind == "loglikelihood_rolling":
        return _finite(v) and v <= 0
    if kind == "generate_until":
        return isinstance(v, str)
    return False


def _reject_constant(name: str):
    raise ValueError(name)


def request_key(identity: str, kind: str, args) -> str:
    return sha256_json({"model": identity, "kind": kind, "args": args})


def row_seal(key: str, kind: str, value_text: str) -> str:
    """The digest that binds a cached value to its key (see the module doc)."""
    return sha256_json(["laf.cache/1", key, kind, value_text])


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
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
            self.conn.execute("SELECT key, kind, value FROM responses LIMIT 1").fetchall()
        except (OSError, sqlite3.Error) as e:
            raise LafError(f"cannot use the response cache {self.path}: {e}",
                           "delete or move that file (it is only a cache), pass --cache with another path, or --no-cache") from None
        self.bad_rows = 0  # rows that failed validation on read (treated as misses, re-scored)

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
        try:
            with self.conn:  # one transaction per batch
                self.conn.executemany("INSERT OR REPLACE INTO responses (key, kind, value, created, seal) VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as e:
            raise LafError(f"cannot write to the response cache {self.path} ({e})",
                           "free disk space or fix permissions, delete the cache file, or pass --no-cache") from None

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

    def __len__(self):
        return 0

    def close(self):
        pass
