"""Where the release history lives: the URL (``--history``, ``history:`` in a run config, ``LAF_HISTORY_URL``,
default ``reports/history.sqlite``), how it is shown (password redacted, always) and the engine that opens it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .. import defaults
from ..errors import LafError

ENV = "LAF_HISTORY_URL"
DEFAULT = defaults.HISTORY
OFF = ("off", "none", "false", "no")  # recording switched off
SUPPORTED = "a path to a SQLite file, sqlite:///PATH, or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB"


def resolve_url(explicit: str | None = None, config: str | None = None, default: str | Path = DEFAULT) -> str | None:
    """The history URL in force: ``explicit`` (a command's --history), else the run config's ``history:``, else
    ``LAF_HISTORY_URL``, else ``default``. None when recording is switched off (``off``)."""
    for value in (explicit, config, os.environ.get(ENV)):
        if value is not None and str(value).strip() != "":
            v = str(value).strip()
            return None if v.lower() in OFF else v
    return str(default)


def redact(url: str | None) -> str:
    """``url`` with its password replaced by ``***`` (SQLAlchemy's own rendering where the URL parses)."""
    if url is None:
        return "(history off)"
    text = str(url)
    if "://" not in text:
        return text
    try:
        from sqlalchemy.engine import make_url

        return make_url(text).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is still shown without what looks like a password
        return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", text)


def scrub(message: str, url: str | None) -> str:
    """A driver message with any password of ``url`` removed (drivers rarely echo it; this makes sure)."""
    try:
        from sqlalchemy.engine import make_url

        pw = make_url(str(url)).password if url and "://" in str(url) else None
    except Exception:  # noqa: BLE001
        pw = None
    out = str(message)
    if pw:
        out = out.replace(str(pw), "***")
    return re.sub(r"(://[^/:@\s]*:)[^@/\s]*@", r"\1***@", out)


def sqlalchemy_url(url: str):
    """The SQLAlchemy URL of a history location: a plain path is a SQLite file; ``postgresql://`` uses psycopg 3."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = str(url)
    if "://" not in text:
        if "\x00" in text:
            raise LafError("the history path contains a NUL character", f"give {SUPPORTED}")
        return make_url("sqlite://").set(database=str(Path(text).expanduser()))
    try:
        u = make_url(text)
    except (ArgumentError, ValueError) as e:
        raise LafError(f"the history URL {redact(text)} is not a valid database URL ({scrub(str(e), text)[:200]})", f"give {SUPPORTED}") from None
    backend = u.get_backend_name()
    if backend == "sqlite":
        if not u.database or u.database == ":memory:":
            raise LafError(f"the history URL {redact(text)} names no file (an in-memory history would be lost at exit)", "give sqlite:///PATH/history.sqlite")
        return u.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+psycopg")
    raise LafError(f"the history URL {redact(text)} is for '{backend}', which the history does not support", f"give {SUPPORTED}")


def is_sqlite(u) -> bool:
    return u.get_backend_name() == "sqlite"
