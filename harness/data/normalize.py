"""Text normalisation shared by curation: Unicode NFC, line endings and whitespace."""

from __future__ import annotations

import re
import unicodedata

from .formats import Example

_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_BLANKS = re.compile(r"\n{3,}")


def normalize_text(s: str) -> str:
    """NFC, \\r\\n -> \\n, runs of spaces collapsed, lines right-stripped, at most one blank line, trimmed."""
    s = unicodedata.normalize("NFC", s).replace("\r\n", "\n").replace("\r", "\n")
    s = "\n".join(_SPACES.sub(" ", line).rstrip() for line in s.split("\n"))
    return _BLANKS.sub("\n\n", s).strip()


def normalize_example(ex: Example) -> Example:
    return Example(tuple((role, normalize_text(content)) for role, content in ex.messages), ex.line)


def dedupe_key(ex: Example) -> str:
    """The text exact duplicates are compared on: normalised and case-folded, roles kept."""
    return "\x1e".join(f"{role}\x1f{normalize_text(content).casefold()}" for role, content in ex.messages)
