"""Where the release history lives: the URL (``--history``, ``history:`` in a run config, ``LAF_HISTORY_URL``,
default ``reports/history.sqlite``), how it is shown (password redacted, always) and the engine that opens it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

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


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)")
_QUERY_SECRET = re.compile(r"((?:^|[?&;])(?:password|passwd|pwd|sslpassword)=)[^&;#\s]*", re.IGNORECASE)


def _userinfo(text: str) -> tuple[str, str, str | None, str] | None:
    """(scheme, user, password, rest after the last ``@`` of the authority) of ``scheme://user[:password]@rest``, the
    password running to the LAST ``@`` before the query (a password holding a raw ``@`` is all of it); None when the URL
    names no user."""
    m = _SCHEME.match(text)
    if not m:
        return None
    rest = text[m.end():]
    q = rest.find("?")
    at = rest.rfind("@", 0, q if q >= 0 else len(rest))
    if at < 0 and q >= 0 and ":" in rest[:q] and "/" not in rest[:q]:
        at = rest.rfind("@")  # a password holding a raw "?": everything up to the last "@"
    if at < 0:
        return None
    user, sep, password = rest[:at].partition(":")
    return m.group(1), user, (password if sep else None), rest[at + 1:]


def _masked(text: str) -> str:
    """``text`` (a URL) with the password of its user part and any ``password=`` query parameter replaced by ``***``."""
    parts = _userinfo(text)
    if parts is not None and parts[2] is not None:
        scheme, user, _pw, rest = parts
        text = f"{scheme}{user}:***@{rest}"
    return _QUERY_SECRET.sub(r"\1***", text)


def passwords(url: str | None) -> list[str]:
    """Every password ``url`` carries (its user part's, raw and as SQLAlchemy reads it, and ``password=`` query values)."""
    if not url or "://" not in str(url):
        return []
    text = str(url)
    out = []
    parts = _userinfo(text)
    if parts is not None and parts[2]:
        out.append(parts[2])
    try:
        from sqlalchemy.engine import make_url

        u = make_url(text)
        if u.password:
            out.append(str(u.password))
        for k, v in u.query.items():
            if str(k).lower() in ("password", "passwd", "pwd", "sslpassword"):
                out.extend([v] if isinstance(v, str) else list(v))
    except Exception:  # noqa: BLE001 - an unparsable URL: the raw pieces above and the patterns in scrub() still apply
        pass
    for m in _QUERY_SECRET.finditer(text):
        value = text[m.end(1):m.end()]
        if value:
            out.append(value)
    # the longest first, so that a password holding another is replaced whole; also its unquoted form
    out += [unquote(p) for p in out]
    return sorted({p for p in out if p}, key=len, reverse=True)


def redact(url: str | None) -> str:
    """``url`` with its password replaced by ``***``: the user part's (up to the last ``@``, so a password holding a
    raw ``@`` is hidden whole) and any ``password=`` query parameter. A plain path is shown as it is."""
    if url is None:
        return "(history off)"
    text = str(url)
    if "://" not in text:
        return text
    return scrub(_masked(text), text)


def scrub(message: str, url: str | None) -> str:
    """A driver message with any password of ``url`` removed (drivers rarely echo it; this makes sure)."""
    out = str(message)
    for pw in passwords(url):
        out = out.replace(pw, "***")
    out = re.sub(r"(://[^/:@\s]*:)[^@/\s]*@", r"\1***@", out)
    return _QUERY_SECRET.sub(r"\1***", out)


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
    parts = _userinfo(text)
    if parts is not None and parts[2] is not None and u.password is not None and unquote(parts[2]) != str(u.password):
        raise LafError(f"the history URL {redact(text)} has a password holding a character a URL reserves ('@', '/', '?', '#' or ':')",
                       "percent-encode it (@ is %40, / is %2F, ? is %3F, # is %23, : is %3A), or pass it as PGPASSWORD / in ~/.pgpass")
    if backend == "sqlite":
        if u.host or u.port or u.username:
            raise LafError(f"the history URL {redact(text)} names a host; a SQLite history is a local file", "give sqlite:///PATH/history.sqlite")
        if _in_memory(u):
            raise LafError(f"the history URL {redact(text)} names no file (an in-memory history would be lost at exit)", "give sqlite:///PATH/history.sqlite")
        if str(u.database).lower().startswith("file:"):
            raise LafError(f"the history URL {redact(text)} is a SQLite URI (file:...), which the history does not take (it could name an "
                           "in-memory or shared-cache database)", "give sqlite:///PATH/history.sqlite, or the plain path")
        if u.query:
            raise LafError(f"the history URL {redact(text)} carries options ({', '.join(sorted(u.query))}); a SQLite history takes none",
                           "give sqlite:///PATH/history.sqlite")
        return u.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+psycopg")
    raise LafError(f"the history URL {redact(text)} is for '{backend}', which the history does not support", f"give {SUPPORTED}")


def _in_memory(u) -> bool:
    """Whether a sqlite URL is an in-memory database in any disguise: no file, ``:memory:``, or ``mode=memory`` in the
    name or as an option (``sqlite:///file:x?mode=memory&uri=true``)."""
    db = str(u.database or "").strip()
    mode = u.query.get("mode")
    modes = [mode] if isinstance(mode, str) else list(mode or [])
    return (not db or db == ":memory:" or "mode=memory" in db.lower() or any(str(m).lower() == "memory" for m in modes))


def is_sqlite(u) -> bool:
    return u.get_backend_name() == "sqlite"
