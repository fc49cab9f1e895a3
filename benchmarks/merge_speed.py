"""Merge speed and memory: every `laf merge` method next to PEFT's add_weighted_adapter, in one run.

Inputs: two LoRA adapters on the default model (gemma-3-270m) with the
quickstart's settings (r = 8, alpha = 16, all linear layers), created with
PEFT (`get_peft_model`) and given seeded random non-zero B (std 0.01), so
they are RANDOM-INIT adapters, not trained ones: merge cost depends only on
the shapes, not on what the adapters learned. They are registered like
`laf train` registers adapters.

Each measurement runs in its own process; a sampler thread reads the RSS every
5 ms, and "extra memory" is the peak RSS during the merge minus the RSS just
before it. Ours: `merge_adapters(cfg)` end to end (read + verify the adapters,
merge, re-factor, register). PEFT: `add_weighted_adapter` alone, on a
PeftModel that already holds the fp32 base and both adapters (that load time
is printed separately; PEFT cannot merge without the base in memory); its
*_svd types run with svd_full_matrices=False, its fastest setting. A
measurement that takes over 5 minutes is stopped and reported as such.

Goal (issue 14): every method under 10 s on 2 cores, extra memory under twice
the model's size.

Usage: python benchmarks/merge_speed.py [--model default] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

R, ALPHA = 8, 16  # examples/quickstart.yaml
DENSITY = 0.5

OURS = {
    "linear": {"method": "linear"},
    "task_arithmetic": {"method": "task_arithmetic", "weights": [0.5, 0.5]},
    "slerp": {"method": "slerp", "t": 0.5},
    "slerp_gradient": {"method": "slerp", "t": [{"filter": "self_attn", "value": [0, 0.5, 1]}, {"filter": "mlp", "value": [1, 0.5, 0]}, {"value": 0.5}]},
    "ties": {"method": "ties", "density": DENSITY},
    "dare_linear": {"method": "dare_linear", "density": DENSITY},
    "dare_ties": {"method": "dare_ties", "density": DENSITY},
    "model_stock": {"method": "model_stock"},
    "cat": {"method": "cat"},
    "linear_exact": {"method": "linear", "output": {"rank": "exact"}},
    "linear_model_bf16": {"method": "linear", "output": {"kind": "model", "dtype": "bf16"}},
}
# ours -> the PEFT combination types that do the same job (svd variants: full dW, then truncated SVD)
PEFT_FOR = {
    "linear": ["linear", "svd"],
    "ties": ["ties", "ties_svd"],
    "dare_linear": ["dare_linear", "dare_linear_svd"],
    "dare_ties": ["dare_ties", "dare_ties_svd"],
    "cat": ["cat"],
}


class RssSampler:
    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = self.start = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def setup(model: str, registry: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.models import resolve_model
    from harness.registry import Registry

    resolved = resolve_model(model)
    refs = []
    for seed, name in ((1, "bench-a"), (2, "bench-b")):
        base = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
        torch.manual_seed(seed)
        peft = get_peft_model(base, LoraConfig(r=R, lora_alpha=ALPHA, target_modules="all-linear", task_type="CAUSAL_LM"))
        g = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        manifest = {"kind": "lora", "base_model": {"spec": model, "kind": resolved.kind, "source": resolved.source, "fingerprint": resolved.fingerprint},
                    "load": {"precision": "fp32", "compute_dtype": "fp32", "device": "cpu"}, "note": "random-init benchmark adapter"}
        with tempfile.TemporaryDirectory() as tmp:
            peft.save_pretrained(tmp, safe_serialization=True)
            refs.append(str(Registry(registry).register(name, Path(tmp), manifest).ref))
        del peft, base
    size = sum(p.stat().st_size for p in resolved.path.glob("*.safetensors"))
    return {"refs": refs, "model_bytes": size, "path": str(resolved.path)}


def one_ours(label: str, registry: Path, refs: list[str], workdir: Path) -> dict:
    import torch  # noqa: F401  (imports are not part of the merge)

    from harness.merge import MergeConfig, merge_adapters

    raw = {"name": f"bench-{label.replace('_', '-')}-{os.getpid()}", "adapters": refs, "registry": str(registry), **OURS[label]}
    if raw.get("output", {}).get("kind") == "model":
        raw["output"] = {**raw["output"], "path": str(workdir / f"model-{label}")}
    cfg = MergeConfig.model_validate(raw)
    t0 = time.perf_counter()
    with RssSampler() as rss:
        res = merge_adapters(cfg)
    dt = time.perf_counter() - t0
    out = res.lineage.get("output", {})
    err = (out.get("relative_error") or {}).get("max")
    return {"seconds": dt, "extra_mb": rss.extra_mb, "rank": out.get("rank"), "max_rel_error": err}


def one_peft(ctype: str, model_path: str, registry: Path, refs: list[str]) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.registry import Registry

    reg = Registry(registry)
    t0 = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(reg.resolve(refs[0]).path), adapter_name="a")
    model.load_adapter(str(reg.resolve(refs[1]).path), adapter_name="b")
    load = time.perf_counter() - t0
    kwargs = {"density": DENSITY} if ("ties" in ctype or "dare" in ctype) else {}
    if ctype.endswith("svd"):
        kwargs["svd_full_matrices"] = False  # PEFT's fastest setting (its default, True, also builds the full U)
    t0 = time.perf_counter()
    with RssSampler() as rss:
        model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "merged", combination_type=ctype, **kwargs)
    return {"seconds": time.perf_counter() - t0, "extra_mb": rss.extra_mb, "load_seconds": load}


CHILD_TIMEOUT_S = 300


def run_child(args: list[str]) -> dict:
    try:
        p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                           timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {CHILD_TIMEOUT_S} s (stopped)"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    ap.add_argument("--methods", nargs="+", choices=list(OURS), help="only these of ours (default: all)")
    ap.add_argument("--no-peft", action="store_true", help="skip PEFT's add_weighted_adapter")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, label, registry, model_path, workdir, *refs = args.child
        res = one_ours(label, Path(registry), refs, Path(workdir)) if kind == "ours" else one_peft(label, model_path, Path(registry), refs)
        print(json.dumps(res))
        return 0

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="laf-merge-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    registry = work / "registry"
    t0 = time.perf_counter()
    info_file = work / "setup.json"
    if info_file.exists():  # --keep DIR of an earlier run: reuse its adapters
        info = json.loads(info_file.read_text())
    else:
        info = run_child_setup(args.model, registry)
        info_file.write_text(json.dumps(info))
    print(f"setup: 2 random-init PEFT adapters (r={R}, alpha={ALPHA}, all-linear) on {args.model} in {time.perf_counter() - t0:.1f} s; "
          f"model {info['model_bytes'] / 2**20:.0f} MiB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    budget_mb = 2 * info["model_bytes"] / 2**20
    print(f"\n{'':5} {'method':18} {'seconds':>8} {'extra MiB':>10} {'rank':>5} {'max rel err':>12}  notes", flush=True)
    worst_t, worst_m = 0.0, 0.0

    def show(who: str, label: str, r: dict) -> None:
        nonlocal worst_t, worst_m
        if "error" in r:
            print(f"{who:5} {label:18} error: {r['error']}", flush=True)
            return
        note = ""
        if who == "peft":
            note = f"(+ {r['load_seconds']:.1f} s to load base + adapters first)"
            if label in ("linear", "ties", "dare_linear", "dare_ties"):
                note += "; averages A and B separately: cross terms"
        else:
            worst_t, worst_m = max(worst_t, r["seconds"]), max(worst_m, r["extra_mb"])
        err = "" if r.get("max_rel_error") is None else f"{r['max_rel_error']:.2e}"
        print(f"{who:5} {label:18} {r['seconds']:8.2f} {r['extra_mb']:10.0f} {str(r.get('rank') or ''):>5} {err:>12}  {note}", flush=True)

    for label in args.methods or OURS:
        show("ours", label, run_child(["--child", "ours", label, str(registry), info["path"], str(work), *info["refs"]]))
        for ctype in ([] if args.no_peft else PEFT_FOR.get(label, [])):
            show("peft", ctype, run_child(["--child", "peft", ctype, str(registry), info["path"], str(work), *info["refs"]]))
    print(f"\nload average now {os.getloadavg()[0]:.1f}")
    ok_t, ok_m = worst_t < 10, worst_m < budget_mb
    print(f"\nours, slowest: {worst_t:.2f} s (goal < 10 s: {'met' if ok_t else 'NOT met'}); "
          f"largest extra memory: {worst_m:.0f} MiB (goal < {budget_mb:.0f} MiB = 2 x model: {'met' if ok_m else 'NOT met'})")
    return 0


def run_child_setup(model: str, registry: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.merge_speed import setup; "
                        f"from pathlib import Path; print(json.dumps(setup({model!r}, Path({str(registry)!r}))))"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if p.returncode != 0:
        sys.exit(f"setup failed: {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
