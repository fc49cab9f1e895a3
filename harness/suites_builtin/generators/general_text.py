"""Generate harness/suites_builtin/general/text.jsonl: general English prose for the cross-entropy (forgetting) suite.

The paragraphs are the prose (not the code samples) of the Python Language
Reference and Library topics that ship with CPython (`pydoc_data.topics`,
PSF licence), chosen deterministically. A change in a model's bits per byte on
this text is the forgetting measure PEFT's own benchmark uses. Run:
python harness/suites_builtin/generators/general_text.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "general" / "text.jsonl"
SEED = 20261128
N = 200


def paragraphs():
    import pydoc_data.topics as t

    for topic in sorted(t.topics):
        for para in re.split(r"\n\s*\n", t.topics[topic]):
            lines = [ln.strip() for ln in para.strip().splitlines()]
            if not lines or any(ln.startswith((">>>", "...", "*", "|", "+", "-", "=")) for ln in lines):
                continue
            if any(line != ln for line, ln in zip(para.strip().splitlines(), lines) if line.startswith("   ")):
                continue  # indented blocks are code or grammar
            text = " ".join(lines)
            if 200 <= len(text) <= 600 and text[0].isupper() and text.endswith(".") and text.count("(") < 4 and "::=" not in text:
                yield topic, text


def main() -> None:
    seen, pool = set(), []
    for topic, text in paragraphs():
        if text not in seen:
            seen.add(text)
            pool.append((topic, text))
    rng = random.Random(SEED)
    chosen = sorted(rng.sample(pool, N))
    OUT.write_text("".join(json.dumps({"text": text, "source": f"pydoc_data.topics:{topic}"}) + "\n" for topic, text in chosen))
    print(f"wrote {len(chosen)} paragraphs (of {len(pool)}) to {OUT}")


if __name__ == "__main__":
    main()
