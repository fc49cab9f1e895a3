"""laf registry export: a PEFT folder that plain PEFT loads (same logits as our loading path) and a model card that
huggingface_hub parses, with every suite result in model-index; bad inputs end in one message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness.pipeline import run_pipeline
from tests.conftest import assert_clean_error, run_cli
from tests.test_pipeline import write_config

POLICY = {"confidence": 0.95, "min_items": 10, "rules": [
    {"category": "domain", "min_gain": 0.5},
    {"category": "general", "max_drop": 0.05, "min_items": 100000},
    {"category": "bias", "min_gain": 0.5, "required": False},
]}


@pytest.fixture(scope="module")
def gated_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    path = write_config(tmp, tiny_model_dir, "card", str(tmp / "cache.sqlite"))
    cfg = yaml.safe_load(path.read_text())
    cfg["train"].update(max_steps=4, eval_every=2, save_every=0)
    cfg["eval"] = {"batch_size": 4, "cache": str(tmp / "cache.sqlite"),
                   "suites": [{"suite": "domain/tempo-t4", "limit": 20}, {"suite": "general/world-facts", "limit": 20}, {"suite": "bias/crows-pairs", "limit": 10}]}
    cfg["gate"] = {"policy": POLICY}
    path.write_text(yaml.safe_dump(cfg))
    summary = run_pipeline(path, log=lambda m: None)
    return {"tmp": tmp, "registry": tmp / "registry", "run": Path(summary["run_dir"]), "model": tiny_model_dir}


def export(gated_run, out: Path, *extra: str):
    return run_cli("registry", "--registry", str(gated_run["registry"]), "export", "card@1", str(out), *extra)


def test_export_loads_in_plain_peft_with_the_logits_of_our_loading_path(gated_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.models import resolve_model
    from harness.models.load import LoadSpec, load_model
    from harness.registry import Registry

    out = tmp_path / "card-export"
    code, stdout, err = export(gated_run, out, "--base-model", "google/gemma-3-270m", "--repo-id", "acme/card")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [".laf-export.json", "README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert "hf upload acme/card" in stdout and "huggingface_hub.upload_folder(" in stdout
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "google/gemma-3-270m"

    ids = torch.tensor([[1, 17, 42, 99, 250, 7, 3, 300]])
    # ours: the evaluation engine's loader and adapter attach, on the registry folder
    base, _, _ = load_model(resolve_model(str(gated_run["model"])), LoadSpec("fp32", device="cpu"))
    ours = PeftModel.from_pretrained(base, str(Registry(gated_run["registry"]).resolve("card@1").path), is_trainable=False).eval()
    with torch.no_grad():
        want = ours(input_ids=ids).logits
        with ours.disable_adapter():
            plain_base = ours(input_ids=ids).logits
    # theirs: nothing from lost-and-found, just transformers + peft on the exported folder
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(gated_run["model"], dtype=torch.float32), str(out)).eval()
    with torch.no_grad():
        got = plain(input_ids=ids).logits
    assert torch.equal(got, want)
    assert (got - plain_base).abs().max() > 0, "the adapter changes the output (a trained adapter, not an empty one)"


def test_card_parses_with_huggingface_hub_and_holds_every_suite_result(gated_run, tmp_path):
    from huggingface_hub import ModelCard, metadata_load

    out = tmp_path / "card-export"
    code, _, err = export(gated_run, out, "--run", str(gated_run["run"]), "--license", "apache-2.0", "--dataset", "acme/tempo-support")
    assert code == 0, err
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and card.data.license == "apache-2.0" and card.data.datasets == ["acme/tempo-support"]
    assert {"peft", "lora", "qlora", "lost-and-found"} <= set(card.data.tags)
    assert card.data.base_model is None, "a local base model is not claimed as a Hub id"
    meta = metadata_load(out / "README.md")
    results = json.loads((gated_run["run"] / "eval" / "results.json").read_text())
    index = meta["model-index"][0]
    assert index["name"] == "card"
    got = {(r["dataset"]["type"], m["type"]): m for r in index["results"] for m in r["metrics"]}
    want = {(suite, metric): v for suite, ms in results["results"]["card@1"].items() for metric, v in ms.items()}
    assert set(got) == set(want)
    for key, m in got.items():
        assert m["value"] == pytest.approx(want[key]["value"], abs=1e-6)
        assert m["args"]["n"] == want[key]["n"] and m["args"]["ci_low"] <= m["value"] <= m["args"]["ci_high"]
        assert m["args"]["base_model_value"] == pytest.approx(results["results"]["base"][key[0]][key[1]]["value"], abs=1e-6)
        assert "95% CI" in m["name"]
    assert len(card.data.eval_results) == len(want)
    text = card.text
    verdict = json.loads((gated_run["run"] / "verdict.json").read_text())
    assert "Verdict: **FAIL**" in text
    for r in verdict["rules"]:
        assert r["rule"] in text
    limits = text.split("## Known limits", 1)[1].split("##", 1)[0]
    assert "**domain skill** -- domain/tempo-t4 acc failed" in limits
    assert "**forgetting (general capability)** -- general/world-facts acc not established (inconclusive)" in limits
    assert "**bias** -- bias/crows-pairs pct_stereotype failed (advisory rule)" in limits
    manifest = json.loads((gated_run["registry"] / "card" / "1" / "manifest.json").read_text())
    for needle in (manifest["base_model"]["fingerprint"], manifest["data"]["content_sha256"], "| optimizer steps | 4 |", "peak memory", "hf upload YOUR-USER/card"):
        assert needle in text, needle
    assert str(gated_run["tmp"]) not in text, "no local paths in a card meant for publishing"


def test_bad_inputs_end_in_one_message(gated_run, tmp_path):
    reg = ["registry", "--registry", str(gated_run["registry"]), "export"]
    assert_clean_error(run_cli(*reg, "nosuch@1", str(tmp_path / "o")), "no adapter named 'nosuch'")
    assert_clean_error(run_cli(*reg, "card@7", str(tmp_path / "o")), "no version 7")
    assert_clean_error(run_cli(*reg, "../card", str(tmp_path / "o")), "adapter name")
    assert_clean_error(run_cli(*reg, "card@1", str(tmp_path / "o"), "--run", str(tmp_path / "missing")), "run folder not found")
    (tmp_path / "empty-run").mkdir()
    assert_clean_error(run_cli(*reg, "card@1", str(tmp_path / "o"), "--run", str(tmp_path / "empty-run")), "holds no results.json")
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    assert_clean_error(run_cli(*reg, "card@1", str(tmp_path / "o"), "--run", str(broken)), "not valid JSON")
    results = json.loads((gated_run["run"] / "eval" / "results.json").read_text())
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({**results, "models": {"base": results["models"]["base"]}}))
    # a results.json without its run's records and seal (integrity.json) is not published, whatever it says
    assert_clean_error(run_cli(*reg, "card@1", str(tmp_path / "o"), "--run", str(other)), "no per-item records")
    results["results"]["card@1"]["domain/tempo-t4"]["acc"]["value"] = float("nan")
    (other / "results.json").write_text(json.dumps(results))
    assert_clean_error(run_cli(*reg, "card@1", str(tmp_path / "o"), "--run", str(other)), "NaN")
    assert not (tmp_path / "o").exists(), "nothing written on an error"

    # OUT: a file, a non-empty folder (kept as it was without --force, replaced with it)
    (tmp_path / "file").write_text("x")
    assert_clean_error(run_cli(*reg, "card@1", str(tmp_path / "file")), "not a folder")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert_clean_error(run_cli(*reg, "card@1", str(full)), "not empty", "--force")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    # --force replaces only a previous export, never a folder of other files
    assert_clean_error(run_cli(*reg, "card@1", str(full), "--force"), "not a previous export")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    prev = tmp_path / "prev"
    assert run_cli(*reg, "card@1", str(prev))[0] == 0
    code, _, err = run_cli(*reg, "card@1", str(prev), "--force")
    assert code == 0, err
    assert sorted(p.name for p in prev.iterdir()) == [".laf-export.json", "README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folders left behind"

    # weights that no longer match the manifest are not exported
    tampered = tmp_path / "registry"
    shutil.copytree(gated_run["registry"], tampered)
    weights = tampered / "card" / "1" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert_clean_error(run_cli("registry", "--registry", str(tampered), "export", "card@1", str(tmp_path / "t")), "does not match its manifest")
