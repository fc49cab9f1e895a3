"""Token ids and labels for training: loss on response tokens only.

Shared by the trainer (``harness.train``) and curation (``laf data check``
measures token lengths under exactly the trainer's formatting and masking),
so it lives in ``harness.data``, which never imports ``harness.train``.

Each example's segments are tokenized separately, prompt tokens get label
-100, and the sequence is truncated on the right to ``max_length``. An example
left with no supervised token is dropped with a reason (never trained on as a
silent all-masked row, the trap of trl issue 4879).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .formats import Example
from .template import segments

IGNORE = -100
# No token of a real tokenizer spans more characters than this, so a segment cut to max_length * this many
# characters tokenizes to the same first max_length tokens: a 5 MB field costs what a 32 KB one does.
MAX_CHARS_PER_TOKEN = 64
MEASURE_TOKENS = 1 << 16  # lengths are measured up to this many tokens (curation reports "at least" beyond)


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    line: int
    replay: bool = False  # a general-purpose replay sequence (preserve.replay), not domain data

    @property
    def supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class Dropped:
    """A row left out of training: its line in the data file and why."""

    line: int
    reason: str


E = TypeVar("E")


@dataclass
class Tokenized(Generic[E]):
    """A tokenized training set, SFT examples and preference pairs alike (``TokenizedData``, ``TokenizedPairs``):
    the rows kept, the rows dropped with their reasons, and how many kept rows were truncated."""

    examples: list[E] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    truncated: int = 0

    def drop_summary(self) -> dict[str, int]:
        return dict(Counter(d.reason.split(" (")[0] for d in self.dropped))


TokenizedData = Tokenized[TokenizedExample]  # SFT examples


def tokenize_example(example: Example, tokenizer, max_length: int, use_chat_template: bool | None = None):
    """Return ``(TokenizedExample | None, reason | None, truncated: bool)``."""
    if not example.response_text.strip():
        return None, "empty response (nothing to learn but EOS)", False
    ids: list[int] = []
    labels: list[int] = []
    max_chars = min(max_length, MEASURE_TOKENS) * MAX_CHARS_PER_TOKEN
    for i, (text, supervised) in enumerate(segments(example, tokenizer, use_chat_template)):
        if len(ids) > max_length:
            break  # everything after is cut by the truncation below: never tokenize it
        text = text[:max_chars]  # bounded work and memory, whatever one field holds
        add_special = i == 0 and not (tokenizer.bos_token and text.startswith(tokenizer.bos_token))
        toks = tokenizer(text, add_special_tokens=add_special)["input_ids"]
        ids.extend(toks)
        labels.extend(toks if supervised else [IGNORE] * len(toks))
    full_len = len(ids)
    truncated = full_len > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    if not any(x != IGNORE for x in labels):
        if truncated:
            return None, f"no response tokens left after truncation (prompt fills max_length {max_length}; {full_len} tokens)", truncated
        return None, "empty response (no tokens to learn from)", truncated
    return TokenizedExample(ids, labels, example.line), None, truncated


def tokenize_examples(examples: list[Example], tokenizer, max_length: int, use_chat_template: bool | None = None) -> TokenizedData:
    out = TokenizedData()
    for ex in examples:
        tok, reason, truncated = tokenize_example(ex, tokenizer, max_length, use_chat_template)
        out.truncated += int(truncated)
        if tok is None:
            out.dropped.append(Dropped(ex.line, reason))
        else:
            out.examples.append(tok)
    return out
