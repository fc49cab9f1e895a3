"""The history store: open (refusing a database that is not ours or is newer than this laf), migrate, record one
run as one transaction, releases, and the queries behind ``laf history``.

SQLite (the default) runs in WAL mode with a busy timeout and takes its write lock at the start of a transaction
(``BEGIN IMMEDIATE``), so concurrent writers queue instead of failing; PostgreSQL serialises schema creation with
an advisory lock. A recorded run is written in one transaction: a writer killed half-way leaves nothing of it.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import LafError
from . import schema as S
from .url import redact, scrub, sqlalchemy_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ADVISORY_LOCK = 0x1AF0_4157  # pg_advisory_xact_lock key of schema creation and migration
_BUSY_MS = 60_000


def _known_revisions() -> tuple[list[str], str]:
    """Every schema revision this laf knows, oldest first, and the newest (head)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    revs = [r.revision for r in reversed(list(script.walk_revisions()))]
    return revs, revs[-1]


def _alembic_config(connection=None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _engine(url: str):
    from sqlalchemy import create_engine, event

    u = sqlalchemy_url(url)
    if S_is_sqlite(u):
        engine = create_engine(u, connect_args={"timeout": _BUSY_MS / 1000}, pool_size=1)  # one connection, reused: no PRAGMAs per record

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below), pysqlite must not
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
            _set_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # a writer takes the write lock at once (queueing on the busy timeout), never upgrades a read lock later
            # (which SQLite answers with "database is locked" at once); readers stay deferred and never block writers
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("laf_write") else "BEGIN")

        return engine
    # pooled: a connection (and its scram-sha-256 login) serves every record of this process; closed by close()
    return create_engine(u, connect_args={"connect_timeout": 10, "application_name": "lost-and-found"}, pool_size=1, pool_pre_ping=True)


def _set_wal(cur) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock. SQLite answers it with "database
    is locked" at once, without its busy handler, when several processes open a new file together (measured: 42 of
    240 openings of a fresh file by four processes at once); every other statement here waits on the busy timeout."""
    import sqlite3

    deadline, pause = time.monotonic() + _BUSY_MS / 1000, 0.002
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def S_is_sqlite(u) -> bool:  # noqa: N802 - reads as "schema: is sqlite"
    return u.get_backend_name() == "sqlite"


class NoHistory(LafError):
    """Reading a history that does not exist yet (no file, or an empty database): nothing was recorded."""


@contextmanager
def _writing(engine):
    """A write transaction (SQLite: ``BEGIN IMMEDIATE``), committed at the end, rolled back on an error."""
    with engine.connect() as conn:
        conn.execution_options(laf_write=True)
        with conn.begin():
            yield conn


class HistoryStore:
    """One history database. ``write=True`` creates an empty store (a new SQLite file, or the tables in an empty
    PostgreSQL database); reading never creates anything. Every problem is one :class:`LafError` naming the store
    with its password redacted."""

    def __init__(self, url: str, write: bool = False, upgrade: bool = False):
        self.url = str(url)
        self.shown = redact(self.url)
        self._u = sqlalchemy_url(self.url)
        self.sqlite = S_is_sqlite(self._u)
        if self.sqlite:
            path = Path(self._u.database)
            if not path.exists():
                if not write:
                    raise NoHistory(f"no release history at {self.shown} yet", "record one: `laf gate`, `laf compare` and `laf run` write it (or pass --history URL)")
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise LafError(f"cannot create the folder of the history store {self.shown}: {e.strerror or e}", "choose a writable --history path") from None
            elif path.is_dir():
                raise LafError(f"the history store {self.shown} is a folder, not a SQLite file", "give the path of a file, e.g. reports/history.sqlite")
        self.found_revision: str | None = None  # the schema revision the store had when opened (None: it was empty)
        self.engine = self._guard(lambda: _engine(self.url), "open")
        self.revision = self._guard(lambda: self._check(write, upgrade), "open")

    # ------------------------------------------------------------ errors

    def _fail(self, what: str, e: BaseException) -> LafError:
        orig = getattr(e, "orig", None) or e
        msg = scrub(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__, self.url)[:300]
        fix = ("check the URL, that the server runs and accepts this user and password (LAF_HISTORY_URL / --history / history:)"
               if not self.sqlite else "if the file is damaged, move it aside (a fresh one is created) or restore it from a backup")
        if self.sqlite and ("not a database" in msg or "malformed" in msg or "disk image" in msg):
            return LafError(f"the history store {self.shown} is not a readable SQLite database ({msg})", fix)
        return LafError(f"cannot {what} the history store {self.shown}: {msg}", fix)

    def _guard(self, fn, what: str):
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return fn()
        except LafError:
            raise
        except SQLAlchemyError as e:
            raise self._fail(what, e) from None
        except (OSError, UnicodeError, ValueError) as e:  # driver-level problems (bad socket path, encoding)
            raise self._fail(what, e) from None

    # ------------------------------------------------------------ schema

    def _state(self, conn) -> tuple[str | None, list[str]]:
        from sqlalchemy import inspect, text

        tables = [t for t in inspect(conn).get_table_names() if not t.startswith("sqlite_")]
        if S.VERSION_TABLE not in tables:
            return None, tables
        rows = conn.execute(text(f"SELECT version_num FROM {S.VERSION_TABLE}")).fetchall()
        return (rows[0][0] if rows else None), tables

    def _check(self, write: bool, upgrade: bool = False) -> str:
        revs, head = _known_revisions()
        with self.engine.connect() as conn:
            rev, tables = self._state(conn)
        self.found_revision = rev
        if rev is None:
            ours = {t.name for t in S.TABLES}
            foreign = [t for t in tables if t not in ours and t != S.VERSION_TABLE]
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise LafError(f"the database at {self.shown} holds tables of another application ({shown}), not a lost-and-found history",
                               "point --history / LAF_HISTORY_URL at an empty database or a history file of laf's")
            if not write:
                raise NoHistory(f"no release history at {self.shown} yet", "record one: `laf gate`, `laf compare` and `laf run` write it")
            return self.migrate()[1]
        if rev not in revs:
            raise LafError(f"the history store {self.shown} has schema revision {rev}, newer than this laf knows (up to {head}); "
                           "this laf refuses to read or write it", "upgrade lost-and-found (pip install -U lost-and-found) and retry")
        if rev != head and upgrade:
            return self.migrate()[1]
        if rev != head:
            raise LafError(f"the history store {self.shown} has the older schema revision {rev} (this laf writes {head})",
                           "upgrade it: `laf history migrate` (with the same --history), then retry")
        return rev

    def migrate(self) -> tuple[str | None, str]:
        """Create or upgrade the schema to this laf's newest revision; returns (revision before, after)."""
        from alembic import command

        revs, head = _known_revisions()

        def run():
            from sqlalchemy import text

            with _writing(self.engine) as conn:
                if not self.sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})
                before, tables = self._state(conn)
                if before is None and any(t not in {x.name for x in S.TABLES} for t in tables):
                    raise LafError(f"the database at {self.shown} holds tables of another application, not a lost-and-found history",
                                   "point --history / LAF_HISTORY_URL at an empty database")
                if before is not None and before not in revs:
                    raise LafError(f"the history store {self.shown} has schema revision {before}, newer than this laf knows (up to {head})",
                                   "upgrade lost-and-found, not the store")
                if before != head:
                    command.upgrade(_alembic_config(conn), "head")
                return before, head

        out = self._guard(run, "migrate")
        self.revision = head
        return out

    # ------------------------------------------------------------ writing

    def record(self, entry: dict) -> bool:
        """Write one run (see :func:`harness.history.entry.build_entry`) in one transaction; False when this run is
        already recorded (idempotent: the same run twice is one entry)."""
        rows = _rows(entry)
        return self._guard(lambda: self._write_rows(rows), "write to")

    def _write_rows(self, rows: dict) -> bool:
        with _writing(self.engine) as conn:
            res = conn.execute(self._insert(S.runs).on_conflict_do_nothing(index_elements=["run_id"]).returning(S.runs.c.run_id), rows["run"])
            if res.first() is None:  # recorded before (by us or a concurrent writer): one entry
                return False
            self._children(conn, rows)
        return True

    def _children(self, conn, rows: dict) -> None:
        for table, name in ((S.candidates, "candidates"), (S.suite_results, "suite_results"), (S.rules, "rules")):
            if rows[name]:
                conn.execute(table.insert(), rows[name])

    def _insert(self, table):
        if self.sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    def release(self, candidate: str, released_by: str, released_at: str, git_commit: str | None, note: str | None) -> dict:
        """Mark ``NAME@V`` (or ``NAME`` / ``NAME@latest``: the newest recorded version) released; it must have been
        recorded (its run folder is where a later gate finds its records). Releasing it again changes nothing."""
        from sqlalchemy import select

        name, version = split_candidate(candidate)

        def run():
            with _writing(self.engine) as conn:
                c = S.candidates
                q = select(c.c.candidate, c.c.version, c.c.run_id).join(S.runs, S.runs.c.run_id == c.c.run_id).where(c.c.name_key == S.key(name))
                if version is not None:
                    q = q.where(c.c.version == version)
                row = conn.execute(q.order_by(c.c.version.desc(), S.runs.c.recorded_at.desc(), S.runs.c.run_id.desc()).limit(1)).first()
                if row is None:
                    raise LafError(f"{candidate} has no recorded run in the history {self.shown}",
                                   "gate it first (`laf gate`, `laf run`): a release points at the run whose records it shipped with")
                cand, ver, run_id = row
                old = conn.execute(select(S.releases).where(S.releases.c.name_key == S.key(name), S.releases.c.version == ver)).mappings().first()
                if old is not None:
                    return {**dict(old), "already": True}
                new = {"name_key": S.key(name), "name": name, "version": ver, "candidate": cand, "run_id": run_id, "released_at": released_at,
                       "released_by": released_by, "git_commit": git_commit, "note": note}
                conn.execute(self._insert(S.releases).on_conflict_do_nothing(index_elements=["name_key", "version"]), new)
                return {**new, "already": False}

        out = self._guard(run, "write a release to")
        out.pop("name_key", None)
        return out

    # ------------------------------------------------------------ reading

    def _read(self, fn):
        return self._guard(fn, "read")

    def last_release(self, name: str) -> dict | None:
        """The release that shipped last for adapter ``name`` (by release time), or None."""
        from sqlalchemy import select

        r = S.releases

        def run():
            with self.engine.connect() as conn:
                row = conn.execute(select(r).where(r.c.name_key == S.key(name)).order_by(r.c.released_at.desc(), r.c.version.desc()).limit(1)).mappings().first()
                return None if row is None else {k: v for k, v in dict(row).items() if k != "name_key"}

        return self._read(run)

    def candidate_row(self, run_id: str, candidate: str) -> dict | None:
        from sqlalchemy import select

        c = S.candidates

        def run():
            with self.engine.connect() as conn:
                row = conn.execute(select(c).where(c.c.run_id == run_id, c.c.candidate_key == S.key(candidate))).mappings().first()
                if row is None:
                    return None
                suites = conn.execute(select(S.suite_results).where(S.suite_results.c.run_id == run_id, S.suite_results.c.model_key == S.key(candidate))).mappings().all()
                return {**dict(row), "suites": {s["suite"]: dict(s) for s in suites}}

        return self._read(run)

    def runs(self, name: str | None = None, limit: int = 50) -> list[dict]:
        """Recorded runs, newest first: one row per (run, candidate), ``name`` filtering by adapter name."""
        from sqlalchemy import select

        r, c = S.runs, S.candidates

        def run():
            q = (select(r.c.run_id, r.c.kind, r.c.recorded_at, r.c.git_commit, r.c.run_folder, r.c.verdict.label("run_verdict"), c.c.candidate, c.c.name,
                        c.c.version, c.c.baseline, c.c.baseline_kind, c.c.verdict, c.c.exit_code)
                 .join(c, c.c.run_id == r.c.run_id, isouter=True))
            if name is not None:
                q = q.where(c.c.name_key == S.key(name))
            q = q.order_by(r.c.recorded_at.desc(), r.c.run_id.desc(), c.c.version.desc()).limit(limit)
            with self.engine.connect() as conn:
                return [dict(x) for x in conn.execute(q).mappings()]

        return self._read(run)

    def trend(self, name: str, suite: str | None = None) -> dict:
        """Adapter ``name``'s versions, oldest first: per version its latest recorded run, each suite's primary metric
        with its interval, the change against that run's baseline, the verdict, and the release if it shipped."""
        from sqlalchemy import select

        c, r, sr, rel = S.candidates, S.runs, S.suite_results, S.releases

        def run():
            with self.engine.connect() as conn:
                rows = conn.execute(select(c, r.c.recorded_at, r.c.kind, r.c.git_commit).join(r, r.c.run_id == c.c.run_id)
                                    .where(c.c.name_key == S.key(name)).order_by(c.c.version, r.c.recorded_at, r.c.run_id)).mappings().all()
                latest: dict[Any, dict] = {}
                for row in rows:
                    latest[row["version"]] = dict(row)  # ordered by time: the last one wins
                released = {x["version"]: {k: v for k, v in dict(x).items() if k != "name_key"}
                            for x in conn.execute(select(rel).where(rel.c.name_key == S.key(name))).mappings()}
                versions = []
                for ver in sorted(latest, key=lambda v: (v is None, v)):
                    row = latest[ver]
                    q = select(sr).where(sr.c.run_id == row["run_id"], sr.c.model_key == S.key(row["candidate"]))
                    if suite is not None:
                        q = q.where(sr.c.suite_key == S.key(suite))
                    suites = {s["suite"]: {k: s[k] for k in ("category", "metric", "value", "ci_low", "ci_high", "higher_is_better", "ideal", "n",
                                                              "improvement", "improvement_ci_low", "improvement_ci_high", "suite_fingerprint", "item_digest")}
                              for s in conn.execute(q.order_by(sr.c.suite_key)).mappings()}
                    versions.append({"version": ver, "candidate": row["candidate"], "run_id": row["run_id"], "recorded_at": row["recorded_at"],
                                     "kind": row["kind"], "git_commit": row["git_commit"], "run_folder": row["run_folder"], "verdict": row["verdict"],
                                     "exit_code": row["exit_code"], "baseline": row["baseline"], "baseline_kind": row["baseline_kind"],
                                     "released": released.get(ver), "suites": suites})
                return {"schema": "laf.trend/1", "store": self.shown, "name": name, "suite": suite, "versions": versions}

        return self._read(run)

    def export_rows(self) -> Iterator[dict]:
        """One flat row per (run, model, suite) with the run's and the candidate's columns: the whole history for
        pandas or DuckDB. Releases are joined in as ``released_at`` / ``release_note``."""
        from sqlalchemy import and_, select

        r, c, sr, rel = S.runs, S.candidates, S.suite_results, S.releases

        def run():
            q = (select(r.c.run_id, r.c.kind, r.c.recorded_at, r.c.recorded_by, r.c.git_commit, r.c.config_fingerprint, r.c.base_fingerprint, r.c.base_model,
                        r.c.precision, r.c.run_folder, r.c.policy_source, r.c.verdict.label("run_verdict"), r.c.exit_code.label("run_exit_code"),
                        sr.c.model, sr.c.suite, sr.c.category, sr.c.suite_fingerprint, sr.c.item_digest, sr.c.n, sr.c.metric, sr.c.value, sr.c.ci_low,
                        sr.c.ci_high, sr.c.higher_is_better, sr.c.ideal, sr.c.improvement, sr.c.improvement_ci_low, sr.c.improvement_ci_high,
                        c.c.name, c.c.version, c.c.adapter_digest, c.c.records_digest, c.c.baseline, c.c.baseline_kind, c.c.verdict, c.c.exit_code,
                        rel.c.released_at, rel.c.released_by, rel.c.note.label("release_note"))
                 .join(sr, sr.c.run_id == r.c.run_id)
                 .join(c, and_(c.c.run_id == sr.c.run_id, c.c.candidate_key == sr.c.model_key), isouter=True)
                 .join(rel, and_(rel.c.name_key == c.c.name_key, rel.c.version == c.c.version), isouter=True)
                 .order_by(r.c.recorded_at, r.c.run_id, sr.c.model_key, sr.c.suite_key))
            with self.engine.connect() as conn:
                return [dict(x) for x in conn.execute(q).mappings()]

        yield from self._read(run)

    def documents(self) -> list[dict]:
        """Every recorded run's full entry, oldest first (the MLflow export reads these)."""
        from sqlalchemy import select

        def run():
            with self.engine.connect() as conn:
                rows = conn.execute(select(S.runs.c.run_id, S.runs.c.recorded_at, S.runs.c.document).order_by(S.runs.c.recorded_at, S.runs.c.run_id)).all()
            out = []
            for run_id, at, doc in rows:
                try:
                    d = json.loads(doc)
                except ValueError:
                    raise LafError(f"the history store {self.shown}: run {run_id} holds a damaged document", "restore the store from a backup") from None
                out.append({**d, "run_id": run_id, "recorded_at": at})
            return out

        return self._read(run)

    def count(self) -> dict[str, int]:
        from sqlalchemy import func, select

        def run():
            with self.engine.connect() as conn:
                return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in S.TABLES}

        return self._read(run)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def split_candidate(ref: str) -> tuple[str, int | None]:
    """``NAME@V`` -> (NAME, V); ``NAME`` or ``NAME@latest`` -> (NAME, None)."""
    ref = str(ref)
    if ref.endswith("@latest"):
        return ref[: -len("@latest")], None
    if "@" in ref:
        name, v = ref.rsplit("@", 1)
        if v.isdigit() and len(v) <= 18:
            return name, int(v)
    return ref, None


def _finite(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise LafError(f"a history entry holds a non-number where a number belongs ({str(v)[:40]!r})", "this is a bug in what was recorded") from None
    if not math.isfinite(f):
        raise LafError("refusing to record a non-finite number (NaN or infinity) into the history", "this is a bug upstream: non-finite scores are errors")
    return f


def _rows(entry: dict) -> dict:
    """The table rows of one entry (see :mod:`harness.history.entry`), checked: non-finite numbers refused."""
    run_id = entry["run_id"]
    try:
        document = json.dumps(entry, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise LafError("refusing to record a non-finite number (NaN or infinity) into the history", "this is a bug upstream: non-finite scores are errors") from None
    run = {"run_id": run_id, "kind": entry["kind"], "recorded_at": entry["recorded_at"], "document": document,
           **{k: entry.get(k) for k in ("created", "recorded_by", "git_commit", "config_fingerprint", "base_fingerprint", "base_model", "precision",
                                         "run_folder", "policy_source", "verdict", "laf_version")},
           "exit_code": entry.get("exit_code")}
    cands, suites, rules = [], [], []
    for m, ident in entry["models"].items():
        for s, x in (ident.get("suites") or {}).items():
            suites.append({"run_id": run_id, "model_key": S.key(m), "suite_key": S.key(s), "model": m, "suite": s, "category": x.get("category"),
                           "suite_fingerprint": x.get("fingerprint"), "item_digest": x.get("item_digest"), "n": x.get("n"), "metric": x.get("metric"),
                           "value": _finite(x.get("value")), "ci_low": _finite(x.get("ci_low")), "ci_high": _finite(x.get("ci_high")),
                           "higher_is_better": x.get("higher_is_better"), "ideal": _finite(x.get("ideal")), "improvement": _finite(x.get("improvement")),
                           "improvement_ci_low": _finite(x.get("improvement_ci_low")), "improvement_ci_high": _finite(x.get("improvement_ci_high"))})
    for c in entry["candidates"]:
        name, version = split_candidate(c["candidate"])
        ident = entry["models"][c["candidate"]]
        cands.append({"run_id": run_id, "candidate_key": S.key(c["candidate"]), "candidate": c["candidate"], "name_key": S.key(name), "name": name,
                      "version": version, "adapter_digest": ident.get("adapter_digest"), "records_digest": ident.get("records_digest"),
                      "run_folder": ident.get("run"), "baseline": c.get("baseline"), "baseline_kind": c.get("baseline_kind"), "verdict": c.get("verdict"),
                      "exit_code": c.get("exit_code")})
        for i, rl in enumerate(c.get("rules") or []):
            rules.append({"run_id": run_id, "candidate_key": S.key(c["candidate"]), "position": i, "candidate": c["candidate"], "rule": rl.get("rule"),
                          "suite": rl.get("suite"), "metric": rl.get("metric"), "kind": rl.get("kind"), "margin": _finite(rl.get("margin")),
                          "required": rl.get("required"), "status": rl.get("status"), "improvement": _finite(rl.get("improvement")),
                          "ci_low": _finite(rl.get("ci_low")), "ci_high": _finite(rl.get("ci_high"))})
    return {"run": run, "candidates": cands, "suite_results": suites, "rules": rules}


def open_history(url: str, write: bool = False) -> HistoryStore:
    return HistoryStore(url, write=write)
