"""Our response cache: SQLite, keyed by content, never lm-eval's.

A key is the sha256 of (model identity, request kind, request arguments): the
model identity covers base fingerprint, quantisation, adapter weights and
config, batch size, max length and scoring version, so two models sharing a
store can never see each other's answers (lm-eval's own cache is keyed by the
request only: EleutherAI/lm-evaluation-harness issues 2715 and 4063). Each
batch is committed as soon as it is scored, so a killed run (even
``kill -9``) loses at most the batch in flight.
"""

from __future__ import annotations

import json
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
  created REAL NOT NULL
);
"""


def request_key(identity: str, kind: str, args) -> str:
    return sha256_json({"model": identity, "kind": kind, "args": args})


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise LafError(f"cannot open the response cache {self.path}: {e}", "pass --cache with a writable path, or --no-cache") from e

    def get_many(self, keys: list[str]) -> dict[str, object]:
        out: dict[str, object] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, value FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
            for k, v in self.conn.execute(q, chunk):
                out[k] = json.loads(v)
        return out

    def put_many(self, items: list[tuple[str, str, object]]) -> None:
        now = time.time()
        with self.conn:  # one transaction per batch
            self.conn.executemany(
                "INSERT OR REPLACE INTO responses (key, kind, value, created) VALUES (?, ?, ?, ?)",
                [(k, kind, json.dumps(v), now) for k, kind, v in items],
            )

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.conn.close()


class NullCache:
    """``--no-cache``: same interface, remembers nothing."""

    path = None

    def get_many(self, keys):
        return {}

    def put_many(self, items):
        pass

    def __len__(self):
        return 0

    def close(self):
        pass
