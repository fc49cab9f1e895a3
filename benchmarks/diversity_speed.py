"""Diversity speed: prediction space for 50 candidates x 10,000 items, weight space for 20 adapters at gemma-3-270m's shapes.

Prediction space: ours (integer-coded tables, matrix products) against a plain
pandas pivot + sklearn ``cohen_kappa_score`` / numpy loop over every pair, per
suite, per category and pooled, on the same in-memory records; both timed in
this run, with the largest difference between their kappas printed. Reading
``records.jsonl`` (500,000 JSON lines) is timed separately: it is the same
for any analysis.

Weight space: 20 random r=8 adapters on q/k/v/o/gate/up/down of 18 layers
(hidden 640, intermediate 2048, 4 query heads and 1 KV head of 256), written
to a registry: our factored analysis against materialising every dW per
module and taking dense cosines.

Usage: python benchmarks/diversity_speed.py [--candidates 50] [--items 10000] [--adapters 20]
"""

from __future__ import annotations

import os

# One BLAS thread: the products here are small (r x r cores, 51 x 51 Grams), and on a shared machine a
# multi-threaded BLAS oversubscribed by other processes was measured 20x slower on them.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUITES = {"domain/a": "domain", "domain/b": "domain", "general/c": "general", "general/d": "general"}


def make_records(n_models: int, n_items: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    per = n_items // len(SUITES)
    gold = {s: rng.integers(0, 4, per) for s in SUITES}
    recs = []
    for m in range(n_models):
        name = "base" if m == 0 else f"cand{m}@1"
        skill = rng.uniform(0.2, 0.8)
        for s in SUITES:
            g = gold[s]
            pred = np.where(rng.random(per) < skill, g, rng.integers(0, 4, per))
            for i in range(per):
                h = hashlib.sha1(f"{s}/{i}".encode()).hexdigest()
                recs.append({"model": name, "suite": s, "category": SUITES[s], "doc_id": i, "doc_hash": h, "prompt": "", "choices": None,
                             "target": int(g[i]), "prediction": int(pred[i]), "metrics": {"acc": float(pred[i] == g[i])}})
    models = {("base" if m == 0 else f"cand{m}@1"): {"kind": "base" if m == 0 else "adapter", "identity": f"m{m}"} for m in range(n_models)}
    suites = {s: {"category": c, "primary_metric": "acc", "metrics": {"acc": {"higher_is_better": True, "ideal": None, "aggregation": "mean"}}}
              for s, c in SUITES.items()}
    provenance = {"base_model": {"spec": "synthetic", "fingerprint": "f" * 64}, "load": {"precision": "nf4"}, "batch_size": 8, "max_length": 2048}
    return {"schema": "laf.results/1", "models": models, "suites": suites, "provenance": provenance, "results": {}}, recs


def pandas_sklearn(records: list[dict]) -> dict:
    """The plain way: a long DataFrame, a pivot per scope, sklearn's kappa and numpy for every pair."""
    import pandas as pd
    from sklearn.metrics import cohen_kappa_score

    df = pd.DataFrame.from_records(records)
    df["correct"] = df["metrics"].map(lambda m: m["acc"])
    df["label"] = df["suite"] + "|" + df["prediction"].astype(str)
    cands = sorted(m for m in df["model"].unique() if m != "base")
    scopes = {f"suite:{s}": df[df.suite == s] for s in SUITES}
    scopes |= {f"category:{c}": df[df.category == c] for c in set(SUITES.values())}
    scopes["all"] = df
    out = {}
    for scope, part in scopes.items():
        pred = part.pivot_table(index=["suite", "doc_hash"], columns="model", values="label", aggfunc="first")
        corr = part.pivot_table(index=["suite", "doc_hash"], columns="model", values="correct", aggfunc="first")
        for a, b in itertools.combinations(cands, 2):
            pa, pb = pred[a].to_numpy(), pred[b].to_numpy()
            ea, eb = 1 - corr[a].to_numpy(), 1 - corr[b].to_numpy()
            out[(scope, a, b)] = {
                "kappa": cohen_kappa_score(pa, pb), "agreement": float(np.mean(pa == pb)), "double_fault": float(np.mean(ea * eb)),
                "disagreement": float(np.mean(ea != eb)), "error_correlation": float(np.corrcoef(ea, eb)[0, 1]),
            }
    return out


def prediction_bench(n_models: int, n_items: int, reference: bool = True) -> None:
    import harness.diversity.prediction_space as pred_mod
    from harness.diversity.analyse import analyse
    from harness.results import seal_run

    results, records = make_records(n_models, n_items)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        (run / "results.json").write_text(json.dumps(results))
        (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        seal_run(run)  # read through the results layer's integrity check, as a real `laf eval` folder
        t0 = time.perf_counter()
        loaded = pred_mod.read_run(run)
        t_read = time.perf_counter() - t0
        real = pred_mod.read_run
        pred_mod.read_run = lambda *a, **k: loaded  # time the analysis on records already in memory, as the competitor gets them
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            doc = analyse([str(run)])
            t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        finally:
            pred_mod.read_run = real
    cands = n_models - 1
    print(f"prediction space: {cands} candidates + base x {n_items:,} items ({len(SUITES)} suites, 2 categories, pooled), every pair")
    print(f"  ours (analyse: pairing, 5 measures x 7 scopes, vs base, clusters): {t_ours:8.3f} s wall, {c_ours:.3f} s CPU")
    print(f"  reading the run (records.jsonl, {len(records):,} lines, through the results layer's integrity check): {t_read:.2f} s")
    if not reference:
        return
    t0 = time.perf_counter()
    ref = pandas_sklearn(records)
    t_ref = time.perf_counter() - t0
    worst = 0.0
    for (scope, a, b), v in ref.items():
        kind, _, name = scope.partition(":")
        m = doc["kappa"]["all"] if kind == "all" else doc["kappa"][f"by_{kind}"][name]
        ours = m["values"][m["labels"].index(a)][m["labels"].index(b)]
        if kind == "suite":  # pooled kappa: ours computes chance agreement within each suite (sklearn's over the pooled labels)
            worst = max(worst, abs(ours - v["kappa"]))
        m = doc["double_fault"]["all"] if kind == "all" else doc["double_fault"][f"by_{kind}"][name]
        worst = max(worst, abs(m["values"][m["labels"].index(a)][m["labels"].index(b)] - v["double_fault"]))
    print(f"  pandas pivot + sklearn cohen_kappa_score + numpy loop:             {t_ref:8.3f} s wall   ratio {t_ref / t_ours:6.1f}x")
    print(f"  max |difference| (per-suite kappa, double fault): {worst:.2e}")


GEMMA_270M = {"q_proj": (1024, 640), "k_proj": (256, 640), "v_proj": (256, 640), "o_proj": (640, 1024),
              "gate_proj": (2048, 640), "up_proj": (2048, 640), "down_proj": (640, 2048)}


def weight_bench(n_adapters: int, layers: int = 18, r: int = 8) -> None:
    from safetensors.numpy import save_file

    from harness.diversity.weight_space import load_registered, weight_space
    from harness.registry import Registry

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "reg")
        refs = []
        for k in range(n_adapters):
            src = Path(tmp) / f"src{k}"
            src.mkdir()
            tensors = {}
            for layer in range(layers):
                for mod, (out_dim, in_dim) in GEMMA_270M.items():
                    part = "self_attn" if mod.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
                    name = f"base_model.model.model.layers.{layer}.{part}.{mod}"
                    tensors[f"{name}.lora_A.weight"] = (rng.normal(size=(r, in_dim)) / np.sqrt(in_dim)).astype(np.float32)
                    tensors[f"{name}.lora_B.weight"] = (rng.normal(size=(out_dim, r)) * 0.01).astype(np.float32)
            save_file(tensors, str(src / "adapter_model.safetensors"))
            (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": list(GEMMA_270M)}))
            refs.append(str(reg.register(f"a{k}", src, {"base_model": {"spec": "default", "fingerprint": "f" * 64}}).ref))
        t0 = time.perf_counter()
        adapters = load_registered(refs, reg.root)
        t_load = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        doc = weight_space(adapters)
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        # dense reference: materialise every dW of one module for all adapters, then cosines of the flattened whole adapters
        t0 = time.perf_counter()
        n = len(adapters)
        gram = np.zeros((n, n))
        for name in adapters[0].modules:
            D = np.stack([(a.modules[name].scale * a.modules[name].B @ a.modules[name].A).ravel() for a in adapters])
            gram += D @ D.T
        d = np.sqrt(np.diag(gram))
        dense_cos = gram / np.outer(d, d)
        t_dense = time.perf_counter() - t0
    ours = np.array([[v for v in row] for row in doc["weight_cosine"]["overall"]["values"]], dtype=float)
    print(f"\nweight space: {n_adapters} adapters, r={r}, {layers} layers x 7 modules at gemma-3-270m shapes ({len(adapters[0].modules)} modules each)")
    print(f"  reading + verifying the registry (sha256 of every file): {t_load:6.2f} s")
    print(f"  ours (cosines per module/layer/type/overall, norms, effective ranks, subspace overlaps): {t_ours:6.2f} s wall, {c_ours:.2f} s CPU")
    print(f"  dense reference (materialise every dW, overall cosine only):                           {t_dense:6.2f} s")
    print(f"  max |cosine difference|: {np.max(np.abs(ours - dense_cos)):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--adapters", type=int, default=20)
    ap.add_argument("--no-reference", action="store_true", help="time ours only (the pandas/sklearn loop takes minutes)")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    prediction_bench(args.candidates + 1, args.items, reference=not args.no_reference)
    weight_bench(args.adapters)


if __name__ == "__main__":
    main()
