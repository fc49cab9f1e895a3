"""laf data: planted problems are found (and nothing else), cleaned away, input untouched; bad inputs; contamination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.data.contamination import contamination
from harness.data.dedupe import near_duplicates
from tests.conftest import run_cli

CLEAN = [
    ("How do I reset the router to factory settings?", "Hold the recessed reset button for ten seconds until the status light blinks amber, then wait two minutes."),
    ("Why does my laptop fan get loud in the afternoon?", "Dust in the intake and a warm room make the fan spin faster; clean the vents and keep the laptop on a hard surface."),
    ("Summarise the plot of a heist story in two sentences.", "A crew plans to rob a vault during a city festival. Their plan unravels when one member secretly works for the bank."),
    ("Give me three tips for writing clear emails.", "Put the request in the first line, keep paragraphs short, and end with the exact next step you expect."),
    ("What should I pack for a two-day hike in autumn?", "Layers you can remove, a rain shell, a warm hat, a map, water treatment tablets and food that needs no cooking."),
    ("Translate 'good morning' into Spanish.", "Buenos días."),
    ("Explain what a mortgage amortization schedule shows.", "It lists every payment with the part that covers interest and the part that reduces the principal, until the loan is paid off."),
    ("How can I keep basil alive on a windowsill?", "Give it six hours of sun, water when the top centimetre of soil is dry, and pinch off flower buds."),
    ("Write a haiku about a late train.", "Platform lights flicker / the timetable lies again / cold coffee, warm hands"),
    ("What is the difference between weather and climate?", "Weather is the state of the atmosphere over hours or days; climate is the pattern of weather over decades."),
    ("Suggest a name for a bakery that only sells bread.", "Crumb & Crust."),
    ("How do I convert Celsius to Fahrenheit?", "Multiply the Celsius value by nine fifths and add thirty-two."),
    ("List two risks of public Wi-Fi.", "Other people on the network can intercept unencrypted traffic, and attackers can run fake hotspots with trusted names."),
    ("Why do onions make people cry?", "Cutting them releases a sulfur compound that irritates the eyes, which respond by making tears."),
    ("Draft a polite reminder about an unpaid invoice.", "Hello Dana, a quick reminder that invoice 2041 was due last Friday. Could you let me know when payment is scheduled? Thanks, Lee."),
    ("How often should I replace a toothbrush?", "Every three to four months, or sooner if the bristles are frayed."),
    ("What does a product manager do?", "They decide what a product should do and why, weigh requests against goals, and coordinate the people who build it."),
    ("Give a one-line definition of recursion.", "A function that solves a problem by calling itself on smaller instances of the same problem."),
    ("Recommend a stretch for a stiff neck.", "Tilt your ear slowly toward your shoulder, hold for twenty seconds, then switch sides."),
    ("How do noise-cancelling headphones work?", "Microphones pick up outside sound and the headphones play an inverted wave that cancels much of it."),
    ("What is a good way to learn vocabulary in a new language?", "Review words with spaced repetition and use each new word in a sentence of your own the same day."),
    ("Explain compound interest to a child.", "If your savings earn extra money, next year that extra money earns money too, so your pile grows faster and faster."),
    ("Why is my sourdough dense?", "The dough was probably under-proofed or the starter was weak; let it rise longer in a warm place."),
    ("Describe the smell of rain on dry soil.", "Earthy and slightly sweet, a scent people call petrichor."),
    ("What is the purpose of a cover letter?", "It tells an employer why you want this particular job and connects your experience to what they need."),
    ("How do I remove a coffee stain from a shirt?", "Blot it, rinse from the back with cold water, rub in a little detergent and wash as usual."),
    ("Give an example of a metaphor.", "Her voice was velvet in the noisy room."),
    ("What causes jet lag?", "Your internal clock stays on the old time zone while daylight and meals follow the new one."),
    ("How can a small team run better meetings?", "Share an agenda beforehand, keep a strict end time and write down decisions and owners before leaving."),
    ("Why do cats knead blankets?", "It is a behaviour kept from kittenhood, linked to comfort and to marking territory with scent glands in their paws."),
]
SUITE_QUESTION = "What is the official currency of Singapore?"  # an item of general/world-facts


def planted_dataset(path: Path) -> dict:
    rows = [{"instruction": q, "output": a} for q, a in CLEAN]
    plants = {}
    rows.append({"instruction": "  how do I reset the router to factory settings?  ", "output": "Hold the recessed reset button for ten seconds until the status light blinks amber, then wait two minutes."})
    plants["exact_duplicate"] = [len(rows)]
    rows.append(dict(rows[5]))
    plants["exact_duplicate"].append(len(rows))
    long_a = CLEAN[14][1].replace("last Friday", "last Thursday")
    rows.append({"instruction": CLEAN[14][0], "output": long_a})
    plants["near_duplicate"] = [len(rows)]
    rows.append({"instruction": CLEAN[6][0] + " Please.", "output": CLEAN[6][1]})
    plants["near_duplicate"].append(len(rows))
    rows.append({"instruction": "Tell me a joke about databases.", "output": "   "})
    plants["empty_response"] = [len(rows)]
    rows.append({"instruction": "Name a colour.", "output": ""})
    plants["empty_response"].append(len(rows))
    rows.append({"instruction": SUITE_QUESTION, "output": "Singapore Dollar"})
    plants["contaminated"] = [len(rows)]
    text_item = json.loads((Path(__file__).resolve().parents[1] / "harness" / "suites_builtin" / "general" / "text.jsonl").read_text().splitlines()[3])["text"]
    rows.append({"instruction": "Explain this part of the Python reference.", "output": text_item})
    plants["contaminated"].append(len(rows))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return plants


def test_planted_problems_are_found_and_nothing_else(tmp_path):
    data = tmp_path / "data.jsonl"
    plants = planted_dataset(data)
    before = data.read_bytes()
    code, out, err = run_cli("data", "check", str(data), "--against", "general/world-facts", "--against", "general/text", "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    m = json.loads(out)
    found = {rule: sorted(e["line"] for e in m["examples"].get(rule, [])) for rule in plants}
    assert found == {rule: sorted(lines) for rule, lines in plants.items()}, found
    for rule in ("malformed", "empty_prompt", "no_supervised_tokens", "schema", "encoding"):
        assert m["counts"][rule] == 0, rule
    assert m["counts"]["kept"] == len(CLEAN)
    cont = m["contamination"]
    assert cont["suites"]["general/world-facts"]["contaminated_items"] == 1 and cont["suites"]["general/text"]["contaminated_items"] == 1
    assert {p["training_line"] for p in cont["pairs"]} == set(plants["contaminated"])
    assert m["tokens"]["p50"] > 10 and m["tokens"]["truncated"] == 0
    assert m["fingerprints"]["input_sha256"] and m["near_duplicate_clusters"][0]["keep"] in (7, 15)
    assert data.read_bytes() == before


def test_clean_removes_them_and_never_touches_the_input(tmp_path):
    data = tmp_path / "data.jsonl"
    planted_dataset(data)
    before = data.read_bytes()
    out = tmp_path / "clean.jsonl"
    code, _, err = run_cli("data", "clean", str(data), "--against", "general/world-facts", "--against", "general/text", "-o", str(out), "--out", str(tmp_path / "o"), "--model", "none")
    assert code == 0, err
    cleaned = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(cleaned) == len(CLEAN) and all("messages" in r for r in cleaned)
    assert [r["messages"][0]["content"] for r in cleaned] == [q for q, _ in CLEAN]
    assert data.read_bytes() == before
    code, _, err = run_cli("data", "clean", str(data), "-o", str(data), "--model", "none", "--out", str(tmp_path / "o2"))
    assert code == 3 and "overwrite" in err and data.read_bytes() == before
    manifest = json.loads((tmp_path / "o" / "curation.json").read_text())
    assert manifest["output"]["sha256"] and manifest["fingerprints"]["output_content_sha256"]


def test_malformed_lines_skip_by_default_fail_with_strict(tmp_path):
    data = tmp_path / "d.jsonl"
    good = [json.dumps({"instruction": q, "output": a}) for q, a in CLEAN[:5]]
    data.write_text("\n".join([good[0], '{"instruction": "broken', good[1], "not json at all", good[2], good[3], good[4]]) + "\n")
    code, out, err = run_cli("data", "check", str(data), "--model", "none", "--out", str(tmp_path / "o"), "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["counts"]["malformed"] == 2 and sorted(e["line"] for e in m["examples"]["malformed"]) == [2, 4] and m["counts"]["kept"] == 5
    code, _, err = run_cli("data", "check", str(data), "--strict", "--model", "none", "--out", str(tmp_path / "o"))
    assert code == 3 and "line 2" in err


def test_bad_inputs_binary_huge_line_empty(tmp_path):
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\x00\x01\x02PK\x03\x04" * 100)
    code, _, err = run_cli("data", "check", str(binary), "--model", "none", "--out", str(tmp_path / "o"))
    assert code == 3 and "binary" in err and "Traceback" not in err
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    code, _, err = run_cli("data", "check", str(empty), "--model", "none", "--out", str(tmp_path / "o"))
    assert code == 3 and "empty" in err
    huge = tmp_path / "h.jsonl"
    huge.write_text(json.dumps({"instruction": "Summarise: " + "word " * 2_000_000, "output": "Short."}) + "\n" + json.dumps({"instruction": CLEAN[0][0], "output": CLEAN[0][1]}) + "\n")
    assert huge.stat().st_size > 10_000_000
    code, out, err = run_cli("data", "check", str(huge), "--model", "none", "--out", str(tmp_path / "o"), "--json")
    assert code == 0, err
    assert json.loads(out)["counts"]["examples"] == 2


@pytest.mark.slow
def test_token_checks_use_the_base_tokenizer(default_model, tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"instruction": q, "output": a} for q, a in CLEAN[:6]] + [{"instruction": "Summarise: " + "long text " * 400, "output": "ok"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run_cli("data", "check", str(data), "--max-length", "128", "--out", str(tmp_path / "o"), "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["tokens"]["truncated"] == 1 and m["counts"]["no_supervised_tokens"] == 1 and m["counts"]["kept"] == 6
    assert m["tokens"]["max"] > 800


def test_near_duplicate_threshold_and_contamination_units():
    a = "The quick brown fox jumps over the lazy dog near the river bank at dawn."
    texts = [a, a.replace("dawn", "dusk"), "Completely unrelated sentence about quarterly tax filings and receipts."]
    clusters = near_duplicates(texts, threshold=0.8)
    assert [(c.keep, c.members) for c in clusters] == [(0, [1])]
    assert near_duplicates(texts, threshold=0.99) == []
    hits = contamination([(1, "intro " + "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu" + " outro")],
                         [("s", 0, ["alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron"]), ("s", 1, ["nothing in common here at all, nothing"])])
    assert [(h.item, h.training_lines) for h in hits] == [(0, [1])]
    assert hits[0].contaminated_tokens == 13 and hits[0].tokens == 15
