"""Contamination: n-gram overlap between training examples and evaluation items.

Both sides are lower-cased word tokens (punctuation split off). An n-gram
(default 13 tokens) that occurs in a training example and in an eval item
contaminates that item; as in the Llama 2 report, each item also gets the
share of its tokens covered by such n-grams. Many eval fields (a question, an
answer) are shorter than 13 tokens and could never match, so a field of at
least ``min_tokens`` (default 8) but fewer than n tokens counts when it
appears whole in a training example. N-grams are CRC32-hashed and looked up
in a set: 100,000 examples against 5,000 items take seconds.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def item_pieces(doc) -> list[str]:
    """Every string field of an eval item (question, passage, choices, answers), each on its own."""
    out: list[str] = []

    def walk(v):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(doc)
    return out


def _grams(toks: list[str], n: int) -> list[int]:
    return [zlib.crc32("\x1f".join(toks[i : i + n]).encode("utf-8")) for i in range(len(toks) - n + 1)]


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


def contamination(train_texts: list[tuple[int, str]], items: list[tuple[str, int, list[str]]], n: int = 13, min_tokens: int = 8) -> list[ItemContamination]:
    """``train_texts``: (id, text); ``items``: (suite, index, text pieces). Returns the contaminated items."""
    # every (piece, window length) an item can be matched on
    owner: dict[tuple[int, int], list[tuple[int, int, int]]] = {}  # (length, hash) -> [(item, piece, start)]
    pieces_tokens: list[list[list[str]]] = []
    lengths: set[int] = set()
    for k, (_, _, pieces) in enumerate(items):
        toks_list = [words(p) for p in pieces]
        pieces_tokens.append(toks_list)
        for j, toks in enumerate(toks_list):
            if len(toks) >= n:
                L = n
            elif len(toks) >= min_tokens:
                L = len(toks)
            else:
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
        for toks in toks_list:
            L = n if len(toks) >= n else (len(toks) if len(toks) >= min_tokens else 0)
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
