"""Free-form answers: the evaluate metric scripts we ship, their parity with the published formulas, the suite type."""

from __future__ import annotations

import doctest
import json
import os
import re
import string
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

import harness.metrics as shipped
from tests.conftest import assert_clean_error, run_cli

REPO = Path(__file__).resolve().parents[1]


# ---- the official SQuAD v2.0 evaluation script's formulas, written out independently of harness.metrics


def squad_normalize_answer(s):
    def remove_articles(text):
        regex = re.compile(r"\b(a|an|the)\b", re.UNICODE)
        return re.sub(regex, " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_exact(a_gold, a_pred):
    return int(squad_normalize_answer(a_gold) == squad_normalize_answer(a_pred))


def squad_f1(a_gold, a_pred):
    gold_toks = squad_normalize_answer(a_gold).split()
    pred_toks = squad_normalize_answer(a_pred).split()
    common = Counter(gold_toks) & Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


CASES = [  # (prediction, references): punctuation, articles, case, several references, repeated tokens, empty sides, unicode
    ("Indoor sensor not responding.", ["Indoor sensor not responding.", "Error E01 on the Tempo T4 means: indoor sensor not responding."]),
    ("the INDOOR sensor, not responding!", ["Indoor sensor not responding."]),
    ("Error E01 means the indoor sensor is not responding", ["Indoor sensor not responding.", "Error E01 on the Tempo T4 means: indoor sensor not responding."]),
    ("relay relay relay stuck", ["Boiler relay stuck open."]),
    ("An answer", ["a", "The answer."]),
    ("", ["Nineteen and a half degrees"]),
    ("The.", ["a"]),
    ("19.5 °C", ["19.5 °C", "The default target temperature of the Tempo T4 is 19.5 °C."]),
    ("Settings > Comfort > Humidity", ["Settings > Comfort > Humidity.", "On the Tempo T4, humidity target is under Settings > Comfort > Humidity."]),
    ("completely unrelated words here", ["Matte slate grey."]),
    ("Zigbee 3.0 radio", ["Zigbee 3.0."]),
]


def _mean(xs):
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def modules():
    return {n: shipped.load(n) for n in shipped.names()}


def test_exact_match_and_token_f1_equal_the_official_squad_formulas(modules):
    em, f1 = modules["exact_match"], modules["token_f1"]
    for pred, refs in CASES:
        assert em.compute(predictions=[pred], references=[refs])["exact_match"] == max(squad_exact(r, pred) for r in refs), (pred, refs)
        assert f1.compute(predictions=[pred], references=[refs])["token_f1"] == pytest.approx(max(squad_f1(r, pred) for r in refs), abs=1e-12), (pred, refs)
    preds, refs = [c[0] for c in CASES], [c[1] for c in CASES]
    assert em.compute(predictions=preds, references=refs)["exact_match"] == pytest.approx(_mean([max(squad_exact(r, p) for r in rs) for p, rs in CASES]))
    assert f1.compute(predictions=preds, references=refs)["token_f1"] == pytest.approx(_mean([max(squad_f1(r, p) for r in rs) for p, rs in CASES]))
    # a single reference may be given as a plain string
    assert f1.compute(predictions=["relay stuck"], references=["Boiler relay stuck open."])["token_f1"] == pytest.approx(squad_f1("Boiler relay stuck open.", "relay stuck"))
    # and the numbers are not all trivial: the cases cover 0, 1 and values in between
    assert {0.0, 1.0} < {round(max(squad_f1(r, p) for r in rs), 6) for p, rs in CASES}


def test_rouge_l_and_chrf_equal_rouge_score_and_sacrebleu(modules):
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import CHRF

    for stem in (False, True):
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
        want = [scorer.score_multi(refs, pred)["rougeL"].fmeasure for pred, refs in CASES]
        got = [modules["rouge_l"].compute(predictions=[p], references=[r], use_stemmer=stem)["rouge_l"] for p, r in CASES]
        assert got == pytest.approx(want, abs=1e-12)
        assert modules["rouge_l"].compute(predictions=[c[0] for c in CASES], references=[c[1] for c in CASES], use_stemmer=stem)["rouge_l"] == pytest.approx(_mean(want))
    for kwargs in ({}, {"word_order": 2}):
        chrf = CHRF(**kwargs)
        want = [chrf.sentence_score(pred, refs).score for pred, refs in CASES]
        got = [modules["chrf"].compute(predictions=[p], references=[r], **kwargs)["chrf"] for p, r in CASES]
        assert got == pytest.approx(want, abs=1e-9)
    assert 0 < _mean(want) < 100


def test_the_documented_examples_hold():
    """Each script's usage example (its inputs_description, shown by evaluate) gives the number it shows."""
    import evaluate

    import harness

    for name in shipped.names():
        text = evaluate.load(shipped.path(name), keep_in_memory=True).inputs_description
        test = doctest.DocTestParser().get_doctest(text, {"evaluate": evaluate, "harness": harness}, name, None, 0)
        assert test.examples, name
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test, out=lambda s: None)
        assert result.failed == 0, f"{name}: the example in its description is wrong"


def test_evaluate_load_of_our_path_works_offline_and_a_hub_name_does_not(tmp_path):
    code = (
        "import json, evaluate, harness.metrics as m\n"
        "out = {n: evaluate.load(m.path(n)).compute(predictions=['Boiler relay stuck'], references=[['Boiler relay stuck open.']]) for n in m.names()}\n"
        "try:\n    evaluate.load('exact_match'); out['hub'] = 'loaded'\n"
        "except Exception as e:\n    out['hub'] = type(e).__name__\n"
        "print(json.dumps(out))\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HF_HOME": str(tmp_path / "hf"),
           "HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["exact_match"] == {"exact_match": 0.0}
    assert got["token_f1"]["token_f1"] == pytest.approx(squad_f1("Boiler relay stuck open.", "Boiler relay stuck"))
    assert 0 < got["rouge_l"]["rouge_l"] < 1 and 0 < got["chrf"]["chrf"] < 100
    assert got["hub"] != "loaded", "by name, evaluate goes to the hub: offline it must fail (that is why we ship paths)"


def test_importing_harness_metrics_does_not_import_evaluate():
    code = "import sys, harness.metrics as m; m.path('chrf'); print('evaluate' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---- the freeform suite type


def _suite_file(tmp_path, items, probe=None, name="ff", **extra):
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in items))
    spec = {"category": "domain", "type": "freeform", "data": {"path": data.name}, **extra}
    if probe is not None:
        spec["probe"] = probe
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(spec))
    return f


def test_the_suite_build_reads_its_options_and_references(tmp_path):
    from harness.suites import load_suite
    from harness.suites.freeform import _render, references

    items = [{"question": "Which problem is reported by code E03?", "answers": ["Boiler relay stuck open.", "Error E03 on the Tempo T4 means: boiler relay stuck open."]},
             {"question": "What is the warranty?", "answer": "four years", "aliases": ["4 years"]}]
    s = load_suite(str(_suite_file(tmp_path, items, {"metrics": ["token_f1", "exact_match", "rouge_l", "chrf"], "metric_args": {"rouge_l": {"use_stemmer": True}}})))
    b = s.build
    assert b.primary == "token_f1" and b.native is not None and b.output_type == "generate_until"
    assert b.metrics["chrf"].scale == (0.0, 100.0) and b.metrics["token_f1"].scale == (0.0, 1.0) and b.metrics["exact_match"].higher_is_better
    assert _render("### Instruction:\n{{question}}\n\n### Response:\n", items[0]) == "### Instruction:\nWhich problem is reported by code E03?\n\n### Response:\n"
    assert references(items[0]) == items[0]["answers"] and references(items[1]) == ["four years", "4 years"]


def test_one_batched_compute_gives_the_per_item_numbers(modules):
    """The suite scores all answers in one compute(use_aggregator=False) per metric: the same numbers as item by item."""
    preds, refs = [c[0] for c in CASES], [c[1] for c in CASES]
    for name, m in modules.items():
        batched = m.compute(predictions=preds, references=refs, use_aggregator=False)[name]
        single = [m.compute(predictions=[p], references=[r])[name] for p, r in CASES]
        assert batched == pytest.approx(single, abs=1e-12) and len(batched) == len(CASES), name


@pytest.mark.parametrize("probe, items, needles", [
    ({"metrics": ["bleurt"]}, None, ["probe.metrics", "bleurt", "token_f1"]),
    ({"metrics": ["chrf"], "metric_args": {"chrf": {"beta": "x"}}}, None, ["probe.metric_args.chrf", "rejected"]),
    ({"metrics": ["rouge_l"], "metric_args": {"chrf": {"beta": 3}}}, None, ["probe.metric_args", "chrf"]),
    ({"metric": ["chrf"]}, None, ["probe.metric", "unknown key"]),
    ({"prompt": "Q: {{query}}\nA:"}, None, ["item 1", "'query'"]),
    (None, [{"question": "q?", "answers": []}], ["item 1", "reference answers"]),
    (None, [{"question": "q?"}], ["item 1", "no reference answer"]),
    (None, [{"question": "q?", "answer": "a"}, {"question": 3, "answer": "b"}], ["item 2", "'question'"]),
])
def test_bad_freeform_suites_are_clean_errors_before_any_model_loads(tmp_path, probe, items, needles):
    f = _suite_file(tmp_path, items or [{"question": "q?", "answer": "a"}], probe)
    res = run_cli("eval", "--model", str(tmp_path / "no-model-needed"), "--suite", str(f), "--out", str(tmp_path / "o"), "--no-cache", "--quiet")
    assert_clean_error(res, *needles)


def test_laf_eval_on_the_builtin_freeform_suite_records_metrics_the_gate_pairs(tiny_model_dir, tmp_path):
    """The built-in example suite end to end on the tiny model; then the same questions with references built from
    the first run's answers, so the recorded numbers are non-trivial and checked against the independent formulas."""
    from harness.results import load_run
    from harness.suites import load_suite

    suite = load_suite("domain/tempo-t4-freeform")
    assert len(suite.load_docs()) == 92 and suite.build.primary == "token_f1" and suite.build.breakdown == "kind"
    cache = str(tmp_path / "cache.sqlite")
    n = 6
    code, out, err = run_cli("eval", "--model", str(tiny_model_dir), "--suite", "domain/tempo-t4-freeform", "--limit", str(n),
                             "--out", str(tmp_path / "run1"), "--cache", cache, "--quiet")
    assert code == 0, out + err
    results, records = load_run(tmp_path / "run1")
    recs = sorted((r for r in records if r.suite == "domain/tempo-t4-freeform"), key=lambda r: r.doc_id)
    assert len(recs) == n and all(isinstance(r.generation, str) for r in recs)
    meta = results.suites["domain/tempo-t4-freeform"]
    assert meta.type == "freeform" and meta.primary_metric == "token_f1" and set(meta.metrics) == {"token_f1", "exact_match", "rouge_l"}
    for r in recs:
        refs = r.doc["answers"]
        assert r.metrics["exact_match"] == max(squad_exact(g, r.generation) for g in refs)
        assert r.metrics["token_f1"] == pytest.approx(max(squad_f1(g, r.generation) for g in refs))

    # the same questions and settings; references: the first run's answer for even items, an unrelated phrase for odd ones
    docs = suite.load_docs()[:n]
    items = [{"question": d["question"], "answers": [r.generation if i % 2 == 0 else "Matte slate grey."], "kind": d["kind"]}
             for i, (d, r) in enumerate(zip(docs, recs))]
    probe = yaml.safe_load(Path(suite.file).read_text())["probe"]
    f = _suite_file(tmp_path, items, {**probe, "metrics": ["exact_match", "token_f1", "rouge_l", "chrf"]}, name="echo")
    for out_dir in ("run2", "run3"):  # run3: the same again, all from the cache
        code, out, err = run_cli("eval", "--model", str(tiny_model_dir), "--suite", str(f), "--out", str(tmp_path / out_dir), "--cache", cache, "--quiet")
        assert code == 0, out + err
    results2, records2 = load_run(tmp_path / "run2")
    recs2 = sorted(records2, key=lambda r: r.doc_id)
    assert [r.generation for r in recs2] == [r.generation for r in recs], "greedy answers to the same prompts"
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for r in recs2:
        g = r.doc["answers"]
        assert r.metrics["exact_match"] == max(squad_exact(x, r.generation) for x in g)
        assert r.metrics["token_f1"] == pytest.approx(max(squad_f1(x, r.generation) for x in g))
        assert r.metrics["rouge_l"] == pytest.approx(scorer.score_multi(g, r.generation)["rougeL"].fmeasure)
    assert [r.metrics["exact_match"] for r in recs2[::2]] == [1.0] * (n // 2), "an answer matches itself exactly"
    agg = results2.results["base"]["echo"]
    for m in ("exact_match", "token_f1", "rouge_l", "chrf"):
        assert agg[m]["value"] == pytest.approx(_mean([r.metrics[m] for r in recs2])) and agg[m]["n"] == n

    # the gate pairs the per-item records (same items in both runs: a zero delta on n items)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"min_items": n, "rules": [{"suite": "echo", "metric": "token_f1", "max_drop": 0.05}]}))
    code, out, err = run_cli("gate", "--baseline", str(tmp_path / "run2"), "--candidate", f"{tmp_path / 'run3'}#base", "--policy", str(policy), "--json")
    assert code == 0, out + err
    verdict = json.loads((tmp_path / "run3" / "verdict.json").read_text())
    (rule,) = verdict["rules"]
    assert rule["status"] == "pass" and rule["suite"] == "echo" and rule["metric"] == "token_f1", rule
    assert rule["stats"]["n"] == n and rule["stats"]["delta"] == 0.0


def test_the_example_suite_data_is_what_the_quickstart_generator_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart_generate", REPO / "examples" / "quickstart" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    shipped_rows = [json.loads(line) for line in (REPO / "harness" / "suites_builtin" / "domain" / "tempo-t4-freeform.jsonl").read_text().splitlines()]
    assert shipped_rows == gen.freeform_items()
    assert len({r["question"] for r in shipped_rows}) == len(shipped_rows) == sum(len(t) for t in gen.TABLES.values())
