"""Trainer: data formats, masking, packing equivalence, exact resume, NaN guard, registry, bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from harness.config import validate
from harness.data import read_examples
from harness.data.tokenize import IGNORE, tokenize_examples
from harness.errors import LafError
from harness.models import load_model, resolve_model
from harness.registry import AdapterRef, Registry
from harness.train import TrainConfig, train
from harness.train.batching import make_batches
from harness.train.loss import supervised_loss_sum
from tests.conftest import assert_clean_error as _assert_error
from tests.conftest import run_cli

ROWS = [{"instruction": f"What is the code for item {i}?", "input": "" if i % 3 else "Be brief.", "output": f"The code for item {i} is Z{i * 7}."} for i in range(40)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_config(tmp_path: Path, model_dir: Path, **over) -> TrainConfig:
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    raw = {
        "name": "unit",
        "model": str(model_dir),
        "precision": "nf4",
        "data": {"path": str(data)},
        "max_length": 64,
        "batch_size": 4,
        "max_steps": 6,
        "eval_every": 3,
        "save_every": 2,
        "registry": str(tmp_path / "registry"),
        "output_dir": str(tmp_path / "run"),
    }
    for k, v in over.items():
        node = raw
        *parents, last = k.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return validate(TrainConfig, raw, "test.yaml")


# ---------------------------------------------------------------- data in


def test_every_file_format_and_schema_reads_to_the_same_examples(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = ROWS[:5]
    ref = read_examples(write_jsonl(tmp_path / "a.jsonl", rows)).examples
    (tmp_path / "a.json").write_text(json.dumps(rows))
    with open(tmp_path / "a.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
        w.writeheader()
        w.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    for name in ("a.json", "a.csv", "a.parquet", "ds"):
        got = read_examples(tmp_path / name)
        assert got.schema == "alpaca"
        assert [e.messages for e in got.examples] == [e.messages for e in ref], name

    pc = read_examples(write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Q?", "completion": "A."}]))
    chat = read_examples(write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}]))
    alp = read_examples(write_jsonl(tmp_path / "al.jsonl", [{"instruction": "Q?", "output": "A."}]))
    assert (pc.schema, chat.schema, alp.schema) == ("prompt_completion", "chat", "alpaca")
    assert pc.examples[0].messages == chat.examples[0].messages == alp.examples[0].messages


# ---------------------------------------------------------------- masking and packing


def test_loss_mask_covers_exactly_the_response_and_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = read_examples.__globals__["to_example"]({"instruction": "What is 2+2?", "output": "It is 4."}, "alpaca", 1)
    td = tokenize_examples([ex], tok, 128)
    t = td.examples[0]
    assert t.input_ids[0] == tok.bos_token_id
    sup = [i for i, l in zip(t.input_ids, t.labels) if l != IGNORE]
    assert tok.decode(sup) == "It is 4." + tok.eos_token
    prompt = [i for i, l in zip(t.input_ids, t.labels) if l == IGNORE]
    assert tok.decode(prompt, skip_special_tokens=True) == "### Instruction:\nWhat is 2+2?\n\n### Response:\n"


def test_examples_without_supervised_tokens_are_dropped_with_reasons(tiny_model_dir):
    from transformers import AutoTokenizer

    from harness.data.formats import to_example

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    exs = [
        to_example({"instruction": "short", "output": "fine"}, "alpaca", 1),
        to_example({"instruction": "long " * 200, "output": "lost"}, "alpaca", 2),
        to_example({"instruction": "empty", "output": "   "}, "alpaca", 3),
    ]
    td = tokenize_examples(exs, tok, 48)
    assert [e.line for e in td.examples] == [1]
    reasons = {d.line: d.reason for d in td.dropped}
    assert "truncation" in reasons[2] and "empty response" in reasons[3]


def test_packed_loss_equals_unpacked_loss(tiny_model_dir):
    from harness.data.formats import to_example

    model, tok, _ = load_model(resolve_model(str(tiny_model_dir)))
    exs = [to_example({"instruction": f"Q{i} " * (1 + i % 4), "output": f"answer {i} " * (1 + i % 3)}, "alpaca", i) for i in range(10)]
    td = tokenize_examples(exs, tok, 64)
    order = list(range(len(td.examples)))
    results = {}
    with torch.no_grad():
        for packing in (True, False):
            batches = make_batches(td.examples, order, batch_size=2, max_length=64, packing=packing, pad_id=tok.pad_token_id)
            total = sum(float(supervised_loss_sum(model, b)) for b in batches)
            results[packing] = (total / sum(b.supervised for b in batches), len(batches))
        # the same packed rows with positions NOT restarted attend across examples: the test has teeth
        naive = make_batches(td.examples, order, batch_size=2, max_length=64, packing=True, pad_id=tok.pad_token_id)
        for b in naive:
            b.position_ids = torch.arange(b.input_ids.shape[1]).expand_as(b.input_ids).clone()
        leaky = sum(float(supervised_loss_sum(model, b)) for b in naive) / sum(b.supervised for b in naive)
    assert results[True][1] < results[False][1], "packing should need fewer batches"
    assert results[True][0] == pytest.approx(results[False][0], abs=1e-5)
    assert abs(leaky - results[False][0]) > 1e-3


# ---------------------------------------------------------------- the loop


def _adapter_tensors(entry):
    from safetensors.torch import load_file

    return load_file(str(entry.path / "adapter_model.safetensors"))


def test_interrupted_and_resumed_run_is_bitwise_identical(tiny_model_dir, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = train(make_config(tmp_path / "a", tiny_model_dir, lora__dropout=0.1))
    cfg_b = make_config(tmp_path / "b", tiny_model_dir, lora__dropout=0.1)

    def stop_after_3(ev):
        if ev.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg_b, on_step=stop_after_3)
    assert not Registry(cfg_b.registry).names(), "an interrupted run registers nothing"
    with pytest.raises(LafError, match="--resume"):
        train(cfg_b)  # refusing to silently start over on top of checkpoints
    resumed = train(cfg_b, resume=True)

    a, b = _adapter_tensors(full.entry), _adapter_tensors(resumed.entry)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    m_full = [json.loads(x) for x in (full.entry.path / "metrics.jsonl").read_text().splitlines()]
    m_res = [json.loads(x) for x in (resumed.entry.path / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in m_full] == [m["loss"] for m in m_res]
    assert [m["step"] for m in m_res] == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_model_dir, tmp_path):
    cfg = make_config(tmp_path, tiny_model_dir, precision="fp32", max_steps=30, save_every=1, optim={"lr": 1e12, "grad_clip": None})
    with pytest.raises(LafError, match=r"became nan.*last good checkpoint") as err:
        train(cfg)
    ckpts = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts and str(ckpts[-1]) in str(err.value)
    assert not Registry(cfg.registry).names()


def test_manifest_records_how_the_adapter_was_made(tiny_model_dir, tmp_path):
    res = train(make_config(tmp_path, tiny_model_dir))
    m = res.entry.manifest
    assert res.entry.ref == AdapterRef("unit", 1)
    assert m["base_model"]["fingerprint"] == resolve_model(str(tiny_model_dir)).fingerprint
    for key in ("data", "config", "seed", "packages", "hardware", "trainable_parameters", "trainable_percent", "tokens_seen", "wall_time_s", "peak_memory_mb", "final_train_loss", "final_eval_loss", "files"):
        assert m.get(key) is not None, key
    assert m["data"]["content_sha256"] and m["config"]["lora"]["r"] == 8
    assert set(m["files"]) == {"adapter_config.json", "adapter_model.safetensors", "metrics.jsonl"}
    assert 0 < m["trainable_percent"] < 100
    again = train(make_config(tmp_path, tiny_model_dir))
    assert again.entry.ref.version == 2, "an existing version is never overwritten"


def test_registry_verify_detects_a_flipped_byte(tiny_model_dir, tmp_path):
    res = train(make_config(tmp_path, tiny_model_dir, max_steps=2))
    reg = ["registry", "--registry", str(tmp_path / "registry")]
    assert run_cli(*reg, "verify", "unit@1")[0] == 0
    w = res.entry.path / "adapter_model.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    code, out, _ = run_cli(*reg, "verify", "unit@1")
    assert code == 1 and "adapter_model.safetensors" in out


def test_disk_failure_mid_save_leaves_no_partial_version(tmp_path, monkeypatch):
    import harness.registry as registry_mod

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.safetensors", "b.json", "c.jsonl"):
        (src / name).write_text(name * 100)
    reg = Registry(tmp_path / "reg")
    reg.register("x", src, {})
    calls = {"n": 0}
    real = shutil.copyfile

    def failing(a, b, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(a, b, **kw)

    monkeypatch.setattr(registry_mod.shutil, "copyfile", failing)
    with pytest.raises(LafError, match="No space left"):
        reg.register("x", src, {})
    assert reg.versions("x") == [1]
    assert sorted(p.name for p in (tmp_path / "reg" / "x").iterdir()) == ["1"]


# ---------------------------------------------------------------- bad input


def _train_cli(tmp_path, cfg: dict):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return run_cli("train", str(path), "--quiet")


def _base_cfg(tmp_path, model_dir, data_path):
    return {"name": "bad", "model": str(model_dir), "data": {"path": str(data_path)}, "max_length": 64, "max_steps": 1,
            "registry": str(tmp_path / "reg"), "output_dir": str(tmp_path / "run")}


def test_bad_empty_data(tiny_model_dir, tmp_path):
    (tmp_path / "d.jsonl").write_text("")
    _assert_error(_train_cli(tmp_path, _base_cfg(tmp_path, tiny_model_dir, tmp_path / "d.jsonl")), "empty")


def test_bad_rows_missing_response(tiny_model_dir, tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "no answer"}])
    _assert_error(_train_cli(tmp_path, _base_cfg(tmp_path, tiny_model_dir, tmp_path / "d.jsonl")), "line 2", "output")


def test_bad_file_not_declared_format(tiny_model_dir, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\ninstruction,output\nx,y\n')
    cfg = _base_cfg(tmp_path, tiny_model_dir, tmp_path / "d.jsonl")
    cfg["data"]["format"] = "jsonl"
    _assert_error(_train_cli(tmp_path, cfg), "line 2", "not valid JSON")


def test_bad_every_example_over_max_length(tiny_model_dir, tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"instruction": "word " * 100, "output": "b"}] * 3)
    _assert_error(_train_cli(tmp_path, _base_cfg(tmp_path, tiny_model_dir, tmp_path / "d.jsonl")), "no training example keeps a supervised token", "max_length")


def test_bad_unknown_target_modules(tiny_model_dir, tmp_path):
    write_jsonl(tmp_path / "d.jsonl", ROWS[:4])
    cfg = _base_cfg(tmp_path, tiny_model_dir, tmp_path / "d.jsonl")
    cfg["lora"] = {"target_modules": ["q_proj", "qkv_linear"]}
    _assert_error(_train_cli(tmp_path, cfg), "qkv_linear", "o_proj")


def test_bad_rank(tiny_model_dir, tmp_path):
    cfg = _base_cfg(tmp_path, tiny_model_dir, tmp_path / "d.jsonl")
    cfg["lora"] = {"r": 0}
    _assert_error(_train_cli(tmp_path, cfg), "lora.r", "greater than 0")


@pytest.mark.parametrize("name", ["../evil", "a/b", "x..y", ".hidden"])
def test_bad_registry_name(tiny_model_dir, tmp_path, name):
    cfg = _base_cfg(tmp_path, tiny_model_dir, tmp_path / "d.jsonl")
    cfg["name"] = name
    _assert_error(_train_cli(tmp_path, cfg), "key 'name'")
    assert not (tmp_path / "reg").exists()


# ---------------------------------------------------------------- the real default model


@pytest.mark.slow
def test_short_qlora_run_on_default_model_registers_and_verifies(default_model, tmp_path):
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    cfg = {"name": "real", "model": "default", "precision": "nf4", "data": {"path": "d.jsonl"}, "max_length": 64,
           "batch_size": 4, "max_steps": 3, "eval_every": 3, "registry": str(tmp_path / "reg"), "output_dir": str(tmp_path / "run")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli("train", str(tmp_path / "cfg.yaml"), "--quiet", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["kind"] == "qlora" and m["steps"] == 3
    assert m["base_model"]["fingerprint"] == default_model.fingerprint
    assert 0.1 < m["trainable_percent"] < 2
    losses = [json.loads(x)["loss"] for x in (tmp_path / "reg" / "real" / "1" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0], "three QLoRA steps on a repetitive task must lower the loss"
    assert run_cli("registry", "--registry", str(tmp_path / "reg"), "verify", "real@1")[0] == 0


def test_register_takes_the_next_version_when_another_writer_wins_the_race(tmp_path, monkeypatch):
    import harness.registry as registry_mod

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.safetensors").write_text("weights")
    reg = Registry(tmp_path / "reg")
    real = shutil.copyfile
    raced = {"done": False}

    def copy_then_lose_race(a, b, **kw):
        if not raced["done"]:  # another process registers version 1 while we assemble ours
            raced["done"] = True
            other = tmp_path / "other"
            other.mkdir()
            (other / "a.safetensors").write_text("theirs")
            monkeypatch.setattr(registry_mod.shutil, "copyfile", real)
            Registry(tmp_path / "reg").register("x", other, {"who": "them"})
            monkeypatch.setattr(registry_mod.shutil, "copyfile", copy_then_lose_race)
        return real(a, b, **kw)

    monkeypatch.setattr(registry_mod.shutil, "copyfile", copy_then_lose_race)
    ours = reg.register("x", src, {"who": "us"})
    assert ours.ref.version == 2 and ours.manifest["version"] == 2
    assert reg.resolve("x@1").manifest["who"] == "them" and reg.resolve("x@2").manifest["who"] == "us"
    assert (ours.path / "a.safetensors").read_text() == "weights"
    assert sorted(p.name for p in (tmp_path / "reg" / "x").iterdir()) == ["1", "2"]
    assert reg.verify("x@1").ok and reg.verify("x@2").ok


def test_tensor_peak_counts_the_live_bytes_of_its_own_block():
    """benchmarks/memory.py's TensorPeak, which the memory figures and the test below read: the peak of bytes allocated
    inside the block and alive together; a tensor from before the block (or from an earlier block) freed inside it
    does not lower the count."""
    from benchmarks.memory import TensorPeak

    before = torch.empty(3_000_000, dtype=torch.uint8)
    with TensorPeak() as first:
        kept = torch.empty(1_000_000, dtype=torch.uint8)
    with TensorPeak() as tp:
        del before, kept
        a = torch.empty(4_000_000, dtype=torch.uint8)
        b = torch.empty(2_000_000, dtype=torch.uint8)
        del a
        c = torch.empty(3_000_000, dtype=torch.uint8)  # 5 MB alive now: below the 6 MB of a and b
        del b, c
    assert first.peak_bytes == 1_000_000 and first.allocations == 1
    assert tp.peak_bytes == 6_000_000 and tp.allocations == 3
    assert tp.peak_at and tp.peak_at[-1] == "aten::empty"


def test_prepare_kbit_ends_as_peft_plus_the_cast_back_without_holding_the_embedding_twice(tiny_model_dir):
    """Parity with what it replaces: PEFT's prepare_model_for_kbit_training (no gradient checkpointing) followed by
    the cast of the frozen embeddings back to the compute dtype leaves every weight with the same class, dtype,
    requires_grad and values as :func:`prepare_kbit`. The difference is the peak: PEFT's path allocates the embedding
    in fp32 and again in bf16; ours allocates nothing for it (live tensor bytes, counted from torch's allocator)."""
    from peft import prepare_model_for_kbit_training

    from benchmarks.memory import TensorPeak
    from harness.models import LoadSpec
    from harness.train.lora import keep_frozen_embeddings_in, prepare_kbit

    def load():
        model, _, _ = load_model(resolve_model(str(tiny_model_dir)), LoadSpec("nf4", "bf16", "cpu"), with_tokenizer=False)
        return model

    for compute in (torch.bfloat16, None):
        theirs, ours = load(), load()
        emb = theirs.get_input_embeddings().weight
        assert emb.dtype == torch.bfloat16  # loaded in the compute dtype
        emb_fp32 = emb.numel() * 4
        with TensorPeak() as peft_peak:
            prepare_model_for_kbit_training(theirs, use_gradient_checkpointing=False)
            if compute is not None:
                keep_frozen_embeddings_in(theirs, compute)
        with TensorPeak() as our_peak:
            prepare_kbit(ours, compute)
        a, b = dict(theirs.named_parameters()), dict(ours.named_parameters())
        assert a.keys() == b.keys() and a
        for name in a:
            assert type(a[name]).__name__ == type(b[name]).__name__, name
            assert a[name].dtype == b[name].dtype and a[name].requires_grad == b[name].requires_grad is False, name
            assert torch.equal(a[name].data, b[name].data), name
        if compute is not None:
            assert peft_peak.peak_bytes > emb_fp32  # PEFT's path made the fp32 copy (and the cast back its bf16 one)
            assert our_peak.peak_bytes < emb_fp32, (our_peak.peak_bytes, emb_fp32)  # ours never did: the norms' upcast only
        else:
            assert our_peak.peak_bytes == peft_peak.peak_bytes  # no half compute: PEFT's upcast, all of it


def test_qlora_keeps_the_frozen_embedding_in_a_half_compute_dtype(tiny_model_dir):
    """PEFT's prepare_model_for_kbit_training upcasts the frozen (tied) embedding to fp32; with a bf16 compute dtype
    (the default on CUDA) it is cast back, as TRL does, so the LM head does not run and sit in fp32. Norms stay fp32,
    the LoRA weights train in fp32, and the tie between embedding and head survives."""
    from harness.models import LoadSpec
    from harness.train.lora import attach_lora

    cfg = TrainConfig(name="t", precision="nf4", data={"path": "-"})
    for compute, want in ((torch.bfloat16, torch.bfloat16), (None, torch.float32)):
        model, _, _ = load_model(resolve_model(str(tiny_model_dir)), LoadSpec("nf4", "bf16", "cpu"), with_tokenizer=False)
        tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
        peft = attach_lora(model, cfg.lora, precision=cfg.precision, seed=cfg.seed, compute_dtype=compute)
        emb, head = peft.get_input_embeddings().weight, peft.get_output_embeddings().weight
        assert emb.dtype == want and head.dtype == want and not emb.requires_grad and not head.requires_grad
        assert (emb is head) == tied
        norms = [p for n, p in peft.named_parameters() if "norm" in n]
        assert norms and all(p.dtype == torch.float32 for p in norms)
        lora = [p for p in peft.parameters() if p.requires_grad]
        assert lora and all(p.dtype == torch.float32 for p in lora)
