"""One LoRA factor reader (harness.registry.lora, numpy) behind merge and diversity: PEFT's file layout, the same
file without the ``base_model.model.`` prefix or with the adapter name kept, layer indices of several architectures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.errors import LafError
from harness.registry.lora import FACTOR_KEY, layer_of, read_lora_factors

TARGETS = ["q_proj", "v_proj"]


def _rename(src: Path, dst: Path, rename) -> None:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    w = load_file(src / "adapter_model.safetensors")
    save_file({rename(k): t for k, t in w.items()}, dst / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """The same PEFT adapter of the tiny model registered three ways: as PEFT saves it, without the
    ``base_model.model.`` prefix, and with the adapter name kept in the tensor names."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.models import resolve_model
    from harness.registry import Registry

    root = tmp_path_factory.mktemp("lora-factors")
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, lora_dropout=0.0))
    peft.save_pretrained(root / "peft", safe_serialization=True)
    (root / "peft" / "README.md").unlink(missing_ok=True)
    _rename(root / "peft", root / "bare", lambda k: k.removeprefix("base_model.model."))
    _rename(root / "peft", root / "named", lambda k: k.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight"))
    fp = resolve_model(str(tiny_model_dir)).fingerprint
    manifest = {"kind": "lora", "base_model": {"spec": str(tiny_model_dir), "kind": "folder", "source": str(tiny_model_dir), "fingerprint": fp},
                "load": {"precision": "fp32", "compute_dtype": "fp32", "device": "cpu"}}
    reg = Registry(root / "reg")
    refs = {name: str(reg.register(name, root / name, manifest).ref) for name in ("peft", "bare", "named")}
    return root, root / "reg", refs


def test_the_reader_names_modules_the_same_however_the_file_was_saved(adapters):
    root, _, _ = adapters
    read = {name: read_lora_factors(root / name / "adapter_model.safetensors", name) for name in ("peft", "bare", "named")}
    peft = read["peft"]
    assert peft.other == []
    assert all(not p.embedding for p in peft.modules.values())
    assert list(peft.modules) == sorted(peft.modules)
    assert {m.rsplit(".", 1)[-1] for m in peft.modules} == set(TARGETS)
    assert {layer_of(m) for m in peft.modules} == {0, 1}
    assert not any(m.startswith("base_model") for m in peft.modules)
    for name in ("bare", "named"):
        assert list(read[name].modules) == list(peft.modules)
        for m, pair in read[name].modules.items():
            np.testing.assert_array_equal(pair.A, peft.modules[m].A)
            np.testing.assert_array_equal(pair.B, peft.modules[m].B)
            assert pair.A.shape[0] == 4 == pair.B.shape[1]


def test_merge_reads_every_layout_as_the_same_factors(adapters):
    import torch

    from harness.merge.adapters import load_adapter
    from harness.registry import Registry

    _, reg, refs = adapters
    loaded = {name: load_adapter(Registry(reg), ref) for name, ref in refs.items()}
    peft = loaded["peft"]
    assert peft.rank == 4 and peft.scale == 2.0
    for name in ("bare", "named"):
        assert list(loaded[name].factors) == list(peft.factors)
        for m, (A, B) in loaded[name].factors.items():
            assert A.dtype == torch.float32
            assert torch.equal(A, peft.factors[m][0]) and torch.equal(B, peft.factors[m][1])


def test_diversity_reads_every_layout_as_the_same_task_vector(adapters):
    from harness.diversity.weight_space import load_registered, weight_space

    _, reg, refs = adapters
    loaded = load_registered([refs["peft"], refs["bare"], refs["named"]], reg)
    names = [sorted(a.modules) for a in loaded]
    assert names[0] == names[1] == names[2]
    assert all(n.startswith("base_model.model.") for n in names[0]), "module names as PEFT saves them, as before"
    assert {m.layer for m in loaded[0].modules.values()} == {0, 1}
    out = weight_space(loaded)
    np.testing.assert_allclose(np.array(out["weight_cosine"]["overall"]["values"], dtype=float), np.ones((3, 3)), atol=1e-6)
    assert sorted(out["weight_cosine"]["by_layer"]) == ["0", "1"]
    assert out["modules"] == {"count": len(names[0]), "only_in_some": []}


def test_merge_still_refuses_what_is_not_a_linear_lora_factor(adapters, tmp_path):
    from safetensors.numpy import save_file

    from harness.merge.adapters import _read_factors

    root, _, _ = adapters
    w = read_lora_factors(root / "peft" / "adapter_model.safetensors", "peft")
    tensors = {f"base_model.model.{m}.lora_{ab}.weight": getattr(p, ab).astype(np.float32) for m, p in w.modules.items() for ab in "AB"}
    save_file({**tensors, "base_model.model.model.embed_tokens.lora_embedding_A": np.ones((4, 8), np.float32),
               "base_model.model.model.embed_tokens.lora_embedding_B": np.ones((6, 4), np.float32)}, str(tmp_path / "emb.safetensors"))
    with pytest.raises(LafError, match="is not a LoRA A/B weight"):
        _read_factors("x@1", tmp_path / "emb.safetensors", 4)
    save_file({**tensors, "base_model.model.lm_head.weight": np.ones((3, 3), np.float32)}, str(tmp_path / "saved.safetensors"))
    with pytest.raises(LafError, match="'base_model.model.lm_head.weight' is not a LoRA A/B weight"):
        _read_factors("x@1", tmp_path / "saved.safetensors", 4)
    read = read_lora_factors(tmp_path / "emb.safetensors", "x@1")
    assert read.modules["model.embed_tokens"].embedding  # diversity keeps embedding LoRA as a task vector


def test_an_unpaired_factor_is_one_error(tmp_path):
    from safetensors.numpy import save_file

    save_file({"base_model.model.model.layers.0.q_proj.lora_A.weight": np.ones((2, 3), np.float32)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(LafError, match="module model.layers.0.q_proj has a lora_A but no partner"):
        read_lora_factors(tmp_path / "w.safetensors", "x@1")


@pytest.mark.parametrize(("key", "module", "kind"), [
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.q_proj", "lora_A"),
    ("model.layers.0.self_attn.q_proj.lora_B.weight", "model.layers.0.self_attn.q_proj", "lora_B"),
    ("base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight", "model.layers.0.mlp.up_proj", "lora_A"),
    ("base_model.model.model.embed_tokens.lora_embedding_B", "model.embed_tokens", "lora_embedding_B"),
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", None, None),  # a LoRA bias is no factor
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", None, None),  # DoRA
    ("base_model.model.lm_head.weight", None, None),  # modules_to_save
])
def test_factor_names(key, module, kind):
    m = FACTOR_KEY.match(key)
    assert (m["module"], m["kind"]) == (module, kind) if module else m is None


@pytest.mark.parametrize(("module", "layer"), [
    ("model.layers.3.self_attn.q_proj", 3), ("base_model.model.model.layers.12.mlp.up_proj", 12),
    ("transformer.h.2.attn.c_attn", 2), ("bert.encoder.layer.5.attention.self.query", 5), ("blocks.1.attn", 1),
    ("lm_head", None), ("model.embed_tokens", None), ("model.mylayers.3.x", None),
])
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_the_manifest_file_names_are_the_readers(adapters):
    from harness.registry.lora import CONFIG, WEIGHTS

    root, _, _ = adapters
    assert (root / "peft" / WEIGHTS).is_file()
    assert json.loads((root / "peft" / CONFIG).read_text())["peft_type"] == "LORA"
