"""Merging: golden tests of every method against plain reference formulas, exactness of cat and
single-input merges, the cross terms PEFT's linear merge adds, model-folder outputs, bad inputs.

The references below are written from the published definitions (mergekit's
slerp.py, sparsify.py + generalized_task_arithmetic.py, model_stock.py; the
TIES and DARE papers) in numpy on dense matrices, independently of
harness.merge.methods, which works on LoRA factors and coefficients.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.errors import LafError
from harness.merge.methods import (
    LoraModule,
    MethodParams,
    combine,
    dare_generator,
    dare_mask,
    evaluate_t,
    merge_module,
    refactor_combination,
    refactor_dense,
    stack_exact,
)
from harness.registry import Registry
from tests.conftest import assert_clean_error, run_cli

# ---------------------------------------------------------------- plain reference formulas (numpy, dense)


def ref_slerp(t, v0, v1, threshold=0.9995, eps=1e-8):
    """mergekit merge_methods/slerp.py, transcribed."""
    c0, c1 = v0.copy(), v1.copy()
    n0, n1 = np.linalg.norm(v0), np.linalg.norm(v1)
    if n0 > eps:
        v0 = v0 / n0
    if n1 > eps:
        v1 = v1 / n1
    dot = np.sum(v0 * v1)
    if abs(dot) > threshold:
        return (1 - t) * c0 + t * c1
    theta0 = np.arccos(dot)
    st = np.sin(theta0)
    return np.sin(theta0 - theta0 * t) / st * c0 + np.sin(theta0 * t) / st * c1


def ref_trim(d, density):
    k = int(density * d.size)
    order = np.argsort(-np.abs(d).ravel(), kind="stable")[:k]
    out = np.zeros(d.size)
    out[order] = d.ravel()[order]
    return out.reshape(d.shape)


def ref_consensus(deltas, weights, normalize, lam, elect):
    """TIES (Yadav et al. 2023) / mergekit generalized task arithmetic on already sparsified deltas."""
    w = np.asarray(weights, dtype=np.float64)[:, None, None]
    D = np.stack(deltas) * w
    if elect:
        sign = np.where(D.sum(0) >= 0, 1.0, -1.0)
        mask = np.sign(D) == sign
        mixed = (D * mask).sum(0)
        div = (w * mask).sum(0)
        div[div == 0] = 1
    else:
        mixed = D.sum(0)
        div = w.sum()
    if normalize:
        mixed = mixed / div
    return mixed * lam


def ref_model_stock(deltas):
    """Model Stock (Jang et al. 2024) as mergekit computes it, with base W0 = 0 (so offsets = deltas)."""
    flat = [d.ravel() for d in deltas]
    cos = [flat[i] @ flat[j] / max(np.linalg.norm(flat[i]) * np.linalg.norm(flat[j]), 1e-6)
           for i in range(len(flat)) for j in range(i + 1, len(flat))]
    c = float(np.mean(cos))
    n = len(deltas)
    t = n * c / (1 + (n - 1) * c)
    return t * np.mean(np.stack(deltas), axis=0)


def module(seed=0, n=3, out_dim=12, in_dim=10, ranks=(2, 3, 4), scales=(2.0, 0.5, 1.5), name="model.layers.3.self_attn.q_proj"):
    g = torch.Generator().manual_seed(seed)
    A = [torch.randn(ranks[i], in_dim, generator=g) for i in range(n)]
    B = [torch.randn(out_dim, ranks[i], generator=g) for i in range(n)]
    return LoraModule(name, A, B, list(scales[:n]))


def dense(mod, i):
    return (mod.B[i].double() @ mod.A[i].double()).numpy() * mod.scale[i]


def result(mod, merged):
    return (combine(mod, merged.coeffs, torch.float64) if merged.coeffs is not None else merged.dense.double()).numpy()


# ---------------------------------------------------------------- golden tests, one per method


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0])
def test_slerp_matches_mergekit_formula_on_the_task_vectors(t):
    mod = module(n=2, ranks=(2, 3), scales=(2.0, 0.5))
    merged = merge_module(mod, MethodParams("slerp", t=t, n_layers=8))
    assert merged.info["lerp"] is False
    np.testing.assert_allclose(result(mod, merged), ref_slerp(t, dense(mod, 0), dense(mod, 1)), rtol=1e-9, atol=1e-9)


def test_slerp_falls_back_to_lerp_when_nearly_colinear():
    mod = module(n=2, ranks=(2, 2), scales=(1.0, 1.0))
    mod.A[1] = mod.A[0].clone()
    mod.B[1] = mod.B[0] * 3 + 1e-4 * torch.randn_like(mod.B[0])
    merged = merge_module(mod, MethodParams("slerp", t=0.25, n_layers=8))
    assert merged.info["lerp"] is True
    np.testing.assert_allclose(result(mod, merged), 0.75 * dense(mod, 0) + 0.25 * dense(mod, 1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(result(mod, merged), ref_slerp(0.25, dense(mod, 0), dense(mod, 1)), rtol=1e-9, atol=1e-9)


def test_slerp_t_gradient_over_depth_and_filters_follow_mergekit():
    values = [0.0, 0.5, 0.3, 0.7, 1.0]
    for layer in range(18):
        depth = layer / 17
        want = float(np.interp(depth, np.linspace(0, 1, len(values)), values))
        assert evaluate_t(values, f"model.layers.{layer}.mlp.up_proj", depth) == pytest.approx(want, abs=1e-12)
    from harness.merge.config import TCondition

    setting = [TCondition(filter="self_attn", value=[0, 1]), TCondition(filter="mlp", value=[1, 0]), TCondition(value=0.5)]
    assert evaluate_t(setting, "model.layers.0.self_attn.q_proj", 0.25) == pytest.approx(0.25)
    assert evaluate_t(setting, "model.layers.0.mlp.down_proj", 0.25) == pytest.approx(0.75)
    assert evaluate_t(setting, "model.layers.0.other", 0.25) == 0.5
    # through merge_module: layer 3 of 8 -> depth 3/7
    mod = module(n=2, ranks=(2, 3), scales=(1.0, 1.0), name="model.layers.3.self_attn.k_proj")
    merged = merge_module(mod, MethodParams("slerp", t=[0.0, 1.0], n_layers=8))
    assert merged.info["t"] == pytest.approx(3 / 7)
    np.testing.assert_allclose(result(mod, merged), ref_slerp(3 / 7, dense(mod, 0), dense(mod, 1)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("normalize,lam", [(True, 1.0), (False, 0.7)])
def test_linear_and_task_arithmetic_are_the_weighted_sum_of_exact_updates(normalize, lam):
    mod = module()
    w = [0.5, 1.0, -0.25]
    merged = merge_module(mod, MethodParams("linear", weights=w, normalize=normalize, lam=lam))
    want = sum(wi * dense(mod, i) for i, wi in enumerate(w)) * lam / (sum(w) if normalize else 1)
    np.testing.assert_allclose(result(mod, merged), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("density,normalize", [(0.3, True), (0.6, False), (1.0, True)])
def test_ties_matches_trim_elect_disjoint_mean(density, normalize):
    mod = module(seed=1)
    w = [1.0, 0.6, 0.8]
    merged = merge_module(mod, MethodParams("ties", weights=w, normalize=normalize, density=density))
    trimmed = [ref_trim(dense(mod, i), density) for i in range(3)]
    np.testing.assert_allclose(result(mod, merged), ref_consensus(trimmed, w, normalize, 1.0, elect=True), rtol=1e-5, atol=1e-6)
    if density < 1:  # the trim really trims
        assert np.count_nonzero(trimmed[0]) == int(density * trimmed[0].size)


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
@pytest.mark.parametrize("rescale", ["density", "l1", "none"])
def test_dare_matches_drop_rescale_then_sum_or_ties(method, rescale):
    mod = module(seed=2)
    w = [1.0, 0.5, 0.75]
    density, seed = 0.4, 7
    merged = merge_module(mod, MethodParams(method, weights=w, normalize=False, density=density, rescale=rescale, seed=seed))
    dropped = []
    for i in range(3):
        d = dense(mod, i)
        mask = dare_mask(d.shape, density, dare_generator(seed, mod.name, i)).double().numpy()
        kept = d * mask
        if rescale == "density":
            kept = kept / density  # DARE paper: 1 / (1 - p)
        elif rescale == "l1":
            kept = kept * np.abs(d).sum() / np.abs(kept).sum()
        dropped.append(kept)
    want = ref_consensus(dropped, w, False, 1.0, elect=method == "dare_ties")
    np.testing.assert_allclose(result(mod, merged), want, rtol=1e-5, atol=1e-6)


def test_dare_is_seeded_and_keeps_about_density():
    mod = module(seed=3, out_dim=64, in_dim=64)
    p = MethodParams("dare_linear", weights=[1, 1, 1], density=0.3, seed=1)
    a, b = merge_module(mod, p).dense, merge_module(mod, p).dense
    assert torch.equal(a, b)
    c = merge_module(mod, MethodParams("dare_linear", weights=[1, 1, 1], density=0.3, seed=2)).dense
    assert not torch.equal(a, c)
    mask = dare_mask((200, 200), 0.3, dare_generator(0, "m", 0))
    assert abs(float(mask.mean()) - 0.3) < 0.01


def test_model_stock_matches_the_paper_formula():
    mod = module(seed=4)
    # correlated task vectors (a shared component) so the mean cosine is positive, as for fine-tunes of one base
    for i in (1, 2):
        mod.A[i] = torch.cat([mod.A[0][:2], mod.A[i][2:]])
        mod.B[i] = torch.cat([mod.B[0][:, :2] * (mod.scale[0] / mod.scale[i]), mod.B[i][:, 2:]], dim=1)
    merged = merge_module(mod, MethodParams("model_stock"))
    assert 0 < merged.info["cos"] < 1
    np.testing.assert_allclose(result(mod, merged), ref_model_stock([dense(mod, i) for i in range(3)]), rtol=1e-9, atol=1e-9)


def test_cat_stacks_factors_exactly():
    mod = module(seed=5)
    w = [1.0, 0.5, 2.0]
    merged = merge_module(mod, MethodParams("cat", weights=w))
    B, A = stack_exact(mod, merged.coeffs)
    assert A.shape[0] == sum(a.shape[0] for a in mod.A)
    np.testing.assert_allclose((B.double() @ A.double()).numpy(), sum(wi * dense(mod, i) for i, wi in enumerate(w)), rtol=1e-5, atol=1e-5)


def test_svd_refactor_records_the_true_relative_error():
    mod = module(seed=6, out_dim=40, in_dim=30)
    coeffs = [0.3, 0.9, -0.4]
    full = combine(mod, coeffs, torch.float64).numpy()
    for rank in (2, 5, 9, 12):
        B, A, err = refactor_combination(mod, coeffs, rank)
        approx = (B.double() @ A.double()).numpy()
        assert err == pytest.approx(np.linalg.norm(approx - full) / np.linalg.norm(full), rel=1e-4, abs=1e-6)
        # the factored SVD equals the dense truncated SVD (Eckart-Young optimum)
        B2, A2, err2 = refactor_dense(torch.from_numpy(full).float(), rank)
        assert err == pytest.approx(err2, rel=1e-3, abs=1e-6)
    assert err < 1e-5  # rank 12 > 2 + 3 + 4: exact
    dense_ties = merge_module(mod, MethodParams("ties", weights=[1, 1, 1], normalize=True, density=0.5)).dense
    B, A, err = refactor_dense(dense_ties, 4)
    assert err == pytest.approx(float(torch.linalg.norm(B @ A - dense_ties) / torch.linalg.norm(dense_ties)), rel=1e-4)


# ---------------------------------------------------------------- the tiny model: registered adapters, CLI

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(registry: Path, name: str, model_dir: Path, seed: int, r: int = 4, alpha: float = 8, targets=TARGETS,
                 precision: str = "fp32", nan: bool = False, rslora: bool = False) -> str:
    """A PEFT LoRA on the tiny model with seeded random non-zero B, registered like `laf train` does."""
    import tempfile

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, use_rslora=rslora, task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
                if nan:
                    p[0, 0] = float("nan")
                    nan = False
    resolved = resolve_model(str(model_dir))
    manifest = {
        "kind": "qlora" if precision == "nf4" else "lora",
        "base_model": {"spec": str(model_dir), "kind": "folder", "source": str(model_dir), "fingerprint": resolved.fingerprint},
        "load": {"precision": precision, "compute_dtype": "fp32", "device": "cpu"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        peft.save_pretrained(tmp, safe_serialization=True)
        (Path(tmp) / "README.md").unlink(missing_ok=True)
        return str(Registry(registry).register(name, Path(tmp), manifest).ref)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """A registry with adapters a, b (rank 4), c (rank 2, rslora), q (nf4-trained), attn-only, other-base, bad (NaN)."""
    from tests.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("merge")
    reg = root / "registry"
    other = build_tiny_model(root / "other-base", seed=1)
    refs = {
        "a": make_adapter(reg, "a", tiny_model_dir, 1),
        "b": make_adapter(reg, "b", tiny_model_dir, 2),
        "c": make_adapter(reg, "c", tiny_model_dir, 3, r=2, alpha=4, rslora=True),
        "q": make_adapter(reg, "q", tiny_model_dir, 4, precision="nf4"),
        "attn": make_adapter(reg, "attn", tiny_model_dir, 5, targets=["q_proj", "v_proj"]),
        "other": make_adapter(reg, "other", other, 6),
        "bad": make_adapter(reg, "bad", tiny_model_dir, 7, nan=True),
    }
    return {"root": root, "registry": reg, "model": tiny_model_dir, "refs": refs}


def write_config(folder: Path, world, **cfg) -> Path:
    cfg.setdefault("registry", str(world["registry"]))
    path = folder / f"merge-{len(list(folder.glob('merge-*.yaml')))}.yaml"  # a new file each time
    path.write_text(yaml.safe_dump(cfg))
    return path


def factors(entry_path: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    return load_file(str(entry_path / "adapter_model.safetensors")), json.loads((entry_path / "adapter_config.json").read_text())


def delta_weights(entry_path: Path) -> dict[str, torch.Tensor]:
    t, c = factors(entry_path)
    scale = c["lora_alpha"] / (math.sqrt(c["r"]) if c.get("use_rslora") else c["r"])
    out = {}
    for k in t:
        if k.endswith("lora_A.weight"):
            mod = k[: -len(".lora_A.weight")]
            out[mod.removeprefix("base_model.model.")] = t[mod + ".lora_B.weight"].double() @ t[k].double() * scale
    return out


def peft_logits(model_dir: Path, adapter_paths: dict[str, Path], active, ids) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    names = list(adapter_paths)
    model = PeftModel.from_pretrained(base, str(adapter_paths[names[0]]), adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(str(adapter_paths[n]), adapter_name=n)
    model.base_model.set_adapter(active)
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[2, 17, 99, 45, 300, 12, 7, 250, 33, 81, 140, 5]])


def test_minimal_slerp_config_registers_m_at_1_with_lineage_and_family_tree(world, tmp_path):
    cfg = write_config(tmp_path, world, name="m", method="slerp", adapters=["a@1", "b@1"], t=0.5, output={"rank": 4})
    code, out, err = run_cli("merge", str(cfg))
    assert code == 0, err
    assert "registered m@1" in out
    entry = Registry(world["registry"]).resolve("m@1")
    lin = entry.manifest["lineage"]
    reg = Registry(world["registry"])
    assert [p["ref"] for p in lin["parents"]] == ["a@1", "b@1"]
    for p in lin["parents"]:
        assert p["weights_sha256"] == reg.resolve(p["ref"]).manifest["files"]["adapter_model.safetensors"]
        assert p["base_fingerprint"] == entry.manifest["base_model"]["fingerprint"]
    assert lin["params"] == {"method": "slerp", "t": 0.5}
    assert lin["output"]["rank"] == 4 and lin["output"]["exact"] is False
    assert set(lin["output"]["relative_error"]["per_module"]) == set(delta_weights(entry.path))
    assert reg.verify("m@1").ok
    # merged dW = slerp of the exact dW per module, up to the recorded truncation error
    da, db, dm = delta_weights(reg.resolve("a@1").path), delta_weights(reg.resolve("b@1").path), delta_weights(entry.path)
    for k, v in dm.items():
        want = torch.from_numpy(ref_slerp(0.5, da[k].numpy(), db[k].numpy()))
        err = float(torch.linalg.norm(v - want) / torch.linalg.norm(want))
        assert err == pytest.approx(lin["output"]["relative_error"]["per_module"][k], abs=1e-5)
    code, out, err = run_cli("registry", "--registry", str(world["registry"]), "show", "m@1")
    assert code == 0, err
    assert "merge slerp (t=0.5" in out and "├── a@1" in out and "└── b@1" in out
    # a merge of merges shows the whole tree
    cfg2 = write_config(tmp_path, world, name="mm", method="linear", adapters=["m@1", "c@1"], output={"rank": "exact"})
    assert run_cli("merge", str(cfg2))[0] == 0
    code, out, _ = run_cli("registry", "--registry", str(world["registry"]), "show", "mm@1")
    assert "├── m@1  merge slerp" in out and "│   ├── a@1" in out and "└── c@1" in out


def test_set_overrides_and_a_t_gradient_with_filters(world, tmp_path):
    cfg = write_config(tmp_path, world, name="grad", method="slerp", adapters=["a@1", "b@1"], t=0.5)
    t = "[{filter: self_attn, value: [0, 1]}, {filter: mlp, value: [1, 0]}, {value: 0.5}]"
    code, out, err = run_cli("merge", str(cfg), "--set", f"t={t}", "--json")
    assert code == 0, err
    lin = json.loads(out)["lineage"]
    mods = lin["modules"]
    assert mods["model.layers.0.self_attn.q_proj"]["t"] == 0 and mods["model.layers.1.self_attn.q_proj"]["t"] == 1
    assert mods["model.layers.0.mlp.up_proj"]["t"] == 1 and mods["model.layers.1.mlp.up_proj"]["t"] == 0


def test_cat_equals_both_adapters_applied_at_once(world, tmp_path):
    cfg = write_config(tmp_path, world, name="both", method="cat", adapters=["a@1", "c@1"])
    assert run_cli("merge", str(cfg))[0] == 0
    reg = Registry(world["registry"])
    merged = reg.resolve("both@1")
    assert merged.manifest["lineage"]["output"] == {**merged.manifest["lineage"]["output"], "exact": True, "rank": 6}
    paths = {"a": reg.resolve("a@1").path, "c": reg.resolve("c@1").path, "m": merged.path}
    both = peft_logits(world["model"], paths, ["a", "c"], IDS)
    cat = peft_logits(world["model"], paths, ["m"], IDS)
    only_a = peft_logits(world["model"], paths, ["a"], IDS)
    assert (both - cat).abs().max() < 1e-5
    assert (both - only_a).abs().max() > 1e-3  # the test can tell the adapters apart


def test_one_adapter_with_weight_one_returns_it(world, tmp_path):
    reg = Registry(world["registry"])
    for rank in (None, "exact"):
        name = f"same-{rank}"
        cfg = write_config(tmp_path, world, name=name, method="linear", adapters=[{"ref": "a@1", "weight": 1.0}], output={"rank": rank})
        assert run_cli("merge", str(cfg))[0] == 0
        da, dm = delta_weights(reg.resolve("a@1").path), delta_weights(reg.resolve(f"{name}@1").path)
        assert set(da) == set(dm)
        for k in da:
            assert torch.allclose(dm[k], da[k], rtol=1e-5, atol=1e-6), k
        assert reg.resolve(f"{name}@1").manifest["lineage"]["output"]["relative_error"]["max"] < 1e-5


def test_peft_linear_merge_adds_cross_terms_ours_is_the_exact_weighted_sum(world, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reg = Registry(world["registry"])
    w = [0.6, 0.4]
    cfg = write_config(tmp_path, world, name="ta", method="task_arithmetic", adapters=["a@1", "b@1"], weights=w, output={"rank": "exact"})
    assert run_cli("merge", str(cfg))[0] == 0
    ours = delta_weights(reg.resolve("ta@1").path)
    da, db = delta_weights(reg.resolve("a@1").path), delta_weights(reg.resolve("b@1").path)

    base = AutoModelForCausalLM.from_pretrained(world["model"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(reg.resolve("a@1").path), adapter_name="a")
    model.load_adapter(str(reg.resolve("b@1").path), adapter_name="b")
    model.add_weighted_adapter(["a", "b"], w, "peft_linear", combination_type="linear")
    fa, _ = factors(reg.resolve("a@1").path)
    fb, _ = factors(reg.resolve("b@1").path)
    s = 8 / 4  # lora_alpha / r of a and b
    worst_cross = 0.0
    for name, mod in model.base_model.model.named_modules():
        if not hasattr(mod, "lora_A") or "peft_linear" not in mod.lora_A:
            continue
        key = f"base_model.model.{name}"
        peft_dw = mod.get_delta_weight("peft_linear").double()
        exact = w[0] * da[name] + w[1] * db[name]
        assert torch.allclose(ours[name], exact, rtol=1e-5, atol=1e-7)
        Ba, Aa = fa[key + ".lora_B.weight"].double(), fa[key + ".lora_A.weight"].double()
        Bb, Ab = fb[key + ".lora_B.weight"].double(), fb[key + ".lora_A.weight"].double()
        cross = math.sqrt(w[0] * s * w[1] * s) * (Ba @ Ab + Bb @ Aa)
        assert torch.allclose(peft_dw, exact + cross, rtol=1e-4, atol=1e-6)  # PEFT = exact + B_i A_j cross terms
        worst_cross = max(worst_cross, float(torch.linalg.norm(cross) / torch.linalg.norm(exact)))
    assert worst_cross > 0.1  # the cross terms are not a rounding error


def test_model_folder_output_loads_like_any_folder_and_matches_the_adapter(world, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    cfg = write_config(tmp_path, world, name="full", method="linear", adapters=["a@1", "b@1"], weights=[0.5, 0.5],
                       output={"kind": "model", "path": str(out), "dtype": "fp32"})
    code, stdout, err = run_cli("merge", str(cfg))
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert json.loads((out / "merge.json").read_text())["base_weights"] == "original"
    code, stdout, err = run_cli("models", "show", str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout)["fingerprint"]
    # the same numbers as the exact merged adapter (rank exact) applied on the fly
    cfg2 = write_config(tmp_path, world, name="full-ad", method="linear", adapters=["a@1", "b@1"], weights=[0.5, 0.5], output={"rank": "exact"})
    assert run_cli("merge", str(cfg2))[0] == 0
    reg = Registry(world["registry"])
    on_the_fly = peft_logits(world["model"], {"m": reg.resolve("full-ad@1").path}, ["m"], IDS)
    both_half = peft_logits(world["model"], {"a": reg.resolve("a@1").path}, ["a"], IDS)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        folder = merged(input_ids=IDS).logits
    assert (folder - on_the_fly).abs().max() < 1e-4
    assert (folder - both_half).abs().max() > 1e-3
    assert run_cli("merge", str(cfg))[0] == 3  # never overwrites the folder


def test_nf4_adapter_merged_into_dequantised_nf4_weights_reproduces_the_nf4_run(world, tmp_path):
    from transformers import AutoModelForCausalLM

    from harness.models import LoadSpec, load_model, resolve_model

    reg = Registry(world["registry"])
    outs = {}
    for choice in ("nf4_dequantized", "original"):
        out = tmp_path / choice
        cfg = write_config(tmp_path, world, name="nf4m", method="linear", adapters=["q@1"], output={"kind": "model", "path": str(out), "dtype": "fp32", "base_weights": choice})
        assert run_cli("merge", str(cfg))[0] == 0
        assert json.loads((out / "merge.json").read_text())["base_weights"] == choice
        m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        with torch.no_grad():
            outs[choice] = m(input_ids=IDS).logits
    # auto picks the dequantised NF4 weights for an NF4-trained adapter
    auto = tmp_path / "auto"
    cfg = write_config(tmp_path, world, name="nf4m", method="linear", adapters=["q@1"], output={"kind": "model", "path": str(auto), "dtype": "fp32"})
    assert run_cli("merge", str(cfg))[0] == 0
    assert json.loads((auto / "merge.json").read_text())["base_weights"] == "nf4_dequantized"

    from peft import PeftModel

    base, _, _ = load_model(resolve_model(str(world["model"])), LoadSpec("nf4", "fp32", "cpu"), with_tokenizer=False)
    model = PeftModel.from_pretrained(base, str(reg.resolve("q@1").path)).eval()
    with torch.no_grad():
        on_the_fly = model(input_ids=IDS).logits
    d_nf4 = float((outs["nf4_dequantized"] - on_the_fly).abs().max())
    d_orig = float((outs["original"] - on_the_fly).abs().max())
    assert d_nf4 < 1e-4, d_nf4
    assert d_orig > 10 * d_nf4  # merging into the original weights is a different model


# ---------------------------------------------------------------- bad input: one clear error each, nothing registered


def snapshot(reg: Path) -> list[str]:
    return sorted(str(p.relative_to(reg)) for p in reg.rglob("*"))


BAD = [
    (dict(method="slerp", adapters=["a@1", "other@1"], t=0.5), ["different bases", "sha256:"]),
    (dict(method="linear", adapters=["a@1", "attn@1"]), ["adapt different modules", "attn@1"]),
    (dict(method="cat", adapters=["a@1", "b@1"], output={"rank": 4}), ["output.rank", "sum of the input ranks"]),
    (dict(method="linear", adapters=["a@1", "b@1"], output={"rank": 1000}), ["exceeds the smaller side"]),
    (dict(method="ties", adapters=["a@1", "b@1"], density=0.5, output={"rank": "exact"}), ["no low-rank structure"]),
    (dict(method="slerp", adapters=["a@1", "b@1"], t=1.5), ["key 't'", "[0, 1]"]),
    (dict(method="slerp", adapters=["a@1", "b@1"], t=[0, 2]), ["key 't'", "[0, 1]"]),
    (dict(method="ties", adapters=["a@1", "b@1"], density=0.0), ["key 'density'", "(0, 1]"]),
    (dict(method="dare_ties", adapters=["a@1", "b@1"], density=1.5), ["key 'density'"]),
    (dict(method="ties", adapters=["a@1", "b@1"]), ["key 'density'", "needs density"]),
    (dict(method="ties", adapters=["a@1", "b@1"], density=0.0001, output={"rank": 4}), ["keeps no entry"]),
    (dict(method="ties", adapters=["a@1", "b@1"], density=0.5), ["key 'output.rank'", "no exact LoRA form", "output.kind: model"]),
    (dict(method="dare_linear", adapters=["a@1", "b@1"], density=0.5), ["key 'output.rank'", "no exact LoRA form"]),
    (dict(method="linear", adapters=["a@1", "b@1"], weights=[1, -1]), ["key 'weights'", "sum to zero"]),
    (dict(method="linear", adapters=["a@1", "b@1"], weights=[1]), ["key 'weights'", "1 weights for 2 adapters"]),
    (dict(method="linear", adapters=["a@1", "bad@1"]), ["bad@1", "non-finite"]),
    (dict(method="avg", adapters=["a@1", "b@1"]), ["unknown merge method", "slerp", "model_stock"]),
    (dict(method="linear", adapters=["a@1", "b@1"], name="a@1"), ["key 'name'", "a@1 is already registered"]),
    (dict(method="linear", adapters=["a@1", "b@1"], name="a@7"), ["key 'name'", "next version of a is 2"]),
    (dict(method="linear", adapters=["a@1", "zzz@1"]), ["no adapter named 'zzz'"]),
    (dict(method="linear", adapters=["a@1", "b@9"]), ["no version 9"]),
    (dict(method="slerp", adapters=["a@1"], t=0.5), ["key 'adapters'", "exactly two"]),
    (dict(method="slerp", adapters=["a@1", "b@1"]), ["key 't'", "slerp needs t"]),
    (dict(method="slerp", adapters=["a@1", "b@1"], t=0.5, weights=[1, 1]), ["key 'weights'", "slerp takes no weights"]),
    (dict(method="model_stock", adapters=["a@1"]), ["model_stock needs at least two"]),
    (dict(method="linear", adapters=["a@1", "b@1"], wieghts=[1, 1]), ["key 'wieghts'", "unknown key"]),
    (dict(method="linear", adapters=["a@1", "b@1"], weights=[1, float("nan")]), ["not a finite number", "line 9"]),
    (dict(method="linear", adapters=["a@1", "b@1"], output={"kind": "model"}), ["key 'output.path'"]),
    (dict(method="linear", adapters=[]), ["key 'adapters'"]),
    (dict(method="ties", adapters=["a@1", "b@1"], density=0.5, rescale="l1"), ["key 'rescale'", "dare_linear / dare_ties only"]),
    (dict(method="linear", adapters=["a@1", "b@1"], output={"dtype": "fp32"}), ["key 'output.dtype'", "model outputs only"]),
]


@pytest.mark.parametrize("cfg,needles", BAD, ids=[f"{i}-{b[0]['method']}" for i, b in enumerate(BAD)])
def test_bad_input_is_one_clear_error_and_registers_nothing(world, tmp_path, cfg, needles):
    before = snapshot(world["registry"])
    cfg = {"name": "badmerge", **cfg}
    path = write_config(tmp_path, world, **cfg)
    assert_clean_error(run_cli("merge", str(path)), *needles)
    assert snapshot(world["registry"]) == before


def test_output_folder_that_exists_is_refused(world, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    path = write_config(tmp_path, world, name="x", method="linear", adapters=["a@1"], output={"kind": "model", "path": str(out)})
    assert_clean_error(run_cli("merge", str(path)), "already exists")
    assert (out / "keep.txt").read_text() == "mine"


def test_library_call_for_a_pipeline_stage(world):
    from harness.merge import MergeConfig, merge_adapters

    cfg = MergeConfig.model_validate({"name": "lib", "method": "dare_ties", "adapters": ["a@1", "b@1"], "density": 0.5,
                                      "registry": str(world["registry"]), "output": {"rank": 6}})
    res = merge_adapters(cfg)
    assert str(res.ref) == "lib@1" and res.manifest["lineage"]["params"]["seed"] == 0
    assert res.manifest["lineage"]["output"]["rank"] == 6
    with pytest.raises(LafError, match="density"):
        merge_adapters(MergeConfig.model_validate({"name": "lib", "method": "ties", "adapters": ["a@1", "b@1"], "registry": str(world["registry"]),
                                                   "output": {"rank": 4}}))


def test_randomized_svd_of_a_large_dense_merge_reaches_the_optimal_truncation():
    mod = module(seed=8, out_dim=300, in_dim=200, ranks=(8, 8, 8), scales=(1.0, 1.0, 1.0))
    dense_ties = merge_module(mod, MethodParams("ties", weights=[1, 1, 1], normalize=True, density=0.4)).dense
    for rank in (4, 8, 16):
        B, A, err = refactor_dense(dense_ties, rank)
        S = torch.linalg.svdvals(dense_ties.double())
        optimum = float((S[rank:] ** 2).sum().sqrt() / (S**2).sum().sqrt())
        assert err == pytest.approx(float(torch.linalg.norm(B @ A - dense_ties) / torch.linalg.norm(dense_ties)), rel=1e-5)
        assert optimum - 1e-6 <= err <= optimum * 1.001 + 1e-6
        assert torch.equal(refactor_dense(dense_ties, rank)[0], B)  # seeded: reproducible


# ---------------------------------------------------------------- exact by default (issue 29, part 1)


def merge_manifest(exact: bool, err_max: float, method: str = "slerp", rank: int = 8, **extra) -> dict:
    """A merged adapter's manifest as `laf merge` records it (``extra`` overrides relative_error keys)."""
    return {"kind": "merge", "lineage": {"method": method, "output": {"kind": "adapter", "rank": rank, "exact": exact,
                                                                     "relative_error": {"max": err_max, "mean": err_max / 2, "per_module": {"m.q_proj": err_max}, **extra}}}}


@pytest.mark.parametrize("method,kw", [("linear", dict(weights=[0.7, 0.3])), ("task_arithmetic", dict(weights=[1.0, -0.5])), ("slerp", dict(t=0.4)),
                                       ("model_stock", {}), ("cat", {})])
def test_combinations_are_exact_by_default_at_the_sum_of_ranks_and_the_error_is_measured(world, tmp_path, method, kw):
    reg = Registry(world["registry"])
    cfg = write_config(tmp_path, world, name=f"ex-{method}", method=method, adapters=["a@1", "b@1"], **kw)
    code, out, err = run_cli("merge", str(cfg), "--json")
    assert code == 0, err
    o = json.loads(out)["lineage"]["output"]
    assert o["exact"] is True and o["rank"] == 8 and o["approximate"] is False  # 4 + 4
    assert 0 <= o["relative_error"]["max"] < 1e-5 and o["relative_error"]["overall"] < 1e-5  # measured on the stored fp32 factors
    # the stored factors are the method's update (checked against dense float64 here, independently of the engine)
    da, db = delta_weights(reg.resolve("a@1").path), delta_weights(reg.resolve("b@1").path)
    dm = delta_weights(reg.resolve(f"ex-{method}@1").path)
    for k, v in dm.items():
        if method == "slerp":
            want = torch.from_numpy(ref_slerp(0.4, da[k].numpy(), db[k].numpy()))
        elif method == "model_stock":  # the two random adapters' mean cosine is clamped here, see model_stock_coefficients
            t = json.loads(out)["lineage"]["modules"][k]["t"]
            want = t / 2 * (da[k] + db[k])
            if t == 0:
                assert float(torch.linalg.norm(v)) == 0
                continue
        else:
            w = kw.get("weights", [1.0, 1.0])
            w = [x / sum(w) for x in w] if method == "linear" else w
            want = w[0] * da[k] + w[1] * db[k]
        rel = float(torch.linalg.norm(v - want) / torch.linalg.norm(want))
        assert rel < (1e-4 if method == "model_stock" else 1e-5), (k, rel)  # model_stock: t is recorded to 6 decimals


def test_the_old_default_truncation_is_what_the_exact_default_removes(world, tmp_path):
    """SLERP at rank = max of the parents' ranks (the old default) against rank = sum (the new one), on the tiny model."""
    seen = {}
    for rank in (4, "exact"):
        cfg = write_config(tmp_path, world, name=f"old-new-{rank}", method="slerp", adapters=["a@1", "b@1"], t=0.5, output={"rank": rank})
        code, out, err = run_cli("merge", str(cfg), "--json")
        assert code == 0, err
        seen[rank] = json.loads(out)["lineage"]["output"]["relative_error"]
    assert seen[4]["mean"] > 0.05 and seen[4]["max"] > 0.05  # two random rank-4 adapters: half the energy does not fit in rank 4
    assert seen["exact"]["max"] < 1e-5
    print(f"\ntiny slerp t=0.5: rank 4 (old default) mean {seen[4]['mean']:.3g} max {seen[4]['max']:.3g}; "
          f"rank 8 (exact) mean {seen['exact']['mean']:.3g} max {seen['exact']['max']:.3g}")


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_synthetic_factors_are_exact_at_the_sum_of_ranks_not_at_the_largest(method):
    from harness.merge.methods import factored_error

    mod = module(seed=11, n=2, out_dim=640, in_dim=640, ranks=(16, 16), scales=(2.0, 2.0))
    coeffs = merge_module(mod, MethodParams(method, weights=[0.5, 0.5], normalize=True, t=0.5)).coeffs
    want = combine(mod, coeffs, torch.float64)
    B, A = stack_exact(mod, coeffs)
    exact = float(torch.linalg.norm(B.double() @ A.double() - want) / torch.linalg.norm(want))
    diff, total = factored_error(mod, coeffs, B, A)
    assert exact < 1e-6 and diff / total == pytest.approx(exact, abs=2e-7)  # the engine's factored figure is the dense one
    Bt, At, err = refactor_combination(mod, coeffs, 16)
    trunc = float(torch.linalg.norm(Bt.double() @ At.double() - want) / torch.linalg.norm(want))
    assert trunc > 0.3 and err == pytest.approx(trunc, rel=1e-4)
    print(f"\nsynthetic 640x640, two rank-16 inputs, {method}: rank 32 (exact) {exact:.2e}, rank 16 (old default) {trunc:.3f}")


def test_an_approximate_merge_warns_and_records_it(world, tmp_path):
    cfg = write_config(tmp_path, world, name="approx", method="ties", adapters=["a@1", "b@1"], density=0.5, output={"rank": 1})
    code, out, err = run_cli("merge", str(cfg))
    assert code == 0, err
    assert "warning" in err and "approximate merge" in err
    o = Registry(world["registry"]).resolve("approx@1").manifest["lineage"]["output"]
    assert o["exact"] is False and o["approximate"] is True and o["relative_error"]["max"] > 0.05
    from harness.registry.merge_info import merge_summary

    s = merge_summary(Registry(world["registry"]).resolve("approx@1").manifest, "approx@1")
    assert s["approximate"] is True and s["rank"] == 1 and s["relative_error_max"] == o["relative_error"]["max"]


def test_merge_summary_reads_old_manifests_and_refuses_a_false_exact_claim():
    from harness.merge.config import APPROXIMATE_MERGE
    from harness.merge.methods import EXACT_TOLERANCE
    from harness.registry import merge_info
    from harness.registry.merge_info import merge_summary

    assert (merge_info.EXACT_TOLERANCE, merge_info.APPROXIMATE_MERGE) == (EXACT_TOLERANCE, APPROXIMATE_MERGE)  # one figure everywhere
    assert merge_summary({"kind": "lora"}, "a@1") is None
    old_exact = merge_summary(merge_manifest(True, 0.0), "m@1")  # written before `overall`/`approximate` existed
    assert old_exact["exact"] is True and old_exact["relative_error_overall"] is None and old_exact["approximate"] is False
    assert merge_summary(merge_manifest(False, 0.29, rank=4), "m@1")["approximate"] is True
    with pytest.raises(LafError, match="claims an exact merge but records a relative error of 0.29.*m.q_proj"):
        merge_summary(merge_manifest(True, 0.29), "m@1")
    for bad in (float("nan"), -1.0, "0.1", True):
        with pytest.raises(LafError, match="not a finite number"):
            merge_summary(merge_manifest(False, 0.1, max=bad), "m@1")
    with pytest.raises(LafError, match="records no relative error"):
        merge_summary({"kind": "merge", "lineage": {"output": {"kind": "adapter", "exact": True}}}, "m@1")


def test_the_gate_and_compare_mark_an_approximate_merge_and_refuse_a_false_exact_claim(tmp_path):
    from tests.synthetic import suite_meta, write_run

    suites = {"domain/d": suite_meta("domain"), "general/g": suite_meta("general")}
    rng = np.random.default_rng(0)
    vals = {s: (rng.random(200) < 0.5).astype(int).tolist() for s in suites}
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"category": "general", "max_drop": 0.05}]}))
    run = write_run(tmp_path / "run", suites, {"base": vals, "m@1": vals, "x@1": vals},
                    manifests={"m@1": merge_manifest(False, 0.29, rank=4), "x@1": merge_manifest(True, 0.0)})
    code, out, err = run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#m@1", "--policy", str(policy))
    assert code == 0, err
    v = json.loads((run / "verdict.json").read_text())
    assert v["marks"] == ["approximate merge"] and any(w.startswith("approximate merge") for w in v["warnings"])
    assert v["candidate"]["adapter"]["merge"]["relative_error_max"] == 0.29
    code, out, err = run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#x@1", "--policy", str(policy))
    assert code == 0 and json.loads((run / "verdict.json").read_text())["marks"] == []
    code, out, err = run_cli("compare", str(run), "-o", str(tmp_path / "c.json"))
    assert code == 0, err
    rows = {r["candidate"]: r for r in json.loads((tmp_path / "c.json").read_text())["ranking"]}
    assert rows["m@1"]["merge"]["approximate"] is True and rows["x@1"]["merge"]["exact"] is True
    # a manifest that claims exact but records an error: one clear error, exit 3
    bad = write_run(tmp_path / "bad", suites, {"base": vals, "y@1": vals}, manifests={"y@1": merge_manifest(True, 0.2)})
    assert_clean_error(run_cli("gate", "--baseline", str(bad), "--candidate", str(bad), "--policy", str(policy)), "y@1", "claims an exact merge")
