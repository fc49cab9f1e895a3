"""Evaluation engine: lm-eval parity, content-keyed cache, resume after kill -9, records, bad inputs."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import LafError
from harness.evaluate import EvalSpec, load_run, run_eval
from harness.suites import load_suite
from tests.conftest import REPO, markdown_tables, run_cli
from tests.conftest import assert_clean_error as _err

MC_TASK = {
    "output_type": "multiple_choice",
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_choice": "{{choices}}",
    "doc_to_target": "{{gold}}",
    "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}, {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
}


def write_mc_suite(folder: Path, n: int = 40, name: str = "toy", question: str = "What is {i} plus {i}?") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": question.format(i=i), "choices": [str(2 * i), str(2 * i + 1), str(i), "none of these"], "gold": 0} for i in range(n)]
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({"category": "general", "data": {"path": f"{name}.jsonl"}, "task": MC_TASK}))
    return folder / f"{name}.yaml"


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory):
    """A 4-step QLoRA adapter of the tiny model in its own registry."""
    from harness.config import validate
    from harness.train import TrainConfig, train

    root = tmp_path_factory.mktemp("adapter")
    rows = [{"instruction": f"What is {i} plus {i}?", "output": f"{2 * i}"} for i in range(40)]
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = validate(TrainConfig, {"name": "toy", "model": str(tiny_model_dir), "data": {"path": str(root / "d.jsonl")}, "max_length": 64,
                                 "max_steps": 4, "optim": {"lr": 5e-3}, "registry": str(root / "reg"), "output_dir": str(root / "run")}, "t.yaml")
    res = train(cfg)
    return root / "reg", str(res.entry.ref)


def spec(tmp_path, model, suites, **kw) -> EvalSpec:
    kw.setdefault("cache", str(tmp_path / "cache.sqlite"))
    kw.setdefault("out", str(tmp_path / "out"))
    kw.setdefault("batch_size", 4)
    return EvalSpec(suites=[str(s) for s in suites], model=str(model), **kw)


def by_item(records, model):
    return {(r.suite, r.doc_hash): r for r in records if r.model == model}


# ---------------------------------------------------------------- parity with plain lm-eval


def plain_lm_eval_lls(model_dir, suite_ref, limit, batch_size, data_dir=None):
    """Per-item log-likelihoods from lm-eval's own HFLM on the same task config."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from harness.models import LoadSpec, load_model, resolve_model

    suite = load_suite(suite_ref, data_dir)
    model, tok, _ = load_model(resolve_model(model_dir), LoadSpec("fp32"))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=2048)
    loaded = TaskManager(include_defaults=False).load([suite.build.config])
    task = loaded["tasks"][suite.task_name]
    task.set_fewshot_seed(1234)
    out = evaluate(lm=lm, task_dict=loaded, limit=limit, log_samples=True, bootstrap_iters=0, verbosity="ERROR")
    return {s["doc_hash"]: [float(r[0]) for r in s["filtered_resps"]] for s in out["samples"][suite.task_name]}


def _assert_parity(ours, theirs):
    assert ours.keys() == theirs.keys() and ours
    worst = max(abs(a - b) for k in ours for a, b in zip(ours[k], theirs[k]))
    assert worst < 1e-4, f"max per-item log-likelihood difference {worst:.2e}"


def test_loglikelihoods_match_plain_lm_eval_on_fixture(tiny_model_dir, tmp_path):
    doc = run_eval(spec(tmp_path, tiny_model_dir, ["general/world-facts"], limit=60, precision="fp32")).to_dict()
    assert doc["results"]["base"]["general/world-facts"]["acc"]["n"] == 60
    _, records = load_run(tmp_path / "out")
    ours = {r.doc_hash: r.loglikelihoods for r in records}
    _assert_parity(ours, plain_lm_eval_lls(str(tiny_model_dir), "general/world-facts", 60, 4))


@pytest.mark.slow
def test_loglikelihoods_match_plain_lm_eval_on_arc_easy(default_model, shared_benchmarks, tmp_path):
    run_eval(spec(tmp_path, "default", ["benchmarks/arc_easy"], limit=48, precision="fp32", data_dir=str(shared_benchmarks)))
    _, records = load_run(tmp_path / "out")
    ours = {r.doc_hash: r.loglikelihoods for r in records}
    _assert_parity(ours, plain_lm_eval_lls("default", "benchmarks/arc_easy", 48, 4, str(shared_benchmarks)))


def test_rolling_perplexity_matches_plain_lm_eval(tiny_model_dir, tmp_path):
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from harness.models import load_model, resolve_model

    run_eval(spec(tmp_path, tiny_model_dir, ["general/text"], limit=12, precision="fp32", max_length=64))
    _, records = load_run(tmp_path / "out")
    suite = load_suite("general/text")
    model, tok, _ = load_model(resolve_model(str(tiny_model_dir)))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, max_length=64)  # 64 forces several windows per text
    loaded = TaskManager(include_defaults=False).load([suite.build.config])
    out = evaluate(lm=lm, task_dict=loaded, limit=12, log_samples=True, bootstrap_iters=0, verbosity="ERROR")
    theirs = {s["doc_hash"]: [float(s["filtered_resps"][0])] for s in out["samples"][suite.task_name]}
    _assert_parity({r.doc_hash: r.loglikelihoods for r in records}, theirs)


def test_a_repeated_request_is_computed_once_and_every_copy_takes_its_value(tiny_model_dir, tmp_path, monkeypatch):
    """TruthfulQA scores a choice for MC1 and again for MC2: 120 of its first 280 requests repeat one. A request
    repeated in a run is computed once; every copy gets that value, counted as computed (not a cache hit); the
    numbers equal those of the same items without the repeat (1e-5, fp32) and a run without cache bit for bit."""
    import harness.evaluate.lm as lm_module

    scored: list[int] = []
    real = lm_module.score_loglikelihood

    def counting(model, requests, **kw):
        scored.append(len(requests))
        return real(model, requests, **kw)

    monkeypatch.setattr(lm_module, "score_loglikelihood", counting)
    folder = tmp_path / "s"
    folder.mkdir()
    for name, extra in (("rep", True), ("once", False)):
        rows = [{"question": f"What is {i} plus {i}?", "choices": [str(2 * i), str(2 * i + 1)] + ([str(2 * i)] if extra else []) + ["none of these"],
                 "gold": 0} for i in range(1, 7)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"category": "general", "data": {"path": f"{name}.jsonl"}, "task": MC_TASK}))
    doc = run_eval(spec(tmp_path, tiny_model_dir, [folder / "rep.yaml"], precision="fp32")).to_dict()
    assert scored == [18], "24 requests, 18 distinct: each distinct one is computed once"
    req = doc["models"]["base"]["requests"]
    assert (req["requests"], req["computed"], req["cache_hits"]) == (24, 24, 0)
    with sqlite3.connect(tmp_path / "cache.sqlite") as c:
        assert c.execute("SELECT count(*) FROM responses").fetchone()[0] == 18
    _, recs = load_run(tmp_path / "out")
    assert len(recs) == 6 and all(r.loglikelihoods[0] == r.loglikelihoods[2] for r in recs)
    run_eval(spec(tmp_path, tiny_model_dir, [folder / "once.yaml"], precision="fp32", out=str(tmp_path / "once"), cache=str(tmp_path / "c2.sqlite")))
    once = {r.doc["question"]: r.loglikelihoods for r in load_run(tmp_path / "once")[1]}
    worst = max(abs(x - y) for r in recs for x, y in zip([r.loglikelihoods[k] for k in (0, 1, 3)], once[r.doc["question"]]))
    assert worst < 1e-5, worst
    run_eval(spec(tmp_path, tiny_model_dir, [folder / "rep.yaml"], precision="fp32", no_cache=True, out=str(tmp_path / "nocache")))
    assert [r.to_dict() for r in load_run(tmp_path / "nocache")[1]] == [r.to_dict() for r in recs]
    assert scored == [18, 18, 18]


def _one_suite(folder: Path, rows: list[dict], **task) -> Path:
    folder.mkdir(parents=True)
    (folder / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "e.yaml").write_text(yaml.safe_dump({"category": "general", "data": {"path": "e.jsonl"}, "task": {**MC_TASK, **task}}))
    return folder / "e.yaml"


def test_an_empty_answer_choice_is_a_clean_error_only_where_lm_eval_fails(tiny_model_dir, tmp_path, monkeypatch):
    """A choice with no text and an empty target delimiter leaves nothing to score (HFLM asserts), and lm-eval's own
    task check reads the first item's choices' first character: exit 3 naming item and choice. With the default
    delimiter, an empty choice past the first item is the continuation " " and is scored, as lm-eval scores it.
    Whatever else lm-eval raises while it builds a suite's task is one error naming the suite."""
    def run(suite, out):
        return run_cli("eval", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(out), "--cache", str(tmp_path / "c.sqlite"), "--quiet")

    for item, delimiter, expected in ((0, "", "item 0: choice 1 is empty and target_delimiter is empty"),
                                      (2, "", "item 2: choice 1 is empty and target_delimiter is empty"),
                                      (0, " ", "item 0: choice 1 is empty (lm-eval's task check"),
                                      (2, " ", None)):
        rows = [{"question": f"What is {i} plus {i}?", "choices": [str(2 * i), "" if i == item else str(i)], "gold": 0} for i in range(4)]
        folder = tmp_path / f"s{item}{len(delimiter)}"
        code, out, err = run(_one_suite(folder, rows, target_delimiter=delimiter), folder / "out")
        if expected is None:
            assert code == 0, err
            continue
        assert code == 3 and "Traceback" not in err and expected in err and "give every answer choice some text" in err, err
        assert not (folder / "out" / "results.json").exists()
    # the scorer's own check, past the suite check: a continuation longer than --max-length names suite and item
    rows = [{"question": f"What is {i}?", "choices": [str(i), " ".join(["word"] * (80 if i == 3 else 1))], "gold": 0} for i in range(4)]
    code, out, err = run_cli("eval", "--model", str(tiny_model_dir), "--suite", str(_one_suite(tmp_path / "long", rows)), "--out", str(tmp_path / "lo"),
                             "--cache", str(tmp_path / "c.sqlite"), "--quiet", "--max-length", "32")
    assert code == 3 and "Traceback" not in err, err
    assert "suite e, item 3: a request has a continuation of" in err and "longer than max_length 32" in err and "--max-length" in err, err
    from lm_eval.tasks import TaskManager

    def broken(self, *a, **kw):
        raise IndexError("string index out of range")

    monkeypatch.setattr(TaskManager, "load", broken)
    code, out, err = run(write_mc_suite(tmp_path / "ok", n=4), tmp_path / "o2")
    assert code == 3 and "suite toy: lm-eval cannot build its task (IndexError: string index out of range)" in err and "Traceback" not in err, err


def test_a_delimiter_or_choice_that_is_not_text_is_named_by_the_suite_check(tmp_path):
    """lm-eval calls .rstrip() on the delimiter and indexes each choice: a number, null or list there is the suite's
    error, with the key, before any model is loaded (it was an AttributeError inside lm-eval's task build)."""
    rows = [{"question": f"q{i}", "choices": ["a", "b"], "gold": 0} for i in range(3)]
    for n, (task, expected) in enumerate((({"target_delimiter": 5}, "task.target_delimiter': must be text (got int)"),
                                          ({"fewshot_delimiter": None}, "task.fewshot_delimiter': must be text (got NoneType)"))):
        code, out, err = run_cli("suites", "validate", str(_one_suite(tmp_path / f"d{n}", rows, **task)))
        assert code == 3 and expected in out + err and "Traceback" not in out + err, (out, err)
    rows[1]["choices"] = ["a", None]
    code, out, err = run_cli("suites", "validate", str(_one_suite(tmp_path / "c", rows)))
    assert code == 3 and "item 1: choice 1 is not text (NoneType)" in out + err and "Traceback" not in out + err, (out, err)


PRIMER = ("Q: What is the capital of France?\nA: Paris.\n\nQ: At what temperature does water boil at sea level?\n"
          "A: 100 degrees Celsius.\n\nQ: Who met in Berlin in 1999?\nA: Alice, Bob, Carol and Dave.\n\n")


def test_shared_preamble_is_computed_once_per_model_and_changes_no_number_or_cache_key(tiny_model_dir, tiny_adapter, tmp_path):
    """A suite whose every item starts with the same primer (TruthfulQA-style): the base and the adapter, each on its
    own preamble states, give the per-item log-likelihoods of the run without reuse within 1e-5; the run's stats count
    the reuse; the model identities are unchanged, so responses cached without reuse serve a run with it, and back."""
    reg, ref = tiny_adapter
    suite = write_mc_suite(tmp_path / "s", n=12, question=PRIMER + "Q: What is {i} plus {i}?")
    on = run_eval(spec(tmp_path, tiny_model_dir, [suite], adapters=[ref], registry=str(reg), precision="fp32")).to_dict()
    off = run_eval(spec(tmp_path, tiny_model_dir, [suite], adapters=[ref], registry=str(reg), precision="fp32", share_preamble=False,
                        cache=str(tmp_path / "c2.sqlite"), out=str(tmp_path / "off"))).to_dict()
    for label in ("base", ref):
        req_on, req_off = on["models"][label]["requests"], off["models"][label]["requests"]
        assert req_on["computed"] == req_on["requests"] == 48 and req_on["preamble_reused"] == 48 and req_on["preamble_fallback"] == 0
        assert req_off["computed"] == 48 and req_off["preamble_reused"] == req_off["preamble_fallback"] == 0
        assert on["models"][label]["identity"] == off["models"][label]["identity"]
    _, rec_on = load_run(tmp_path / "out")
    _, rec_off = load_run(tmp_path / "off")
    a, b = by_item(rec_on, "base"), by_item(rec_off, "base")
    a2, b2 = by_item(rec_on, ref), by_item(rec_off, ref)
    assert a.keys() == b.keys() == a2.keys() == b2.keys() and len(a) == 12
    worst = max(abs(x - y) for on_, off_ in ((a, b), (a2, b2)) for k in on_ for x, y in zip(on_[k].loglikelihoods, off_[k].loglikelihoods))
    assert worst < 1e-5, f"max per-item log-likelihood difference with the preamble reused: {worst:.2e}"
    # the adapter changes the preamble's states: had it reused the base's, its numbers would be the base's
    assert max(abs(x - y) for k in a for x, y in zip(a[k].loglikelihoods, a2[k].loglikelihoods)) > 1e-3
    # the same cache keys both ways: the run without reuse is served entirely from the run with it
    again = run_eval(spec(tmp_path, tiny_model_dir, [suite], adapters=[ref], registry=str(reg), precision="fp32", share_preamble=False,
                          out=str(tmp_path / "again"))).to_dict()
    assert all(m["requests"]["computed"] == 0 for m in again["models"].values())
    _, rec_again = load_run(tmp_path / "again")
    assert [r.to_dict() for r in rec_again] == [r.to_dict() for r in rec_on]


def _wide_window_model_and_adapter(tiny_model_dir, root):
    """The fixture with a 4,096-token sliding window (the abstention-gen prompts are ~230 of its tokens, past its
    32-token window, where generation does not reuse a preamble), and a 2-step adapter of it."""
    from harness.config import validate
    from harness.train import TrainConfig, train

    wide = root / "tiny-wide"
    shutil.copytree(tiny_model_dir, wide)
    cfg = json.loads((wide / "config.json").read_text())
    cfg["sliding_window"] = 4096
    (wide / "config.json").write_text(json.dumps(cfg))
    rows = [{"instruction": f"What is {i} plus {i}?", "output": f"{2 * i}"} for i in range(40)]
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tcfg = validate(TrainConfig, {"name": "wide", "model": str(wide), "data": {"path": str(root / "d.jsonl")}, "max_length": 64, "max_steps": 2,
                                  "optim": {"lr": 5e-2}, "registry": str(root / "reg"), "output_dir": str(root / "run")}, "t.yaml")
    return wide, root / "reg", str(train(tcfg).entry.ref)


def test_generation_reads_a_shared_preamble_once_per_model_and_writes_the_same_answers(tiny_model_dir, tmp_path):
    """A generation suite whose prompts share an instruction and two shots (hallucination/abstention-gen): each batch
    reads the preamble from its cache (computed once per model, the adapter its own) and runs only the rest; every
    generated answer equals the run without reuse, for the base and the adapter, and the cache keys are the same."""
    model, reg, ref = _wide_window_model_and_adapter(tiny_model_dir, tmp_path)
    suite = "hallucination/abstention-gen"
    kw = dict(adapters=[ref], registry=str(reg), precision="fp32", batch_size=4, limit=12)
    on = run_eval(spec(tmp_path, model, [suite], **kw)).to_dict()
    off = run_eval(spec(tmp_path, model, [suite], share_preamble=False, cache=str(tmp_path / "c2.sqlite"), out=str(tmp_path / "off"), **kw)).to_dict()
    for label in ("base", ref):
        req_on, req_off = on["models"][label]["requests"], off["models"][label]["requests"]
        assert req_on["computed"] == 12 and req_on["preamble_reused"] == 12 and req_on["preamble_fallback"] == 0
        assert req_off["computed"] == 12 and req_off["preamble_reused"] == req_off["preamble_fallback"] == 0
        assert on["models"][label]["identity"] == off["models"][label]["identity"]
    _, rec_on = load_run(tmp_path / "out")
    _, rec_off = load_run(tmp_path / "off")
    for label in ("base", ref):
        a, b = by_item(rec_on, label), by_item(rec_off, label)
        assert a.keys() == b.keys() and len(a) == 12
        assert {k: a[k].generation for k in a} == {k: b[k].generation for k in b}
    # the adapter's answers come from its own preamble states (had it read the base's, they would be the base's)
    base, adapted = by_item(rec_on, "base"), by_item(rec_on, ref)
    assert [base[k].generation for k in sorted(base)] != [adapted[k].generation for k in sorted(base)]
    again = run_eval(spec(tmp_path, model, [suite], share_preamble=False, out=str(tmp_path / "again"), **kw)).to_dict()
    assert all(m["requests"]["computed"] == 0 for m in again["models"].values())


def test_generation_past_a_sliding_window_is_generated_in_full_and_counted(tiny_model_dir, tmp_path):
    """On the fixture's 32-token window the prompts reach past it: generated as before, counted as fallbacks."""
    doc = run_eval(spec(tmp_path, tiny_model_dir, ["hallucination/abstention-gen"], precision="fp32", batch_size=4, limit=8)).to_dict()
    assert doc["models"]["base"]["requests"]["preamble_reused"] == 0 and doc["models"]["base"]["requests"]["preamble_fallback"] == 8


def test_generation_reuses_a_preamble_only_where_the_relaid_batch_stays_exact(tiny_model_dir):
    """Beam search, several sequences per row, n-gram blocking, sampling, a configured cache class: generated as
    before. A cache whose sliding window the sequence could reach, or with layers other than plain dynamic ones: a
    counted fallback."""
    from collections import Counter

    import torch
    from transformers.cache_utils import DynamicLayer

    from harness.evaluate.scoring import PreambleStore, _plain_greedy, _reusable_cache, generation_with_preamble
    from harness.models import LoadSpec, load_model, resolve_model

    model, _, _ = load_model(resolve_model(str(tiny_model_dir)), LoadSpec("fp32"))
    assert _plain_greedy(model, {"do_sample": False, "until": ["\n"]})
    for kw in ({"num_beams": 2}, {"num_return_sequences": 2}, {"no_repeat_ngram_size": 3}, {"do_sample": True},
               {"cache_implementation": "static"}, {"cache": object()}):
        assert not _plain_greedy(model, kw), kw
    store = PreambleStore()
    pre = tuple(range(10, 30))  # 20 token ids: a preamble (16 at least) inside the fixture's 32-slot window
    cache = store.get_generation_cache(model, pre, "cpu")
    window = model.config.sliding_window
    assert _reusable_cache(cache, window - 1) and not _reusable_cache(cache, window)
    odd = type("Odd", (DynamicLayer,), {})()
    assert not _reusable_cache(type("C", (), {"layers": [odd]})(), 8) and not _reusable_cache(object(), 8)
    # a batch that could reach the window: counted, generated in full
    ids = torch.tensor([list(pre) + [5, 6], list(pre) + [7, 8]])
    counts: Counter = Counter()
    assert generation_with_preamble(model, ids, torch.ones_like(ids), window + 4, store, counts, 0, {}) is None
    assert counts == {"preamble_fallback": 2}
    assert generation_with_preamble(model, ids, torch.ones_like(ids), ids.shape[1] + 4, store, counts, 0, {"num_beams": 2}) is None
    assert counts == {"preamble_fallback": 2}  # not eligible at all: not counted
    plan = generation_with_preamble(model, ids, torch.ones_like(ids), ids.shape[1] + 4, store, counts, 0, {})
    assert plan is not None and counts["preamble_reused"] == 2 and store.computed == 1  # the cache made once, above
    relaid, relaid_mask, batch_cache = plan
    assert relaid.tolist() == ids.tolist() and relaid_mask.all() and batch_cache.get_seq_length() == len(pre)


# ---------------------------------------------------------------- cache, isolation, re-runs


def test_rerun_is_served_from_cache_and_identical(tiny_model_dir, tiny_adapter, tmp_path):
    reg, ref = tiny_adapter
    suite = write_mc_suite(tmp_path / "s")
    first = run_eval(spec(tmp_path, tiny_model_dir, [suite], adapters=[ref], registry=str(reg))).to_dict()
    assert all(m["requests"]["computed"] > 0 for m in first["models"].values())
    _, rec1 = load_run(tmp_path / "out")
    logs: list[str] = []
    second = run_eval(spec(tmp_path, tiny_model_dir, [suite], adapters=[ref], registry=str(reg), out=str(tmp_path / "out2")), log=logs.append).to_dict()
    assert not any("loading" in line for line in logs), "a fully cached run must not load the model"
    for m in second["models"].values():
        assert m["requests"]["computed"] == 0 and m["requests"]["forward_batches"] == 0
        assert m["requests"]["cache_hits"] == m["requests"]["requests"] > 0
    _, rec2 = load_run(tmp_path / "out2")
    assert [r.to_dict() for r in rec1] == [r.to_dict() for r in rec2]
    assert first["results"] == second["results"]


def test_same_seed_and_inputs_give_identical_records_without_cache(tiny_model_dir, tmp_path):
    suite = write_mc_suite(tmp_path / "s")
    run_eval(spec(tmp_path, tiny_model_dir, [suite], no_cache=True, out=str(tmp_path / "a")))
    run_eval(spec(tmp_path, tiny_model_dir, [suite], no_cache=True, out=str(tmp_path / "b")))
    assert [r.to_dict() for r in load_run(tmp_path / "a")[1]] == [r.to_dict() for r in load_run(tmp_path / "b")[1]]


def test_base_and_adapter_never_see_each_others_answers(tiny_model_dir, tiny_adapter, tmp_path):
    reg, ref = tiny_adapter
    suite = write_mc_suite(tmp_path / "s")
    run_eval(spec(tmp_path, tiny_model_dir, [suite], precision="nf4", out=str(tmp_path / "base")))  # the base answers, NF4 as the adapter's
    doc = run_eval(spec(tmp_path, tiny_model_dir, [suite], adapters=[ref], registry=str(reg), out=str(tmp_path / "both"))).to_dict()
    assert doc["models"]["base"]["requests"]["computed"] == 0
    assert doc["models"][ref]["requests"]["cache_hits"] == 0, "the adapter was served the base's answers"
    # the adapter's numbers equal a run with no cache at all
    run_eval(spec(tmp_path, tiny_model_dir, [suite], adapters=[ref], registry=str(reg), no_cache=True, out=str(tmp_path / "fresh")))
    cached = by_item(load_run(tmp_path / "both")[1], ref)
    fresh = by_item(load_run(tmp_path / "fresh")[1], ref)
    assert {k: v.loglikelihoods for k, v in cached.items()} == {k: v.loglikelihoods for k, v in fresh.items()}
    base = by_item(load_run(tmp_path / "both")[1], "base")
    assert any(base[k].loglikelihoods != cached[k].loglikelihoods for k in base)


def test_changed_suite_data_is_rescored_not_served_stale(tiny_model_dir, tmp_path):
    suite = write_mc_suite(tmp_path / "s", n=20)
    run_eval(spec(tmp_path, tiny_model_dir, [suite]))
    rows = [json.loads(x) for x in (tmp_path / "s" / "toy.jsonl").read_text().splitlines()]
    rows[3]["question"] = "What is seven plus seven, really?"
    (tmp_path / "s" / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = run_eval(spec(tmp_path, tiny_model_dir, [suite], out=str(tmp_path / "out2"))).to_dict()
    req = doc["models"]["base"]["requests"]
    assert req["computed"] == 4 and req["cache_hits"] == 76  # only the changed item's 4 choices
    rec = [r for r in load_run(tmp_path / "out2")[1] if r.doc_id == 3][0]
    assert "seven plus seven" in rec.prompt


def test_kill_9_loses_at_most_the_batch_in_flight(tiny_model_dir, tmp_path):
    suite = write_mc_suite(tmp_path / "s", n=1500, question="Consider the number {i}. What do you get when you add {i} to itself?")
    cache = tmp_path / "cache.sqlite"
    cmd = [sys.executable, "-m", "harness", "eval", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(tmp_path / "killed"),
           "--cache", str(cache), "--batch-size", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    n = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if cache.exists():
            try:
                with sqlite3.connect(cache) as c:
                    n = c.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            except sqlite3.Error:
                n = 0
            if n >= 200:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(cache) as c:
        saved = c.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert 200 <= saved < 6000
    doc = run_eval(spec(tmp_path, tiny_model_dir, [suite], cache=str(cache), out=str(tmp_path / "resumed"), batch_size=1)).to_dict()
    req = doc["models"]["base"]["requests"]
    assert req["cache_hits"] == saved and req["computed"] == 6000 - saved
    ref = run_eval(spec(tmp_path, tiny_model_dir, [suite], no_cache=True, out=str(tmp_path / "ref"), batch_size=1)).to_dict()
    assert doc["results"] == ref["results"]


# ---------------------------------------------------------------- records and results


def test_results_json_has_aggregates_records_and_provenance(tiny_model_dir, tiny_adapter, tmp_path):
    reg, ref = tiny_adapter
    suite = write_mc_suite(tmp_path / "s", n=12)
    code, out, err = run_cli("eval", "--model", str(tiny_model_dir), "--adapter", ref, "--registry", str(reg), "--suite", str(suite), "--suite", "general/text",
                             "--limit", "10", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c.sqlite"), "--quiet", "--batch-size", "4")
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    prov = doc["provenance"]
    assert prov["load"]["precision"] == "nf4", "QLoRA-faithful: the adapter's NF4 base"
    assert prov["batch_size"] == 4 and prov["base_model"]["fingerprint"] and prov["packages"]["lm_eval"]
    assert doc["models"][ref]["adapter"]["weights_sha256"]
    assert doc["results"]["base"]["toy"]["acc"]["n"] == 10
    assert doc["suites"]["general/text"]["metrics"]["bits_per_byte"]["higher_is_better"] is False
    lines = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 2 * (10 + 10)
    r = json.loads(lines[0])
    for key in ("suite", "doc_id", "doc_hash", "prompt", "choices", "target", "loglikelihoods", "prediction", "metrics"):
        assert key in r
    # the printed table (Markdown on this pipe) carries the document's numbers under whole names
    [table] = markdown_tables(out)
    row = next(r for r in table if r["suite"] == "toy" and r["metric"] == "acc")
    assert row["primary"] == "yes" and row["n"] == "10"
    assert float(row["base"]) == pytest.approx(doc["results"]["base"]["toy"]["acc"]["value"], abs=5e-5)
    assert float(row[ref]) == pytest.approx(doc["results"][ref]["toy"]["acc"]["value"], abs=5e-5)


# ---------------------------------------------------------------- bad input


def _eval(tmp_path, *args):
    return run_cli("eval", "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c.sqlite"), "--quiet", *args)


def test_bad_suite_yaml_syntax(tiny_model_dir, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("category: general\ntask: {output_type: multiple_choice\n")
    _err(_eval(tmp_path, "--model", str(tiny_model_dir), "--suite", str(p)), "bad.yaml", "YAML syntax error", "line")


def test_bad_suite_unknown_key(tiny_model_dir, tmp_path):
    p = write_mc_suite(tmp_path / "s")
    data = yaml.safe_load(p.read_text())
    data["catgory"] = "general"
    p.write_text(yaml.safe_dump(data))
    _err(_eval(tmp_path, "--model", str(tiny_model_dir), "--suite", str(p)), "toy.yaml", "catgory", "unknown key")
    code, out, _ = run_cli("suites", "validate", str(p))
    assert code == 3 and "catgory" in out and "unknown key" in out


def test_bad_missing_data_file(tiny_model_dir, tmp_path):
    p = write_mc_suite(tmp_path / "s")
    (tmp_path / "s" / "toy.jsonl").unlink()
    _err(_eval(tmp_path, "--model", str(tiny_model_dir), "--suite", str(p)), "data file not found", "toy.jsonl")


def test_bad_unknown_lm_eval_task_suggests_close_matches(tiny_model_dir, tmp_path):
    _err(_eval(tmp_path, "--model", str(tiny_model_dir), "--suite", "lm_eval:arc_easi"), "arc_easi", "arc_easy")


def test_bad_unknown_suite_name(tiny_model_dir, tmp_path):
    _err(_eval(tmp_path, "--model", str(tiny_model_dir), "--suite", "general/world-fact"), "unknown suite", "general/world-facts")


def test_adapter_for_another_base_is_refused_unless_forced(tiny_model_dir, tiny_adapter, tmp_path):
    from tests.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    reg, ref = tiny_adapter
    suite = write_mc_suite(tmp_path / "s", n=5)
    _err(_eval(tmp_path, "--model", str(other), "--adapter", ref, "--registry", str(reg), "--suite", str(suite)), "trained on base", "--force-base-mismatch")
    code, _, err = _eval(tmp_path, "--model", str(other), "--adapter", ref, "--registry", str(reg), "--suite", str(suite), "--force-base-mismatch")
    assert code == 0, err
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["models"][ref]["adapter"]["forced_base_mismatch"] is True
    # ... and everything that reads the run says so above the numbers
    policy = tmp_path / "g.yaml"
    policy.write_text("min_items: 1\nrules: [{category: general, max_drop: 1.0}]\n")
    code, out, err = run_cli("gate", "--baseline", str(tmp_path / "o"), "--candidate", f"{tmp_path / 'o'}#{ref}", "--policy", str(policy),
                             "--summary", str(tmp_path / "s.md"))
    assert code == 0 and "warning:" in out and "force-base-mismatch" in out, out + err
    assert "**Warning:**" in (tmp_path / "s.md").read_text()
    assert json.loads((tmp_path / "o" / "verdict.json").read_text())["warnings"]
    code, out, err = run_cli("report", str(tmp_path / "o"), "--output", str(tmp_path / "r.html"))
    assert code == 0, err
    assert "was trained on another base model" in (tmp_path / "r.html").read_text()


def test_adapter_whose_weights_changed_is_refused(tiny_model_dir, tiny_adapter, tmp_path):
    reg, ref = tiny_adapter
    copy = tmp_path / "reg"
    shutil.copytree(reg, copy)
    name, version = ref.split("@")
    w = copy / name / version / "adapter_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x10
    w.write_bytes(bytes(data))
    suite = write_mc_suite(tmp_path / "s", n=5)
    _err(_eval(tmp_path, "--model", str(tiny_model_dir), "--adapter", ref, "--registry", str(copy), "--suite", str(suite)), "does not match its manifest", "adapter_model.safetensors")


def test_builtin_general_suites_are_valid():
    """Every built-in suite loads, has >= 200 items, and its items are well formed."""
    wf = load_suite("general/world-facts")
    docs = wf.load_docs()
    assert len(docs) >= 200
    for d in docs:
        assert len(d["choices"]) == 4 and len(set(d["choices"])) == 4 and 0 <= d["gold"] < 4
    text = load_suite("general/text").load_docs()
    assert len(text) >= 200 and all(len(d["text"]) >= 200 for d in text)


def test_world_facts_agree_with_their_source_packages():
    """Each item's answer is the fact the data package holds, and every distractor is wrong for that subject."""
    import datetime

    periodictable = pytest.importorskip("periodictable")
    pytest.importorskip("babel")
    from babel.languages import get_official_languages
    from babel.numbers import get_territory_currencies

    symbols = {e.number: e.symbol for e in periodictable.elements if e.number >= 1}
    for d in load_suite("general/world-facts").load_docs():
        gold, codes = d["codes"][d["gold"]], d["codes"]
        wrong = [c for i, c in enumerate(codes) if i != d["gold"]]
        if d["kind"] == "element_symbol":
            number = int(d["subject_code"])
            assert symbols[number] == d["choices"][d["gold"]] and all(symbols[int(c)] != symbols[number] for c in wrong)
        elif d["kind"] == "currency":
            current = get_territory_currencies(d["subject_code"], start_date=datetime.date(2025, 1, 1), tender=True, non_tender=False)
            assert current == [gold] and not set(wrong) & set(current), d
        else:
            official = set(get_official_languages(d["subject_code"]))
            assert gold in official and not set(wrong) & official, d


def test_benchmark_suites_run_from_local_copies(shared_benchmarks):
    expected = {"benchmarks/arc_easy": 2376, "benchmarks/arc_challenge": 1172, "benchmarks/piqa": 1838, "benchmarks/boolq": 3270, "benchmarks/winogrande": 1267}
    for name, n in expected.items():
        s = load_suite(name, shared_benchmarks)
        assert len(s.load_docs()) == n and s.source.startswith("local copy"), name
        assert s.build.config["output_type"] == "multiple_choice"


def test_benchmark_suite_offline_without_local_copy_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from harness.errors import LafError

    with pytest.raises(LafError, match="data-dir"):
        load_suite("benchmarks/hellaswag", tmp_path).load_docs()


def test_a_failed_rerun_leaves_the_previous_results_whole(tiny_model_dir, tmp_path):
    first = write_mc_suite(tmp_path / "a", n=10, name="first")
    second = write_mc_suite(tmp_path / "b", n=10, name="second")
    run_eval(spec(tmp_path, tiny_model_dir, [first, second]))
    before = [r.to_dict() for r in load_run(tmp_path / "out")[1]]
    rows = [json.loads(x) for x in (tmp_path / "b" / "second.jsonl").read_text().splitlines()]
    del rows[5]["choices"]  # a broken item in the second suite
    (tmp_path / "b" / "second.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(LafError, match="doc_to_choice"):  # now refused before scoring (suite checks render every item)
        run_eval(spec(tmp_path, tiny_model_dir, [first, second]))
    assert [r.to_dict() for r in load_run(tmp_path / "out")[1]] == before
    # a failure while scoring (kill -9 mid-write): tests/test_trust_locking.py


# ---------------------------------------------------------------- the warm path: stored suite results, no model stack

WARM_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from harness.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - t0,
                  "modules": sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "peft", "bitsandbytes", "lm_eval", "datasets", "scipy",
                                                                              "numpy"}),
                  "configs": sorted({m for m in sys.modules if m.endswith(".config")} & {"harness.merge.config", "harness.sweep.config",
                                                                                          "harness.train.config", "harness.pipeline.config"})}))
"""


def _warm_cli(tmp_path, model, suites, out, *extra) -> dict:
    argv = ["eval", "--model", str(model), *[a for s in suites for a in ("--suite", str(s))], "--limit", "10", "--out", str(out),
            "--cache", str(tmp_path / "cache.sqlite"), "--batch-size", "4", "--quiet", *extra]
    res = subprocess.run([sys.executable, "-c", WARM_PROBE, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_fully_cached_eval_imports_no_model_stack(tiny_model_dir, tiny_adapter, tmp_path):
    """A re-run that needs nothing new reads the stored suite results: no lm-eval task, no model, and neither torch,
    transformers, peft, lm-eval, datasets, scipy nor numpy imported, nor another command's config models (issue 30:
    a third of a second instead of 8 to 18 s)."""
    from harness.models.load import cuda_certainly_absent

    reg, ref = tiny_adapter
    suites = [write_mc_suite(tmp_path / "s", n=12), "general/text"]
    first = run_eval(spec(tmp_path, tiny_model_dir, suites, adapters=[ref], registry=str(reg), limit=10)).to_dict()
    warm = _warm_cli(tmp_path, tiny_model_dir, suites, tmp_path / "warm", "--adapter", ref, "--registry", str(reg))
    assert warm["code"] == 0
    if cuda_certainly_absent():  # where a GPU may be present, resolving device=auto asks torch (correctly)
        assert warm["modules"] == [], f"a fully cached eval imported {warm['modules']}"
    assert warm["configs"] == [], f"laf eval built the parsers of other commands: {warm['configs']}"
    doc, recs = load_run(tmp_path / "warm")
    _, recs1 = load_run(tmp_path / "out")
    assert [r.to_dict() for r in recs] == [r.to_dict() for r in recs1]
    assert doc.to_dict()["results"] == first["results"]
    assert {k: m.to_dict() for k, m in doc.suites.items()} == first["suites"]
    for label, m in doc.models.items():
        assert m.requests == first["models"][label]["requests"] | {"cache_hits": m.requests["requests"], "computed": 0, "forward_batches": 0,
                                                                   "preamble_reused": 0, "preamble_fallback": 0}
        assert m.identity == first["models"][label]["identity"]
    # another limit is another suite content: scored from the responses, never served the 10-item result
    fewer = run_eval(spec(tmp_path, tiny_model_dir, suites, adapters=[ref], registry=str(reg), limit=5, out=str(tmp_path / "five"))).to_dict()
    assert fewer["results"]["base"]["toy"]["acc"]["n"] == fewer["results"][ref]["toy"]["acc"]["n"] == 5
    assert all(m["requests"]["computed"] == 0 for m in fewer["models"].values())


def test_bad_or_missing_stored_suite_results_fall_back_to_the_responses(tiny_model_dir, tmp_path):
    suite = write_mc_suite(tmp_path / "s", n=10)
    run_eval(spec(tmp_path, tiny_model_dir, [suite]))
    want = [r.to_dict() for r in load_run(tmp_path / "out")[1]]
    cache = tmp_path / "cache.sqlite"
    with sqlite3.connect(cache) as c:
        (key, value), = c.execute("SELECT key, value FROM suite_results").fetchall()
        stored = json.loads(value)
        stored["records"][0]["metrics"]["acc"] = 1e999  # parses to infinity: never a score
        c.execute("UPDATE suite_results SET value = ?", (json.dumps(stored).replace("Infinity", "1e999"),))
    logs: list[str] = []
    doc = run_eval(spec(tmp_path, tiny_model_dir, [suite], out=str(tmp_path / "o2")), log=logs.append).to_dict()
    assert any("invalid cached row" in line for line in logs)
    assert doc["models"]["base"]["requests"]["computed"] == 0  # the responses still serve it
    assert [r.to_dict() for r in load_run(tmp_path / "o2")[1]] == want
    with sqlite3.connect(cache) as c:  # the row was rewritten from the responses
        assert json.loads(c.execute("SELECT value FROM suite_results WHERE key = ?", (key,)).fetchone()[0])["records"][0]["metrics"]["acc"] in (0, 1)
        c.execute("DROP TABLE suite_results")  # a cache written before stored suite results existed stays valid
    doc = run_eval(spec(tmp_path, tiny_model_dir, [suite], out=str(tmp_path / "o3"))).to_dict()
    assert doc["models"]["base"]["requests"]["computed"] == 0
    assert [r.to_dict() for r in load_run(tmp_path / "o3")[1]] == want
    with sqlite3.connect(cache) as c:
        c.execute("DROP TABLE suite_results")
        c.execute("CREATE TABLE suite_results (k TEXT)")  # not ours: one clear error
    with pytest.raises(LafError, match="suite_results"):
        run_eval(spec(tmp_path, tiny_model_dir, [suite], out=str(tmp_path / "o4")))


@pytest.mark.parametrize(("text", "expected"), [
    ("cuda: Optional[str] = None\nhip: Optional[str] = None\n", False),
    ("cuda: Optional[str] = '12.8'\nhip: Optional[str] = None\n", True),
    ("cuda = None\nhip = '6.2.41133'\n", True),
    ("__version__ = '2.13.0'\n", None),  # unreadable: ask torch
])
def test_device_auto_is_decided_without_torch_only_where_certain(tmp_path, monkeypatch, text, expected):
    """device=auto is part of every identity: a cached run may skip importing torch only where torch could not
    find a GPU (a CPU-only build, no GPU device node, every GPU hidden)."""
    import importlib.util
    from types import SimpleNamespace

    from harness.models import load

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text(text)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(submodule_search_locations=[str(tmp_path / "torch")]))
    assert load._torch_build_has_gpu() is expected
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert load.cuda_certainly_absent()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(load, "_GPU_NODES", (str(tmp_path / "torch" / "version.py"),))  # a GPU node that exists
    assert load.cuda_certainly_absent() is (expected is False)


def test_a_plausibly_edited_stored_suite_result_is_a_miss(tiny_model_dir, tmp_path):
    """A stored suite result rewritten to plausible values (every item right, still valid JSON of the right shape) is
    caught by its seal (key, kind, value), counted, and re-derived from the responses: never served as a score."""
    suite = write_mc_suite(tmp_path / "s", n=10)
    run_eval(spec(tmp_path, tiny_model_dir, [suite]))
    want = [r.to_dict() for r in load_run(tmp_path / "out")[1]]
    with sqlite3.connect(tmp_path / "cache.sqlite") as c:
        (key, value), = c.execute("SELECT key, value FROM suite_results").fetchall()
        stored = json.loads(value)
        for r in stored["records"]:
            r["metrics"]["acc"] = 1.0
        c.execute("UPDATE suite_results SET value = ?", (json.dumps(stored),))
    logs: list[str] = []
    run_eval(spec(tmp_path, tiny_model_dir, [suite], out=str(tmp_path / "o2")), log=logs.append)
    assert any("invalid cached row" in line for line in logs)
    assert [r.to_dict() for r in load_run(tmp_path / "o2")[1]] == want
    assert any(r["metrics"]["acc"] == 0 for r in want)  # the edit changed something a reader would see
