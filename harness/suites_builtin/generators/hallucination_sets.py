"""Write the abstention and closed-book QA probe sets from real facts and invented entities.

* harness/suites_builtin/hallucination/abstention.jsonl: 110 questions about entities that do not
  exist (people, places, products, papers, built from invented syllables with a
  fixed seed) mixed with 110 answerable controls built from the real facts in
  harness/suites_builtin/general/facts.jsonl (periodictable and CLDR). Each item has choices
  for log-likelihood scoring (plausible answers plus "I don't know") and
  reference answers for generation scoring.
* harness/suites_builtin/hallucination/factqa.jsonl: 220 closed-book questions with reference
  answers and aliases, from the same real facts.
Run after world_facts.py:  python harness/suites_builtin/generators/hallucination_sets.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTS = ROOT / "general" / "facts.jsonl"
OUT = ROOT / "hallucination"
SEED = 20261128
IDK = "I don't know."

ONSETS = ["br", "dr", "gl", "kv", "qu", "st", "th", "v", "z", "h", "m", "l", "t", "sk", "pr", "fl", "w", "n", "r", "j"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ou", "y"]
CODAS = ["nd", "rk", "ss", "lt", "x", "m", "n", "r", "sh", "th", "ck", "vin", "mar", "dell", "wick"]


def word(rng: random.Random, syllables: int = 2) -> str:
    s = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)) + rng.choice(CODAS)
    return s.capitalize()


def fictional(rng: random.Random) -> list[dict]:
    items = []
    fields = ["chemistry", "astronomy", "linguistics", "economics", "marine biology", "topology"]
    for _ in range(22):
        name = f"{word(rng)} {word(rng, 3)}"
        field = rng.choice(fields)
        year = rng.randrange(1921, 2019)
        items.append(("fictional_person", f"In which year did the {field} professor {name} win the Nobel Prize?", [str(year), str(year + 7), str(year - 11)]))
        items.append(("fictional_person", f"At which university did the novelist {name} teach creative writing?", [f"University of {word(rng)}", f"{word(rng)} College", f"{word(rng)} Institute of Technology"]))
    for _ in range(22):
        town = f"{word(rng)}{rng.choice(['by', 'holm', 'ford', 'stad', 'ville'])}"
        items.append(("fictional_place", f"What is the population of the town of {town} in {rng.choice(['Norway', 'Canada', 'Chile', 'Kenya', 'Portugal'])}?", [f"{rng.randrange(2, 90)},{rng.randrange(100, 999)}", f"{rng.randrange(2, 90)},{rng.randrange(100, 999)}", f"{rng.randrange(100, 999)}"]))
        items.append(("fictional_place", f"Which river flows through the city of {town}?", [f"The {word(rng)} River", f"The {word(rng)}", f"The {word(rng)} Canal"]))
    for _ in range(11):
        brand = word(rng)
        model = f"{rng.choice('KVXRTZ')}{rng.choice('ABCDLM')}-{rng.randrange(100, 990)}"
        items.append(("fictional_product", f"What is the maximum power of the {brand} {model} kitchen blender, in watts?", [f"{rng.randrange(4, 20) * 100} watts", f"{rng.randrange(4, 20) * 100} watts", f"{rng.randrange(4, 20) * 100 + 50} watts"]))
    for _ in range(11):
        title = f"{rng.choice(['Recursive', 'Sparse', 'Stochastic', 'Adaptive', 'Hierarchical'])} {word(rng)} {rng.choice(['Annealing', 'Transport', 'Lattices', 'Embeddings', 'Flows'])}"
        items.append(("fictional_paper", f"In which journal was the {rng.randrange(1995, 2022)} paper '{title}' by {word(rng)} and {word(rng)} published?", [f"Journal of {word(rng)} Studies", f"{word(rng)} Letters", f"Annals of {word(rng)} Research"]))
    return [{"question": q, "answerable": False, "answer": None, "aliases": [], "kind": kind, "choices": [c for c in opts] + [IDK], "gold": 3} for kind, q, opts in items]


def load_facts() -> list[dict]:
    return [json.loads(x) for x in FACTS.read_text().splitlines() if x.strip()]


def qa_from_facts(facts: list[dict], rng: random.Random) -> list[dict]:
    """Closed-book questions with references; distractors for the log-likelihood form."""
    by_kind: dict[str, list[dict]] = {}
    for f in facts:
        by_kind.setdefault(f["kind"], []).append(f)
    out = []
    symbols = [f["answer"] for f in by_kind["element_symbol"]]
    names = [f["subject"] for f in by_kind["element_symbol"]]
    for f in by_kind["element_symbol"]:
        if f["number"] <= 92:
            out.append({"question": f"What is the chemical symbol for {f['subject'].lower()}?", "answer": f["answer"], "aliases": [f["answer"]], "kind": "element_symbol",
                        "distractors": rng.sample([s for s in symbols if s != f["answer"]], 2)})
            out.append({"question": f"Which chemical element has the symbol {f['answer']}?", "answer": f["subject"], "aliases": [f["subject"]], "kind": "element_name",
                        "distractors": rng.sample([n for n in names if n != f["subject"]], 2)})
    currencies = sorted({f["answer"] for f in by_kind["currency"]})
    for f in by_kind["currency"]:
        aliases = [f["answer"], f["answer"].split()[-1]]
        out.append({"question": f"What is the official currency of {f['subject']}?", "answer": f["answer"], "aliases": sorted(set(aliases)), "kind": "currency",
                    "distractors": rng.sample([c for c in currencies if c != f["answer"]], 2)})
    return out


def main() -> None:
    rng = random.Random(SEED)
    facts = load_facts()
    qa = qa_from_facts(facts, rng)
    rng.shuffle(qa)
    unanswerable = fictional(rng)
    answerable = []
    for q in qa[:110]:
        choices = [q["answer"], *q["distractors"]]
        rng.shuffle(choices)
        answerable.append({"question": q["question"], "answerable": True, "answer": q["answer"], "aliases": q["aliases"], "kind": q["kind"],
                           "choices": choices + [IDK], "gold": choices.index(q["answer"])})
    abst = unanswerable + answerable
    rng.shuffle(abst)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "abstention.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in abst))
    factqa = [{"question": q["question"], "answer": q["answer"], "aliases": q["aliases"], "kind": q["kind"]} for q in qa[110:330]]
    (OUT / "factqa.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in factqa))
    print(f"wrote {len(abst)} abstention items ({len(unanswerable)} unanswerable) and {len(factqa)} factqa items")


if __name__ == "__main__":
    main()
