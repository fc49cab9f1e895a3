"""The history's tables (SQLAlchemy Core). The schema is versioned by Alembic (``migrations/``) in its own
version table, so a database that also holds another application's tables is told apart from ours."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import BigInteger, Boolean, Column, Float, Integer, MetaData, String, Table, Text
from sqlalchemy.types import TypeDecorator

VERSION_TABLE = "laf_schema_version"
metadata = MetaData()

_ENCODE = re.compile("[\\\\\x00\ud800-\udfff]")
_DECODE = re.compile(r"\\(\\|0|u[0-9a-f]{4})")


def _enc(m: re.Match) -> str:
    c = m.group(0)
    return "\\\\" if c == "\\" else "\\0" if c == "\x00" else f"\\u{ord(c):04x}"


def _dec(m: re.Match) -> str:
    g = m.group(1)
    return "\\" if g == "\\" else "\x00" if g == "0" else chr(int(g[1:], 16))


class SafeText(TypeDecorator):
    """Text of any content, stored so that every backend accepts it and it comes back identical: PostgreSQL's text
    cannot hold NUL and UTF-8 cannot hold a lone surrogate, so those two (and the escape character) are escaped
    reversibly. Values always travel as bound parameters."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = str(value)
        return _ENCODE.sub(_enc, value) if _ENCODE.search(value) else value

    def process_result_value(self, value, dialect):
        if not isinstance(value, str):  # None, or what a hand edit left (bytes, a number): the store refuses it by name
            return value
        return _DECODE.sub(_dec, value) if "\\" in value else value


runs = Table(
    "laf_runs", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # gate | compare | run
    Column("recorded_at", String(40), nullable=False),  # ISO 8601 UTC: sorts as time
    Column("created", SafeText),
    Column("recorded_by", SafeText),
    Column("git_commit", SafeText),
    Column("config_fingerprint", SafeText),
    Column("base_fingerprint", SafeText),
    Column("base_model", SafeText),
    Column("precision", SafeText),
    Column("run_folder", SafeText),
    Column("policy_source", SafeText),
    Column("verdict", SafeText),
    Column("exit_code", Integer),
    Column("laf_version", SafeText),
    Column("document", SafeText, nullable=False),  # the whole entry as JSON
)

candidates = Table(
    "laf_candidates", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("candidate_key", String(64), primary_key=True),  # key(candidate): names of any length stay indexable
    Column("candidate", SafeText, nullable=False),  # name@version
    Column("name_key", String(64), nullable=False),
    Column("name", SafeText, nullable=False),
    Column("version", BigInteger),
    Column("adapter_digest", SafeText),
    Column("records_digest", SafeText),
    Column("run_folder", SafeText),
    Column("baseline", SafeText),  # the model it was compared with: base, or NAME@V
    Column("baseline_kind", SafeText),  # base | released
    Column("verdict", SafeText),
    Column("exit_code", Integer),
)

suite_results = Table(
    "laf_suite_results", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("model_key", String(64), primary_key=True),
    Column("suite_key", String(64), primary_key=True),
    Column("model", SafeText, nullable=False),  # base, a candidate, or the released baseline
    Column("suite", SafeText, nullable=False),
    Column("category", SafeText),
    Column("suite_fingerprint", SafeText),
    Column("item_digest", SafeText),
    Column("n", Integer),
    Column("metric", SafeText),
    Column("value", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("higher_is_better", Boolean),
    Column("ideal", Float),
    Column("improvement", Float),  # vs the run's baseline, oriented (> 0 better); null for the baseline itself
    Column("improvement_ci_low", Float),
    Column("improvement_ci_high", Float),
)

rules = Table(
    "laf_rules", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("candidate_key", String(64), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("candidate", SafeText, nullable=False),
    Column("rule", SafeText),
    Column("suite", SafeText),
    Column("metric", SafeText),
    Column("kind", SafeText),
    Column("margin", Float),
    Column("required", Boolean),
    Column("status", SafeText),
    Column("improvement", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
)

releases = Table(
    "laf_releases", metadata,
    Column("name_key", String(64), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("name", SafeText, nullable=False),
    Column("candidate", SafeText, nullable=False),
    Column("run_id", String(64), nullable=False),  # the recorded run whose records are the release's
    Column("released_at", String(40), nullable=False),
    Column("released_by", SafeText),
    Column("git_commit", SafeText),
    Column("note", SafeText),
)

TABLES = (runs, candidates, suite_results, rules, releases)


def key(text: str) -> str:
    """The indexed key of a user string (sha256 of its UTF-8, surrogates escaped): PostgreSQL cannot index a 10 MB
    name, a digest it can."""
    return hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest()
