"""Full fine-tuning (``method: full``): the reference LoRA is measured against on the found-vs-lost frontier.

* every weight trained (the tied embedding/head included), registered as a whole model folder (kind ``full``);
* scored in the same evaluation as the base and the adapters by swapping the base's weights, with per-item
  log-likelihoods equal to scoring the saved folder on its own as ``--model`` (the reference path);
* the trainer's loss and gradients with a trainable head equal HF's own loss;
* a sweep with ``method: [lora, full]`` puts both on the frontier with their trainable parameters, time and memory;
* bad combinations (4-bit weights, the KL anchor, preference objectives, a 4-bit evaluation) are one clear error.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from harness.sweep import run_sweep
from tests.conftest import assert_clean_error, run_cli
from tests.test_pipeline import write_config
from tests.test_train import make_config


@pytest.fixture(scope="module")
def full_sweep(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    cfgp = write_config(tmp, tiny_model_dir, "fs", str(tmp / "c.sqlite"), precision="fp32",
                        train={"max_length": 96, "batch_size": 4, "max_steps": 4, "eval_every": 0, "save_every": 0, "optim": {"lr": 1.0e-3}},
                        sweep={"method": ["lora", "full"]})
    doc = yaml.safe_load(cfgp.read_text())
    doc["eval"]["suites"] = [{"suite": "domain/tempo-t4", "limit": 40}, {"suite": "general/world-facts", "limit": 40}, {"suite": "general/text", "limit": 6}]
    doc["gate"]["policy"]["rules"] = [{"category": "domain", "min_gain": 0.05}, {"suite": "general/world-facts", "max_drop": 0.05},
                                      {"suite": "general/text", "max_increase": 0.10}]
    cfgp.write_text(yaml.safe_dump(doc))
    return tmp, run_sweep(cfgp)


def test_full_finetune_is_a_registered_model_folder_trained_in_every_weight(full_sweep):
    from harness.registry import Registry

    tmp, s = full_sweep
    rows = {p["params"]["method"]: p for p in s["points"]}
    assert set(rows) == {"lora", "full"}
    full = Registry(tmp / "registry").resolve(rows["full"]["model"])
    m = full.manifest
    assert m["kind"] == "full" and m["trainable_parameters"] == m["total_parameters"] > 0
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(m["files"])
    assert "quantization_config" not in json.loads((full.path / "config.json").read_text())
    lora = rows["lora"]["cost"]
    assert rows["full"]["cost"]["trainable_percent"] == 100.0 and 0 < lora["trainable_percent"] < 100
    for p in rows.values():
        assert p["cost"]["train_time_s"] > 0 and p["cost"]["peak_memory_mb"] > 0 and p["verdict"] in ("pass", "fail", "inconclusive")
    names = {r["name"] for r in s["frontier"]["points"]}
    assert names == {rows["lora"]["name"], rows["full"]["name"]}


def test_full_model_scored_by_weight_swap_equals_scoring_its_folder_alone(full_sweep, tmp_path):
    """The engine scores the full fine-tune by copying its weights into the loaded base (between the base and the
    adapters); the reference is a separate evaluation with the saved folder as the model."""
    from harness.registry import Registry
    from harness.results import load_run

    tmp, s = full_sweep
    ref = next(p["model"] for p in s["points"] if p["params"]["method"] == "full")
    folder = Registry(tmp / "registry").resolve(ref).path
    _, swapped = load_run(tmp / "reports" / "fs" / "eval")
    code, out, err = run_cli("eval", "--model", str(folder), "--suite", "domain/tempo-t4", "--limit", "40", "--precision", "fp32",
                             "--batch-size", "1", "--out", str(tmp_path / "alone"), "--cache", str(tmp_path / "alone.sqlite"))
    assert code == 0, err
    _, alone = load_run(tmp_path / "alone")
    ours = {r.doc_hash: r for r in swapped if r.model == ref and r.suite == "domain/tempo-t4"}
    base = {r.doc_hash: r for r in swapped if r.model == "base" and r.suite == "domain/tempo-t4"}
    theirs = {r.doc_hash: r for r in alone if r.suite == "domain/tempo-t4"}
    assert ours.keys() == theirs.keys() and len(ours) == 40
    moved = 0
    for h, r in ours.items():
        assert r.loglikelihoods and len(r.loglikelihoods) == len(theirs[h].loglikelihoods)
        for x, y in zip(r.loglikelihoods, theirs[h].loglikelihoods):
            assert x == pytest.approx(y, abs=1e-5)
        moved += any(abs(x - y) > 1e-4 for x, y in zip(r.loglikelihoods, base[h].loglikelihoods))
    assert moved > 0  # the fine-tune changed the model: the check is not base == base


def test_full_finetune_loss_and_gradients_equal_hf_with_a_trainable_head(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.data.formats import to_example
    from harness.data.tokenize import tokenize_examples
    from harness.train.batching import make_batches
    from harness.train.loss import supervised_loss_sum

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    exs = [to_example({"instruction": f"q {i} " * (1 + i % 3), "output": f"answer {i} " * (2 + i % 2)}, "alpaca", i + 1) for i in range(4)]
    b = make_batches(tokenize_examples(exs, tok, 64).examples, [0, 1, 2, 3], batch_size=4, max_length=64, packing=False, pad_id=tok.pad_token_id)[0]
    ours = supervised_loss_sum(model, b, chunk=7) / b.supervised
    ours.backward()
    g_ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    hf = model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
    hf.backward()
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-5)
    assert model.get_output_embeddings().weight.grad is not None  # the (tied) head is trained too
    for n, p in model.named_parameters():
        torch.testing.assert_close(g_ours[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("over,needle", [
    ({"precision": "nf4"}, "precision: fp32 or bf16"),
    ({"preserve": {"kl": {"weight": 0.5}}}, "preserve.replay with method: full"),
])
def test_bad_full_finetune_settings(tiny_model_dir, tmp_path, over, needle):
    cfg = make_config(tmp_path, tiny_model_dir).model_dump(mode="json", by_alias=True)
    cfg.update({"method": "full", "precision": "fp32", **over})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert_clean_error(run_cli("train", str(tmp_path / "c.yaml"), "--quiet"), needle)


def test_bad_full_finetune_with_a_preference_objective_or_a_4bit_eval(full_sweep, tiny_model_dir, tmp_path):
    from harness.config import validate
    from harness.errors import LafError
    from harness.train import TrainConfig

    with pytest.raises(LafError, match="objective: sft"):
        validate(TrainConfig, {"name": "x", "method": "full", "precision": "fp32", "objective": "dpo", "data": {"path": "x"}}, "t.yaml")
    tmp, s = full_sweep
    ref = next(p["model"] for p in s["points"] if p["params"]["method"] == "full")
    r = run_cli("eval", "--model", str(tiny_model_dir), "--adapter", ref, "--registry", str(tmp / "registry"), "--suite", "domain/tempo-t4",
                "--limit", "5", "--precision", "nf4", "--out", str(tmp_path / "e"), "--cache", str(tmp_path / "e.sqlite"))
    assert_clean_error(r, "full fine-tune", "re-quantise")


def test_a_forged_full_model_entry_is_one_clear_error(full_sweep, tiny_model_dir, tmp_path):
    """A registry version that claims kind: full but holds no model folder, or weights that are not safetensors, is one
    error naming the version, never a traceback (registered honestly, so the integrity check alone does not catch it)."""
    from harness.registry import Registry

    tmp, _ = full_sweep
    reg = Registry(tmp_path / "reg")
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(b"not a model")
    reg.register("forged", src, {"kind": "full", "base_model": {}, "load": {"precision": "fp32"}})
    r = run_cli("eval", "--model", str(tiny_model_dir), "--adapter", "forged@1", "--registry", str(tmp_path / "reg"), "--suite", "domain/tempo-t4",
                "--limit", "3", "--precision", "fp32", "--force-base-mismatch", "--out", str(tmp_path / "e"), "--cache", str(tmp_path / "e.sqlite"))
    assert_clean_error(r, "forged@1", "not a model folder")
    assert not (tmp_path / "e" / "results.json").exists()
    src2 = tmp_path / "src2"
    src2.mkdir()
    (src2 / "model.safetensors").write_bytes(b"\xff" * 64)  # a forged header
    (src2 / "config.json").write_text("{}")
    reg.register("forged2", src2, {"kind": "full", "base_model": {}, "load": {"precision": "fp32"}})
    r = run_cli("eval", "--model", str(tiny_model_dir), "--adapter", "forged2@1", "--registry", str(tmp_path / "reg"), "--suite", "domain/tempo-t4",
                "--limit", "3", "--precision", "fp32", "--force-base-mismatch", "--out", str(tmp_path / "e2"), "--cache", str(tmp_path / "e2.sqlite"))
    assert_clean_error(r, "cannot be read")
    assert not (tmp_path / "e2" / "results.json").exists()
