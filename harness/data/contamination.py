"""Contamination: n-gram overlap between training examples and evaluation items.

Both sides are lower-cased word tokens (punctuation split off). An n-gram
(default 13 tokens) that occurs in a training example and in an eval item
contaminates that item; as in the Llama 2 report, each item also gets the
share of its tokens covered by such n-grams. Many eval fields (a question, an
answer) are shorter than 13 tokens and could never match, so a field of at
least ``min_tokens`` (default 8) but fewer than n tokens counts when it
appears whole in a training example. N-grams are hashed to 64 bits (BLAKE2b)
and looked up in a set: 100,000 examples against 5,000 items take seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from hashlib import blake2b

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


PROMPT_FIELDS = {"question", "query", "prompt", "instruction", "input", "context", "passage", "sentence", "text", "goal", "ctx", "sent_more", "sent_less", "template"}


def item_pieces(doc) -> list[tuple[str, bool]]:
    """Every string field of an eval item, each on its own, flagged when it is the item's prompt.

    Only prompt fields (question, passage, sentence, ...) may match whole when shorter than
    n: an answer or a choice appearing in training data is what a domain adapter learns,
    not a leaked test item."""
    out: list[tuple[str, bool]] = []

    def walk(v, prompt: bool):
        if isinstance(v, str):
            out.append((v, prompt))
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, prompt or (isinstance(k, str) and k.lower() in PROMPT_FIELDS))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x, False)

    if isinstance(doc, dict):
        for k, x in doc.items():
            walk(x, isinstance(k, str) and k.lower() in PROMPT_FIELDS)
    else:
        walk(doc, True)
    return out


def _window(length: int, is_prompt: bool, n: int, min_tokens: int) -> int:
    if length >= n:
        return n
    if is_prompt and length >= min_tokens:
        return length
    return 0


def _grams(toks: list[str], n: int) -> list[int]:
    # 64-bit keyed digests: a 32-bit hash collides tens of times between 4 M training and 50 k item n-grams
    return [int.from_bytes(blake2b("\x1f".join(toks[i : i + n]).encode("utf-8"), digest_size=8).digest(), "little") for i in range(len(toks) - n + 1)]


@dataclass
class ItemContamination:
    suite: str
    item: int
    tokens: int
    contaminated_tokens: int
    training_lines: list[int] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.contaminated_tokens / self.tokens if self.tokens else 0.0


def contamination(train_texts: list[tuple[int, str]], items: list[tuple[str, int, list]], n: int = 13, min_tokens: int = 8) -> list[ItemContamination]:
    """``train_texts``: (id, text); ``items``: (suite, index, pieces), a piece being a string or (string, is_prompt).

    Returns the contaminated items."""
    # every (piece, window length) an item can be matched on
    owner: dict[tuple[int, int], list[tuple[int, int, int]]] = {}  # (length, hash) -> [(item, piece, start)]
    pieces_tokens: list[list[list[str]]] = []
    lengths: set[int] = set()
    prompt_flags: list[list[bool]] = []
    for k, (_, _, pieces) in enumerate(items):
        pieces = [p if isinstance(p, tuple) else (p, True) for p in pieces]
        toks_list = [words(p) for p, _ in pieces]
        pieces_tokens.append(toks_list)
        prompt_flags.append([flag for _, flag in pieces])
        for j, toks in enumerate(toks_list):
            L = _window(len(toks), pieces[j][1], n, min_tokens)
            if not L:
                continue
            lengths.add(L)
            for start, g in enumerate(_grams(toks, L)):
                owner.setdefault((L, g), []).append((k, j, start))
    if not owner:
        return []
    hits: dict[int, set[int]] = {}
    matched: set[tuple[int, int]] = set()
    for line, text in train_texts:
        toks = words(text)
        for L in lengths:
            if len(toks) < L:
                continue
            for g in set(_grams(toks, L)):
                key = (L, g)
                where = owner.get(key)
                if where:
                    matched.add(key)
                    for k, _, _ in where:
                        hits.setdefault(k, set()).add(line)
    out = []
    for k, lines in sorted(hits.items()):
        toks_list = pieces_tokens[k]
        total = sum(len(t) for t in toks_list)
        covered = 0
        for toks, flag in zip(toks_list, prompt_flags[k]):
            L = _window(len(toks), flag, n, min_tokens)
            if not L:
                continue
            mask = [False] * len(toks)
            for i, g in enumerate(_grams(toks, L)):
                if (L, g) in matched:
                    for j in range(i, i + L):
                        mask[j] = True
            covered += sum(mask)
        suite, idx, _ = items[k]
        out.append(ItemContamination(suite, idx, total, covered, sorted(lines)))
    return out
