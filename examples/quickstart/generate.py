"""Generate the quickstart domain: the support manual of an invented smart thermostat.

The Brightwater Tempo T4 does not exist, so the base model cannot know its
error codes, light patterns, button combinations or specifications, and what
an adapter learns is unmistakable. From one table of facts this script writes

* ``manual.md``: the manual itself (for people reading the example),
* ``train.jsonl``: about 1,000 instruction pairs, each fact asked in several
  training phrasings and answered in a terse and a full style,
* ``../../harness/suites_builtin/domain/tempo-t4.jsonl``: 4-way multiple-choice questions in
  held-out phrasings no training example uses (the contamination check
  against the suite comes out clean), distractors drawn from the same kind
  of fact.
* ``../../harness/suites_builtin/domain/tempo-t4-freeform.jsonl``: the same
  facts asked open-ended in the first held-out phrasing, with the two answer
  styles of the training data (terse, full sentence) as reference answers, for
  the ``freeform`` suite type (exact match, token F1, ROUGE-L).
* ``preference.jsonl``: preference pairs for DPO/ORPO/SimPO
  (``examples/quickstart-dpo.yaml``): the correct answer against a plausibly
  wrong one (a wrong code meaning, setting, number or menu step), and
  abstention pairs about features, codes and models the T4 does not have
  (chosen: says so; rejected: a confident invention).
* ``../../harness/suites_builtin/domain/tempo-t4-pref.jsonl``: held-out pairs
  (held-out phrasings, and non-existent things never used in training) for
  the ``preference`` suite ``domain/tempo-t4-pref``.

Deterministic (fixed seed). Run: python examples/quickstart/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = HERE.parent.parent / "harness" / "suites_builtin" / "domain"
SEED = 7
P = "Tempo T4"

ERRORS = {
    "E01": "indoor sensor not responding", "E02": "outdoor sensor battery low", "E03": "boiler relay stuck open", "E04": "air filter overdue for cleaning",
    "E05": "Wi-Fi password rejected", "E06": "cloud account unlinked", "E07": "firmware image corrupted", "E08": "humidity sensor out of range",
    "E09": "heat pump lockout active", "E10": "wall plate wiring reversed", "E11": "common wire missing", "E12": "schedule memory full",
    "E13": "clock lost after power cut", "E14": "freeze protection triggered", "E15": "display ribbon loose", "E16": "radiator valve unreachable",
    "E17": "occupancy sensor blocked", "E18": "geofence permission denied", "E19": "overheat cut-off engaged", "E20": "backup battery swollen",
    "E21": "zigbee channel congested", "E22": "fan motor stalled", "E23": "condensate pump full", "E24": "license key expired",
}
LIGHTS = {
    "slow blue pulse": "pairing mode", "solid green": "target temperature reached", "fast amber blink": "update in progress", "solid red": "hardware fault",
    "double white flash": "setting saved", "purple breathing": "eco mode active", "orange sweep": "preheating for schedule", "cyan blink": "hotspot for setup",
    "pink solid": "child lock on", "yellow pulse": "filter reminder", "white spin": "booting", "green blink": "away mode",
}
COMBOS = {
    "hold Mode and Fan for 5 seconds": "factory reset", "hold Up for 3 seconds": "boost heating for 30 minutes", "press Down three times": "show outdoor temperature",
    "hold Fan for 10 seconds": "enter pairing mode", "hold Mode for 8 seconds": "toggle child lock", "press Up and Down together": "show firmware version",
    "hold Down for 4 seconds": "start eco mode", "press Mode twice": "cycle display brightness", "hold Up and Fan for 6 seconds": "restart without losing settings",
    "press Fan four times": "show Wi-Fi signal strength",
}
SPECS = {
    "default target temperature": "19.5 °C", "eco mode temperature": "16 °C", "frost protection temperature": "7 °C", "maximum schedule blocks per day": "9",
    "display size": "3.1 inches", "backup battery type": "CR2477 coin cell", "wireless radio for sensors": "Zigbee 3.0", "weight": "212 grams",
    "warranty": "four years", "supported sensors": "up to 14", "boost duration": "30 minutes", "filter reminder interval": "90 days",
    "latest firmware version": "4.7.2", "setup hotspot name": "TEMPO-SETUP", "minimum supply voltage": "18 volts AC", "operating humidity range": "10 to 85 percent",
    "hysteresis default": "0.4 °C", "away mode temperature": "15 °C", "colour of the wall plate": "matte slate grey", "mounting screw size": "M3 x 25 mm",
}
MENUS = {
    "humidity target": "Settings > Comfort > Humidity", "vacation schedule": "Schedules > Away > Vacation", "sensor calibration": "Settings > Sensors > Offset",
    "geofencing": "Account > Presence > Geofence", "firmware update": "System > About > Update", "display timeout": "Settings > Display > Sleep",
    "heat pump balance point": "Installer > Heat Pump > Balance", "energy report": "Insights > Monthly > Energy", "temperature units": "Settings > Region > Units",
    "child lock PIN": "Settings > Security > Lock PIN",
}
ACCESSORIES = {
    "Tempo Room Sensor": "measures temperature and occupancy", "Tempo Valve V2": "controls one radiator", "Tempo Outdoor Probe": "reports outside temperature",
    "Tempo Relay R1": "switches a second heating zone", "Tempo Leak Puck": "detects water under appliances", "Tempo Window Tag": "pauses heating when a window opens",
}
FIXES = {
    "the display is blank": "check the 24 V common wire", "the room never reaches the target": "raise the boost duration", "the app shows the device offline": "restart the router",
    "sensors drop out at night": "move the hub away from the microwave", "the heating short-cycles": "increase hysteresis to 0.6 °C", "the schedule runs an hour late": "set the time zone again",
    "the valve clicks constantly": "recalibrate the valve travel", "the fan never stops": "switch fan mode to auto", "the battery drains in a week": "disable the always-on display",
    "pairing keeps failing": "move the sensor within two metres",
}

# (fact kind) -> training question templates, held-out eval templates (never used for training), full-answer template
KINDS = {
    "error": (["What does error {k} mean on the {p}?", "My {p} shows {k}. What is wrong?", "Explain the {k} code of the {p}.", "{p} error {k}: what does it indicate?", "Why would a {p} display {k}?",
               "I see {k} on my {p}, what happened?", "Decode {k} for the {p}, please."],
              ["If {k} appears on the thermostat screen, what is the cause?", "Which problem is reported by code {k}?"],
              "Error {k} on the {p} means: {v}."),
    "light": (["What does a {k} on the {p} mean?", "The {p} light shows a {k}. What does that mean?", "Meaning of the {k} light on the {p}?", "Why is my {p} showing a {k}?", "What is the {p} telling me with a {k}?",
               "My {p} has a {k} on its ring, is that normal?", "Interpret a {k} on the {p} light ring."],
              ["A {k} on the status ring signals what?", "When the ring glows with a {k}, which state is it in?"],
              "A {k} on the {p} means {v}."),
    "combo": (["What happens if I {k} on the {p}?", "On the {p}, what does {k} do?", "What is the effect of {k} on a {p}?", "I want to know what {k} does on my {p}.", "Which function does {k} trigger on the {p}?",
               "Is it safe to {k} on my {p}? What will it do?", "What is the {p} shortcut '{k}' for?"],
              ["Which action follows when a user chooses to {k}?", "What does the thermostat do after you {k}?"],
              "On the {p}, if you {k} it will {v}."),
    "spec": (["What is the {k} of the {p}?", "Tell me the {k} for the {p}.", "{p}: what is its {k}?", "Which {k} does the {p} have?", "What {k} is specified for the {p}?",
              "Quick question about the {p}: {k}?", "I need the {p} {k}."],
             ["According to the manual, the {k} is what?", "Which value does the documentation give for the {k}?"],
             "The {k} of the {p} is {v}."),
    "menu": (["Where do I find the {k} setting on the {p}?", "How do I get to {k} in the {p} menus?", "Which menu holds {k} on the {p}?", "Menu path for {k} on the {p}?", "Where is {k} configured on a {p}?",
              "I can't find {k} on my {p}. Where is it?", "Navigate me to {k} on the {p}."],
             ["To change the {k}, which path in the menus do you open?", "The {k} option sits under which menu path?"],
             "On the {p}, {k} is under {v}."),
    "accessory": (["What does the {k} do with the {p}?", "Explain what the {k} accessory is for.", "What is the purpose of the {k}?", "Why would I add a {k} to my {p}?", "What job does the {k} do?",
                   "Should I buy the {k} for my {p}? What does it do?", "Describe the {k} in one line."],
                  ["Which role does the {k} play in a home setup?", "Once installed, what is the {k} responsible for?"],
                  "The {k} {v}."),
    "fix": (["On the {p}, {k}. What should I try first?", "My {p}: {k}. What is the first fix?", "How do I fix it when {k} on a {p}?", "What is the first troubleshooting step if {k}?", "{k} on my {p}; how do I solve it?",
             "Help: {k} on the {p}.", "Troubleshooting the {p}: {k}. Any advice?"],
            ["Support's first recommendation when {k} is what?", "Suppose {k}: which first step does the manual suggest?"],
            "If {k} on the {p}, first {v}."),
}
# two facts of one kind in one question (answers name both): more, and more varied, training examples
PAIR_TEMPLATES = {
    "error": ["What do the codes {k1} and {k2} mean on a {p}?", "Compare errors {k1} and {k2} on the {p}.", "My {p} alternates between {k1} and {k2}. What do they mean?", "Explain {k1} versus {k2} for the {p}."],
    "light": ["What is the difference between a {k1} and a {k2} on the {p}?", "The {p} went from a {k1} to a {k2}. What happened?", "Explain the {k1} and the {k2} of the {p} light ring.", "{k1} or {k2} on my {p}: what does each mean?"],
    "combo": ["What do '{k1}' and '{k2}' do on the {p}?", "Compare the {p} shortcuts '{k1}' and '{k2}'.", "On the {p}, which is which: '{k1}' and '{k2}'?", "I pressed '{k1}' and then '{k2}' on my {p}. What did each do?"],
    "spec": ["What are the {k1} and the {k2} of the {p}?", "Give me the {p} {k1} and {k2}.", "{p} specs: {k1} and {k2}?", "List the {k1} and {k2} of the {p}."],
    "menu": ["Where are {k1} and {k2} in the {p} menus?", "Menu paths for {k1} and for {k2} on the {p}?", "How do I reach {k1} and {k2} on my {p}?", "Which menus hold {k1} and {k2} on a {p}?"],
    "accessory": ["What do the {k1} and the {k2} do?", "Compare the {k1} with the {k2}.", "Should I get the {k1} or the {k2}? What does each do?", "Explain the {k1} and the {k2} accessories."],
    "fix": ["On my {p}, {k1}, and also {k2}. What should I try first for each?", "Two problems on the {p}: {k1}; {k2}. First steps?", "What are the first fixes when {k1} and when {k2}?", "Troubleshoot the {p}: {k1}, and separately {k2}."],
}

TABLES = {"error": ERRORS, "light": LIGHTS, "combo": COMBOS, "spec": SPECS, "menu": MENUS, "accessory": ACCESSORIES, "fix": FIXES}


def facts():
    for kind, table in TABLES.items():
        for k, v in table.items():
            yield kind, k, v


def manual() -> str:
    lines = [f"# Brightwater {P} support manual", "", "An invented smart thermostat: every fact below exists only in this example.", ""]
    titles = {"error": "Error codes", "light": "Status light", "combo": "Button combinations", "spec": "Specifications", "menu": "Menu paths", "accessory": "Accessories", "fix": "Troubleshooting"}
    for kind, table in TABLES.items():
        lines += [f"## {titles[kind]}", ""] + [f"- **{k}**: {v}" for k, v in table.items()] + [""]
    return "\n".join(lines)


def main() -> None:
    rng = random.Random(SEED)
    train, suite = [], []
    used_pairs: set = set()

    def cap(x: str) -> str:
        return x[0].upper() + x[1:]

    for kind, k, v in facts():
        train_t, eval_t, full = KINDS[kind]
        for i, t in enumerate(train_t):
            q = cap(t.format(k=k, p=P))
            # each phrasing is answered once: tersely or in a full sentence (never both: they would be near duplicates)
            train.append({"instruction": q, "output": cap(v) + "." if i % 2 == 0 else full.format(k=k, p=P, v=v)})
        keys = [x for x in TABLES[kind] if x != k]
        for t in PAIR_TEMPLATES[kind]:
            fresh = [x for x in keys if (t, frozenset((k, x))) not in used_pairs]  # (a, b) and (b, a) would be near duplicates
            k2 = rng.choice(fresh or keys)
            used_pairs.add((t, frozenset((k, k2))))
            v2 = TABLES[kind][k2]
            q = cap(t.format(k1=k, k2=k2, p=P))
            train.append({"instruction": q, "output": f"{cap(full.format(k=k, p=P, v=v))} {cap(full.format(k=k2, p=P, v=v2))}"})
        pool = [x for x in TABLES[kind].values() if x != v]
        for t in eval_t:
            q = t.format(k=k, p=P)
            q = q[0].upper() + q[1:]
            choices = [v] + rng.sample(pool, 3)
            rng.shuffle(choices)
            suite.append({"question": q, "choices": [c[0].upper() + c[1:] for c in choices], "gold": choices.index(v), "kind": kind})
    rng.shuffle(train)
    (HERE / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train))
    (HERE / "manual.md").write_text(manual() + "\n")
    SUITE.mkdir(parents=True, exist_ok=True)
    (SUITE / "tempo-t4.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in suite))
    freeform = freeform_items()
    (SUITE / "tempo-t4-freeform.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in freeform))
    pref_train, pref_suite = preference_pairs()
    (HERE / "preference.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pref_train))
    (SUITE / "tempo-t4-pref.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pref_suite))
    print(f"wrote {len(train)} training pairs, {len(suite)} held-out suite items, {len(freeform)} free-form items, the manual, "
          f"{len(pref_train)} preference pairs and {len(pref_suite)} held-out preference pairs")


def freeform_items() -> list[dict]:
    """One open question per fact in its first held-out phrasing; references: the terse and the full training answer."""
    out = []
    for kind, k, v in facts():
        _, eval_t, full = KINDS[kind]
        q = eval_t[0].format(k=k, p=P)
        out.append({"question": q[0].upper() + q[1:], "answers": [v[0].upper() + v[1:] + ".", full.format(k=k, p=P, v=v)], "kind": kind})
    return out



# things the Tempo T4 does not have: (kind, key, training question, held out?)
MISSING = [
    ("error", "E31", "What does error E31 mean on the {p}?"), ("error", "E40", "My {p} shows E40. What is wrong?"),
    ("error", "E27", "Explain the E27 code of the {p}."), ("error", "E55", "{p} error E55: what does it indicate?"),
    ("error", "E99", "Why would a {p} display E99?"), ("error", "E33", "Decode E33 for the {p}, please."),
    ("light", "red double flash", "What does a red double flash on the {p} mean?"), ("light", "blue sweep", "Why is my {p} showing a blue sweep?"),
    ("light", "amber breathing", "Meaning of the amber breathing light on the {p}?"), ("light", "white strobe", "Interpret a white strobe on the {p} light ring."),
    ("feature", "voice assistant", "How do I turn on the voice assistant of the {p}?"), ("feature", "solar mode", "Where is solar mode on the {p}?"),
    ("feature", "air quality alarm", "How loud is the air quality alarm of the {p}?"), ("feature", "built-in camera", "How do I record video with the built-in camera of the {p}?"),
    ("feature", "Bluetooth speaker", "How do I pair the Bluetooth speaker of the {p} with my phone?"), ("feature", "5G modem", "Which SIM card does the 5G modem of the {p} take?"),
    ("model", "Tempo T5", "What is new in the Tempo T5 compared with the {p}?"), ("model", "Tempo T4 Pro", "Which extra sensors does the Tempo T4 Pro have?"),
    ("model", "Tempo Mini", "Does the Tempo Mini use the same wall plate as the {p}?"), ("model", "Tempo T4 Max", "What is the display size of the Tempo T4 Max?"),
    ("accessory", "Tempo Smoke Guard", "What does the Tempo Smoke Guard do with the {p}?"), ("accessory", "Tempo Door Chime", "Explain what the Tempo Door Chime accessory is for."),
    ("accessory", "Tempo Pool Probe", "Why would I add a Tempo Pool Probe to my {p}?"), ("accessory", "Tempo Blind Motor", "What job does the Tempo Blind Motor do?"),
]
MISSING_HELD_OUT = [
    ("error", "E62", "A {p} owner reports code E62 on the screen. Which problem is that?"), ("error", "E48", "Which fault does code E48 stand for on this thermostat?"),
    ("light", "green strobe", "When the status ring shows a green strobe, which state is the {p} in?"), ("light", "violet flicker", "A violet flicker on the ring signals what?"),
    ("feature", "sleep tracker", "Where are the nightly reports of the {p} sleep tracker?"), ("feature", "weather radar", "How do I zoom the weather radar on the {p} screen?"),
    ("feature", "intercom", "Which menu sets up the {p} intercom between rooms?"), ("model", "Tempo T3 Plus", "Can the Tempo T3 Plus be upgraded to the {p} firmware?"),
    ("model", "Tempo X1", "Which radio does the Tempo X1 use for its sensors?"), ("accessory", "Tempo Garage Link", "Once installed, what is the Tempo Garage Link responsible for?"),
    ("accessory", "Tempo Fridge Sense", "Which role does the Tempo Fridge Sense play in a home setup?"), ("feature", "gesture control", "How do I train the gesture control of the {p}?"),
]
ABSTAIN_ANSWERS = [
    "I don't know. The {p} manual lists no {k}; the {p} has no such {what}.",
    "I don't know of any {k}. As far as the {p} documentation goes, no such {what} exists.",
    "There is no {k} on the {p}: the manual does not describe such a {what}, so I don't know.",
]
WHAT = {"error": "error code", "light": "light pattern", "feature": "feature", "model": "model", "accessory": "accessory"}
INVENT = {
    "error": list(ERRORS.values()), "light": list(LIGHTS.values()), "feature": ["Settings > Comfort > Assist", "System > Extras > Enable", "Account > Devices > Link"],
    "model": ["a larger 4.2 inch display and a second radio", "the same wall plate and twice the sensors", "Zigbee 3.0 and a humidity sensor"],
    "accessory": [v for v in ACCESSORIES.values()],
}


def _invention(kind: str, k: str, rng: random.Random) -> str:
    v = rng.choice(INVENT[kind])
    return {
        "error": f"Error {k} on the {P} means: {v}.", "light": f"A {k} on the {P} means {v}.",
        "feature": f"The {k} is under {v} on the {P}; switch it on there.", "model": f"The {k} has {v}.",
        "accessory": f"The {k} {v}.",
    }[kind]


def preference_pairs() -> tuple[list[dict], list[dict]]:
    """Training pairs (training phrasings) and held-out pairs (held-out phrasings, unseen non-existent things)."""
    rng = random.Random(SEED + 1)  # its own stream: the SFT data and the MC suite above stay byte-identical
    train, held = [], []

    def cap(x: str) -> str:
        return x[0].upper() + x[1:]

    for kind, k, v in facts():
        train_t, eval_t, full = KINDS[kind]
        wrong_pool = [x for x in TABLES[kind].values() if x != v]
        for t in rng.sample(train_t, 2):  # wrong-answer pairs: the right value against a plausible one of the same kind
            w = rng.choice(wrong_pool)
            train.append({"prompt": cap(t.format(k=k, p=P)), "chosen": full.format(k=k, p=P, v=v), "rejected": full.format(k=k, p=P, v=w), "kind": f"wrong_{kind}"})
        t = rng.choice(eval_t)
        held.append({"prompt": cap(t.format(k=k, p=P)), "chosen": cap(v) + ".", "rejected": cap(rng.choice(wrong_pool)) + ".", "kind": f"wrong_{kind}"})
    for kind, k, t in MISSING:  # abstention pairs: the honest "no such thing" against a confident invention
        for answer in rng.sample(ABSTAIN_ANSWERS, 2):
            train.append({"prompt": t.format(p=P), "chosen": answer.format(p=P, k=k, what=WHAT[kind]), "rejected": _invention(kind, k, rng), "kind": f"abstain_{kind}"})
    for kind, _k, t in MISSING_HELD_OUT:
        invented = cap(rng.choice(INVENT[kind])) + "."  # terse, like the held-out wrong answers (no 13-gram shared with training)
        held.append({"prompt": t.format(p=P), "chosen": "I don't know; there is no such thing on the Tempo T4.", "rejected": invented, "kind": f"abstain_{kind}"})
    rng.shuffle(train)
    return train, held


if __name__ == "__main__":
    main()
