"""The release history: every gate, comparison and run recorded in a database (SQLite by default, PostgreSQL for
teams), releases marked, trends across versions, exports. Torch-free (tests/test_layers.py)."""

from .entry import TREND, build_entry, git_commit, record_outcome, who
from .store import HistoryStore, open_history, split_candidate
from .url import DEFAULT, ENV, redact, resolve_url

__all__ = ["DEFAULT", "ENV", "TREND", "HistoryStore", "build_entry", "git_commit", "open_history", "record_outcome", "redact", "resolve_url",
           "split_candidate", "who"]
