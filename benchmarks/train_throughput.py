"""Our trainer against TRL's SFTTrainer + peft: same model, data and LoRA config, in one run.

Each side trains one epoch in its own process (so peak memory is its own):
  ours         harness.train (packing on: position ids restart per example)
  trl          SFTTrainer, prompt-completion data, completion-only loss (TRL's default, no packing)
  trl+packing  SFTTrainer with packing=True (best-fit decreasing)
Both use gradient checkpointing (non-reentrant; TRL's default) and the same model loader (NF4 with the AVX512-BF16 fix, or plain
LoRA with --precision fp32), the same prompt template, LoRA r=8 / alpha 16 on
all linear layers, AdamW lr 2e-4 with cosine schedule, batch 4, max length 256.
Prints real (non-padding) tokens per second of the training loop, peak RSS
(or peak GPU memory on CUDA), and the ratios. TRL is only needed here:
pip install -e '.[bench]'.

--tensor-memory measures instead, on a CPU, the peak of live tensor bytes (benchmarks/memory.py: what a GPU's
max_memory_allocated counts, from loading the model to the end of training), which peak RSS hides under everything
else a process holds. It is a separate run because the allocation events cost time. --gpu-like sets on the CPU
what a CUDA run uses: NF4 compute in bf16 on both sides (TRL with bf16=True) and our head tiles for CUDA, so the
tensor peaks stand in for the GPU's until one is lent.

Usage: python benchmarks/train_throughput.py [--model default] [--precision nf4|fp32] [--examples 192]
       [--tensor-memory [--gpu-like]]
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


def make_data(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = "router firmware reset button light status cable port signal network device setting manual warranty".split()
    rows = []
    for i in range(n):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(8, 45)))
        a = " ".join(rng.choice(words) for _ in range(rng.randint(6, 70)))
        rows.append({"instruction": f"Question {i}: {q}?", "output": f"Answer: {a}."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args, data: Path, out: Path) -> dict:
    from harness.config import validate
    from harness.train import TrainConfig, train

    cfg = validate(TrainConfig, {
        "name": "bench", "model": args.model, "precision": args.precision, "data": {"path": str(data), "eval_fraction": 0},
        "max_length": args.max_length, "batch_size": 4, "epochs": 1, "eval_every": 0, "save_every": 0, "lora": {"dropout": 0.0},
        "registry": str(out / "reg"), "output_dir": str(out / "run"), "seed": 0, "gradient_checkpointing": True,
        **({"compute_dtype": "bf16"} if args.gpu_like and args.precision == "nf4" else {}),
    }, "bench")
    res = train(cfg)
    m = res.entry.manifest
    return {"tokens": m["tokens_seen"], "seconds": m["train_time_s"], "steps": m["steps"], "peak_mb": peak_mb(), "final_loss": m["final_train_loss"]}


def run_trl(args, data: Path, out: Path, packing: bool) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from harness.data import read_examples
    from harness.models import LoadSpec, load_model, resolve_model
    from harness.prompt import plain_prompt

    compute = "bf16" if args.gpu_like and args.precision == "nf4" else None
    model, tok, spec = load_model(resolve_model(args.model), LoadSpec(args.precision, compute))
    rows = [{"prompt": plain_prompt(e.prompt_text), "completion": e.response_text + tok.eos_token} for e in read_examples(data).examples]
    ds = datasets.Dataset.from_list(rows)
    cfg = SFTConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=2e-4,
        num_train_epochs=1, max_length=args.max_length, packing=packing, completion_only_loss=True, lr_scheduler_type="cosine",
        warmup_steps=0.03, logging_steps=1000, save_strategy="no", report_to=[], bf16=spec.device.startswith("cuda") or args.gpu_like, fp16=False,
        use_cpu=not torch.cuda.is_available(), gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
        dataloader_num_workers=0, seed=0,
        optim="adamw_torch", max_grad_norm=1.0, disable_tqdm=True,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora)
    tokens = 0
    for row in trainer.train_dataset:
        mask = row.get("attention_mask")
        tokens += sum(mask) if mask is not None else len(row["input_ids"])
    t0 = time.perf_counter()
    result = trainer.train()
    dt = time.perf_counter() - t0
    return {"tokens": int(tokens), "seconds": dt, "steps": result.global_step, "peak_mb": peak_mb(), "final_loss": result.training_loss}


def child(args) -> None:
    out = Path(args.child_out)
    data = Path(args.child_data)
    if args.gpu_like:
        from harness.train import loss

        loss.HEAD_CHUNK["cpu"] = loss.HEAD_CHUNK["cuda"]
        loss.HEAD_TILE["cpu"] = loss.HEAD_TILE["cuda"]

    def run() -> dict:
        if args.side == "ours":
            return run_ours(args, data, out)
        return run_trl(args, data, out, packing=args.side == "trl+packing")

    if not args.tensor_memory:
        res = run()
    else:
        from benchmarks.memory import TensorPeak

        with TensorPeak() as tp:  # from before the model loads, as a GPU's peak counts the weights too
            res = run()
        res["tensor_peak_mb"] = tp.peak_mb
    print("RESULT " + json.dumps(res), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--precision", default="nf4", choices=["nf4", "fp32", "bf16"])
    ap.add_argument("--examples", type=int, default=192)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--tensor-memory", action="store_true", help="measure the peak of live tensor bytes (slower; see above)")
    ap.add_argument("--gpu-like", action="store_true", help="NF4 compute in bf16 and our CUDA head tiles, on the CPU")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args)
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="laf-train-bench-"))
    data = make_data(tmp / "data.jsonl", args.examples)
    from harness.models import resolve_model

    _ = resolve_model(args.model).fingerprint  # convert / hash once, outside the timings
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"model {args.model}, {args.precision}, {args.examples} examples, max length {args.max_length}, batch 4, LoRA r=8 all-linear, {device}"
          + (", peak of live tensor bytes" if args.tensor_memory else "") + (", GPU-like settings (bf16 compute, CUDA head tiles)" if args.gpu_like else ""),
          flush=True)
    results = {}
    for side in ("ours", "trl", "trl+packing"):
        cmd = [sys.executable, __file__, "--side", side, "--model", args.model, "--precision", args.precision, "--examples", str(args.examples),
               "--max-length", str(args.max_length), "--child-out", str(tmp / side), "--child-data", str(data)]
        cmd += ["--tensor-memory"] * args.tensor_memory + ["--gpu-like"] * args.gpu_like
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"  {side}: FAILED\n{proc.stderr[-3000:]}")
            continue
        results[side] = json.loads(line[-1][7:])
        r = results[side]
        if args.tensor_memory:
            r["peak_mb"] = r["tensor_peak_mb"]
        print(f"  {side:12} {r['tokens']:>7} tokens in {r['seconds']:7.1f} s over {r['steps']:>3} steps, final loss {r['final_loss']:.3f}, "
              f"peak {r['peak_mb']:,.0f} MB" + (" of tensors" if args.tensor_memory else ""), flush=True)
    if "ours" not in results:
        return
    o = results["ours"]
    print()
    print(f"{'':14}{'tokens/s':>10}{'peak MB':>10}{'ours speed x':>14}{'ours memory x':>15}" + ("  (tensor peaks; speed under the profiler)" if args.tensor_memory else ""))
    for side, r in results.items():
        tps = r["tokens"] / r["seconds"]
        print(f"{side:14}{tps:>10.1f}{r['peak_mb']:>10.0f}{(o['tokens'] / o['seconds']) / tps:>13.2f}x{o['peak_mb'] / r['peak_mb']:>14.2f}x")


if __name__ == "__main__":
    main()
