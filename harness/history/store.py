"""The history store: open (refusing a database that is not ours or is newer than this laf), migrate, record one
run as one transaction, releases, and the queries behind ``laf history``.

SQLite (the default) runs in WAL mode with a busy timeout and takes its write lock at the start of a transaction
(``BEGIN IMMEDIATE``), so concurrent writers queue instead of failing; PostgreSQL serialises schema creation with
an advisory lock. A recorded run is written in one transaction: a writer killed half-way leaves nothing of it.
"""

from __future__ import annotations

import json
import math
import os
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


def _engine(url: str, readonly: bool = False, wal: bool = True):
    """The engine of a history URL. A SQLite reader opens the file read-only (``mode=ro``: a history on a read-only
    mount or in a read-only checkout is readable) and never changes it. A writer's connections switch the file to WAL
    mode; with ``wal=False`` only once :func:`_enable_wal` says so (:class:`HistoryStore` does, once the file is known
    to be ours: a refused file is left exactly as it was)."""
    from sqlalchemy import create_engine, event

    u = sqlalchemy_url(url)
    if S_is_sqlite(u):
        extra: dict = {}
        if readonly:
            import sqlite3
            from urllib.parse import quote

            file = Path(u.database).expanduser().resolve()
            uri = "file:" + quote(str(file), safe="/") + "?mode=ro"

            def connect():
                conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_MS / 1000, check_same_thread=False)
                try:
                    conn.execute("PRAGMA schema_version").fetchone()
                    return conn
                except sqlite3.OperationalError as e:
                    # a WAL-mode file in a folder this user cannot write, with no -shm beside it: SQLite cannot set up its
                    # shared memory. With no -wal file either, nobody is writing it and the file holds every commit:
                    # read it as the immutable file it is here
                    conn.close()
                    if "readonly" not in str(e) and "unable to open" not in str(e) or os.path.lexists(f"{file}-wal"):
                        raise
                return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=_BUSY_MS / 1000, check_same_thread=False)

            extra["creator"] = connect
        engine = create_engine(u, connect_args={"timeout": _BUSY_MS / 1000}, pool_size=1, **extra)  # one connection, reused: no PRAGMAs per record
        wal_state = {"on": wal and not readonly}
        engine.laf_wal = wal_state  # type: ignore[attr-defined]  # read by the listener below and by the writer

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below), pysqlite must not
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={_BUSY_MS}")  # per connection: writes nothing to the file
            cur.execute("PRAGMA synchronous=NORMAL")
            if wal_state["on"]:
                _set_wal(cur)
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

    def __init__(self, url: str, write: bool = False, upgrade: bool = False, create: bool | None = None):
        self.url = str(url)
        self.shown = redact(self.url)
        self._u = sqlalchemy_url(self.url)
        self.sqlite = S_is_sqlite(self._u)
        self.write = bool(write)
        create = self.write if create is None else (bool(create) and self.write)  # create=False: write to an existing history only
        self._held = None  # (connection, transaction) of hold()
        self.created = False  # this store made the SQLite file
        if self.sqlite:
            path = Path(self._u.database)
            try:
                exists, is_dir = path.exists(), path.is_dir()
            except (OSError, ValueError) as e:
                raise LafError(f"cannot look at the history store {self.shown}: {getattr(e, 'strerror', None) or e}", "give a readable --history path") from None
            if not exists:
                if not create:
                    raise NoHistory(f"no release history at {self.shown} yet", "record one: `laf gate`, `laf compare` and `laf run` write it (or pass --history URL)")
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise LafError(f"cannot create the folder of the history store {self.shown}: {e.strerror or e}", "choose a writable --history path") from None
                self.created = True
            elif is_dir:
                raise LafError(f"the history store {self.shown} is a folder, not a SQLite file", "give the path of a file, e.g. reports/history.sqlite")
        self.found_revision: str | None = None  # the schema revision the store had when opened (None: it was empty)
        self.engine = self._guard(lambda: _engine(self.url, readonly=self.sqlite and not self.write, wal=False), "open")
        try:
            self.revision = self._guard(lambda: self._check(write, upgrade, create), "open")
        except BaseException:
            self.engine.dispose()
            raise

    # ------------------------------------------------------------ errors

    def _fail(self, what: str, e: BaseException) -> LafError:
        """One error naming the store, with the fix for its cause: only a damaged file is to be moved aside."""
        orig = getattr(e, "orig", None) or e
        msg = scrub(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__, self.url)[:300]
        low = msg.lower()
        if not self.sqlite:
            return LafError(f"cannot {what} the history store {self.shown}: {msg}",
                            "check the URL, that the server runs and accepts this user and password (LAF_HISTORY_URL / --history / history:)")
        if "not a database" in low or "malformed" in low or "disk image" in low:
            return LafError(f"the history store {self.shown} is not a readable SQLite database ({msg})",
                            "if the file is damaged, move it aside (a fresh one is created) or restore it from a backup")
        if "locked" in low or "busy" in low:
            fix = ("another process (another laf, or a tool holding the file open) kept it locked for 60 s: wait for it to finish and "
                   "retry, or find and stop that writer; the history itself is fine")
        elif "readonly" in low or "read-only" in low or "read only" in low:
            fix = (f"make {self._u.database} and its folder writable by this user (SQLite also writes -wal and -shm files beside it), "
                   "or record elsewhere (--history PATH, or 'off')")
        elif "unable to open" in low or "permission" in low or "access" in low:
            fix = f"check that {self._u.database} and its folder exist and that this user may read them (and write them, to record)"
        elif "disk is full" in low or "no space" in low:
            fix = "free disk space, then retry: nothing was recorded"
        elif "constraint" in low:
            fix = "what was given to record is not a valid history value (see the message); the history is unchanged"
        else:
            fix = "check that the file is a lost-and-found history this user may read and write; if it is damaged, restore it from a backup"
        return LafError(f"cannot {what} the history store {self.shown}: {msg}", fix)

    def _guard(self, fn, what: str):
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return fn()
        except LafError:
            raise
        except _Damaged as e:
            raise LafError(f"the history store {self.shown} holds a damaged value in {e.where}: {e.why}",
                           "restore the store from a backup, or correct that row by hand (laf never writes such a value)") from None
        except SQLAlchemyError as e:
            raise self._fail(what, e) from None
        except (OSError, UnicodeError, ValueError) as e:  # driver-level problems (bad socket path, encoding)
            raise self._fail(what, e) from None

    # ------------------------------------------------------------ schema

    def _state(self, conn) -> tuple[str | None, list[str]]:
        """The schema revision (None: no version table) and the tables of the database. A version table that holds
        no revision, several, or a non-text one is damage, never read as "empty"."""
        from sqlalchemy import inspect, text

        tables = [t for t in inspect(conn).get_table_names() if not t.startswith("sqlite_")]
        if S.VERSION_TABLE not in tables:
            return None, tables
        rows = conn.execute(text(f"SELECT version_num FROM {S.VERSION_TABLE}")).fetchall()
        revs = {r[0] for r in rows}
        if len(revs) != 1 or not isinstance(next(iter(revs)), str) or not next(iter(revs)):
            found = "no revision" if not rows else f"{len(rows)} revisions" if len(revs) != 1 else "a revision that is not text"
            theirs = [t for t in tables if t != S.VERSION_TABLE]
            raise LafError(f"the history store {self.shown} has a damaged schema version table ({S.VERSION_TABLE} holds {found}"
                           + (f"; tables: {', '.join(theirs[:5])}" if theirs else "") + ")",
                           "restore the store from a backup; laf does not guess which schema the tables have")
        return next(iter(revs)), tables

    def _check(self, write: bool, upgrade: bool = False, create: bool = True) -> str:
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
            if tables:
                raise LafError(f"the history store {self.shown} has laf's tables ({', '.join(tables[:5])}) but no schema version table {S.VERSION_TABLE}",
                               "restore the store from a backup; laf does not guess which schema the tables have")
            if not write or not create:
                raise NoHistory(f"no release history at {self.shown} yet", "record one: `laf gate`, `laf compare` and `laf run` write it")
            self._wal()
            return self.migrate()[1]
        if rev not in revs:
            raise LafError(f"the history store {self.shown} has schema revision {rev}, newer than this laf knows (up to {head}); "
                           "this laf refuses to read or write it", "upgrade lost-and-found (pip install -U lost-and-found) and retry")
        if write:
            self._wal()  # ours: from here on it is written in WAL mode (set once; persistent in the file)
        if rev != head and upgrade:
            return self.migrate()[1]
        if rev != head:
            raise LafError(f"the history store {self.shown} has the older schema revision {rev} (this laf writes {head})",
                           "upgrade it: `laf history migrate` (with the same --history), then retry")
        return rev

    def _wal(self) -> None:
        """Switch a SQLite history that is ours (or new) to WAL mode: never before the file is known to be ours, never
        for reading (a refused or read-only file is left exactly as it was)."""
        if not self.sqlite or self.engine.laf_wal["on"]:
            return
        self.engine.laf_wal["on"] = True  # connections opened from now on set it themselves
        with self.engine.connect() as conn:
            cur = conn.connection.dbapi_connection.cursor()
            try:
                _set_wal(cur)
            finally:
                cur.close()

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
        with self._tx() as conn:
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

        name, version = split_candidate(candidate, strict=True)
        if not name:
            raise LafError(f"{candidate!r} names no adapter", "write NAME@VERSION, NAME or NAME@latest")

        def run():
            with self._tx() as conn:
                c = S.candidates
                q = select(c.c.candidate, c.c.version, c.c.run_id).join(S.runs, S.runs.c.run_id == c.c.run_id).where(c.c.name_key == S.key(name))
                if version is not None:
                    q = q.where(c.c.version == version)
                row = conn.execute(q.order_by(c.c.version.desc(), S.runs.c.recorded_at.desc(), S.runs.c.run_id.desc()).limit(1)).first()
                if row is None:
                    raise LafError(f"{candidate} has no recorded run in the history {self.shown}",
                                   "gate it first (`laf gate`, `laf run`): a release points at the run whose records it shipped with")
                cand, ver, run_id = _valid(row._mapping, c.name).values()
                if ver is None:
                    raise LafError(f"{cand} has no version: only NAME@VERSION adapters can be released (a release is one exact version)",
                                   "register the adapter and evaluate it as NAME@VERSION (laf eval --adapter NAME@VERSION), gate that, then release it")
                old = conn.execute(select(S.releases).where(S.releases.c.name_key == S.key(name), S.releases.c.version == ver)).mappings().first()
                if old is not None:
                    return {**_valid(old, S.releases.name), "already": True}
                new = {"name_key": S.key(name), "name": name, "version": ver, "candidate": cand, "run_id": run_id, "released_at": released_at,
                       "released_by": released_by, "git_commit": git_commit, "note": note}
                conn.execute(self._insert(S.releases).on_conflict_do_nothing(index_elements=["name_key", "version"]), new)
                return {**new, "already": False}

        out = self._guard(run, "write a release to")
        out.pop("name_key", None)
        return out

    # ------------------------------------------------------------ one transaction held across a gate

    def hold(self) -> None:
        """Open one write transaction that :meth:`record`, :meth:`release` and every read of this store join until
        :meth:`commit` or :meth:`rollback`: a gate records its run, signs and writes its verdict, and the run is in
        the history only if all of that succeeded (see :func:`harness.history.entry.held_records`)."""
        if self._held is not None:
            return

        def run():
            conn = self.engine.connect()
            try:
                conn.execution_options(laf_write=True)
                return conn, conn.begin()
            except BaseException:
                conn.close()
                raise

        self._held = self._guard(run, "write to")

    def commit(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        conn, tx = held
        try:
            self._guard(tx.commit, "write to")
        finally:
            conn.close()

    def rollback(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        conn, tx = held
        try:
            tx.rollback()
        except Exception:  # noqa: BLE001 - a connection that is gone has nothing committed to undo
            pass
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    @contextmanager
    def _conn(self):
        """A connection to read with: the held transaction's (it sees what this gate recorded), else a new one."""
        if self._held is not None:
            yield self._held[0]
            return
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _tx(self):
        """A write transaction: the held one (committed by :meth:`commit`), else one of its own, committed at the end."""
        if self._held is not None:
            yield self._held[0]
            return
        with _writing(self.engine) as conn:
            yield conn

    # ------------------------------------------------------------ reading

    def _read(self, fn):
        return self._guard(fn, "read")

    def last_release(self, name: str) -> dict | None:
        """The release that shipped last for adapter ``name`` (by release time), or None."""
        from sqlalchemy import select

        r = S.releases

        def run():
            with self._conn() as conn:
                row = conn.execute(select(r).where(r.c.name_key == S.key(name)).order_by(r.c.released_at.desc(), r.c.version.desc()).limit(1)).mappings().first()
                return None if row is None else {k: v for k, v in _valid(row, r.name).items() if k != "name_key"}

        return self._read(run)

    def candidate_row(self, run_id: str, candidate: str) -> dict | None:
        from sqlalchemy import select

        c = S.candidates

        def run():
            with self._conn() as conn:
                row = conn.execute(select(c).where(c.c.run_id == run_id, c.c.candidate_key == S.key(candidate))).mappings().first()
                if row is None:
                    return None
                suites = [_valid(s, S.suite_results.name) for s in conn.execute(select(S.suite_results).where(
                    S.suite_results.c.run_id == run_id, S.suite_results.c.model_key == S.key(candidate))).mappings().all()]
                return {**_valid(row, c.name), "suites": {s["suite"]: s for s in suites}}

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
            with self._conn() as conn:
                return [_valid(x, c.name) for x in conn.execute(q).mappings()]

        return self._read(run)

    def trend(self, name: str, suite: str | None = None) -> dict:
        """Adapter ``name``'s versions, oldest first: per version its latest recorded run, each suite's primary metric
        with its interval, the change against that run's baseline, the verdict, and the release if it shipped."""
        from sqlalchemy import select

        c, r, sr, rel = S.candidates, S.runs, S.suite_results, S.releases

        def run():
            with self._conn() as conn:
                rows = conn.execute(select(c, r.c.recorded_at, r.c.kind, r.c.git_commit).join(r, r.c.run_id == c.c.run_id)
                                    .where(c.c.name_key == S.key(name)).order_by(c.c.version, r.c.recorded_at, r.c.run_id)).mappings().all()
                latest: dict[Any, dict] = {}
                for row in rows:
                    latest[row["version"]] = _valid(row, c.name)  # ordered by time: the last one wins
                released = {x["version"]: {k: v for k, v in x.items() if k != "name_key"}
                            for x in (_valid(y, rel.name) for y in conn.execute(select(rel).where(rel.c.name_key == S.key(name))).mappings())}
                versions = []
                for ver in sorted(latest, key=lambda v: (v is None, v)):
                    row = latest[ver]
                    q = select(sr).where(sr.c.run_id == row["run_id"], sr.c.model_key == S.key(row["candidate"]))
                    if suite is not None:
                        q = q.where(sr.c.suite_key == S.key(suite))
                    suites = {s["suite"]: {k: s[k] for k in ("category", "metric", "value", "ci_low", "ci_high", "higher_is_better", "ideal", "n",
                                                              "improvement", "improvement_ci_low", "improvement_ci_high", "suite_fingerprint", "item_digest")}
                              for s in (_valid(y, sr.name) for y in conn.execute(q.order_by(sr.c.suite_key)).mappings())}
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
            with self._conn() as conn:
                return [_valid(x, sr.name) for x in conn.execute(q).mappings()]

        yield from self._read(run)

    def documents(self) -> list[dict]:
        """Every recorded run's full entry, oldest first (the MLflow export reads these)."""
        from sqlalchemy import select

        def run():
            with self._conn() as conn:
                rows = conn.execute(select(S.runs.c.run_id, S.runs.c.recorded_at, S.runs.c.document).order_by(S.runs.c.recorded_at, S.runs.c.run_id)).all()
            out = []
            for run_id, at, doc in rows:
                _valid({"run_id": run_id, "recorded_at": at, "document": doc}, S.runs.name)
                try:
                    d = json.loads(doc, parse_constant=_no_constant)
                except (ValueError, RecursionError):
                    d = None
                if not isinstance(d, dict):
                    raise LafError(f"the history store {self.shown}: run {run_id} holds a damaged document (laf_runs.document is not a JSON object "
                                   "of finite numbers)", "restore the store from a backup") from None
                out.append({**d, "run_id": run_id, "recorded_at": at})
            return out

        return self._read(run)

    def count(self) -> dict[str, int]:
        from sqlalchemy import func, select

        def run():
            with self._conn() as conn:
                return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in S.TABLES}

        return self._read(run)

    def close(self) -> None:
        self.rollback()
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def split_candidate(ref: str, strict: bool = False) -> tuple[str, int | None]:
    """``NAME@V`` -> (NAME, V); ``NAME`` or ``NAME@latest`` -> (NAME, None). V is ASCII digits only: a Unicode digit
    (``²``, a fullwidth ``１``) is never read as a number. ``strict`` (a ref the user typed to act on): a version that
    is not ASCII digits is refused rather than read as part of the name."""
    ref = str(ref)
    if ref.endswith("@latest"):
        return ref[: -len("@latest")], None
    if "@" in ref:
        name, v = ref.rsplit("@", 1)
        if v.isascii() and v.isdigit() and len(v) <= 18:
            return name, int(v)
        if strict and v and any(ch.isdigit() or ch.isnumeric() for ch in v):
            raise LafError(f"the version in {ref!r} is not a plain number (ASCII digits 0-9, at most 18)",
                           "write NAME@VERSION with ASCII digits, e.g. support@3, or NAME@latest")
    return ref, None


class _Damaged(Exception):
    """A value read back from the store that laf never writes (a hand-edited or damaged history)."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where, self.why = where, why


_LABELS = {"run_verdict": ("laf_runs", "verdict"), "run_exit_code": ("laf_runs", "exit_code"), "release_note": ("laf_releases", "note")}
_COLUMNS: dict[tuple[str, str], str] = {}  # (table, column) -> text | int | float | bool
_OWNER: dict[str, str] = {}  # column -> the first table that has it (a join's columns)
_PATHS = ("run_folder",)  # read back as paths: a NUL in one is damage


def _kind_of(tp) -> str:
    return "bool" if isinstance(tp, S.Boolean) else "int" if isinstance(tp, S.Integer) else "float" if isinstance(tp, S.Float) else "text"


def _valid(row, table: str) -> dict:
    """``row`` (a mapping read from ``table``, or a join led by it) as a dict, every value of the type laf writes in
    its column: text (no bytes), integers, finite numbers, booleans, paths without NUL. Anything else raises
    :class:`_Damaged` naming the table, the column and the run."""
    if not _COLUMNS:
        for t in S.TABLES:
            for column in t.columns:
                _COLUMNS[(t.name, column.name)] = _kind_of(column.type)
                _OWNER.setdefault(column.name, t.name)
    out = dict(row)
    for k, v in out.items():
        if v is None:
            continue
        owner, col = _LABELS.get(k) or ((table, k) if (table, k) in _COLUMNS else (_OWNER.get(k, table), k))
        kind = _COLUMNS.get((owner, col), "text")
        ok = (isinstance(v, str) and not (col in _PATHS and "\x00" in v) if kind == "text"
              else isinstance(v, int) and not isinstance(v, bool) if kind == "int"
              else isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)) if kind == "bool"
              else isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        if not ok:
            shown = (f"{len(v)} bytes" if isinstance(v, (bytes, bytearray, memoryview))
                     else "a path holding a NUL character" if isinstance(v, str) and kind == "text" else f"{type(v).__name__} {v!r:.40}")
            want = {"text": "text", "int": "an integer", "bool": "a boolean", "float": "a finite number"}[kind]
            run = out.get("run_id")
            where = f"{owner}.{col}" + (f" (run {str(run)[:40]})" if isinstance(run, str) else "")
            raise _Damaged(where, f"{shown} where laf writes {want}")
    return out


def _no_constant(name: str):
    raise ValueError(f"non-finite number {name}")


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
