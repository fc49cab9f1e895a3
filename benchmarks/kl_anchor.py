"""The KL anchor's cost (``preserve.kl``): one LoRA training step of plain SFT vs SFT + KL(p_base || p_adapted), at
gemma-3-270m's shape, side by side with the textbook implementation a user would write (two full forwards with
full-vocabulary logits, ``F.kl_div`` on them), in one run.

The goal of issue 25: the anchor costs at most 1.6x the step time of plain SFT. Our anchor runs the body a second
time under ``disable_adapter()`` and ``no_grad`` (no second copy of the weights) and projects the base's hidden
states through the head with the adapted ones, in [rows, vocabulary tile] tiles, so no 262k-wide row of logits
ever exists whole.

Weights are randomly initialised from the default model's architecture (the numbers do not matter for speed; no
download), LoRA r=8 on all linear layers, fp32 on the CPU (``--precision nf4``: saved, then loaded in NF4 as ``laf
train`` loads a base, the preserve example's path), packed rows of ``--length`` tokens.

Usage: python benchmarks/kl_anchor.py [--batch 8] [--length 128] [--steps 3] [--threads 2] [--layers 18]
       [--precision fp32|nf4] [--compute-dtype bf16|fp32] [--dropout 0.0] [--skip-textbook]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=18, help="decoder layers (18 = gemma-3-270m)")
    ap.add_argument("--skip-textbook", action="store_true", help="do not run the full-logits reference (it needs B x L x 262k fp32 twice)")
    ap.add_argument("--precision", choices=("fp32", "nf4"), default="fp32",
                    help="nf4: the random weights saved and loaded as the trainer loads a base (bitsandbytes NF4, the CPU repack guard), "
                         "LoRA attached as `laf train` attaches it")
    ap.add_argument("--compute-dtype", choices=("fp32", "bf16"), default="bf16", help="with --precision nf4: the NF4 matmul dtype (the preserve example's: bf16)")
    ap.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (the preserve example's: 0; the quickstart's: 0.05)")
    args = ap.parse_args()
    for name, value, most in (("batch", args.batch, 256), ("length", args.length, 8192), ("steps", args.steps, 100), ("threads", args.threads, 1024),
                              ("layers", args.layers, 64)):
        if not 1 <= value <= most:
            ap.error(f"--{name} must be in 1..{most:,} (got {value})")
    if not 0.0 <= args.dropout < 1.0:  # NaN fails this too
        ap.error(f"--dropout must be in [0, 1) (got {args.dropout})")

    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from harness.data.tokenize import IGNORE
    from harness.train.batching import Batch
    from harness.train.loss import preserve_loss, preserve_loss_sums, supervised_loss_sum

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = Gemma3TextConfig(vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=args.layers, num_attention_heads=4,
                           num_key_value_heads=1, head_dim=256, max_position_embeddings=32_768, sliding_window=512, final_logit_softcapping=None,
                           layer_types=["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(args.layers)])
    if args.precision == "nf4":
        import tempfile

        from harness.models import LoadSpec, load_model, resolve_model
        from harness.models.load import _torch_dtype
        from harness.train.config import LoraSettings
        from harness.train.lora import attach_lora

        folder = tempfile.mkdtemp(prefix="kl-anchor-")
        Gemma3ForCausalLM(cfg).save_pretrained(folder)
        base_model, _, _ = load_model(resolve_model(folder), LoadSpec(precision="nf4", compute_dtype=args.compute_dtype, device="cpu"), with_tokenizer=False)
        model = attach_lora(base_model, LoraSettings(r=8, alpha=16, dropout=args.dropout), precision="nf4", seed=0,
                            compute_dtype=_torch_dtype(args.compute_dtype))
    else:
        model = get_peft_model(Gemma3ForCausalLM(cfg), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=args.dropout,
                                                                  init_lora_weights=False))
    model.train()
    B, L = args.batch, args.length
    ids = torch.randint(0, 262_144, (B, L))
    labels = ids.clone()
    labels[:, : L // 4] = IGNORE  # a prompt quarter, as in instruction data
    pos = torch.arange(L).repeat(B, 1)
    replay = torch.zeros(B, L, dtype=torch.bool)
    replay[: B // 2] = True
    batch = Batch(ids, labels, pos, None, B, B * L, replay)
    n_sup = batch.supervised
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def plain():
        (supervised_loss_sum(model, batch) / n_sup).backward()

    n_anchor = int((batch.labels[:, 1:] != -100).sum())

    def ours():  # what SFT trains with: the combined scalar, its gradient formed in the head's pass
        loss, _, _, _ = preserve_loss(model, batch, "all", n_sup, 1.0, max(1, n_anchor))
        loss.backward()

    def ours_per_row():  # the same numbers as per-row (log q, KL) with a gradient each (the preference objectives' path)
        nll, kl, n = preserve_loss_sums(model, batch, "all")
        (nll / n_sup + 1.0 * kl / max(1, n)).backward()

    def textbook():
        kw = dict(input_ids=ids, position_ids=pos, use_cache=False)
        logq = torch.log_softmax(model(**kw).logits.float()[:, :-1], -1)
        with torch.no_grad(), model.disable_adapter():
            logp = torch.log_softmax(model(**kw).logits.float()[:, :-1], -1)
        y = labels[:, 1:]
        keep = y != IGNORE
        nll = -logq.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)[keep].sum()
        kl = F.kl_div(logq[keep], logp[keep], log_target=True, reduction="sum")
        (nll / n_sup + kl / int(keep.sum())).backward()

    sides = [("plain SFT (fused head)", plain), ("SFT + KL anchor (ours)", ours), ("SFT + KL, per-row sums", ours_per_row)] + \
        ([] if args.skip_textbook else [("SFT + KL, full logits (textbook)", textbook)])
    results = {}
    for name, fn in sides:
        times = []
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(args.steps + 1):  # the first step warms up
            t0 = time.perf_counter()
            fn()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        results[name] = (min(times[1:]), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss0 / 1024)
    base = results[sides[0][0]][0]
    how = "fp32" if args.precision == "fp32" else f"NF4 ({args.compute_dtype} compute)"
    print(f"gemma-3-270m shape ({args.layers} layers, vocab 262,144), LoRA r=8 all-linear (dropout {args.dropout:g}), {how} CPU, {args.threads} thread(s), batch {B} x {L} "
          f"({n_sup} supervised positions), best of {args.steps} steps")
    print(f"{'side':36s} {'s/step':>8s} {'x plain':>8s} {'peak RSS MB (cumulative)':>26s}")
    for name, (t, rss, _) in results.items():
        print(f"{name:36s} {t:8.2f} {t / base:8.2f} {rss:26,.0f}")
    ours_t = results["SFT + KL anchor (ours)"][0]
    print(f"\nKL anchor / plain SFT: {ours_t / base:.2f}x (goal: at most 1.6x)")
    if not args.skip_textbook:
        print(f"textbook / ours: {results['SFT + KL, full logits (textbook)'][0] / ours_t:.2f}x")


if __name__ == "__main__":
    main()
