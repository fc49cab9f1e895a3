"""Curation at scale: exact + near-duplicate detection and 13-gram contamination on 100,000 generated
examples against 5,000 eval items, next to a pairwise (quadratic) near-duplicate baseline on a sample.

The examples are built from a vocabulary with planted exact duplicates, near
duplicates (one word changed) and copied eval items, so the run also prints
what it found. Target: at most 2 minutes on 2 cores for dedupe + contamination.
Usage: python benchmarks/curation.py [--examples 100000] [--items 5000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    """Pronounceable pseudo-words: a vocabulary as varied as real support tickets, with no network."""
    c, v = "bcdfghjklmnprstvwz", "aeiou"
    return sorted({"".join(rng.choice(c) + rng.choice(v) for _ in range(rng.randint(1, 4))) for _ in range(size)})


WORDS = vocabulary(random.Random(42))


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    # Zipf-like word frequencies, as in natural text
    return " ".join(WORDS[min(len(WORDS) - 1, int(rng.paretovariate(1.1)) - 1)] if rng.random() < 0.5 else rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=5_000)
    args = ap.parse_args()
    from harness.data.contamination import contamination
    from harness.data.dedupe import near_duplicates, shingles
    from harness.data.formats import to_example
    from harness.data.normalize import dedupe_key, normalize_text

    rng = random.Random(0)
    items = [(f"suite{i % 5}", i, [sentence(rng, 14, 30)]) for i in range(args.items)]
    rows = [{"instruction": sentence(rng, 8, 30) + "?", "output": sentence(rng, 10, 60) + "."} for _ in range(args.examples)]
    planted = {"exact": 0, "near": 0, "contaminated": 0}
    for k in range(0, args.examples, 1000):  # 1 % planted of each kind
        rows[k + 1] = dict(rows[k])
        planted["exact"] += 1
        w = rows[k + 2]["output"].split()
        rows[k + 3] = {"instruction": rows[k + 2]["instruction"], "output": " ".join(w[:-1] + ["changed"]) + "."}
        planted["near"] += 1
        rows[k + 4] = {"instruction": "Explain: " + items[(k // 1000) % len(items)][2][0], "output": "ok."}
        planted["contaminated"] += 1
    examples = [to_example(r, "alpaca", i + 1) for i, r in enumerate(rows)]
    print(f"{len(examples):,} examples, {len(items):,} eval items; planted {planted}", flush=True)

    t0 = time.perf_counter()
    seen, dups = set(), set()
    for i, e in enumerate(examples):
        k = dedupe_key(e)
        if k in seen:
            dups.add(i)
        seen.add(k)
    exact = len(dups)
    t1 = time.perf_counter()
    texts = [normalize_text(e.text).casefold() for e in examples]
    clusters = near_duplicates(texts, 0.8, exclude=dups)  # as `laf data`: exact duplicates are already out
    t2 = time.perf_counter()
    hits = contamination([(i, e.text) for i, e in enumerate(examples)], items, 13)
    t3 = time.perf_counter()
    near = sum(len(c.members) for c in clusters)
    print(f"exact duplicates:  {exact:>7,} found in {t1 - t0:6.1f} s")
    print(f"near duplicates:   {near:>7,} found in {t2 - t1:6.1f} s  (MinHash LSH, verified Jaccard >= 0.8)")
    print(f"contaminated items:{len(hits):>7,} found in {t3 - t2:6.1f} s  (13-grams)")
    total = t3 - t0
    print(f"total dedupe + contamination: {total:.1f} s (target <= 120 s on 2 cores)")

    # the quadratic baseline: every pair's Jaccard, on a sample, extrapolated
    sample = texts[:2000]
    sets = [shingles(t) for t in sample]
    t0 = time.perf_counter()
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            a, b = sets[i], sets[j]
            _ = len(a & b) / len(a | b)
    pair_time = (time.perf_counter() - t0) / (len(sets) * (len(sets) - 1) / 2)
    full_pairs = len(texts) * (len(texts) - 1) / 2
    print(f"pairwise baseline: {pair_time * 1e6:.2f} us per pair -> {pair_time * full_pairs / 3600:,.1f} hours for all pairs; "
          f"LSH is {pair_time * full_pairs / (t2 - t1):,.0f}x faster")


if __name__ == "__main__":
    main()
