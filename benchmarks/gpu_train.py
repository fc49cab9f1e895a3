"""Prepared GPU check: training throughput and peak memory of our loop on a CUDA device.

A randomly initialised model of the gemma-3-270m architecture (weights cannot
travel to the device machine; speed does not depend on them), random token
batches of 16 x 512 packed tokens (responses supervised on the second half),
LoRA r=8 on all linear layers, AdamW, 2 warm-up then N timed steps:

  ours, bf16 LoRA        body + head on supervised positions only, chunked
  ours, NF4 QLoRA        the same on a bitsandbytes NF4 base (double quantisation)
  reference, bf16 LoRA   HF's forward with labels (full-vocabulary logits), the usual trainer path

Prints tokens/s and peak GPU memory of each. bitsandbytes must be importable
(on the device machine it travels as files: see the device README).
Measured on one H200 (2026-11-28, 30 timed steps; figures varied ~15% between runs):
  ours bf16 27,005 tok/s 1.6 GiB | ours NF4 21,665 tok/s 2.2 GiB | reference bf16 31,555 tok/s 24.8 GiB
  head chunk sweep (ours bf16): 64 -> 23,117 tok/s 1.3 GiB, 256 -> 27,819, 1024 -> 24,605 3.8 GiB, 4096 -> 25,095 12.8 GiB;
  hence HEAD_CHUNK["cuda"] = 256 in harness/train/loss.py. That sweep was of full-vocabulary chunks; the LoRA head
  now runs in [rows, vocabulary tile] tiles (HEAD_TILE), and --chunks sets their rows (not yet timed on a GPU).
On a machine without bitsandbytes or pydantic (the lent device image has torch, transformers and peft), carry
wheels: `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64
--platform manylinux2014_x86_64 -d .whl bitsandbytes==0.50.2 pydantic==2.14.4 pydantic_core==2.50.5
annotated-types==0.8.0 typing-inspection==0.4.5`, then there `pip install --no-index --no-deps --target /tmp/site
.whl/*.whl && PYTHONPATH=/tmp/site python3 benchmarks/gpu_train.py`.
Usage: python benchmarks/gpu_train.py [--steps 10] [--batch 16] [--seq 512] [--smoke]
(--smoke: a 2-layer model on CPU, to check the script itself).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GEMMA3_270M = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1,
                   head_dim=256, max_position_embeddings=32768, sliding_window=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
                   query_pre_attn_scalar=256, rope_theta=1_000_000.0, layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3)


def build(folder: Path, smoke: bool, with_tokenizer: bool = False) -> Path:
    """The random-init model; ``with_tokenizer`` adds the test fixture's small BPE tokenizer (the real one cannot
    travel either), so that text-level benchmarks such as train_throughput.py can run on it."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = dict(GEMMA3_270M)
    if with_tokenizer:
        from transformers import AutoTokenizer

        from tests.tiny import build_tiny_model

        build_tiny_model(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        cfg.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    if smoke:
        cfg.update(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, head_dim=32,
                   layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    Gemma3ForCausalLM(Gemma3TextConfig(**cfg)).save_pretrained(folder, safe_serialization=True)
    return folder


def batch(vocab: int, B: int, L: int, device):
    import torch

    from harness.train.batching import Batch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (B, L), generator=g)
    labels = ids.clone()
    labels[:, : L // 2] = -100
    pos = torch.arange(L).expand(B, L).clone()
    return Batch(ids, labels, pos, None, B, B * L).to(device)


def run(folder: Path, precision: str, reference: bool, args, chunk: int | None = None) -> dict:
    import torch

    from harness.models import LoadSpec, load_model, resolve_model
    from harness.train.config import TrainConfig
    from harness.train.lora import attach_lora
    from harness.train.loss import supervised_loss_sum

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, _, spec = load_model(resolve_model(str(folder)), LoadSpec(precision, None, device), with_tokenizer=False)
    cfg = TrainConfig(name="gpu", precision=precision, data={"path": "-"}, lora={"dropout": 0.0})
    model = attach_lora(model, cfg.lora, precision=cfg.precision, seed=cfg.seed, compute_dtype=torch.bfloat16 if device == "cuda" else None)  # frozen embeddings stay bf16, as in training
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    b = batch(model.config.vocab_size, args.batch, args.seq, device)
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step():
        with amp:
            if reference:
                loss = model(input_ids=b.input_ids, labels=b.labels, position_ids=b.position_ids).loss
            else:
                loss = supervised_loss_sum(model, b, chunk) / b.supervised
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"tokens_per_s": args.steps * args.batch * args.seq / dt, "peak_gib": peak, "precision": spec.precision, "compute_dtype": spec.compute_dtype}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--save-model", default=None, metavar="DIR",
                    help="only write the random-init model with a small tokenizer to DIR (for train_throughput.py --model DIR) and exit")
    ap.add_argument("--chunks", default="", help="also time ours (bf16) at these rows per head tile, e.g. 512,2048,8192")
    args = ap.parse_args()
    import torch

    if args.save_model:
        build(Path(args.save_model), args.smoke, with_tokenizer=True)
        print(f"wrote {args.save_model}")
        return
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on the device machine (or --smoke on CPU to check the script)")
    name = "cpu smoke" if args.smoke else torch.cuda.get_device_name(0)
    print(f"{name}: batch {args.batch} x {args.seq}, LoRA r=8 all-linear, gradient checkpointing, {args.steps} timed steps", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp) / "gemma3-270m-random", args.smoke)
        rows = []
        for label, precision, reference in (("ours, bf16 LoRA", "bf16", False), ("ours, NF4 QLoRA", "nf4", False), ("reference (full logits), bf16 LoRA", "bf16", True)):
            r = run(folder, precision, reference, args)
            rows.append((label, r))
            print(f"  {label:38} {r['tokens_per_s']:>10,.0f} tokens/s   peak {r['peak_gib']:.1f} GiB", flush=True)
        for c in [int(x) for x in args.chunks.split(",") if x]:
            r = run(folder, "bf16", False, args, c)
            rows.append((f"ours, bf16 LoRA, head tile rows {c}", r))
            print(f"  {rows[-1][0]:38} {r['tokens_per_s']:>10,.0f} tokens/s   peak {r['peak_gib']:.1f} GiB", flush=True)
    print(json.dumps({k: v for k, v in rows}, indent=1))


if __name__ == "__main__":
    main()
