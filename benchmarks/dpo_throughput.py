"""Our DPO against TRL's DPOTrainer + peft: same model, pairs, template, LoRA, batch, max length and checkpointing, in one run.

Each side trains one epoch in its own process (so peak memory is its own):
  ours             harness.train, objective dpo: reference log-probs in one no-grad pass before training
                   (cached by content), then only the policy; the LM head only on completion tokens
  trl              DPOTrainer (loss_type sigmoid, beta 0.1), reference = the adapter disabled, computed every step
  trl+precompute   the same with precompute_ref_log_probs=True (TRL's own one-pass reference)
Timings include the reference pass (ours: the manifest's reference seconds + the loop; TRL: trainer
construction, which runs its precompute, + train()). Same loader (NF4 by default), the plain prompt
template, LoRA r=8 / alpha 16 on all linear layers, dropout 0, AdamW lr 5e-5 constant-ish (cosine),
batch 4 pairs, gradient checkpointing (non-reentrant) on both sides.
Prints pair tokens per second (prompt + chosen + prompt + rejected, no padding; the same count for
every side), peak RSS (or GPU memory on CUDA), and the ratios. TRL is needed: pip install -e '.[bench]'.

--random-init trains a randomly initialised model of the gemma-3-270m architecture (vocabulary 262,144; built by
benchmarks/gpu_train.py with the test fixture's small tokenizer) instead of --model: speed and memory do not depend
on the weights, and nothing is downloaded. Pair texts are shortened to the tokenizer (about as many tokens per pair
as the default model's tokenizer gives), so nothing is truncated away. --steps N trains N steps of 4 pairs (4N pairs).
A side that runs past --side-timeout is stopped; the steps it finished are then reported per step.

Usage: python benchmarks/dpo_throughput.py [--model default | --random-init] [--precision nf4|fp32] [--pairs 48 | --steps N]
       [--max-length 128] [--sides ours,trl,trl+precompute] [--side-timeout 3600]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


WORDS = "router firmware reset button light status cable port signal network device setting manual warranty".split()


def make_pairs(path: Path, n: int, seed: int = 0, scale: float = 1.0) -> Path:
    """``n`` pairs; ``scale`` < 1 shortens every text (for a tokenizer that spends more tokens per word)."""
    rng = random.Random(seed)
    words = WORDS

    def span(lo: int, hi: int) -> int:
        return rng.randint(max(1, round(lo * scale)), max(1, round(hi * scale)))

    rows = []
    for i in range(n):
        q = " ".join(rng.choice(words) for _ in range(span(8, 40)))
        a = " ".join(rng.choice(words) for _ in range(span(6, 40)))
        b = " ".join(rng.choice(words) for _ in range(span(6, 40)))
        rows.append({"prompt": f"Question {i}: {q}?", "chosen": f"Answer: {a}.", "rejected": f"Answer: {b}!"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pair_tokens(args, data: Path) -> int:
    from harness.data.preference import read_pairs, tokenize_pairs
    from harness.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(args.model))
    return sum(p.tokens for p in tokenize_pairs(read_pairs(data).examples, tok, args.max_length, use_chat_template=False).examples)


def words_scale(model: str) -> float:
    """Shorten texts for a tokenizer that needs more than the default model's ~1.3 tokens per word of WORDS."""
    from harness.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(model))
    text = " ".join(WORDS)
    per_word = len(tok(text, add_special_tokens=False)["input_ids"]) / len(WORDS)
    return min(1.0, 1.3 / per_word)


def progress(side: str, out: Path) -> list[float]:
    """Seconds of each finished optimizer step of a side (from its metrics), for a side stopped by the timeout."""
    path = out / "run" / "metrics.jsonl" if side == "ours" else out / "steps.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if side == "ours":
        return [r["tokens"] / r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    return [r["seconds"] for r in rows]


def run_ours(args, data: Path, out: Path) -> dict:
    from harness.config import validate
    from harness.train import TrainConfig, train

    cfg = validate(TrainConfig, {
        "name": "bench", "model": args.model, "precision": args.precision, "objective": "dpo", "data": {"path": str(data), "eval_fraction": 0},
        "max_length": args.max_length, "batch_size": 4, "epochs": 1, "eval_every": 0, "save_every": 0, "lora": {"dropout": 0.0},
        "optim": {"lr": 5e-5}, "chat_template": False, "preference": {"beta": 0.1, "ref_cache": str(out / "refcache")},
        "registry": str(out / "reg"), "output_dir": str(out / "run"), "seed": 0, "gradient_checkpointing": True,
    }, "bench")
    res = train(cfg)
    m = res.entry.manifest
    return {"seconds": m["train_time_s"] + m["objective"]["reference"]["seconds"], "steps": m["steps"], "peak_mb": peak_mb(), "final_loss": m["final_train_loss"]}


def run_trl(args, data: Path, out: Path, precompute: bool) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from harness.data.preference import read_pairs
    from harness.models import LoadSpec, load_model, resolve_model
    from harness.prompt import plain_prompt

    model, tok, spec = load_model(resolve_model(args.model), LoadSpec(args.precision))
    rows = [{"prompt": plain_prompt(p.prompt[-1][1]), "chosen": p.chosen + tok.eos_token, "rejected": p.rejected + tok.eos_token} for p in read_pairs(data).examples]
    ds = datasets.Dataset.from_list(rows)
    cfg = DPOConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=5e-5, beta=0.1,
        num_train_epochs=1, max_length=args.max_length, lr_scheduler_type="cosine", warmup_steps=0.03, logging_steps=1000, save_strategy="no",
        report_to=[], bf16=spec.device.startswith("cuda"), fp16=False, use_cpu=not torch.cuda.is_available(), gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False}, dataloader_num_workers=0, seed=0, optim="adamw_torch", max_grad_norm=1.0,
        disable_tqdm=True, precompute_ref_log_probs=precompute,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    steps_log = out / "steps.jsonl"
    steps_log.parent.mkdir(parents=True, exist_ok=True)

    class StepTimes(TrainerCallback):  # per-step seconds, so a side stopped by --side-timeout still reports its steps
        last = 0.0

        def on_step_begin(self, *a, **k):
            self.last = time.perf_counter()

        def on_step_end(self, *a, **k):
            with open(steps_log, "a") as f:
                f.write(json.dumps({"seconds": time.perf_counter() - self.last}) + "\n")

    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora, callbacks=[StepTimes()])
    result = trainer.train()
    dt = time.perf_counter() - t0
    return {"seconds": dt, "steps": result.global_step, "peak_mb": peak_mb(), "final_loss": result.training_loss}


def child(args) -> None:
    out, data = Path(args.child_out), Path(args.child_data)
    res = run_ours(args, data, out) if args.side == "ours" else run_trl(args, data, out, precompute=args.side == "trl+precompute")
    print("RESULT " + json.dumps(res), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--precision", default="nf4", choices=["nf4", "fp32", "bf16"])
    ap.add_argument("--random-init", action="store_true", help="a random-init model of the gemma-3-270m architecture instead of --model")
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--steps", type=int, default=None, help="train this many steps of 4 pairs (sets --pairs to 4 x steps)")
    ap.add_argument("--side-timeout", type=float, default=3600.0, help="seconds before a side is stopped (its finished steps are reported)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--sides", default="ours,trl,trl+precompute")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args)
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="laf-dpo-bench-"))
    if args.steps:
        args.pairs = 4 * args.steps
    if args.random_init:
        from benchmarks.gpu_train import build

        args.model = str(build(tmp / "gemma3-270m-random", smoke=False, with_tokenizer=True))
    data = make_pairs(tmp / "pairs.jsonl", args.pairs, scale=words_scale(args.model))
    tokens = pair_tokens(args, data)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f})"
    name = "random-init gemma-3-270m architecture (vocab 262,144, test tokenizer)" if args.random_init else args.model
    print(f"model {name}, {args.precision}, {args.pairs} pairs ({tokens} pair tokens), max length {args.max_length}, batch 4, LoRA r=8 all-linear, {device}", flush=True)
    results = {}
    for side in args.sides.split(","):
        cmd = [sys.executable, __file__, "--side", side, "--model", args.model, "--precision", args.precision, "--pairs", str(args.pairs),
               "--max-length", str(args.max_length), "--child-out", str(tmp / side), "--child-data", str(data)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=args.side_timeout)
        except subprocess.TimeoutExpired:
            done = progress(side, tmp / side)
            per = f"{sum(done) / len(done):.1f} s per step, {tokens / args.pairs * 4 / (sum(done) / len(done)):.1f} tokens/s" if done else "no step finished"
            print(f"  {side:16} stopped after {args.side_timeout:.0f} s: {len(done)} steps done, {per}", flush=True)
            continue
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"  {side}: FAILED\n{proc.stderr[-3000:]}")
            continue
        r = results[side] = json.loads(line[-1][7:])
        print(f"  {side:16} {r['seconds']:7.1f} s over {r['steps']:>3} steps, final loss {r['final_loss']:.4f}, peak {r['peak_mb']:,.0f} MB", flush=True)
    if "ours" not in results:
        return
    o = results["ours"]
    print()
    print(f"{'':18}{'tokens/s':>10}{'peak MB':>10}{'ours speed x':>14}{'ours memory x':>15}")
    for side, r in results.items():
        print(f"{side:18}{tokens / r['seconds']:>10.1f}{r['peak_mb']:>10.0f}{r['seconds'] / o['seconds']:>13.2f}x{o['peak_mb'] / r['peak_mb']:>14.2f}x")


if __name__ == "__main__":
    main()
