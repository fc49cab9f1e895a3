"""laf parity: the adapter on the fly vs merged vs merged + NF4, on the tiny fixture; parity gate rules."""

from __future__ import annotations

import json

import pytest
import torch

from harness.errors import LafError
from tests.conftest import assert_clean_error, markdown_tables, run_cli
from tests.test_merge import make_adapter

SUITE = "general/world-facts"


@pytest.fixture(scope="module")
def pworld(tmp_path_factory, tiny_model_dir):
    from tests.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("parity")
    reg = root / "registry"
    other = build_tiny_model(root / "other-base", seed=1)
    refs = {
        "a": make_adapter(reg, "a", tiny_model_dir, 1),
        "b": make_adapter(reg, "b", tiny_model_dir, 2),
        "q": make_adapter(reg, "q", tiny_model_dir, 4, precision="nf4"),
        "other": make_adapter(reg, "other", other, 6),
    }
    return {"root": root, "registry": reg, "model": tiny_model_dir, "refs": refs, "cache": str(root / "cache.sqlite")}


@pytest.fixture(scope="module")
def fp32_parity(pworld):
    from harness.merge.parity import ParitySpec, run_parity

    out = pworld["root"] / "parity-a"
    doc = run_parity(ParitySpec(adapter="a@1", suites=[SUITE], out=str(out), registry=str(pworld["registry"]), limit=16,
                                device="cpu", batch_size=4, max_length=128, cache=pworld["cache"]))
    import gc

    import torch

    gc.collect()  # a scorer generator left suspended would switch gradients off when collected
    assert torch.is_grad_enabled(), "laf parity left autograd switched off for the rest of the process"
    return out, doc


def _pair(doc, form, reference="on_the_fly"):
    return next(p for p in doc["pairs"] if p["reference"] == reference and p["form"] == form)


def test_identical_forms_have_zero_kl_and_no_flips(pworld, fp32_parity):
    """The same model under two names: KL exactly 0 at every position, top-1 always agrees; a side vs itself flips nothing."""
    from transformers import AutoModelForCausalLM

    from harness.evaluate.parity import next_token_drift
    from harness.gate.parity import compare_records
    from harness.gate.runs import load_side

    m = AutoModelForCausalLM.from_pretrained(pworld["model"], dtype=torch.float32).eval()
    reqs = [([5, 6, 7, 8], [9, 10]), ([5, 6, 7, 8], [11]), ([12, 13], [14, 15, 16])]
    drift = next_token_drift({"x": m, "y": m}, [("x", "y")], reqs, ["i0", "i0", "i1"], batch_size=2, max_length=64, pad_id=0, device="cpu")
    s = drift[("x", "y")].summary()
    assert s["positions"] == 6 and s["items"] == 2
    assert s["kl_mean"] == 0.0 and s["kl_max"] == 0.0 and s["top1_agreement"] == 1.0
    out, _ = fp32_parity
    side = load_side(f"{out}/forms/on_the_fly#a@1", "x", default_base=False)
    cmp = compare_records(side, side)
    assert cmp["flips"] == 0 and cmp["items"] == 16 and cmp["mean_abs_delta_ll"] == 0.0
    assert cmp["suites"][SUITE]["metrics"]["acc"]["delta"] == 0.0


def test_merged_fp32_matches_on_the_fly_and_nf4_requantised_drifts(fp32_parity):
    out, doc = fp32_parity
    assert doc["merge"]["merged"]["base_weights"] == "original"  # an fp32-trained adapter merges into the original weights
    merged = _pair(doc, "merged")
    nf4 = _pair(doc, "merged_nf4")
    assert merged["positions"] > 16 and merged["items"] == 16
    assert merged["kl_mean"] < 1e-6 and merged["kl_p99"] < 1e-6, merged
    assert merged["top1_agreement"] == 1.0 and merged["flips"] == 0
    assert merged["mean_abs_delta_ll"] < 1e-4
    assert nf4["kl_mean"] > 1e-5 and nf4["kl_p99"] >= nf4["kl_mean"] > 0, nf4
    assert nf4["mean_abs_delta_ll"] > merged["mean_abs_delta_ll"]
    acc = nf4["suites"][SUITE]["metrics"]["acc"]
    assert acc["n"] == 16 and acc["ci_low"] <= acc["improvement"] <= acc["ci_high"]
    assert {(p["reference"], p["form"]) for p in doc["pairs"]} == {("on_the_fly", "merged"), ("on_the_fly", "merged_nf4"), ("merged", "merged_nf4")}
    assert (out / "merged_fp32" / "merge.json").is_file()
    assert json.loads((out / "parity.json").read_text())["pairs"] == json.loads(json.dumps(doc["pairs"]))


def test_parity_rules_pass_and_fail(fp32_parity, tmp_path):
    from harness.gate.policy import Policy
    from harness.gate.run import run_gate

    out, doc = fp32_parity
    nf4 = _pair(doc, "merged_nf4")
    side = f"{out}/forms/on_the_fly#a@1"
    rules = [
        {"parity": "merged", "max_kl": 1e-6},
        {"parity": "merged_nf4", "max_kl": nf4["kl_mean"] / 2},  # fails: drift above the bound
        {"parity": "merged_nf4", "max_flips": 1.0},
    ]
    policy = Policy.model_validate({"min_items": 1, "rules": rules})
    v, _ = run_gate(side, side, policy, out=tmp_path / "verdict.json", parity=out / "parity.json")
    assert [r.status for r in v.rules] == ["pass", "fail", "pass"]
    assert v.status == "fail" and v.exit_code == 1
    assert "merged_nf4 vs on_the_fly" in v.rules[1].message
    # found in the run folder without --parity
    shutil_copy = (out / "forms" / "on_the_fly" / "parity.json")
    shutil_copy.write_text((out / "parity.json").read_text())
    v2, _ = run_gate(side, side, Policy.model_validate({"min_items": 1, "rules": rules[:1]}), out=tmp_path / "v2.json")
    assert v2.status == "pass"
    shutil_copy.unlink()
    # a form that was not measured, and a policy with no parity.json
    with pytest.raises(LafError, match="no form 'merged_original'"):
        run_gate(side, side, Policy.model_validate({"rules": [{"parity": "merged_original", "max_kl": 0.1}]}), out=tmp_path / "v3.json",
                 parity=out / "parity.json")
    with pytest.raises(LafError, match="no parity.json"):
        run_gate(side, side, Policy.model_validate({"rules": [{"parity": "merged_nf4", "max_kl": 0.1}]}), out=tmp_path / "v4.json")


def test_parity_rule_schema_and_untrusted_parity_json(tmp_path):
    from pydantic import ValidationError

    from harness.gate.parity import load_parity
    from harness.gate.policy import Rule

    with pytest.raises(ValidationError):
        Rule.model_validate({"parity": "merged_nf4", "max_drop": 0.1})
    with pytest.raises(ValidationError):
        Rule.model_validate({"suite": "x", "max_kl": 0.1})
    with pytest.raises(ValidationError):
        Rule.model_validate({"parity": "merged_nf4", "suite": "x", "max_kl": 0.1})
    with pytest.raises(ValidationError):
        Rule.model_validate({"parity": "merged_nf4", "max_flips": 2})
    bad = tmp_path / "parity.json"
    bad.write_text(json.dumps({"pairs": [{"reference": "on_the_fly", "form": "merged_nf4", "kl_mean": "NaN"}]}))
    with pytest.raises(LafError, match="not a finite number"):
        load_parity(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(LafError, match="not a parity.json"):
        load_parity(bad)


def test_qlora_parity_records_the_merge_base_and_measures_both(pworld, tmp_path):
    """An NF4-trained adapter: merged into the dequantised NF4 weights reproduces the on-the-fly NF4 run; merged into the
    original weights is another model; re-quantising drifts."""
    out = tmp_path / "pq"
    code, stdout, err = run_cli("parity", "q@1", "--suite", SUITE, "--limit", "8", "--out", str(out), "--registry", str(pworld["registry"]),
                                "--form", "merged", "--form", "merged_nf4", "--form", "merged_original", "--device", "cpu",
                                "--batch-size", "4", "--max-length", "128", "--cache", pworld["cache"])
    assert code == 0, err
    doc = json.loads((out / "parity.json").read_text())
    pairs = {r["form"]: r for r in markdown_tables(stdout)[0]}
    nf4 = next(p for p in doc["pairs"] if p["form"] == "merged_nf4")
    assert pairs["merged_nf4"]["flips"] == str(nf4["flips"]) and pairs["merged_nf4"]["items"] == str(nf4["items"])
    assert float(pairs["merged_nf4"]["KL mean"]) == pytest.approx(nf4["kl_mean"], rel=1e-2)
    assert doc["merge"]["merged"]["base_weights"] == "nf4_dequantized"
    assert doc["merge"]["merged_original"]["base_weights"] == "original"
    assert doc["forms"]["on_the_fly"]["load"]["precision"] == "nf4"
    merged, orig, nf4 = _pair(doc, "merged"), _pair(doc, "merged_original"), _pair(doc, "merged_nf4")
    assert merged["kl_mean"] < 1e-6, merged
    assert orig["kl_mean"] > 100 * max(merged["kl_mean"], 1e-12)
    assert nf4["kl_mean"] > 1e-6


def test_bad_inputs_end_in_one_message(pworld, fp32_parity, tmp_path):
    reg = str(pworld["registry"])
    common = ["--suite", SUITE, "--registry", reg, "--device", "cpu", "--limit", "4"]
    assert_clean_error(run_cli("parity", "nope@1", "--out", str(tmp_path / "x"), *common), "no adapter named 'nope'")
    assert_clean_error(run_cli("parity", "other@1", "--model", str(pworld["model"]), "--out", str(tmp_path / "y"), *common),
                       "was trained on base", "--model")
    out, _ = fp32_parity
    assert_clean_error(run_cli("parity", "a@1", "--out", str(out), *common), "not empty")
    assert_clean_error(run_cli("parity", "a@1", "--out", str(tmp_path / "z"), "--form", "merged_original", *common), "same model as merged")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_report_has_a_parity_panel_with_every_value_escaped(fp32_parity, tmp_path):
    import shutil

    from harness.report import write_report

    out, doc = fp32_parity
    run = tmp_path / "run"
    shutil.copytree(out / "forms" / "on_the_fly", run)
    hostile = json.loads(json.dumps(doc))
    hostile["adapter"] = "<script>alert(1)</script>"
    hostile["pairs"][0]["form"] = "<img src=x onerror=alert(2)>"
    hostile["merge"]["merged"]["base_weights"] = "<b>x</b>"
    (run / "parity").mkdir()
    (run / "parity" / "parity.json").write_text(json.dumps(hostile))
    html = write_report(run).read_text()
    assert "Export parity" in html and "KL mean" in html
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    nf4 = _pair(doc, "merged_nf4")
    assert format(nf4["kl_mean"], ".3g") in html
    # no parity.json: no panel
    shutil.rmtree(run / "parity")
    assert "Export parity" not in write_report(run).read_text()


def test_run_merge_stage_registers_the_merged_adapter_evaluates_it_and_gates_parity(pworld, tmp_path):
    import yaml

    from harness.pipeline import run_pipeline
    from harness.registry import Registry

    reg = tmp_path / "registry"
    import shutil

    shutil.copytree(pworld["registry"], reg)
    cfg = {
        "name": "pm", "model": str(pworld["model"]), "precision": "fp32", "adapters": ["a@1"], "registry": str(reg), "out_root": str(tmp_path / "reports"),
        "merge": [{"name": "ab", "method": "linear", "adapters": ["a@1", "b@1"], "output": {"rank": "exact"}}],
        "eval": {"batch_size": 4, "max_length": 128, "cache": pworld["cache"], "suites": [{"suite": SUITE, "limit": 12}]},
        "parity": {"adapter": "a@1", "forms": ["merged"]},
        "gate": {"policy": {"min_items": 1, "rules": [{"suite": SUITE, "max_drop": 1.0}, {"parity": "merged", "max_kl": 1e-6}]}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    s = run_pipeline(path)
    assert s["adapters"] == ["a@1", "ab@1"]
    assert "merge-0" in s["stages_ran"] and "parity" in s["stages_ran"]
    assert set(s["results"]) == {"base", "a@1", "ab@1"}
    lineage = Registry(reg).resolve("ab@1").manifest["lineage"]
    assert [p["ref"] for p in lineage["parents"]] == ["a@1", "b@1"]
    run = tmp_path / "reports" / "pm"
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["verdict"] == "pass", verdict["rules"]
    assert [r["kind"] for r in verdict["rules"]] == ["max_drop", "max_kl"]
    assert (run / "eval" / "parity" / "parity.json").is_file()
    assert "Export parity" in (run / "report.html").read_text()
    # the merged adapter's own verdict: the parity rule measured another adapter, so it is inconclusive, not a pass
    other = json.loads((run / "verdict-ab-1.json").read_text())
    assert other["rules"][1]["status"] == "inconclusive"
    # unchanged: nothing merged or measured again, no new version
    s2 = run_pipeline(path)
    assert "merge-0" in s2["stages_skipped"] and "parity" in s2["stages_skipped"]
    assert Registry(reg).versions("ab") == [1] and s2["adapters"] == ["a@1", "ab@1"]


def test_run_config_merge_problems_are_reported_before_any_stage(pworld, tmp_path):
    import yaml

    cfg = {
        "name": "pm2", "model": str(pworld["model"]), "precision": "fp32", "registry": str(pworld["registry"]), "out_root": str(tmp_path / "r"),
        "merge": [{"name": "x", "method": "slerp", "adapters": ["a@1", "b@1"], "t": 1.5}, {"name": "y", "method": "linear", "adapters": ["a@1"],
                  "output": {"kind": "model", "path": "m"}}],
        "eval": {"suites": [SUITE]},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert_clean_error(run_cli("run", str(path)), "merge[0]", "t must lie in [0, 1]", "merge.1.output.kind")
    assert not (tmp_path / "r").exists()


def test_parity_encodes_an_empty_prompt_as_lm_eval_does(tiny_model_dir):
    """CrowS-Pairs records have an empty prompt (whole sentences are scored): parity's requests are the pairs lm-eval's
    own loglikelihood builds (the prefix token as context), where ``_encode_pair`` would assert."""
    from lm_eval.api.instance import Instance

    from harness.evaluate.lm import HarnessLM
    from harness.merge.parity import encode_request
    from harness.models import LoadSpec, load_model, resolve_model

    model, tok, _ = load_model(resolve_model(str(tiny_model_dir)), LoadSpec("fp32"))
    lm = HarnessLM(model, tok, batch_size=2, max_length=64)
    pairs = [("", "The cat sat on the mat."), ("", " leading space"), ("Question: what?\nAnswer:", " a b"), ("x", "y")]
    seen: list = []
    lm._loglikelihood_tokens = lambda reqs, **kw: seen.extend((list(c), list(t)) for _, c, t in reqs) or [(0.0, True)] * len(reqs)  # type: ignore[method-assign]
    lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)])
    assert [encode_request(lm, c, t) for c, t in pairs] == seen
    assert seen[0][0] == [lm.prefix_token_id]
