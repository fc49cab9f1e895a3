"""Our evaluation engine against plain lm-eval, same model, suite and batch size, in one run.

Prints items/s of each and the ratio for:
  cold     a first run (ours: empty cache; lm-eval: simple_evaluate with HFLM)
  warm     an identical re-run (ours: served from the content-keyed cache, no model load), in this process
  warm CLI the same re-run as a user runs it: `laf eval` in a fresh process, interpreter start included; also
           which model-stack packages it imported (issue 30: none, at most 1.5 s on the 2-core machine)
  4 models base + 3 adapters (ours: one process, adapters hot-swapped; lm-eval: one process per model)
  preamble a suite whose items share a fixed preamble (default: TruthfulQA MC's six-question primer, first 40 items),
           per request, cold: lm-eval, ours with the preamble computed once per model, ours without (issue 30: at
           least 12x plain lm-eval per request on the 2-core machine)
and the start-up of a cold run in a fresh process: seconds until scoring starts (model, tokenizer and suites ready;
issue 30: at most 5 s once the model is converted), and until the first results are committed. The cold case also
prints the FLOP floor of the same requests (plain lm-eval vs exact shared-context scoring, linear layers) and how
much of that ratio the measured one reaches (issue 30: 93 %).

Usage:  python benchmarks/eval_throughput.py [--model default] [--suite general/world-facts]
        [--limit 200] [--batch-size 8] [--data-dir ../shared/data/benchmarks]
        [--preamble-suite hallucination/truthfulqa-mc] [--preamble-limit 40] [--cases cold,warm,cli,startup,adapters,preamble]
The adapters are random LoRA adapters (r=8, all linear layers) registered in a
temporary registry: throughput does not depend on what they learned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def lm_eval_plain(model_spec: str, suite_ref: str, limit: int, batch_size: int, data_dir: str | None, adapter: str | None = None,
                  precision: str = "fp32") -> dict:
    """One plain lm-eval run: load the model (and adapter), simple_evaluate with HFLM. Returns timing."""
    import logging

    logging.disable(logging.WARNING)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from harness.models import LoadSpec, load_model, resolve_model
    from harness.suites import load_suite

    t0 = time.perf_counter()
    suite = load_suite(suite_ref, data_dir)
    model, tok, _ = load_model(resolve_model(model_spec), LoadSpec(precision))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=2048)
    t1 = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=[suite.build.config], limit=limit, task_manager=TaskManager(include_defaults=False), bootstrap_iters=0, verbosity="ERROR")
    t2 = time.perf_counter()
    n = out["results"][suite.task_name]["sample_len"] if "sample_len" in out["results"][suite.task_name] else limit
    return {"items": n, "seconds": t2 - t0, "load_s": t1 - t0, "score_s": t2 - t1}


class ScorerTap:
    """Records the token-level requests our scorer is handed and the seconds spent inside it (the scoring alone)."""

    def __init__(self):
        self.requests: list[tuple[list[int], list[int]]] = []
        self.seconds = 0.0

    def __enter__(self):
        import harness.evaluate.lm as lm_module

        self._module, self._real = lm_module, lm_module.score_loglikelihood

        def tapped(model, requests, **kw):
            self.requests += requests
            gen = self._real(model, requests, **kw)
            while True:
                t = time.perf_counter()
                try:
                    batch = next(gen)
                except StopIteration:
                    self.seconds += time.perf_counter() - t
                    return
                self.seconds += time.perf_counter() - t
                yield batch

        lm_module.score_loglikelihood = tapped
        return self

    def __exit__(self, *exc):
        self._module.score_loglikelihood = self._real


def flop_floor(model_spec: str, requests: list[tuple[list[int], list[int]]], max_length: int = 2048) -> dict:
    """Linear-layer FLOPs of the same requests two ways. Plain lm-eval (HFLM): each distinct input (context +
    continuation, less its last token) through the body and the head at every position, a one-token continuation
    sharing its context's input as HFLM's grouping does. Exact shared-context scoring: each distinct context once
    through the body, every distinct request's continuation after it, the head at each context's end once and at
    every continuation token. Attention's own products (small at these lengths) are left out of both."""
    from harness.evaluate.scoring import _split
    from harness.models import LoadSpec, load_model, resolve_model

    model, _, _ = load_model(resolve_model(model_spec), LoadSpec("fp32"), with_tokenizer=False)
    embed, unembed = model.get_input_embeddings().weight, model.get_output_embeddings().weight  # one tensor when tied
    p_head = unembed.numel()
    p_body = sum(p.numel() for p in model.parameters() if p is not embed and p is not unembed)
    inputs = {tuple((ctx + cont)[-(max_length + 1):][:-1]) for ctx, cont in requests}
    plain = 2 * (p_body + p_head) * sum(len(i) for i in inputs)
    contexts, tails = set(), 0
    for ctx, cont in {(tuple(c), tuple(t)) for c, t in requests}:
        context, tail = _split(list(ctx), list(cont), max_length)
        contexts.add(tuple(context))
        tails += len(tail)
    shared = 2 * p_body * (sum(len(c) for c in contexts) + tails) + 2 * p_head * (len(contexts) + tails)
    return {"plain_gflop": plain / 1e9, "shared_gflop": shared / 1e9, "ratio": plain / shared}


def ours(model_spec, suite_ref, limit, batch_size, data_dir, cache, out, adapters=(), registry=None, precision: str = "fp32",
         share_preamble: bool = True) -> dict:
    from harness.evaluate import EvalSpec, run_eval

    spec = EvalSpec(suites=[suite_ref], model=model_spec, adapters=list(adapters), registry=registry or "adapters_registry", out=out, limit=limit,
                    precision=precision, batch_size=batch_size, cache=cache, data_dir=data_dir, share_preamble=share_preamble)
    first: list[float] = []

    def progress(model, suite, done, total, hits):
        if done > hits and not first:
            first.append(time.perf_counter())

    t0 = time.perf_counter()
    doc = run_eval(spec, progress=progress).to_dict()
    t1 = time.perf_counter()
    items = sum(r[suite_ref][next(iter(r[suite_ref]))]["n"] for r in doc["results"].values())
    return {"items": items, "seconds": t1 - t0, "requests": {m: v["requests"] for m, v in doc["models"].items()},
            "after_first_batch_s": t1 - first[0] if first else None}


CASES = ("cold", "warm", "cli", "startup", "adapters", "preamble")
MODEL_STACK = ("torch", "transformers", "peft", "bitsandbytes", "lm_eval", "datasets", "scipy", "numpy")

WARM_CLI = (
    "import json, sys, time; t0 = time.perf_counter(); from harness.cli import main; code = main(sys.argv[1:]); "
    "print('RESULT ' + json.dumps({'code': code, 'seconds': time.perf_counter() - t0, "
    "'modules': sorted({m.split('.')[0] for m in sys.modules} & set(%r))}))" % (MODEL_STACK,)
)

STARTUP = """
import json, sys, time
t0 = time.perf_counter()
from harness.evaluate import EvalSpec, run_eval
import harness.evaluate.lm
first, entered = [], []
real = harness.evaluate.lm.score_loglikelihood
def tapped(*a, **kw):  # the scorer entered: model, tokenizer and suites ready, requests tokenised
    if not entered:
        entered.append(time.perf_counter() - t0)
    return real(*a, **kw)
harness.evaluate.lm.score_loglikelihood = tapped
def progress(model, suite, done, total, hits):
    if done > hits and not first:
        first.append(time.perf_counter() - t0)
spec = EvalSpec(**json.loads(sys.argv[1]))
run_eval(spec, progress=progress)
print("RESULT " + json.dumps({"scorer_s": entered[0] if entered else None, "first_batch_s": first[0] if first else None,
                              "seconds": time.perf_counter() - t0}))
"""


def _result(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def warm_cli(model_spec, suite_ref, limit, batch_size, data_dir, cache, out, precision: str = "fp32") -> dict:
    """An identical re-run as a user runs it: `laf eval` in a fresh process. Wall time includes interpreter start."""
    argv = ["eval", "--model", model_spec, "--suite", suite_ref, "--limit", str(limit), "--batch-size", str(batch_size), "--precision", precision,
            "--cache", cache, "--out", out, "--quiet"] + (["--data-dir", data_dir] if data_dir else [])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WARM_CLI, *argv], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return {**_result(proc), "wall_s": wall}


def startup(model_spec, suite_ref, limit, batch_size, data_dir, cache, out, precision: str = "fp32") -> dict:
    """A cold run in a fresh process (empty cache): seconds from the interpreter's first line to the first scored batch."""
    spec = {"suites": [suite_ref], "model": model_spec, "limit": limit, "batch_size": batch_size, "data_dir": data_dir, "cache": cache, "out": out,
            "precision": precision}
    return _result(subprocess.run([sys.executable, "-c", STARTUP, json.dumps(spec)], cwd=REPO, capture_output=True, text=True))


def make_adapters(model_spec: str, n: int, registry: Path) -> list[str]:
    import torch
    from peft import LoraConfig, get_peft_model

    from harness.models import LoadSpec, load_model, resolve_model
    from harness.registry import Registry

    resolved = resolve_model(model_spec)
    refs = []
    for i in range(n):
        model, _, spec = load_model(resolved, LoadSpec("fp32"))
        torch.manual_seed(100 + i)
        peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
        with tempfile.TemporaryDirectory() as tmp:
            peft.save_pretrained(tmp)
            Path(tmp, "README.md").unlink(missing_ok=True)
            manifest = {"base_model": {"spec": model_spec, "fingerprint": resolved.fingerprint}, "load": spec.as_dict(), "kind": "lora (random, benchmark)"}
            refs.append(str(Registry(registry).register(f"bench{i}", Path(tmp), manifest).ref))
    return refs


def preamble_case(args, tmp: Path) -> list[tuple[str, float, float]]:
    """Per request, cold (empty caches), the same suite, model, fp32 and batch: plain lm-eval, ours with the shared
    preamble computed once per model, ours without it. The requests are lm-eval's own (one per choice) on both sides."""
    suite, limit = args.preamble_suite, args.preamble_limit
    lm = lm_eval_plain(args.model, suite, limit, args.batch_size, args.data_dir)
    on = ours(args.model, suite, limit, args.batch_size, args.data_dir, str(tmp / "cache-preamble.sqlite"), str(tmp / "preamble"))
    off = ours(args.model, suite, limit, args.batch_size, args.data_dir, str(tmp / "cache-nopreamble.sqlite"), str(tmp / "nopreamble"),
               share_preamble=False)
    req_on, req_off = on["requests"]["base"], off["requests"]["base"]
    n = req_on["requests"]
    assert n == req_off["requests"] and req_on["computed"] == n, (req_on, req_off)
    print(f"  preamble ({suite}, {limit} items, {n} requests): lm-eval {lm['seconds']:.1f} s (scoring {lm['score_s']:.1f} s); "
          f"ours with the preamble once {on['seconds']:.1f} s ({on['after_first_batch_s']:.1f} s after the first batch; "
          f"{req_on['preamble_reused']} requests reused it, {req_on['preamble_fallback']} in full); "
          f"ours without {off['seconds']:.1f} s ({off['after_first_batch_s']:.1f} s after the first batch)", flush=True)
    return [("preamble once, per request", n / lm["seconds"], n / on["seconds"]),
            ("preamble each row, per req.", n / lm["seconds"], n / off["seconds"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--suite", default="general/world-facts")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--adapters", type=int, default=3)
    ap.add_argument("--preamble-suite", default="hallucination/truthfulqa-mc", help="a suite whose items share a preamble")
    ap.add_argument("--preamble-limit", type=int, default=40)
    ap.add_argument("--cases", default=",".join(CASES), help=f"which cases to run, comma-separated (default all: {','.join(CASES)})")
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    if not cases <= set(CASES):
        ap.error(f"--cases: unknown {', '.join(sorted(cases - set(CASES)))} (choose from {', '.join(CASES)})")
    import torch

    print(f"model {args.model}, suite {args.suite}, {args.limit} items, batch size {args.batch_size}, fp32, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="laf-bench-"))
    rows = []

    # warm-up: both sides then find the weights in the OS file cache
    from harness.models import resolve_model

    _ = resolve_model(args.model).fingerprint  # convert / hash once, outside the timings

    if cases & {"cold", "warm", "cli"}:
        lm = lm_eval_plain(args.model, args.suite, args.limit, args.batch_size, args.data_dir)
        with ScorerTap() as tap:
            cold = ours(args.model, args.suite, args.limit, args.batch_size, args.data_dir, str(tmp / "cache.sqlite"), str(tmp / "cold"))
        rows.append(("cold run", lm["items"] / lm["seconds"], cold["items"] / cold["seconds"]))
        rows.append(("cold, scoring alone", lm["items"] / lm["score_s"], cold["items"] / tap.seconds))
        print(f"  lm-eval cold: {lm['seconds']:.1f} s (load {lm['load_s']:.1f} s, scoring {lm['score_s']:.1f} s); ours cold: {cold['seconds']:.1f} s "
              f"({tap.seconds:.1f} s in the scorer)", flush=True)
        if tap.requests:
            floor = flop_floor(args.model, tap.requests)
            print(f"  FLOP floor (linear layers, {len(tap.requests)} requests): lm-eval {floor['plain_gflop']:.0f} GFLOP, exact shared-context "
                  f"{floor['shared_gflop']:.0f} GFLOP, a {floor['ratio']:.2f}x floor ratio (issue 30: reach 93 % of it); measured "
                  f"{lm['seconds'] / cold['seconds']:.2f}x cold ({lm['seconds'] / cold['seconds'] / floor['ratio']:.0%} of it), "
                  f"{lm['score_s'] / tap.seconds:.2f}x scoring alone ({lm['score_s'] / tap.seconds / floor['ratio']:.0%})", flush=True)

    if cases & {"warm", "cli"}:
        warm = ours(args.model, args.suite, args.limit, args.batch_size, args.data_dir, str(tmp / "cache.sqlite"), str(tmp / "warm"))
        assert all(r["computed"] == 0 for r in warm["requests"].values()), warm
        rows.append(("warm re-run", lm["items"] / lm["seconds"], warm["items"] / warm["seconds"]))
        print(f"  ours warm: {warm['seconds']:.2f} s, {sum(r['cache_hits'] for r in warm['requests'].values())} cache hits, 0 forward passes", flush=True)

    if "cli" in cases:
        cli = warm_cli(args.model, args.suite, args.limit, args.batch_size, args.data_dir, str(tmp / "cache.sqlite"), str(tmp / "warm-cli"))
        rows.append(("warm re-run, `laf eval`", lm["items"] / lm["seconds"], cold["items"] / cli["wall_s"]))
        print(f"  ours warm, fresh process: {cli['wall_s']:.2f} s wall ({cli['seconds']:.2f} s after interpreter start); "
              f"model stack imported: {', '.join(cli['modules']) or 'none'}", flush=True)
    if "startup" in cases:
        start = startup(args.model, args.suite, args.limit, args.batch_size, args.data_dir, str(tmp / "cache-startup.sqlite"), str(tmp / "startup"))
        print(f"  ours cold, fresh process: scoring starts after {start['scorer_s']:.1f} s (issue 30: at most 5 s), the first results "
              f"after {start['first_batch_s']:.1f} s (the head waits for a chunk's worth of positions), whole run {start['seconds']:.1f} s", flush=True)

    if "preamble" in cases:
        rows += preamble_case(args, tmp)

    if args.adapters and "adapters" in cases:
        reg = tmp / "registry"
        refs = make_adapters(args.model, args.adapters, reg)
        t0 = time.perf_counter()
        n_items = 0
        for ref in [None, *refs]:
            path = None if ref is None else str(reg / ref.split("@")[0] / ref.split("@")[1])
            code = (
                "import json,sys; sys.path.insert(0, %r); from benchmarks.eval_throughput import lm_eval_plain; "
                "print(json.dumps(lm_eval_plain(%r, %r, %d, %d, %r, %r)))" % (str(REPO), args.model, args.suite, args.limit, args.batch_size, args.data_dir, path)
            )
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
            n_items += json.loads(res.stdout.strip().splitlines()[-1])["items"]
        lm_multi = time.perf_counter() - t0
        multi = ours(args.model, args.suite, args.limit, args.batch_size, args.data_dir, str(tmp / "cache-multi.sqlite"), str(tmp / "multi"), refs, str(reg))
        rows.append((f"base + {args.adapters} adapters", n_items / lm_multi, multi["items"] / multi["seconds"]))
        print(f"  lm-eval one process per model: {lm_multi:.1f} s; ours hot-swap: {multi['seconds']:.1f} s", flush=True)

    print()
    print(f"{'':28}{'lm-eval per s':>16}{'ours per s':>14}{'ours / lm-eval':>16}  (items/s; requests/s for the preamble rows)")
    for name, a, b in rows:
        print(f"{name:28}{a:>16.2f}{b:>14.2f}{b / a:>15.1f}x")


if __name__ == "__main__":
    main()
