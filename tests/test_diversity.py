"""laf diversity: every measure against an independent computation, the bad inputs, and the function-space path on the tiny model."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.results import seal_run
from tests.conftest import REPO, assert_clean_error, markdown_tables, run_cli
from tests.synthetic import PROVENANCE, suite_meta

# ---------------------------------------------------------------- synthetic runs with chosen predictions


def write_pred_run(folder: Path, preds: dict[str, dict[str, list[int]]], gold: dict[str, list[int]], categories: dict[str, str],
                   offset: dict[str, int] | None = None, fingerprint: str | None = None, manifests: dict[str, dict] | None = None) -> Path:
    """A finished run whose records hold ``preds[model][suite]`` (choice indices); acc = prediction == gold; results.json holds
    the mean acc per model and suite and ``manifests[model]`` as that adapter's manifest (merge lineage)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for model, per_suite in preds.items():
        for suite, p in per_suite.items():
            start = (offset or {}).get(suite, 0)
            for i, v in enumerate(p):
                doc = start + i
                h = hashlib.sha256(f"{suite}/{doc}".encode()).hexdigest()
                lines.append(json.dumps({
                    "model": model, "suite": suite, "category": categories[suite], "doc_id": doc, "doc_hash": h, "prompt_hash": h,
                    "prompt": f"Question {doc} about {suite}: which letter?", "choices": [" A", " B", " C", " D"], "target": int(gold[suite][i]),
                    "loglikelihoods": [-1.0] * 4, "is_greedy": [False] * 4, "generation": None, "prediction": int(v),
                    "metrics": {"acc": float(v == gold[suite][i])}, "doc": {},
                }))
    prov = json.loads(json.dumps(PROVENANCE))
    if fingerprint:
        prov["base_model"]["fingerprint"] = fingerprint
    doc = {
        "schema": "laf.results/1", "provenance": prov,
        "models": {m: {"kind": "base" if m == "base" else "adapter", "identity": m,
                       "adapter": None if m == "base" else {"ref": m, "manifest": (manifests or {}).get(m)}} for m in preds},
        "suites": {s: {**suite_meta(c), "name": s} for s, c in categories.items()},
        "results": {m: {s: {"acc": {"value": float(np.mean(np.asarray(p) == np.asarray(gold[s]))), "stderr": None, "n": len(p)}}
                        for s, p in per_suite.items()} for m, per_suite in preds.items()},
    }
    (folder / "results.json").write_text(json.dumps(doc))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    seal_run(folder)  # as `laf eval` seals its runs: diversity reads through the results layer's integrity check
    return folder


def noisy_copies(rng, base: np.ndarray, flip: float, k: int = 4) -> np.ndarray:
    out = base.copy()
    mask = rng.random(base.shape) < flip
    out[mask] = rng.integers(0, k, mask.sum())
    return out


@pytest.fixture
def three_model_run(tmp_path):
    rng = np.random.default_rng(1)
    gold = {"dom": list(rng.integers(0, 4, 120)), "gen": list(rng.integers(0, 4, 80))}
    g = {s: np.array(v) for s, v in gold.items()}
    preds = {
        "base": {s: noisy_copies(rng, g[s], 0.6) for s in g},
        "a@1": {s: noisy_copies(rng, g[s], 0.3) for s in g},
        "b@1": {s: noisy_copies(rng, g[s], 0.35) for s in g},
        "c@1": {s: rng.integers(0, 4, len(g[s])) for s in g},
    }
    return write_pred_run(tmp_path / "run", preds, gold, {"dom": "domain", "gen": "general"}), preds, gold


def _val(matrix: dict, a: str, b: str):
    return matrix["values"][matrix["labels"].index(a)][matrix["labels"].index(b)]


# ---------------------------------------------------------------- prediction space


def test_hand_computed_kappa():
    from harness.diversity.prediction_space import kappa_matrix

    k, und = kappa_matrix(np.array([[0, 0, 1, 1], [0, 1, 1, 1]]))
    # agreement 3/4; chance (1/2)(1/4) + (1/2)(3/4) = 1/2; kappa = (0.75 - 0.5) / 0.5
    assert k[0, 1] == pytest.approx(0.5) and not und.any()


def test_prediction_measures_match_sklearn_and_numpy(three_model_run):
    from sklearn.metrics import cohen_kappa_score

    from harness.diversity import analyse

    run, preds, gold = three_model_run
    doc = analyse([str(run)])
    assert doc["candidates"] == ["a@1", "b@1", "c@1"] and doc["base"] == "base"
    json.dumps(doc, allow_nan=False)
    cands = doc["candidates"]
    for s in ("dom", "gen"):
        err = {m: (preds[m][s] != np.array(gold[s])).astype(float) for m in preds}
        for i, a in enumerate(cands):
            for b in cands[i + 1:]:
                pa, pb = preds[a][s], preds[b][s]
                assert _val(doc["kappa"]["by_suite"][s], a, b) == pytest.approx(cohen_kappa_score(pa, pb), abs=1e-6)
                assert _val(doc["agreement"]["by_suite"][s], a, b) == pytest.approx(np.mean(pa == pb), abs=1e-6)
                ea, eb = err[a], err[b]
                assert _val(doc["double_fault"]["by_suite"][s], a, b) == pytest.approx(np.mean(ea * eb), abs=1e-6)
                assert _val(doc["disagreement"]["by_suite"][s], a, b) == pytest.approx(np.mean(ea != eb), abs=1e-6)
                assert _val(doc["error_correlation"]["by_suite"][s], a, b) == pytest.approx(np.corrcoef(ea, eb)[0, 1], abs=1e-6)
        # the domain category is its one suite
        assert doc["kappa"]["by_category"]["domain"] == doc["kappa"]["by_suite"]["dom"]
    # pooled: agreement over all items; kappa with chance agreement within each suite, weighted by items
    a, b = "a@1", "b@1"
    n = {s: len(gold[s]) for s in gold}
    po = sum(np.sum(preds[a][s] == preds[b][s]) for s in gold) / sum(n.values())
    pe = sum(n[s] / sum(n.values()) * sum(np.mean(preds[a][s] == k) * np.mean(preds[b][s] == k) for k in range(4)) for s in gold)
    assert _val(doc["agreement"]["all"], a, b) == pytest.approx(po, abs=1e-6)
    assert _val(doc["kappa"]["all"], a, b) == pytest.approx((po - pe) / (1 - pe), abs=1e-6)
    # the unrelated candidate is the least alike; the two trained on the answers agree beyond chance
    assert _val(doc["kappa"]["all"], a, b) > 0.3 > abs(_val(doc["kappa"]["all"], a, "c@1"))
    # against the base: changed answers, fixed and broken items
    vb = doc["vs_base"]["by_suite"]["dom"]["a@1"]
    eb, ea = (preds["base"]["dom"] != np.array(gold["dom"])), (preds["a@1"]["dom"] != np.array(gold["dom"]))
    assert vb["fixed"] == int(np.sum(eb & ~ea)) and vb["broken"] == int(np.sum(~eb & ea))
    assert vb["kappa"] == pytest.approx(cohen_kappa_score(preds["a@1"]["dom"], preds["base"]["dom"]), abs=1e-6)
    assert vb["changed"] == pytest.approx(np.mean(preds["a@1"]["dom"] != preds["base"]["dom"]), abs=1e-6)


def test_different_item_sets_pair_on_the_intersection_and_refuse_below_the_minimum(tmp_path):
    from harness.diversity import analyse

    rng = np.random.default_rng(2)
    gold = {"dom": list(rng.integers(0, 4, 40))}
    r1 = write_pred_run(tmp_path / "r1", {"a@1": {"dom": rng.integers(0, 4, 40)}}, gold, {"dom": "domain"})
    r2 = write_pred_run(tmp_path / "r2", {"b@1": {"dom": rng.integers(0, 4, 40)}}, gold, {"dom": "domain"}, offset={"dom": 10})
    doc = analyse([str(r1), str(r2)], min_items=20)
    assert doc["items"]["dom"]["paired"] == 30 and doc["items"]["dom"]["dropped"] == {"a@1": 10, "b@1": 10}
    assert_clean_error(run_cli("diversity", str(r1), str(r2), "--min-items", "31"), "only 30 items answered by every model (minimum 31)", "--min-items")


def test_constant_predictions_make_kappa_null_with_a_reason(tmp_path):
    from harness.diversity import analyse

    gold = {"dom": [0] * 30}
    run = write_pred_run(tmp_path / "r", {"a@1": {"dom": [0] * 30}, "b@1": {"dom": [0] * 30}, "c@1": {"dom": [1] * 15 + [0] * 15}}, gold, {"dom": "domain"})
    doc = analyse([str(run)])
    k = doc["kappa"]["all"]
    assert _val(k, "a@1", "b@1") is None
    assert any(u["pair"] == ["a@1", "b@1"] and "same single answer" in u["reason"] for u in k["undefined"])
    assert _val(k, "a@1", "c@1") == 0.0  # sklearn: kappa 0 when one model is constant and the other is not
    phi = doc["error_correlation"]["all"]
    assert _val(phi, "a@1", "b@1") is None and "never wrong" in phi["undefined"][0]["reason"]
    assert "skipped" in doc["clusters"]["prediction"]  # no clustering on an undefined distance
    text = (tmp_path / "r" / "diversity.json")
    assert run_cli("diversity", str(run))[0] == 0
    json.loads(text.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in diversity.json"))


def test_one_candidate_is_a_clear_error(tmp_path):
    gold = {"dom": [0] * 30}
    run = write_pred_run(tmp_path / "r", {"base": {"dom": [1] * 30}, "a@1": {"dom": [0] * 30}}, gold, {"dom": "domain"})
    assert_clean_error(run_cli("diversity", str(run)), "at least two candidates", "(a@1)")
    assert_clean_error(run_cli("diversity", str(tmp_path / "nope")), "run folder not found")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text(json.dumps({"models": {}, "suites": {}}))
    assert_clean_error(run_cli("diversity", str(tmp_path / "broken")), "results.json", "models")
    broken = write_pred_run(tmp_path / "broken2", {"a@1": {"dom": [0] * 30}, "b@1": {"dom": [1] * 30}}, gold, {"dom": "domain"})
    (broken / "records.jsonl").write_text("{not json\n")
    seal_run(broken)
    assert_clean_error(run_cli("diversity", str(broken)), "line 1")
    assert_clean_error(run_cli("diversity"), "nothing to compare")


def test_non_finite_metric_is_an_error(tmp_path):
    gold = {"dom": [0] * 30}
    run = write_pred_run(tmp_path / "r", {"a@1": {"dom": [0] * 30}, "b@1": {"dom": [1] * 30}}, gold, {"dom": "domain"})
    lines = (run / "records.jsonl").read_text().splitlines()
    lines[3] = lines[3].replace('"acc": 1.0', '"acc": NaN')
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    seal_run(run)  # sealed as it is: the non-finite number itself must be refused, not only the changed digest
    assert_clean_error(run_cli("diversity", str(run)), "non-finite")


def test_a_tampered_run_folder_is_refused_like_everywhere_else(three_model_run, tmp_path):
    """read_run goes through harness.results.load_run: an edited records file fails the integrity check with the
    same message the gate and the report give, and --allow-modified reads it with a warning in diversity.json."""
    from harness.errors import LafError
    from harness.results import load_run

    run, _, _ = three_model_run
    import re

    lines = (run / "records.jsonl").read_text().splitlines()
    lines[5] = re.sub(r'"prediction": (\d)', lambda m: f'"prediction": {(int(m.group(1)) + 1) % 4}', lines[5])
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(LafError) as ref:
        load_run(run)
    assert "failed its integrity check" in ref.value.cause and "records.jsonl changed" in ref.value.cause
    code, out, err = run_cli("diversity", str(run), "--out", str(tmp_path / "o"))
    assert_clean_error((code, out, err), "failed its integrity check", "records.jsonl changed", "--allow-modified")
    assert not (tmp_path / "o" / "diversity.json").exists()
    code, out, err = run_cli("diversity", str(run), "--out", str(tmp_path / "o"), "--allow-modified")
    assert code == 0, err
    doc = json.loads((tmp_path / "o" / "diversity.json").read_text())
    assert any("failed its integrity check" in w and "--allow-modified" in w for w in doc["warnings"])


def test_clustering_recovers_planted_groups(tmp_path):
    from harness.diversity import analyse

    rng = np.random.default_rng(3)
    n = 300
    gold = {"dom": list(rng.integers(0, 4, n))}
    centres = [rng.integers(0, 4, n) for _ in range(3)]
    preds, groups = {}, []
    for g, c in enumerate(centres):
        members = [f"g{g}m{k}@1" for k in range(3)]
        groups.append(set(members))
        for m in members:
            preds[m] = {"dom": noisy_copies(rng, c, 0.1)}
    doc = analyse([str(write_pred_run(tmp_path / "r", preds, gold, {"dom": "domain"}))])
    found = [set(c) for c in doc["clusters"]["prediction"]["clusters"]]
    assert sorted(map(sorted, found)) == sorted(map(sorted, groups))
    # the same from a matrix directly, on a distance scipy never saw (1 - kappa)
    from harness.diversity import cluster

    D = np.array([[0, .1, .9, .9], [.1, 0, .9, .9], [.9, .9, 0, .15], [.9, .9, .15, 0]])
    assert sorted(map(sorted, cluster(list("abcd"), D, "toy")["clusters"])) == [["a", "b"], ["c", "d"]]


def test_prediction_space_imports_no_model_stack():
    code = ("import sys, harness.diversity, harness.diversity.weight_space, harness.diversity.prediction_space, harness.cli.diversity\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'lm_eval') if m in sys.modules]\n"
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- weight space


def make_adapter(folder: Path, rng, shapes: dict[str, tuple[int, int]], r: int = 4, alpha: float = 8, fingerprint: str = "f" * 64,
                 factors: dict | None = None, rslora: bool = False, dtype=np.float32) -> tuple[Path, dict]:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (out_dim, in_dim) in shapes.items():
        A, B = (factors or {}).get(name) or (rng.normal(size=(r, in_dim)), rng.normal(size=(out_dim, r)))
        tensors[f"base_model.model.{name}.lora_A.weight"] = np.asarray(A, dtype=dtype)
        tensors[f"base_model.model.{name}.lora_B.weight"] = np.asarray(B, dtype=dtype)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": rslora,
                                                            "target_modules": sorted({n.rsplit('.', 1)[-1] for n in shapes})}))
    return folder, {"base_model": {"spec": "tiny", "fingerprint": fingerprint}}


SHAPES = {f"model.layers.{i}.self_attn.{m}": s for i in range(2) for m, s in (("q_proj", (24, 16)), ("v_proj", (8, 16)))}


def _register(reg_root: Path, name: str, folder: Path, manifest: dict) -> str:
    from harness.registry import Registry

    return str(Registry(reg_root).register(name, folder, manifest).ref)


def _dense(folder: Path, rslora=False) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    t = load_file(str(folder / "adapter_model.safetensors"))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    out = {}
    for k in t:
        if k.endswith("lora_A.weight"):
            name = k[: -len(".lora_A.weight")]
            A, B = t[k].astype(np.float64), t[name + ".lora_B.weight"].astype(np.float64)
            s = cfg["lora_alpha"] / (math.sqrt(A.shape[0]) if cfg.get("use_rslora") else A.shape[0])
            out[name] = s * B @ A
    return out


def test_weight_measures_equal_the_materialised_task_vectors(tmp_path):
    from scipy.linalg import subspace_angles

    from harness.diversity import analyse

    rng = np.random.default_rng(4)
    reg = tmp_path / "reg"
    shared = {n: (rng.normal(size=(4, s[1])), rng.normal(size=(s[0], 4))) for n, s in SHAPES.items()}
    f1, m1 = make_adapter(tmp_path / "a1", rng, SHAPES, factors=shared)
    near = {n: (A + 0.3 * rng.normal(size=A.shape), B + 0.3 * rng.normal(size=B.shape)) for n, (A, B) in shared.items()}
    f2, m2 = make_adapter(tmp_path / "a2", rng, SHAPES, factors=near, r=4, alpha=16, rslora=True)
    f3, m3 = make_adapter(tmp_path / "a3", rng, {k: v for k, v in SHAPES.items() if "layers.0" in k}, r=3)  # layer 1 missing
    refs = [_register(reg, n, f, m) for n, f, m in (("one", f1, m1), ("two", f2, m2), ("three", f3, m3))]
    doc = analyse([], refs, reg)
    json.dumps(doc, allow_nan=False)
    dense = {ref: _dense(f) for ref, f in zip(refs, (f1, f2, f3))}
    names = sorted(SHAPES)

    def vec(ref, keep=lambda n: True):
        return np.concatenate([dense[ref].get(f"base_model.model.{n}", np.zeros(SHAPES[n])).ravel() for n in names if keep(n)])

    def cos(x, y):
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    wc = doc["weight_cosine"]
    for i, a in enumerate(refs):
        for b in refs[i + 1:]:
            assert _val(wc["overall"], a, b) == pytest.approx(cos(vec(a), vec(b)), abs=1e-5)
            assert _val(wc["by_layer"]["0"], a, b) == pytest.approx(cos(vec(a, lambda n: "layers.0" in n), vec(b, lambda n: "layers.0" in n)), abs=1e-5)
            assert _val(wc["by_module_type"]["q_proj"], a, b) == pytest.approx(cos(vec(a, lambda n: "q_proj" in n), vec(b, lambda n: "q_proj" in n)), abs=1e-5)
    assert _val(wc["overall"], refs[0], refs[1]) > 0.8  # near copies
    assert _val(wc["by_layer"]["1"], refs[0], refs[2]) is None  # the third adapter has no layer 1
    assert doc["weight_norm"][refs[1]]["overall"] == pytest.approx(np.linalg.norm(vec(refs[1])), rel=1e-5)
    n0, n1 = np.linalg.norm(vec(refs[0])), np.linalg.norm(vec(refs[1]))
    assert _val(doc["norm_ratio"], refs[0], refs[1]) == pytest.approx(max(n0, n1) / min(n0, n1), rel=1e-5)
    # effective rank from the r x r core equals the one from the dense matrix's singular values
    for m in ("base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.1.self_attn.v_proj"):  # mixed ranks; one rank (batched)
        s = np.linalg.svd(dense[refs[0]][m], compute_uv=False)
        p = s / s.sum()
        assert doc["effective_rank"][refs[0]]["by_module"][m] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-5)
    m2 = "base_model.model.model.layers.1.self_attn.q_proj"
    from safetensors.numpy import load_file as _lf

    Ba, Bb = (_lf(str(f / "adapter_model.safetensors"))[m2 + ".lora_B.weight"].astype(np.float64) for f in (f1, f2))
    assert _val(doc["subspace_overlap"]["by_module"][m2], refs[0], refs[1]) == pytest.approx(float(np.mean(np.cos(subspace_angles(Ba, Bb)) ** 2)), abs=1e-6)
    m = "base_model.model.model.layers.0.self_attn.q_proj"
    # subspace overlap: mean squared cosine of scipy's principal angles between the B factors
    from safetensors.numpy import load_file

    B1 = load_file(str(f1 / "adapter_model.safetensors"))[m + ".lora_B.weight"].astype(np.float64)
    B3 = load_file(str(f3 / "adapter_model.safetensors"))[m + ".lora_B.weight"].astype(np.float64)
    expect = float(np.mean(np.cos(subspace_angles(B1, B3)) ** 2))
    assert _val(doc["subspace_overlap"]["by_module"][m], refs[0], refs[2]) == pytest.approx(expect, abs=1e-6)
    assert doc["clusters"]["weight"]["clusters"]  # three adapters: a tree with a cut


def test_factored_inner_product_and_bf16_reader(tmp_path):
    import torch
    from safetensors.torch import save_file

    from harness.diversity.weight_space import principal_cosines, task_vector_inner
    from harness.registry.lora import read_safetensors

    rng = np.random.default_rng(5)
    A1, B1, A2, B2 = rng.normal(size=(3, 9)), rng.normal(size=(7, 3)), rng.normal(size=(5, 9)), rng.normal(size=(7, 5))
    assert task_vector_inner(A1, B1, 2.0, A2, B2, 0.5) == pytest.approx(float(np.sum((2 * B1 @ A1) * (0.5 * B2 @ A2))))
    from scipy.linalg import subspace_angles

    np.testing.assert_allclose(np.sort(principal_cosines(B1, B2)), np.sort(np.cos(subspace_angles(B1, B2))), atol=1e-10)
    t = torch.randn(4, 6).to(torch.bfloat16)
    save_file({"x.lora_A.weight": t}, str(tmp_path / "w.safetensors"))
    np.testing.assert_array_equal(read_safetensors(tmp_path / "w.safetensors")["x.lora_A.weight"], t.float().numpy().astype(np.float64))
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    from harness.errors import LafError

    with pytest.raises(LafError, match="not a readable safetensors"):
        read_safetensors(tmp_path / "bad.safetensors")


def test_adapters_on_different_bases_name_both_fingerprints(tmp_path):
    rng = np.random.default_rng(6)
    reg = tmp_path / "reg"
    f1, m1 = make_adapter(tmp_path / "a1", rng, SHAPES, fingerprint="a" * 64)
    f2, m2 = make_adapter(tmp_path / "a2", rng, SHAPES, fingerprint="b" * 64)
    _register(reg, "x", f1, m1)
    _register(reg, "y", f2, m2)
    assert_clean_error(run_cli("diversity", "--adapters", "x@1", "y@1", "--registry", str(reg), "--out", str(tmp_path / "o")),
                       "different base models", "a" * 64, "b" * 64)
    f3, m3 = make_adapter(tmp_path / "a3", rng, SHAPES)
    _register(reg, "z", f3, m3)
    assert_clean_error(run_cli("diversity", "--adapters", "z@1", "--registry", str(reg), "--out", str(tmp_path / "o")), "at least two adapters")
    # a NaN in the weights is an error, not a NaN cosine
    f4, m4 = make_adapter(tmp_path / "a4", rng, SHAPES, factors={n: (np.full((4, s[1]), np.nan), np.ones((s[0], 4))) for n, s in SHAPES.items()})
    _register(reg, "w", f4, m4)
    assert_clean_error(run_cli("diversity", "--adapters", "z@1", "w@1", "--registry", str(reg), "--out", str(tmp_path / "o")), "non-finite weights")


# ---------------------------------------------------------------- predictions, the check, rendering, the CLI


def test_check_predictions_spearman_and_bootstrap_ci():
    from scipy.stats import spearmanr

    from harness.diversity import check_predictions, predict_mergeability
    from harness.errors import LafError

    labels = [f"m{i}" for i in range(6)]
    rng = np.random.default_rng(7)
    cos = rng.uniform(-0.5, 1, (6, 6))
    cos = (cos + cos.T) / 2
    np.fill_diagonal(cos, 1)
    pred = predict_mergeability([(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]], weight_cosine={"labels": labels, "values": cos.tolist()})
    assert "arXiv 2601.22285" in " ".join(pred["sources"]) and "2602.08564" in " ".join(pred["sources"]) and pred["rule"]
    observed = {f"{r['pair'][0]}+{r['pair'][1]}": 2 * r["score"] + 0.05 * rng.normal() for r in pred["pairs"]}
    res = check_predictions(pred, observed)
    xs = [r["score"] for r in res["table"]]
    ys = [r["observed_retained_gain"] for r in res["table"]]
    assert res["n"] == 15 and res["spearman"] == pytest.approx(spearmanr(xs, ys).statistic, abs=1e-6)
    assert res["ci"][0] > 0 and res["ci"][0] <= res["spearman"] <= res["ci"][1] and "better than chance" in res["summary"]
    from harness.diversity.mergeability import _spearman_rows

    X, Y = rng.integers(0, 4, (50, 8)).astype(float), rng.normal(size=(50, 8))  # ties, as bootstrap resamples have
    np.testing.assert_allclose(_spearman_rows(X, Y), [spearmanr(x, y).statistic for x, y in zip(X, Y)], atol=1e-12)
    inverted = check_predictions(pred, {k: -v for k, v in observed.items()})
    assert inverted["ci"][1] < 0 and "did badly" in inverted["summary"]
    with pytest.raises(LafError, match="at least 3"):
        check_predictions(pred, dict(list(observed.items())[:2]))
    with pytest.raises(LafError, match="not a finite number"):
        check_predictions(pred, {**observed, "m0+m1": float("nan")})


def test_cli_writes_diversity_json_and_the_section_escapes_labels(three_model_run, tmp_path):
    from harness.diversity import render_diversity_section

    run, _, _ = three_model_run
    code, out, err = run_cli("diversity", str(run), "--out", str(tmp_path / "o"))
    assert code == 0, err
    doc = json.loads((tmp_path / "o" / "diversity.json").read_text())
    for key in ("kappa", "agreement", "double_fault", "error_correlation", "weight_cosine", "subspace_overlap", "cka", "kl",
                "merge_ensemble_gap", "clusters", "predictions"):
        assert key in doc
    assert "skipped" in doc["weight_cosine"] and doc["predictions"]["pairs"][0]["signals"]["kappa"]["scope"] == "domain"
    # the printed kappa table (Markdown on this pipe) holds the document's pairwise values
    kappa = next(t for t in markdown_tables(out) if t and "kappa" in t[0])
    m = doc["kappa"]["all"]
    index = {x: i for i, x in enumerate(m["labels"])}
    assert kappa and all(float(r["kappa"]) == pytest.approx(m["values"][index[r["candidate"]]][index[r["other"]]], abs=5e-4) for r in kappa)
    doc["candidates"] = ["<script>alert(1)</script>"]
    doc["kappa"]["all"]["labels"][0] = "<script>alert(1)</script>"
    doc["warnings"] = ["<b>x</b>"]
    html = render_diversity_section(doc)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<svg" in html and "Diversity and mergeability" in html


# ---------------------------------------------------------------- function space on the tiny model


@pytest.fixture(scope="module")
def tiny_adapters(tiny_model_dir, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.models import resolve_model

    root = tmp_path_factory.mktemp("div-adapters")
    fp = resolve_model(str(tiny_model_dir)).fingerprint
    refs = []
    for k in range(2):
        torch.manual_seed(10 + k)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False, lora_dropout=0.0)
        peft = get_peft_model(model, cfg)
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.mul_(0.5)
        peft.save_pretrained(root / f"src{k}")
        refs.append(_register(root / "reg", f"tiny{k}", root / f"src{k}", {"base_model": {"spec": str(tiny_model_dir), "fingerprint": fp}}))
    return root / "reg", refs


def _plain_logprobs(model, tok, prompt, cont):
    """The independent route: a whole-model forward, logits at every position, no body/head split."""
    import torch

    ctx = tok(prompt).input_ids
    cids = tok(cont, add_special_tokens=False).input_ids[:16]
    ids = torch.tensor([ctx + cids])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    lp = torch.log_softmax(out.logits[0].double(), -1)[len(ctx) - 1: len(ctx) - 1 + len(cids)].numpy()
    return lp, cids, [h[0, len(ctx) - 1].double().numpy() for h in out.hidden_states[1:]]


def test_function_space_matches_an_independent_computation(tiny_model_dir, tiny_adapters, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.diversity.function_space import linear_cka, probe_items

    reg, refs = tiny_adapters
    rng = np.random.default_rng(8)
    gold = {"dom": list(rng.integers(0, 4, 24))}
    run = write_pred_run(tmp_path / "run", {"base": {"dom": rng.integers(0, 4, 24)}, refs[0]: {"dom": rng.integers(0, 4, 24)},
                                            refs[1]: {"dom": rng.integers(0, 4, 24)}}, gold, {"dom": "domain"})
    code, out, err = run_cli("diversity", str(run), "--adapters", *refs, "--registry", str(reg), "--probe-suite", "dom", "--probe-n", "6",
                             "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(tmp_path / "o"))
    assert code == 0, err
    doc = json.loads((tmp_path / "o" / "diversity.json").read_text())
    assert doc["function"]["models"] == ["base", *refs] and doc["function"]["probe"]["n"] == 6

    _, records = __import__("harness.diversity.runs", fromlist=["read_run"]).read_run(run)
    probes = probe_items([r for r in records if r["model"] == "base"], "dom", 6)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    paths = {ref: reg / ref.split("@")[0] / ref.split("@")[1] for ref in refs}
    dense = {ref: _dense(paths[ref]) for ref in refs}

    def fresh(delta: dict | None):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        if delta:  # the parameter average applied as a weight update: W += (dW_1 + dW_2) / 2
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, d in delta.items():
                    params[name.replace("base_model.model.", "") + ".weight"] += torch.from_numpy(d).float()
        return model

    models = {"base": fresh(None)}
    for ref in refs:
        models[ref] = PeftModel.from_pretrained(fresh(None), str(paths[ref])).eval()
    models["avg"] = fresh({k: (dense[refs[0]][k] + dense[refs[1]][k]) / 2 for k in dense[refs[0]]})
    outs = {m: [_plain_logprobs(mod, tok, p, c) for p, c in probes] for m, mod in models.items()}

    def kl(p_lp, q_lp):
        return float(np.mean(np.sum(np.exp(p_lp) * (p_lp - q_lp), -1)))

    a, b = refs
    expect_kl = np.mean([kl(outs["base"][i][0], outs[a][i][0]) for i in range(6)])
    assert _val(doc["kl"]["matrix"], "base", a) == pytest.approx(expect_kl, rel=1e-3, abs=1e-6)
    ens = [np.logaddexp(outs[a][i][0], outs[b][i][0]) - math.log(2) for i in range(6)]
    expect_gap = np.mean([kl(ens[i], outs["avg"][i][0]) for i in range(6)])
    assert _val(doc["merge_ensemble_gap"]["kl"], a, b) == pytest.approx(expect_gap, rel=1e-3, abs=1e-6)
    expect_ll = np.mean([np.mean(ens[i][np.arange(len(outs["avg"][i][1])), outs["avg"][i][1]]
                                 - outs["avg"][i][0][np.arange(len(outs["avg"][i][1])), outs["avg"][i][1]]) for i in range(6)])
    assert _val(doc["merge_ensemble_gap"]["loglik"], a, b) == pytest.approx(expect_ll, rel=1e-3, abs=1e-6)
    for layer in (1, 2):
        X = np.stack([outs["base"][i][2][layer - 1] for i in range(6)])
        Y = np.stack([outs[a][i][2][layer - 1] for i in range(6)])
        assert _val(doc["cka"]["by_layer"][str(layer)], "base", a) == pytest.approx(linear_cka(X, Y), abs=1e-4)
    assert expect_kl > 0 and expect_gap > 0
    assert doc["predictions"]["pairs"][0]["signals"].keys() >= {"weight_cosine", "merge_ensemble_gap"}
    from harness.diversity import render_diversity_section

    html = render_diversity_section(doc)
    assert html.count("<svg") >= 5 and "linear CKA" in html and "merge-vs-ensemble" in html


def test_linear_cka_equals_the_hsic_formula():
    from harness.diversity.function_space import linear_cka

    rng = np.random.default_rng(9)
    X = rng.normal(size=(20, 7))
    Y = X @ rng.normal(size=(7, 5)) + 0.5 * rng.normal(size=(20, 5))
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n

    def hsic(K, L):
        return np.trace(K @ H @ L @ H) / (n - 1) ** 2

    K, L = X @ X.T, Y @ Y.T
    assert linear_cka(X, Y) == pytest.approx(hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L)), rel=1e-10)
    Q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    assert linear_cka(X, 3 * X @ Q + 1.0) == pytest.approx(1.0)  # invariant to rotation, scale and shift
    assert linear_cka(np.ones((5, 3)), X[:5, :3]) is None


# ---------------------------------------------------------------- predicted vs observed merges


def _merge_manifest(method: str, *parents: str) -> dict:
    return {"kind": "merge", "lineage": {"method": method, "params": {}, "parents": [{"ref": p} for p in parents]}}


def _with_accuracy(rng, gold: np.ndarray, acc: float, template: np.ndarray | None = None, share: float = 0.0) -> np.ndarray:
    """Predictions right on exactly round(acc * n) items; a ``share`` of the answers copied from ``template`` first."""
    n = len(gold)
    p = (gold + 1) % 4
    right = rng.permutation(n)[: round(acc * n)]
    p[right] = gold[right]
    if template is not None:
        idx = rng.permutation(n)[: round(share * n)]
        p[idx] = template[idx]
        wrong_now = np.flatnonzero(p != gold)
        need = round(acc * n) - int(np.sum(p == gold))
        if need > 0:
            p[wrong_now[:need]] = gold[wrong_now[:need]]
    return p


def test_merged_candidates_are_checked_against_the_prediction(tmp_path):
    """A run with a base, three parents and their three linear merges (lineage in the manifests) plus one SLERP merge:
    the observed retained gains, the table and Spearman's rho equal an independent computation; the CLI prints the
    verdict, diversity.json holds it, and `laf report` shows the predicted-vs-observed table."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(21)
    n = 200
    gold = np.array(rng.integers(0, 4, n))
    base = _with_accuracy(rng, gold, 0.30)
    a = _with_accuracy(rng, gold, 0.60)
    b = _with_accuracy(rng, gold, 0.60, a, 0.7)  # b answers much like a: the a+b pair gets the highest kappa
    c = _with_accuracy(rng, gold, 0.50)
    merged_acc = {"ab@1": 0.58, "ac@1": 0.40, "bc@1": 0.48, "abs@1": 0.55}
    preds = {"base": {"dom": base}, "a@1": {"dom": a}, "b@1": {"dom": b}, "c@1": {"dom": c}}
    preds |= {m: {"dom": _with_accuracy(rng, gold, v)} for m, v in merged_acc.items()}
    manifests = {"ab@1": _merge_manifest("linear", "a@1", "b@1"), "ac@1": _merge_manifest("linear", "a@1", "c@1"),
                 "bc@1": _merge_manifest("linear", "b@1", "c@1"), "abs@1": _merge_manifest("slerp", "a@1", "b@1")}
    run = write_pred_run(tmp_path / "run", preds, {"dom": list(gold)}, {"dom": "domain"}, manifests=manifests)
    code, out, err = run_cli("diversity", str(run), "--out", str(tmp_path / "o"))
    assert code == 0, err
    doc = json.loads((tmp_path / "o" / "diversity.json").read_text())
    check = doc["prediction_check"]
    acc = {m: float(np.mean(p["dom"] == gold)) for m, p in preds.items()}
    gain = {m: acc[m] - acc["base"] for m in acc}
    linear = check["methods"]["linear"]
    rows = {r["merged"]: r for r in linear["merges"]}
    expect = {}
    for m, (p, q) in {"ab@1": ("a@1", "b@1"), "ac@1": ("a@1", "c@1"), "bc@1": ("b@1", "c@1")}.items():
        expect[m] = gain[m] / ((gain[p] + gain[q]) / 2)
        assert rows[m]["retained_gain"] == pytest.approx(expect[m], abs=1e-6)
        assert rows[m]["parents"] == [p, q] and rows[m]["gain_scope"] == "domain suites"
        kappa = _val(doc["kappa"]["all"], p, q)
        assert rows[m]["predicted"] == pytest.approx((1 + kappa) / 2, abs=1e-5)  # records only: the score is the kappa component
    x = [rows[m]["predicted"] for m in expect]
    y = [expect[m] for m in expect]
    assert linear["check"]["spearman"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-6)
    assert linear["check"]["n"] == 3 and len(linear["check"]["ci"]) == 2
    # one SLERP merge: its row is shown, and why there is no correlation is said
    slerp = check["methods"]["slerp"]
    assert slerp["merges"][0]["retained_gain"] == pytest.approx(gain["abs@1"] / ((gain["a@1"] + gain["b@1"]) / 2), abs=1e-6)
    assert "at least 3" in slerp["skipped"] and "check" not in slerp
    assert "predicted vs observed merges" in out and "linear:" in out and "slerp: no verdict" in " ".join(out.split())
    # the report of that run folder shows the table
    code, out, err = run_cli("diversity", str(run))
    assert code == 0, err
    code, out, err = run_cli("report", str(run), "--out", str(tmp_path / "r.html"))
    assert code == 0, err
    html = (tmp_path / "r.html").read_text()
    assert 'id="diversity"' in html and "Predicted vs observed merges" in html and "ab@1" in html
    assert html.count("<svg") >= 3


def test_merge_check_says_why_when_a_gain_is_undefined(tmp_path):
    rng = np.random.default_rng(5)
    gold = np.array(rng.integers(0, 4, 60))
    base = _with_accuracy(rng, gold, 0.5)
    preds = {"base": {"dom": base}, "a@1": {"dom": _with_accuracy(rng, gold, 0.4)}, "b@1": {"dom": _with_accuracy(rng, gold, 0.45)},
             "m@1": {"dom": _with_accuracy(rng, gold, 0.5)}, "x@1": {"dom": _with_accuracy(rng, gold, 0.5)}}
    manifests = {"m@1": _merge_manifest("ties", "a@1", "b@1"), "x@1": _merge_manifest("ties", "a@1", "zz@3")}
    run = write_pred_run(tmp_path / "run", preds, {"dom": list(gold)}, {"dom": "domain"}, manifests=manifests)
    from harness.diversity import analyse

    doc = analyse([str(run)])
    rows = {r["merged"]: r for r in doc["prediction_check"]["methods"]["ties"]["merges"]}
    assert "gained nothing" in rows["m@1"]["reason"] and "retained_gain" not in rows["m@1"]
    assert "zz@3" in rows["x@1"]["reason"] and "not a candidate" in rows["x@1"]["reason"]
    json.dumps(doc, allow_nan=False)
    plain = analyse([str(write_pred_run(tmp_path / "plain", {k: preds[k] for k in ("base", "a@1", "b@1")}, {"dom": list(gold)}, {"dom": "domain"}))])
    assert "no merged candidate" in plain["prediction_check"]["skipped"]


# ---------------------------------------------------------------- the diversity stage of laf run


def test_laf_run_diversity_stage_on_the_tiny_model(tiny_model_dir, tiny_adapters, tmp_path):
    """Two tiny adapters and their linear merge through `laf run`: the stage writes diversity.json and the SVGs, the
    merged candidate is recognised from its lineage, the report shows the section, an unchanged re-run skips the
    stage, and switching it off removes what it wrote."""
    import yaml

    reg, refs = tiny_adapters
    cfg = {"name": "div", "model": str(tiny_model_dir), "precision": "fp32", "adapters": list(refs),
           "merge": [{"name": "tinymix", "method": "linear", "adapters": list(refs)}],
           "eval": {"batch_size": 8, "cache": str(tmp_path / "c.sqlite"), "suites": [{"suite": "domain/tempo-t4", "limit": 24}]},
           "diversity": {"enabled": True, "weight_space": True, "function_space": False},
           "registry": str(reg), "out_root": str(tmp_path / "reports")}
    config = tmp_path / "div.yaml"
    config.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli("run", str(config), "--quiet")
    assert code == 0, err
    run_dir = tmp_path / "reports" / "div"
    summary = json.loads((run_dir / "run.json").read_text())
    assert "diversity" in summary["stages_ran"]
    doc = json.loads((run_dir / "eval" / "diversity.json").read_text())
    assert json.loads((run_dir / "diversity.json").read_text()) == doc
    merged = next(a for a in summary["adapters"] if a.startswith("tinymix@"))
    assert doc["candidates"] == [*refs, merged] and doc["base"] == "base"
    assert doc["weight_cosine"]["overall"]["labels"] == [*refs, merged]
    for r in refs:  # the average of two task vectors points between them
        assert _val(doc["weight_cosine"]["overall"], merged, r) > 0.5
    row = doc["prediction_check"]["methods"]["linear"]["merges"][0]
    assert row["merged"] == merged and row["pair"] == list(refs)
    assert "at least 3" in doc["prediction_check"]["methods"]["linear"]["skipped"]
    svgs = sorted(p.name for p in (run_dir / "eval" / "diversity").glob("*.svg"))
    assert {"kappa.svg", "weight_cosine.svg", "clusters-weight.svg"} <= set(svgs)
    html = (run_dir / "report.html").read_text()
    assert 'id="diversity"' in html and "task-vector cosine" in html and "Predicted vs observed merges" in html
    # unchanged: skipped
    code, out, err = run_cli("run", str(config), "--quiet")
    assert code == 0, err
    assert "diversity" in json.loads((run_dir / "run.json").read_text())["stages_skipped"]
    # switched off: what the stage wrote is gone, and so is the report section
    code, out, err = run_cli("run", str(config), "--quiet", "--set", "diversity.enabled=false")
    assert code == 0, err
    assert not (run_dir / "eval" / "diversity.json").exists() and not (run_dir / "diversity.json").exists()
    assert not (run_dir / "eval" / "diversity").exists()
    assert 'id="diversity"' not in (run_dir / "report.html").read_text()


def test_laf_run_diversity_config_needs_two_candidates(tiny_model_dir, tiny_adapters, tmp_path):
    import yaml

    reg, refs = tiny_adapters
    cfg = {"name": "div1", "model": str(tiny_model_dir), "adapters": [refs[0]],
           "eval": {"suites": ["domain/tempo-t4"]}, "diversity": {"probe_suite": "general/nope", "probe_n": 2},
           "registry": str(reg), "out_root": str(tmp_path / "reports")}
    config = tmp_path / "div1.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert_clean_error(run_cli("run", str(config)), "diversity.probe_n")
    cfg["diversity"].pop("probe_n")
    config.write_text(yaml.safe_dump(cfg))
    assert_clean_error(run_cli("run", str(config)), "key 'diversity': it compares candidates, and this run has 1", "diversity.probe_suite")
    assert not (tmp_path / "reports" / "div1" / "eval").exists()


# ---------------------------------------------------------------- the vectorised pairing against a plain one


def _plain_pairing(records: list[dict], models: list[str], suite: str):
    """The straightforward way: a dict per model keyed by doc hash ((doc hash, occurrence) in doc-id order when a
    model's suite repeats a document), the common keys, then row lists."""
    keyed = {}
    for m in models:
        rs = [r for r in records if r["model"] == m and r["suite"] == suite]
        if len({r["doc_hash"] for r in rs}) == len(rs):
            keyed[m] = {r["doc_hash"]: r for r in rs}
        else:
            seen: dict = {}
            keyed[m] = {}
            for r in sorted(rs, key=lambda r: r["doc_id"]):
                keyed[m][(r["doc_hash"], seen.get(r["doc_hash"], 0))] = r
                seen[r["doc_hash"]] = seen.get(r["doc_hash"], 0) + 1
    common = set.intersection(*(set(k) for k in keyed.values()))
    keys = sorted(common, key=str)
    return {m: [keyed[m][k] for k in keys] for m in models}, {m: len(keyed[m]) - len(common) for m in models}


@pytest.mark.parametrize("shuffled", [False, True])
def test_vectorised_pairing_equals_a_plain_dict_pairing(tmp_path, shuffled):
    """Different item sets per model, identical documents within a suite, mixed prediction types (1, 1.0, True, "1",
    lists) and records in any order (grouped, as the results store writes them, or shuffled): every count and measure
    equals the plain computation."""
    from harness.diversity import analyse
    from harness.diversity.prediction_space import _canon

    rng = np.random.default_rng(31)
    models = ["a@1", "b@1", "c@1"]
    suites = {"dom": "domain", "gen": "general"}
    records = []
    for m in models:
        for s in suites:
            n = 1100
            skip = set(rng.choice(n, 40, replace=False).tolist())  # each model misses its own 40 items
            for i in range(n):
                if i in skip:
                    continue
                h = hashlib.sha256(f"{s}/{i % 1000}".encode()).hexdigest()  # items 1000..1099 repeat 0..99: identical documents
                choice = int(rng.integers(0, 4))
                pred = [choice, float(choice), bool(choice % 2), str(choice), [choice]][int(rng.integers(0, 5))] if s == "gen" else choice
                acc = float(rng.random() < 0.6)
                records.append({"model": m, "suite": s, "category": suites[s], "doc_id": i, "doc_hash": h, "prompt_hash": h, "prompt": "q",
                                "choices": None, "target": 0, "loglikelihoods": None, "is_greedy": None, "generation": None,
                                "prediction": pred, "metrics": {"acc": acc}, "doc": {}})
    if shuffled:
        records = [records[i] for i in rng.permutation(len(records))]
    run = tmp_path / "run"
    run.mkdir()
    doc = {"schema": "laf.results/1", "provenance": PROVENANCE, "suites": {s: {**suite_meta(c), "name": s} for s, c in suites.items()},
           "models": {m: {"kind": "adapter", "identity": m, "adapter": {"ref": m}} for m in models}, "results": {}}
    (run / "results.json").write_text(json.dumps(doc))
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    seal_run(run)
    out = analyse([str(run)])
    for s in suites:
        rows, dropped = _plain_pairing(records, models, s)
        assert out["items"][s]["paired"] == len(rows["a@1"]) and out["items"][s]["dropped"] == dropped
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                pa = [_canon(r["prediction"]) for r in rows[a]]
                pb = [_canon(r["prediction"]) for r in rows[b]]
                assert _val(out["agreement"]["by_suite"][s], a, b) == pytest.approx(np.mean([x == y for x, y in zip(pa, pb)]), abs=1e-6)
                ea = np.array([1 - r["metrics"]["acc"] for r in rows[a]])
                eb = np.array([1 - r["metrics"]["acc"] for r in rows[b]])
                assert _val(out["double_fault"]["by_suite"][s], a, b) == pytest.approx(np.mean(ea * eb), abs=1e-6)
                assert _val(out["error_correlation"]["by_suite"][s], a, b) == pytest.approx(np.corrcoef(ea, eb)[0, 1], abs=1e-6)


def test_report_refuses_a_malformed_diversity_json(three_model_run, tmp_path):
    """diversity.json in a run folder is untrusted input to `laf report`: a wrong schema, a wrong shape or a non-finite
    number is one clear error naming the file, never a traceback or a broken page."""
    run, _, _ = three_model_run
    assert run_cli("diversity", str(run))[0] == 0
    good = json.loads((run / "diversity.json").read_text())
    for bad, needle in (({"schema": "x"}, "is not a laf.diversity/1 document"),
                        ({**good, "predictions": {"pairs": [{"pair": ["a", "b"], "score": "high", "signals": {}}]}}, "shape of a diversity.json"),
                        ({**good, "kappa": {"all": {"labels": ["a"], "values": [[1e999]]}}}, "non-finite")):
        (run / "diversity.json").write_text(json.dumps(bad))
        assert_clean_error(run_cli("report", str(run), "--out", str(tmp_path / "r.html")), "diversity.json", needle)
    assert not (tmp_path / "r.html").exists()


def test_each_measure_has_its_module_under_its_name():
    """prediction_space, weight_space, function_space, mergeability: a module each, never shadowed by a function of
    the package (``import harness.diversity.mergeability as m`` gives the module)."""
    import importlib
    import inspect

    import harness.diversity

    for name in ("prediction_space", "weight_space", "function_space", "mergeability", "merge_outcomes"):
        mod = importlib.import_module(f"harness.diversity.{name}")
        assert inspect.ismodule(getattr(harness.diversity, name)) and getattr(harness.diversity, name) is mod, name
