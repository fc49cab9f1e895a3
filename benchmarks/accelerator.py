"""The prepared accelerator run: eval, SFT, DPO and preserve-training figures, ours beside plain lm-eval and TRL, in one JSON.

Driven by ``benchmarks/accelerator.sh`` (which first installs what is missing from local wheels). For each model
configuration it measures, side by side on the same model, data, precision and batch:

  eval      ours (``run_eval``, empty cache) vs plain lm-eval (HFLM + simple_evaluate): items/s, requests/s, peak memory;
            ours warm (an identical re-run in a fresh process, served from the cache): seconds and the model-stack
            modules it imported (none expected)
  sft       ours (``harness.train``, packing) vs TRL's SFTTrainer (completion-only loss): tokens/s, peak memory
  dpo       ours (DPO, cached reference pass) vs TRL's DPOTrainer: pairs/s, peak memory
  preserve  one LoRA step: plain SFT vs SFT + our KL anchor vs the textbook KL (two full-vocabulary forwards): tokens/s,
            peak memory

Every side runs in its own process (so its peak memory is its own: ``torch.cuda.max_memory_allocated`` on a GPU, peak
RSS on the CPU) under a share of ``--budget-s``; a side that fails or runs out of time is recorded as such, never
silently dropped. ``--small`` (with ``--cpu``: the test that keeps this script from rotting) runs a 2-layer random
model of the default model's architecture with the test tokenizer, a few items, all sides in this process, 1 thread.

Models: ``auto`` takes the default model where it resolves offline (converted, or its package installed), else a
random-init model of its architecture with the test fixture's tokenizer (the weights cannot travel to a lent machine;
speed does not depend on them; the JSON says which ran). The second configuration is ``--large-model`` when given, else
the same model at 4x the context.

Usage: benchmarks/accelerator.sh [--cpu] [--small] [--out reports/accelerator.json] [--budget-s 480]
       [--model auto|default|random|PATH] [--large-model PATH] [--sections eval,sft,dpo,preserve]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SCHEMA = "laf.accelerator/1"
SECTIONS = ("eval", "sft", "dpo", "preserve")
SIDES = {"eval": ("ours", "lm_eval"), "sft": ("ours", "trl"), "dpo": ("ours", "trl"), "preserve": ("plain_sft", "kl_anchor", "textbook")}
THEIRS = {"eval": "lm_eval", "sft": "trl", "dpo": "trl", "preserve": "textbook"}
MODEL_STACK = ("torch", "transformers", "peft", "bitsandbytes", "lm_eval", "datasets", "scipy")


# ---------------------------------------------------------------- sizes


def sizes(small: bool, cuda: bool, long: bool) -> dict:
    """How much work each section does; ``long``: the same at 4x the context (the second configuration)."""
    if small:
        s = {"eval_limit": 6, "eval_batch": 4, "sft_examples": 8, "sft_len": 512, "dpo_pairs": 8, "dpo_len": 256, "kl_batch": 2, "kl_len": 32, "kl_steps": 1}
    elif cuda:
        s = {"eval_limit": 200, "eval_batch": 16, "sft_examples": 256, "sft_len": 512, "dpo_pairs": 64, "dpo_len": 256, "kl_batch": 8, "kl_len": 512, "kl_steps": 5}
    else:
        s = {"eval_limit": 40, "eval_batch": 8, "sft_examples": 32, "sft_len": 256, "dpo_pairs": 16, "dpo_len": 128, "kl_batch": 4, "kl_len": 128, "kl_steps": 2}
    if long:
        s.update(sft_examples=max(4, s["sft_examples"] // 4), sft_len=s["sft_len"] * 4, dpo_pairs=max(4, s["dpo_pairs"] // 2), dpo_len=s["dpo_len"] * 4,
                 kl_batch=max(1, s["kl_batch"] // 2), kl_len=s["kl_len"] * 4)
    return s


def peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the sides (each returns a dict of figures)


def side_eval(side: str, job: dict) -> dict:
    from benchmarks.eval_throughput import lm_eval_plain, ours

    sz, out = job["sizes"], Path(job["work"]) / f"eval-{side}"
    suite = job["eval_suite"]
    if side == "lm_eval":
        r = lm_eval_plain(job["model"], suite, sz["eval_limit"], sz["eval_batch"], None, precision=job["precision"])
    else:
        r = ours(job["model"], suite, sz["eval_limit"], sz["eval_batch"], None, str(out / "cache.sqlite"), str(out / "run"), precision=job["precision"])
        r["requests"] = sum(v["requests"] for v in r.pop("requests").values())
    r["items_per_s"] = r["items"] / r["seconds"]
    return r


def side_eval_warm(job: dict, timeout: float) -> dict:
    """The identical re-run of ours, in a fresh process through the CLI: what a user waits for."""
    sz, out = job["sizes"], Path(job["work"]) / "eval-ours"
    probe = ("import json, sys, time; t0 = time.perf_counter(); from harness.cli import main; code = main(sys.argv[1:]); "
             "print('RESULT ' + json.dumps({'code': code, 'seconds': time.perf_counter() - t0, "
             f"'modules': sorted({{m.split('.')[0] for m in sys.modules}} & set({list(MODEL_STACK)!r}))}}))")
    argv = ["eval", "--model", job["model"], "--suite", job["eval_suite"], "--limit", str(sz["eval_limit"]), "--batch-size", str(sz["eval_batch"]),
            "--precision", job["precision"], "--cache", str(out / "cache.sqlite"), "--out", str(out / "warm"), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    res = _result_line(proc)
    res["wall_s"] = wall  # interpreter start included
    return res


def side_sft(side: str, job: dict) -> dict:
    from benchmarks.train_throughput import make_data, run_ours, run_trl

    sz, out = job["sizes"], Path(job["work"]) / f"sft-{side}"
    data = make_data(Path(job["work"]) / "sft.jsonl", sz["sft_examples"])
    args = SimpleNamespace(model=job["model"], precision=job["precision"], max_length=sz["sft_len"], gpu_like=False)
    r = run_ours(args, data, out) if side == "ours" else run_trl(args, data, out, packing=False)
    r["tokens_per_s"] = r["tokens"] / r["seconds"]
    return r


def side_dpo(side: str, job: dict) -> dict:
    from benchmarks.dpo_throughput import make_pairs, pair_tokens, run_ours, run_trl, words_scale

    sz, out = job["sizes"], Path(job["work"]) / f"dpo-{side}"
    args = SimpleNamespace(model=job["model"], precision=job["precision"], max_length=sz["dpo_len"])
    data = make_pairs(Path(job["work"]) / "dpo.jsonl", sz["dpo_pairs"], scale=words_scale(job["model"]))
    r = run_ours(args, data, out) if side == "ours" else run_trl(args, data, out, precompute=False)
    r["pairs"] = sz["dpo_pairs"]
    r["tokens"] = pair_tokens(args, data)
    r["pairs_per_s"] = r["pairs"] / r["seconds"]
    r["tokens_per_s"] = r["tokens"] / r["seconds"]
    return r


def side_preserve(side: str, job: dict) -> dict:
    """One LoRA step on packed rows: plain SFT (fused head), SFT + our KL anchor, SFT + the textbook KL."""
    import torch
    import torch.nn.functional as F

    from harness.data.tokenize import IGNORE
    from harness.models import LoadSpec, load_model, resolve_model
    from harness.train.batching import Batch
    from harness.train.config import TrainConfig
    from harness.train.lora import attach_lora
    from harness.train.loss import preserve_loss_sums, supervised_loss_sum

    sz, device = job["sizes"], job["device"]
    model, _, spec = load_model(resolve_model(job["model"]), LoadSpec(job["precision"], None, device), with_tokenizer=False)
    half = torch.bfloat16 if spec.compute_dtype == "bf16" else None
    bench = TrainConfig(name="bench", precision=spec.precision, data={"path": "-"}, lora={"dropout": 0.0})
    model = attach_lora(model, bench.lora, precision=bench.precision, seed=bench.seed, compute_dtype=half)
    model.train()
    B, L, V = sz["kl_batch"], sz["kl_len"], model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, V, (B, L), generator=g)
    labels = ids.clone()
    labels[:, : L // 4] = IGNORE  # a prompt quarter, as in instruction data
    pos = torch.arange(L).repeat(B, 1)
    replay = torch.zeros(B, L, dtype=torch.bool)
    replay[: max(1, B // 2)] = True
    batch = Batch(ids, labels, pos, None, B, B * L, replay).to(device)
    n_sup = batch.supervised
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda") and half is not None)

    def step():
        with amp:
            if side == "plain_sft":
                loss = supervised_loss_sum(model, batch) / n_sup
            elif side == "kl_anchor":
                nll, kl, n = preserve_loss_sums(model, batch, "all")
                loss = nll / n_sup + kl / max(1, n)
            else:
                kw = dict(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)
                logq = torch.log_softmax(model(**kw).logits.float()[:, :-1], -1)
                with torch.no_grad(), model.disable_adapter():
                    logp = torch.log_softmax(model(**kw).logits.float()[:, :-1], -1)
                y = batch.labels[:, 1:]
                keep = y != IGNORE
                nll = -logq.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)[keep].sum()
                loss = nll / n_sup + F.kl_div(logq[keep], logp[keep], log_target=True, reduction="sum") / int(keep.sum())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    times = []
    for _ in range(sz["kl_steps"]):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"seconds_per_step": best, "tokens": B * L, "tokens_per_s": B * L / best, "steps": len(times), "precision": spec.precision}


RUNNERS = {"eval": side_eval, "sft": side_sft, "dpo": side_dpo, "preserve": side_preserve}


def run_side(section: str, side: str, job: dict) -> dict:
    import torch

    if job["device"].startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    res = RUNNERS[section](side, job)
    res["peak_mb"] = peak_mb(job["device"])
    return res


# ---------------------------------------------------------------- running sides in child processes


def _result_line(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-12:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)[-1500:]}
    return json.loads(lines[-1][len("RESULT "):])


def child_main(spec: str) -> None:
    job = json.loads(Path(spec).read_text())
    res = run_side(job["section"], job["side"], job)
    print("RESULT " + json.dumps(res), flush=True)


def measure(section: str, side: str, job: dict, in_process: bool, timeout: float) -> dict:
    """One side's figures, or ``{"error": ...}`` / ``{"error": "timed out ..."}``: never an exception."""
    job = {**job, "section": section, "side": side}
    if timeout < 5:
        return {"error": "skipped: the time budget (--budget-s) was spent"}
    if in_process:
        try:
            return run_side(section, side, job)
        except Exception as e:  # a benchmark side failing is a figure ("error"), not the end of the run
            return {"error": f"{type(e).__name__}: {e}"[-1500:], "traceback": traceback.format_exc()[-3000:]}
    spec = Path(job["work"]) / f"job-{section}-{side}.json"
    spec.write_text(json.dumps(job))
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", str(spec)], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    return _result_line(proc)


def ratios(section: str, sides: dict) -> dict:
    """ours / theirs: speed (higher is better for us) and peak memory (lower is better for us)."""
    ours_key = {"preserve": "kl_anchor"}.get(section, "ours")
    o, t = sides.get(ours_key, {}), sides.get(THEIRS[section], {})
    rate = "items_per_s" if section == "eval" else "tokens_per_s"
    out = {}
    if o.get(rate) and t.get(rate):
        out["speed"] = o[rate] / t[rate]
    if o.get("peak_mb") and t.get("peak_mb"):
        out["memory"] = o["peak_mb"] / t["peak_mb"]
    if section == "preserve" and o.get(rate) and sides.get("plain_sft", {}).get(rate):
        out["anchor_cost_vs_plain_sft"] = sides["plain_sft"][rate] / o[rate]
    if section == "eval" and sides.get("ours_warm", {}).get("wall_s") and t.get("seconds"):
        out["warm_speed"] = t["seconds"] / sides["ours_warm"]["wall_s"]
    return out


# ---------------------------------------------------------------- models


def pick_model(choice: str, small: bool, work: Path) -> tuple[str, str]:
    """(model spec, what it is)."""
    from benchmarks.gpu_train import build

    if small or choice == "small":
        return str(build(work / "small-model", smoke=True, with_tokenizer=True)), "random-init 2-layer gemma3 (test tokenizer), --small"
    if choice in ("auto", "default"):
        try:
            from harness.models import resolve_model

            resolve_model("default")
            return "default", "google/gemma-3-270m (the default model)"
        except Exception as e:  # noqa: BLE001 -- any reason it cannot resolve offline
            if choice == "default":
                raise
            why = str(e).splitlines()[0][:200]
    else:
        why = "asked for"
    if choice in ("auto", "random"):
        return str(build(work / "random-270m", smoke=False, with_tokenizer=True)), f"random-init gemma-3-270m architecture (test tokenizer; default model: {why})"
    return choice, f"model {choice}"


def machine() -> dict:
    from harness.env import machine_info, package_versions

    info = machine_info()
    info["packages"] = {k: v for k, v in package_versions(("torch", "transformers", "peft", "trl", "lm_eval", "bitsandbytes")).items() if v}
    return info


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    ap.add_argument("--small", action="store_true", help="a 2-layer model and a few items, all sides in one process (the test)")
    ap.add_argument("--out", default="reports/accelerator.json")
    ap.add_argument("--budget-s", type=float, default=480.0, help="the whole run's time limit in seconds (default 480: 8 minutes)")
    ap.add_argument("--model", default="auto", help="auto | default | random | a model folder")
    ap.add_argument("--large-model", default=None, help="a second, larger model folder (default: the first model at 4x the context)")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return 0
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        ap.error(f"unknown section(s) {', '.join(bad) or '(none)'}; use some of {', '.join(SECTIONS)}")
    if not 10 <= args.budget_s <= 86_400:
        ap.error("--budget-s must be between 10 and 86400")
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the children too
    started = time.perf_counter()
    deadline = started + args.budget_s
    import torch


    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    if args.small:
        # a 2-layer model has nothing to share between threads; on a busy CPU two threads made a 0.4 s SFT side 18 s
        torch.set_num_threads(1)
    precision = "bf16" if device == "cuda" else "fp32"
    work = Path(tempfile.mkdtemp(prefix="laf-accel-"))
    try:
        return _run(args, sections, started, deadline, device, precision, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # built models (1 GB for the random 270m), caches, run folders


def _run(args, sections: list[str], started: float, deadline: float, device: str, precision: str, work: Path) -> int:
    from harness.io import atomic_write_text

    model, what = pick_model(args.model, args.small, work)
    configs = [("base", model, what, False)]
    if not args.small:
        configs.append(("large", args.large_model, f"model {args.large_model}", False) if args.large_model else ("long-context", model, what + ", 4x context", True))
    doc: dict = {"schema": SCHEMA, "machine": machine(), "device": device, "precision": precision, "small": args.small, "budget_s": args.budget_s,
                 "isolation": "in-process (peak memory cumulative)" if args.small else "one process per side", "configs": {}}
    n_left = len(configs) * sum(len(SIDES[s]) + (s == "eval") for s in sections)
    for label, spec, desc, long in configs:
        sz = sizes(args.small, device == "cuda", long)
        job = {"model": spec, "precision": precision, "device": device, "sizes": sz, "work": str(work / label),
               "eval_suite": "general/text" if long else "general/world-facts"}
        Path(job["work"]).mkdir(parents=True, exist_ok=True)
        cfg: dict = {"model": desc, "sizes": sz, "eval_suite": job["eval_suite"], "sections": {}}
        doc["configs"][label] = cfg
        for section in sections:
            figures: dict = {}
            for side in SIDES[section]:
                figures[side] = measure(section, side, job, args.small, (deadline - time.perf_counter()) / max(1, n_left))
                n_left -= 1
                if section == "eval" and side == "ours":
                    left = (deadline - time.perf_counter()) / max(1, n_left)
                    figures["ours_warm"] = side_eval_warm(job, left) if "error" not in figures["ours"] and left >= 5 else {"error": "skipped (cold run failed or no time left)"}
                    n_left -= 1
            figures["ratio"] = ratios(section, figures)
            cfg["sections"][section] = figures
            atomic_write_text(Path(args.out), json.dumps(doc, indent=2) + "\n")  # what is measured so far survives a kill
    doc["wall_s"] = time.perf_counter() - started
    atomic_write_text(Path(args.out), json.dumps(doc, indent=2) + "\n")
    for label, cfg in doc["configs"].items():
        for section, figures in cfg["sections"].items():
            errs = {s: f["error"][:120] for s, f in figures.items() if isinstance(f, dict) and "error" in f}
            print(f"{label:12} {section:9} " + " ".join(f"{k} {v:.2f}x" for k, v in figures["ratio"].items()) + (f"  errors: {errs}" if errs else ""), flush=True)
    print(f"-> {args.out} ({doc['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
