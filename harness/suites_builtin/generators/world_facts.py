"""Generate harness/suites_builtin/general/world_facts.jsonl (and facts.jsonl) from real facts in maintained data packages.

Facts come from `periodictable` (element names and symbols, NIST data) and
`babel` (CLDR: territory currencies and official languages), never invented.
Each multiple-choice item has one correct answer and three distractors of the
same kind that are verifiably wrong for that subject. Deterministic: the same
package versions give the same file. Run:  python harness/suites_builtin/generators/world_facts.py
(needs the dev extra: pip install -e '.[dev]').
"""

from __future__ import annotations

import datetime
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "general"
SEED = 20261128
AS_OF = datetime.date(2025, 1, 1)
N_ELEMENTS = 100
N_CURRENCY = 100
N_LANGUAGE = 100


def sovereign_like(code: str) -> bool:
    # CLDR territory codes: two letters are countries and territories; skip the private-use / grouping ones
    return len(code) == 2 and code.isalpha() and code not in {"ZZ", "XA", "XB", "EU", "EZ", "UN", "QO", "AQ", "CQ", "XK"}


def element_facts():
    import periodictable as pt

    out = []
    for e in pt.elements:
        if 1 <= e.number <= 118:
            out.append({"kind": "element_symbol", "subject": e.name.capitalize(), "answer": e.symbol, "number": e.number})
    return out


def currency_facts():
    from babel import Locale
    from babel.numbers import get_currency_name, get_territory_currencies

    en = Locale("en")
    out = []
    for code, name in sorted(en.territories.items()):
        if not sovereign_like(code):
            continue
        cur = get_territory_currencies(code, start_date=AS_OF, tender=True, non_tender=False)
        if len(cur) == 1:
            out.append({"kind": "currency", "subject": name, "territory": code, "answer": get_currency_name(cur[0], locale="en"), "code": cur[0]})
    return out


def language_facts():
    from babel import Locale
    from babel.languages import get_official_languages

    en = Locale("en")
    out = []
    for code, name in sorted(en.territories.items()):
        if not sovereign_like(code):
            continue
        langs = [lang for lang in get_official_languages(code) if lang in en.languages]
        if langs:
            out.append({"kind": "official_language", "subject": name, "territory": code, "answers": [en.languages[lang] for lang in langs], "answer": en.languages[langs[0]], "codes": langs})
    return out


def mc_items(rng: random.Random):
    items = []
    els = element_facts()
    # every choice keeps its code (atomic number, ISO currency, language code) so a test can check
    # the facts against the packages whatever names a CLDR build uses
    for e in sorted(rng.sample(els[:N_ELEMENTS + 18], N_ELEMENTS), key=lambda x: x["number"]):
        wrong = rng.sample([x for x in els if x["answer"] != e["answer"]], 3)
        items.append(("element_symbol", f"What is the chemical symbol for {e['subject'].lower()}?", (e["answer"], e["number"]),
                      [(x["answer"], x["number"]) for x in wrong], e["number"]))

    curs = currency_facts()
    by_code = {c["code"]: c["answer"] for c in curs}
    for c in sorted(rng.sample(curs, N_CURRENCY), key=lambda x: x["subject"]):
        wrong = rng.sample([k for k in sorted(by_code) if k != c["code"]], 3)
        items.append(("currency", f"What is the official currency of {c['subject']}?", (c["answer"], c["code"]), [(by_code[k], k) for k in wrong], c["territory"]))

    from babel import Locale

    names = Locale("en").languages
    langs = language_facts()
    all_codes = sorted({code for f in langs for code in f["codes"]})
    for f in sorted(rng.sample(langs, N_LANGUAGE), key=lambda x: x["subject"]):
        wrong = rng.sample([k for k in all_codes if k not in f["codes"] and names[k] not in f["answers"]], 3)
        items.append(("official_language", f"Which of these is an official language of {f['subject']}?", (f["answer"], f["codes"][0]),
                      [(names[k], k) for k in wrong], f["territory"]))

    rows = []
    for kind, question, answer, wrong, subject in items:
        choices = wrong + [answer]
        rng.shuffle(choices)
        rows.append({"question": question, "choices": [c[0] for c in choices], "gold": choices.index(answer), "kind": kind,
                     "subject_code": str(subject), "codes": [str(c[1]) for c in choices]})
    return rows


def main() -> None:
    rng = random.Random(SEED)
    rows = mc_items(rng)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "world_facts.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    facts = element_facts() + currency_facts() + language_facts()
    (OUT / "facts.jsonl").write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in facts))
    print(f"wrote {len(rows)} items to {OUT / 'world_facts.jsonl'} and {len(facts)} facts to {OUT / 'facts.jsonl'}")


if __name__ == "__main__":
    main()
