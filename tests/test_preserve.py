"""Forgetting control (``preserve:``) and honest checkpoint selection (``select:``) on the tiny fixture.

* replay: self-generated once and cached (a second run generates nothing), mixed at the asked token ratio,
  contamination-checked (a replay file quoting an eval item loses that line, all-contaminated is an error);
* the KL anchor and replay change the numbers and the adapter's identity; off by default changes nothing;
* self-distilled targets fall back to the original when a fact is lost;
* select: snapshots scored on the selection split, the chosen one registered, every later stage on the
  confirmation split only; the winner's curse simulated with 20 null checkpoints;
* bad input: one clear error (exit 3) before training starts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.data.contamination import words
from harness.gate.policy import Rule
from harness.gate.rules import decide
from harness.pipeline import run_pipeline
from harness.stats import aggregations
from harness.stats.paired import paired_delta
from harness.train import train
from harness.train.preserve import ReplayMix, facts_kept, openings
from tests.conftest import assert_clean_error, run_cli
from tests.test_pipeline import write_config
from tests.test_train import make_config, write_jsonl

REPO_ROOT = Path(__file__).resolve().parents[1]
REPLAY = {"source": "self", "ratio": 0.3, "count": 12, "max_new_tokens": 12}


def test_openings_pool_quotes_no_eval_suite():
    from harness.data.curate import replay_contamination

    texts = openings()
    assert len(texts) >= 90 and len(set(texts)) == len(texts)
    kept, report = replay_contamination(texts, None)
    assert kept == list(range(len(texts))), report
    assert "general/text" in report["against"]  # the held-out prose measure is among those checked


def test_self_replay_is_generated_once_then_cached_and_mixed_at_the_ratio(tiny_model_dir, tmp_path, isolated_cache):
    logs: list[str] = []
    cfg = make_config(tmp_path, tiny_model_dir, preserve={"replay": REPLAY}, max_steps=4, eval_every=0, save_every=0)
    r1 = train(cfg, log=logs.append)
    info = r1.entry.manifest["preserve"]["replay_data"]
    assert info["source"] == "self" and info["count"] == 12 and info["cached"] is False and info["kept"] == 12
    assert info["dropped_contaminated"] == 0 and "domain/tempo-t4" in info["contamination"]["against"]
    rows = [json.loads(x) for x in (r1.run_dir / "metrics.jsonl").read_text().splitlines()]
    replay_share = sum(m["replay_tokens"] for m in rows) / sum(m["tokens"] for m in rows)
    assert 0.1 < replay_share < 0.5  # 0.3 of the epoch's tokens; four steps see a sample of it
    # the second run reads the cache: nothing generated
    logs.clear()
    cfg2 = make_config(tmp_path, tiny_model_dir, preserve={"replay": REPLAY}, max_steps=4, eval_every=0, save_every=0, output_dir=str(tmp_path / "run2"))
    r2 = train(cfg2, log=logs.append)
    assert r2.entry.manifest["preserve"]["replay_data"]["cached"] is True
    assert not any("the base writes" in m for m in logs)
    assert r2.entry.manifest["preserve"]["replay_digest"] == r1.entry.manifest["preserve"]["replay_digest"]


def test_replay_mix_token_ratio_is_exact_over_an_epoch():
    from harness.data.tokenize import TokenizedExample

    dom = [TokenizedExample([1] * 50, [1] * 50, i) for i in range(20)]  # 1,000 domain tokens
    rep = [TokenizedExample([2] * 30, [2] * 30, -i - 1, replay=True) for i in range(5)]
    for ratio in (0.1, 0.5, 0.9):
        rows = ReplayMix(dom, rep, ratio, seed=0).rows(0)
        r = sum(len(x.input_ids) for x in rows if x.replay)
        share = r / sum(len(x.input_ids) for x in rows)
        assert abs(share - ratio) < 30 / sum(len(x.input_ids) for x in rows) + 1e-9  # within one replay row


def test_preserve_off_keeps_the_old_identity_and_kl_changes_the_update(tiny_model_dir, tmp_path, isolated_cache):
    from harness.train import TrainConfig

    plain = make_config(tmp_path, tiny_model_dir)
    assert "preserve" not in plain.math_dict()  # adapters trained before preserve existed keep their fingerprints
    assert TrainConfig.model_validate({**plain.model_dump(by_alias=True), "preserve": {"kl": {"weight": 0.0}}}).math_dict() == plain.math_dict()
    a = train(make_config(tmp_path, tiny_model_dir, max_steps=3, eval_every=0, save_every=0, output_dir=str(tmp_path / "a")))
    b = train(make_config(tmp_path, tiny_model_dir, max_steps=3, eval_every=0, save_every=0, output_dir=str(tmp_path / "b"), preserve={"kl": {"weight": 5.0}}))
    la = [json.loads(x) for x in (a.run_dir / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert la[0]["loss"] == pytest.approx(lb[0]["nll"], abs=1e-6)  # step 1: same weights, the KL of a zero-B adapter is 0
    assert lb[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert lb[-1]["kl"] > 0 and lb[-1]["kl_tokens"] == lb[-1]["supervised_tokens"]
    assert a.entry.manifest["files"] != b.entry.manifest["files"]
    assert b.entry.manifest["preserve"]["kl"] == {"weight": 5.0, "on": "all"}


def test_replay_file_line_quoting_an_eval_item_is_dropped_and_counted(tiny_model_dir, tmp_path, isolated_cache):
    from harness.suites import load_suite

    item = load_suite("general/text").load_docs()[0]
    quote = " ".join(words(next(v for v in item.values() if isinstance(v, str) and len(words(v)) > 20))[:20])
    (tmp_path / "replay.txt").write_text(f"The weather was fine all week and we walked to the lake.\n\n{quote}\n\nA short paragraph about bread and butter.\n")
    cfg = make_config(tmp_path, tiny_model_dir, max_steps=2, eval_every=0, save_every=0,
                      preserve={"replay": {"source": str(tmp_path / "replay.txt"), "ratio": 0.2, "against": ["general/text"]}})
    info = train(cfg).entry.manifest["preserve"]["replay_data"]
    assert info["texts"] == 3 and info["kept"] == 2 and info["dropped_contaminated"] == 1
    assert info["contamination"]["suites"]["general/text"]["contaminated_items"] >= 1


def test_self_distill_falls_back_when_a_fact_is_lost():
    assert facts_kept("Hold the MODE key for 5 seconds to reset the T4.", "To reset the T4, keep the MODE key pressed for 5 seconds.")
    assert not facts_kept("Hold the MODE key for 5 seconds to reset the T4.", "Hold the MODE key for a while to reset it.")  # 5 and T4 lost
    assert not facts_kept("The filter must be replaced every ninety days.", "I like cheese.")
    assert not facts_kept("anything", "   ")


def _distill_outcome(text: str) -> str | None:
    """What a generated rewrite becomes in the training data: its kept text, or None (rejected: it loops)."""
    from harness.train.preserve import _clean_rewrite, _looped

    kept = _clean_rewrite(text)
    return None if _looped(kept) else kept


def test_a_rewrite_ended_early_keeps_the_outcome_generating_on_would_give():
    """The stop rule ends a row's generation only where more text can no longer change what training gets."""
    from harness.train.preserve import _rewrite_is_final

    pieces = ["Hold MODE ", "for 5 s", ". ", "\n", "\n\n", "Question:", "Quest", "Reference answer:", "Instruction:", "  ",
              "It is a 14-bit ADC. ", "T4", "x", ":", "        "]
    rng = random.Random(0)
    stopped = 0
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        for p in range(1, len(text) + 1):
            if _rewrite_is_final(text[:p]) is not None:
                stopped += 1
                assert _distill_outcome(text[:p]) == _distill_outcome(text), (text[:p], text)
                break
    assert stopped > 1000  # the rule does end most of these early
    assert _distill_outcome("It is a 14-bit ADC. It is a 14-bit ADC. It is a 14-bit ADC. It is") is None
    assert _rewrite_is_final("\n\nHotspot") is None and _rewrite_is_final("Hotspot for setup.\n\nQ") == 18
    # spaces said many times at the end are stripped from what is kept: not a loop yet (more text could keep them)
    assert _rewrite_is_final("Paris is the capital of France." + " " * 45) is None


def test_generation_stops_rows_one_by_one_without_changing_the_others(tiny_model_dir):
    from harness.models import LoadSpec, load_model, resolve_model
    from harness.train.preserve import generate

    model, tok, _ = load_model(resolve_model(str(tiny_model_dir)), LoadSpec("fp32", None, "cpu"))
    prompts = ["Reset the T4:", "The filter", "Question: what is the cyan light for on the thermostat?", "a"]
    full = generate(model, tok, prompts, max_new_tokens=16, sample=False)
    cut = [None, 6, 1, 12]  # row 0 never stops; the others stop once their text is that long
    early = generate(model, tok, prompts, max_new_tokens=16, sample=False,
                     stop_when=lambda t: None if cut[next(i for i, f in enumerate(full) if f.startswith(t))] is None
                     or len(t) < cut[next(i for i, f in enumerate(full) if f.startswith(t))] else len(t))
    assert early[0] == full[0]
    for i in (1, 2, 3):
        assert full[i].startswith(early[i]) and len(early[i]) < len(full[i]), (early[i], full[i])


def test_self_distill_rewrites_are_cached_and_counted(tiny_model_dir, tmp_path, isolated_cache):
    logs: list[str] = []
    cfg = make_config(tmp_path, tiny_model_dir, max_steps=2, eval_every=0, save_every=0, preserve={"self_distill": True, "distill_max_new_tokens": 12})
    info = train(cfg, log=logs.append).entry.manifest["preserve"]["self_distill_data"]
    assert info["examples"] == info["rewritten"] + info["fell_back"] > 0 and info["cached"] is False
    cfg2 = make_config(tmp_path, tiny_model_dir, max_steps=2, eval_every=0, save_every=0, output_dir=str(tmp_path / "r2"),
                       preserve={"self_distill": True, "distill_max_new_tokens": 12})
    assert train(cfg2).entry.manifest["preserve"]["self_distill_data"]["cached"] is True
    # a cache file edited to hold a rewrite longer than generation can write (a looping 2 MB one would take the loop
    # check minutes) is not ours: the rewrites are made again, and the training data never sees it
    (cache_file,) = (isolated_cache / "distill").glob("*.json")
    doc = json.loads(cache_file.read_text())
    doc["texts"][0] = "It is a 14-bit ADC, " + "ab" * 1_000_000
    cache_file.write_text(json.dumps(doc))
    cfg3 = make_config(tmp_path, tiny_model_dir, max_steps=2, eval_every=0, save_every=0, output_dir=str(tmp_path / "r3"),
                       preserve={"self_distill": True, "distill_max_new_tokens": 12})
    info3 = train(cfg3).entry.manifest["preserve"]["self_distill_data"]
    assert info3["cached"] is False and info3["examples"] == info["examples"]
    assert "ab" * 100 not in cache_file.read_text()  # rewritten whole


# ---------------------------------------------------------------- bad input: one clear error before training


def _cli(tmp_path, model_dir, preserve=None, **over):
    data = write_jsonl(tmp_path / "d.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(30)])
    cfg = {"name": "bad", "model": str(model_dir), "data": {"path": str(data)}, "max_length": 64, "max_steps": 1,
           "registry": str(tmp_path / "reg"), "output_dir": str(tmp_path / "run"), **over}
    if preserve is not None:
        cfg["preserve"] = preserve
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return run_cli("train", str(tmp_path / "cfg.yaml"), "--quiet")


@pytest.mark.parametrize("preserve,needle", [
    ({"replay": {"ratio": 0.95}}, "ratio"),
    ({"replay": {"ratio": -0.1}}, "ratio"),
    ({"kl": {"weight": -1}}, "weight"),
    ({"kl": {"weight": ".nan"}}, "weight"),
    ({"kl": {"weight": 1e999}}, "not a finite number"),
    ({"kl": {"weight": 1, "on": "replay"}}, "needs replay tokens"),
    ({"kl": {"weight": 1, "on": "everything"}}, "on"),
])
def test_bad_preserve_settings(tiny_model_dir, tmp_path, preserve, needle):
    assert_clean_error(_cli(tmp_path, tiny_model_dir, preserve), needle)
    assert not (tmp_path / "reg").exists()


def test_bad_self_distill_with_a_preference_objective(tiny_model_dir, tmp_path):
    assert_clean_error(_cli(tmp_path, tiny_model_dir, {"self_distill": True}, objective="dpo"), "self_distill", "objective: sft")


def test_bad_replay_files(tiny_model_dir, tmp_path, isolated_cache):
    (tmp_path / "empty.txt").write_text("")
    assert_clean_error(_cli(tmp_path, tiny_model_dir, {"replay": {"source": str(tmp_path / "empty.txt")}}), "empty")
    assert_clean_error(_cli(tmp_path, tiny_model_dir, {"replay": {"source": str(tmp_path / "missing.txt")}}), "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02" * 100)
    assert_clean_error(_cli(tmp_path, tiny_model_dir, {"replay": {"source": str(tmp_path / "bin.txt")}}), "binary")
    from harness.suites import load_suite

    docs = load_suite("general/text").load_docs()[:3]
    quotes = [" ".join(words(next(v for v in d.values() if isinstance(v, str) and len(words(v)) > 20))[:20]) for d in docs]
    (tmp_path / "leak.txt").write_text("\n\n".join(quotes))
    assert_clean_error(_cli(tmp_path, tiny_model_dir, {"replay": {"source": str(tmp_path / "leak.txt"), "against": ["general/text"]}}),
                       "every one of the 3 replay texts")
    assert not (tmp_path / "reg").exists()


# ---------------------------------------------------------------- select


POLICY = {"confidence": 0.95, "min_items": 20, "rules": [{"category": "domain", "min_gain": 0.05}, {"category": "general", "max_drop": 0.05},
                                                         {"category": "bias", "max_increase": 0.1, "required": False}]}
TRAIN = {"max_length": 96, "batch_size": 4, "max_steps": 6, "eval_every": 3, "save_every": 2, "optim": {"lr": 2.0e-3}}


def test_select_chooses_on_one_split_and_certifies_on_the_other(tiny_model_dir, tmp_path, isolated_cache):
    cfgp = write_config(tmp_path, tiny_model_dir, "sel", str(tmp_path / "c.sqlite"), select={"every": 2, "fraction": 0.5},
                        train={**TRAIN, "preserve": {"replay": REPLAY, "kl": {"weight": 0.5}}})
    s = run_pipeline(cfgp)
    run = tmp_path / "reports" / "sel"
    split = json.loads((run / "select" / "split.json").read_text())
    sel = json.loads((run / "selection.json").read_text())
    assert set(split) == {"domain/tempo-t4", "general/world-facts"}  # the required rules' suites; bias is advisory
    for sp in split.values():
        assert not set(sp["selection"]) & set(sp["confirmation"])
        assert sorted(sp["selection"] + sp["confirmation"]) == list(range(sp["n"]))
    assert [c["step"] for c in sel["curve"]] == [2, 4, 6]
    assert sel["chosen_step"] in (2, 4, 6) and s["adapters"][0] == sel["adapter"]
    from harness.pipeline.select import choose, pass_chance

    assert sel["by"] == "pass_chance" and all(0.0 <= c["pass_chance"] <= 1.0 for c in sel["curve"])
    assert choose(sel["curve"])["step"] == sel["chosen_step"]  # the registered snapshot is the one the rule picks from the recorded curve
    for c in sel["curve"]:
        assert c["pass_chance"] == pytest.approx(pass_chance(c["rules"], 0.95))
    for c in sel["curve"]:
        assert {r["target"] for r in c["rules"]} == set(split) and all(r["n"] == len(split[r["target"]]["selection"]) for r in c["rules"])
    # the final evaluation holds exactly the confirmation items of the gated suites, the full advisory suite
    from harness.results import load_run

    _, records = load_run(run / "eval")
    for name, sp in split.items():
        got = sorted(r.doc_hash for r in records if r.suite == name and r.model == "base")
        assert len(got) == len(sp["confirmation"])
        assert not set(got) & set(sp["selection_hashes"])
    verdict = json.loads((run / "verdict.json").read_text())
    assert {r["suite"]: r["stats"]["n"] for r in verdict["rules"] if r["suite"] in split} == {k: len(v["confirmation"]) for k, v in split.items()}
    state = json.loads((run / "state.json").read_text())
    assert state["stages"]["select:train"]["chosen_step"] == sel["chosen_step"]
    from harness.registry import Registry

    m = Registry(tmp_path / "registry").resolve(sel["adapter"]).manifest
    assert m["selection"]["chosen_step"] == sel["chosen_step"] and m["steps"] == sel["chosen_step"]
    assert Registry(tmp_path / "registry").versions("sel") == [1]  # only the chosen snapshot is registered in the run's registry
    # unchanged: a second run skips training and selection
    s2 = run_pipeline(cfgp)
    assert "train" in s2["stages_skipped"] and s2["adapters"][0] == sel["adapter"]


@pytest.mark.parametrize("how", ["run", "sweep"])
def test_select_trains_dpo_from_an_adapter_of_the_runs_registry(tiny_model_dir, tmp_path, isolated_cache, how):
    """With select:, training registers into the selection's own registry; init_from still names an adapter of the
    run's (the SFT adapter a DPO stage starts from), in `laf run` and in each `laf sweep` point. Found on the default
    model: the lookup went to the empty selection registry and the run stopped. The sweep is
    examples/quickstart-preserve-dpo.yaml as written, on the fixture, from an SFT adapter of the name it starts from."""
    from harness.registry import Registry
    from harness.sweep import run_sweep

    example = yaml.safe_load((REPO_ROOT / "examples" / "quickstart-preserve-dpo.yaml").read_text())
    sft_name = example["train"]["init_from"].split("@")[0]
    sft = train(make_config(tmp_path, tiny_model_dir, name=sft_name, max_steps=2, eval_every=0, save_every=0)).entry
    pairs = (REPO_ROOT / "examples" / "quickstart" / "preference.jsonl").read_text().splitlines()[:40]
    (tmp_path / "pref.jsonl").write_text("\n".join(pairs) + "\n")
    if how == "run":
        cfgp = write_config(tmp_path, tiny_model_dir, "dpo", str(tmp_path / "c.sqlite"), data={"path": "pref.jsonl"}, select={"every": 2, "fraction": 0.5},
                            train={**TRAIN, "max_length": 64, "max_steps": 4, "objective": "dpo", "init_from": f"{sft_name}@latest",
                                   "lora": {"r": 8, "alpha": 16}, "preserve": {"kl": {"weight": 0.3, "on": "train"}}})
        ref = run_pipeline(cfgp)["adapters"][0]
        assert "train" in run_pipeline(cfgp)["stages_skipped"]  # unchanged
        # init_from X@latest names whatever X is now: a retrained X retrains this stage (it was reported unchanged)
        sft2 = train(make_config(tmp_path, tiny_model_dir, name=sft_name, max_steps=3, eval_every=0, save_every=0, output_dir=str(tmp_path / "run2"))).entry
        again = run_pipeline(cfgp)
        assert "train" in again["stages_ran"]
        m2 = Registry(tmp_path / "registry").resolve(again["adapters"][0]).manifest
        assert m2["objective"]["init_from"]["ref"] == str(sft2.ref) != str(sft.ref)
    else:
        cfg = dict(example, model=str(tiny_model_dir), registry=str(tmp_path / "registry"), out_root=str(tmp_path / "reports"))
        cfg["data"] = {**cfg["data"], "path": "pref.jsonl"}
        cfg["train"] = {**cfg["train"], "max_steps": 4, "eval_every": 2, "save_every": 2, "max_length": 64, "batch_size": 4}
        cfg["select"] = {**cfg["select"], "every": 2, "fraction": 0.5}
        cfg["eval"] = {**cfg["eval"], "cache": str(tmp_path / "c.sqlite"), "batch_size": 4,
                       "suites": [{"suite": "domain/tempo-t4", "limit": 50}, {"suite": "general/world-facts", "limit": 50}, {"suite": "general/text", "limit": 40},
                                  {"suite": "hallucination/abstention", "limit": 20}]}
        cfg["gate"]["policy"]["min_items"] = 10
        (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        run_sweep(tmp_path / "dpo.yaml")
        doc = json.loads((tmp_path / "reports" / example["name"] / "sweep.json").read_text())
        (point,) = doc["selection"]
        ref = doc["selection"][point]["adapter"]
        assert doc["frontier"]["points"][0]["name"] == point
    m = Registry(tmp_path / "registry").resolve(ref).manifest
    assert m["objective"]["init_from"]["ref"] == str(sft.ref) and m["selection"]["chosen_step"] in (2, 4)
    assert m["objective"]["name"] == "dpo" and m["preserve"]["kl"] == {"weight": 0.3, "on": "train"}


def _rule(imp, lo, hi, thr, n=80, n_conf=120, kind="min_gain"):
    return {"improvement": imp, "ci_low": lo, "ci_high": hi, "threshold": thr, "n": n, "confirmation_n": n_conf, "kind": kind}


def test_pass_chance_is_the_normal_formula_on_the_confirmation_scale():
    """One rule: estimate 0.20, 95 % CI 0.10..0.30 on 80 selection items, threshold 0.10, 120 confirmation items:
    se_sel = 0.1 / 1.96, se_conf = se_sel * sqrt(80/120), P = Phi((0.20 - 0.10) / se_conf - 1.645) (the gate's one-sided
    bound at 95 %)."""
    from statistics import NormalDist

    from harness.pipeline.select import pass_chance

    nd = NormalDist()
    z = nd.inv_cdf(0.975)
    se = 0.1 / z * (80 / 120) ** 0.5
    assert pass_chance([_rule(0.20, 0.10, 0.30, 0.10)], 0.95) == pytest.approx(nd.cdf(0.10 / se - nd.inv_cdf(0.95)), rel=1e-9)
    # two rules multiply; a rule with no estimate (no data) can never be chosen as likely to pass
    two = [_rule(0.20, 0.10, 0.30, 0.10), _rule(-0.01, -0.03, 0.01, -0.05, kind="max_drop")]
    assert pass_chance(two, 0.95) == pytest.approx(pass_chance(two[:1], 0.95) * pass_chance(two[1:], 0.95))
    assert pass_chance([_rule(None, None, None, 0.1)], 0.95) == 0.0
    assert pass_chance([_rule(0.2, 0.2, 0.2, 0.1)], 0.95) == 1.0 and pass_chance([_rule(0.05, 0.05, 0.05, 0.1)], 0.95) == 0.0
    # no spread: decided as the gate decides a bound on the margin. A general suite that has not moved (0 against a
    # max_drop 0 rule) passes; a gain exactly on its margin does not (the superiority rule is strict)
    assert pass_chance([_rule(0.0, 0.0, 0.0, -0.0, kind="max_drop")], 0.95) == 1.0
    assert pass_chance([_rule(-0.05000000000000002, -0.05000000000000002, -0.05000000000000002, -0.05, kind="max_drop")], 0.95) == 1.0
    assert pass_chance([_rule(0.10000000000000003, 0.10000000000000003, 0.10000000000000003, 0.1)], 0.95) == 0.0


def test_pass_chance_does_not_reward_an_early_snapshot_that_only_passes_the_general_rules():
    """Step 10: nothing has moved, the general rules pass and the domain gain is small (2/3 rules pass). Step 30: the domain
    passes, and prose sits inside its margin with a CI touching it (2/3 pass). Counting passes ties them and the earlier
    (or the noisier) wins; the predicted chance to pass prefers the one that can actually pass."""
    from harness.pipeline.select import choose

    def snap(step, dom, prose, passed):
        rules = [_rule(dom, dom - 0.09, dom + 0.09, 0.10), _rule(-prose, -prose - 0.012, -prose + 0.012, -0.10, kind="max_increase"),
                 _rule(-0.01, -0.03, 0.01, -0.05, kind="max_drop")]
        from harness.pipeline.select import pass_chance

        return {"step": step, "verdict": "inconclusive", "rules_passed": passed, "primary_gain": dom, "pass_chance": pass_chance(rules, 0.95), "rules": rules}

    early, late = snap(10, 0.12, 0.03, 2), snap(30, 0.24, 0.092, 2)
    early["primary_gain"] = 0.25  # the noisy selection split happened to see a large gain at step 10 on a wide CI
    early["rules"][0].update(improvement=0.12)
    assert choose([early, late], "rules")["step"] == 10
    assert choose([early, late])["step"] == 30
    assert late["pass_chance"] > early["pass_chance"]


def test_select_refuses_splits_too_small_or_overlapping(tiny_model_dir, tmp_path):
    small = write_config(tmp_path, tiny_model_dir, "small", str(tmp_path / "c.sqlite"), select={"every": 2, "fraction": 0.1}, train=TRAIN)
    assert_clean_error(run_cli("run", str(small)), "min_items", "selection split has 6 items")
    (tmp_path / "split.json").write_text(json.dumps({"domain/tempo-t4": {"selection": list(range(30)), "confirmation": list(range(25, 60))},
                                                     "general/world-facts": {"selection": list(range(40)), "confirmation": list(range(40, 80))}}))
    over = write_config(tmp_path, tiny_model_dir, "over", str(tmp_path / "c.sqlite"), select={"every": 2, "split": str(tmp_path / "split.json")}, train=TRAIN)
    assert_clean_error(run_cli("run", str(over)), "share 5 item(s)")
    (tmp_path / "split.json").write_text("[1, 2")
    assert_clean_error(run_cli("run", str(over)), "not readable JSON")
    nodata = yaml.safe_load(small.read_text())
    nodata.pop("data")
    nodata["adapters"] = ["x@1"]
    nodata["select"] = {"every": 2}
    (tmp_path / "nodata.yaml").write_text(yaml.safe_dump(nodata))
    assert_clean_error(run_cli("run", str(tmp_path / "nodata.yaml")), "trains nothing")
    assert not (tmp_path / "registry").exists()


def test_winners_curse_selecting_and_certifying_on_the_same_items_passes_null_checkpoints(tmp_path):
    """20 checkpoints that are no better than the base (each item's correctness flipped at random, symmetric): pick
    the best and certify it on the same items, and a superiority rule passes far more often than alpha; pick on the
    selection split and certify on the confirmation split, and it passes at most alpha (plus sampling error)."""
    agg = aggregations.get("mean")
    rule = Rule(category="domain", min_gain=0.0)
    rng = np.random.default_rng(0)
    trials, n, k, alpha = 150, 200, 20, 0.05
    same = split = 0
    for _ in range(trials):
        base = (rng.random(n) < 0.5).astype(float)
        cands = [np.where(rng.random(n) < 0.2, 1 - base, base) for _ in range(k)]
        order = list(range(n))
        random.Random(int(rng.integers(1 << 30))).shuffle(order)
        sel_idx, conf_idx = order[: n * 2 // 5], order[n * 2 // 5:]

        def gain(c, idx, base=base):
            return float(np.mean(c[idx]) - np.mean(base[idx]))

        best_all = max(cands, key=lambda c: gain(c, slice(None)))
        d = paired_delta(base.tolist(), best_all.tolist(), agg, n_resamples=2000)
        same += decide(rule, d, 1) == "pass"
        best_sel = max(cands, key=lambda c: gain(c, sel_idx))
        d = paired_delta(base[conf_idx].tolist(), best_sel[conf_idx].tolist(), agg, n_resamples=2000)
        split += decide(rule, d, 1) == "pass"
    se = (alpha * (1 - alpha) / trials) ** 0.5
    assert same / trials > 4 * alpha, same
    assert split / trials <= alpha + 2.5 * se, split


def test_preserve_example_sweep_selects_each_point_and_draws_the_frontier(tiny_model_dir, tmp_path, isolated_cache):
    """examples/quickstart-preserve.yaml as written, on the tiny fixture (6 steps, small suites): every point chosen on
    the selection split, scored on the confirmation split, placed on the frontier, in sweep.json, frontier.md and
    the report."""
    from harness.sweep import run_sweep
    from tests.conftest import REPO

    cfg = yaml.safe_load((REPO / "examples" / "quickstart-preserve.yaml").read_text())
    rows = (REPO / "examples" / "quickstart" / "train.jsonl").read_text().splitlines()[:120]
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    cfg["model"] = str(tiny_model_dir)
    cfg["data"]["path"] = "train.jsonl"
    cfg["train"].update(max_steps=4, eval_every=2, save_every=2, max_length=96, batch_size=4)
    cfg["train"]["preserve"]["replay"].update(count=8, max_new_tokens=12)
    cfg["select"]["every"] = 2
    cfg["eval"].update(cache=str(tmp_path / "cache.sqlite"), batch_size=4,
                       suites=[{"suite": "domain/tempo-t4", "limit": 50}, {"suite": "general/world-facts", "limit": 50}, {"suite": "general/text", "limit": 50},
                               {"suite": "hallucination/abstention", "limit": 20}])
    assert [r.get("suite") for r in cfg["gate"]["policy"]["rules"]][-1] == "hallucination/abstention"  # the example's advisory rule, kept
    cfg["gate"]["policy"]["min_items"] = 10
    cfg.update(registry=str(tmp_path / "registry"), out_root=str(tmp_path / "reports"))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    s = run_sweep(tmp_path / "p.yaml")
    run = tmp_path / "reports" / "quickstart-preserve"
    doc = json.loads((run / "sweep.json").read_text())
    names = [p["name"] for p in doc["points"]]
    assert names == ["quickstart-preserve-rp0-kl0", "quickstart-preserve-rp0-kl0.3", "quickstart-preserve-rp0-kl1",
                     "quickstart-preserve-rp0.5-kl0", "quickstart-preserve-rp0.5-kl0.3", "quickstart-preserve-rp0.5-kl1"]
    assert set(doc["selection"]) == set(names) and all(v["chosen_step"] in (2, 4) for v in doc["selection"].values())
    front = doc["frontier"]
    assert [p["name"] for p in front["points"]] == names and front["lost"]["suite"] == "general/text" and front["found"]["margin"] == 0.1
    assert front["pareto"] and all(p["found"]["n"] == 30 for p in front["points"])  # 60 % of 50 items certify
    assert (run / "frontier.md").read_text().startswith("### Found vs lost")
    html = (run / "report.html").read_text()
    assert "Found vs lost" in html and "Checkpoint selection" in html
    assert s["frontier"] == front
    from harness.registry import Registry

    assert all(p["verdict"] in ("pass", "fail", "inconclusive") for p in front["points"]) and front["sentence"]
    m = Registry(tmp_path / "registry").resolve(doc["points"][5]["model"]).manifest
    assert m["preserve"]["kl"]["weight"] == 1.0 and m["preserve"]["replay"]["ratio"] == 0.5 and m["selection"]["chosen_step"] in (2, 4)
