"""The LM-head part of the SFT loss: the fused head (harness.train.loss.token_logps) vs the chunked head under
activation checkpointing it replaced, at gemma-3-270m's shape (vocabulary 262,144, hidden 640), in one run.

For a frozen head the fused path walks [rows, vocabulary tile] tiles (an online log-sum-exp, HEAD_TILE's size for
the CPU) and computes the gradient with respect to the hidden states in the same pass, so the projection runs twice
per step instead of three times (forward, checkpoint recompute, backward) and no [chunk, V] row block is built. The
checkpointed side runs [--chunk, V] blocks. Prints both times, the ratio, and the loss and gradient differences.

--tiles ROWSxCOLS,... also times the fused head at those tile sizes, each with its peak of live tensor bytes
(benchmarks/memory.py), and --dtype bf16 casts the head as a bf16-compute QLoRA run holds it: how HEAD_TILE's CPU
default was chosen (`--positions 1020 --tiles 256x4096,256x16384,1024x4096,1024x16384`). With --dtype bf16 the
checkpointed side's cross-entropy runs on bf16 logits while the fused head sums in fp32, so the printed loss and
gradient differences are bf16's rounding there, not an error of either.

Usage: python benchmarks/head_loss.py [--positions 192] [--chunk 64] [--threads 1] [--repeats 2]
       [--dtype fp32|bf16] [--tiles 1024x4096,...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=192)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--tiles", default="", help="also time the fused head at these ROWSxCOLS tiles, e.g. 256x4096,1024x4096")
    args = ap.parse_args()
    tiles = []
    for spec in filter(None, args.tiles.split(",")):
        try:
            rows, cols = (int(x) for x in spec.lower().split("x"))
        except ValueError:
            ap.error(f"--tiles: {spec!r} is not ROWSxCOLS (e.g. 1024x4096)")
        if not (1 <= rows <= 65_536 and 1 <= cols <= 262_144):
            ap.error(f"--tiles: {spec} is outside 1..65536 rows x 1..262144 columns")
        if min(rows, args.positions) * cols > 4_096 * 262_144:  # the bound --chunk has: at most 4 GiB of fp32 logits
            ap.error(f"--tiles: {spec} over {args.positions} positions holds more than 4,096 x 262,144 logits at once")
        tiles.append((rows, cols))
    if min(args.positions, args.chunk, args.threads, args.repeats) < 1:
        ap.error("every number must be at least 1")
    # bounds keep a typo from asking for unbounded memory or time: a chunk holds chunk x 262,144 fp32 logits
    for name, value, most in (("positions", args.positions, 65_536), ("chunk", args.chunk, 4_096), ("threads", args.threads, 1_024), ("repeats", args.repeats, 100)):
        if value > most:
            ap.error(f"--{name} {value} is over {most:,}; pass at most {most:,}")

    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    from harness.train.loss import HEAD_TILE, token_logps

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    V, d, n, chunk = 262_144, 640, args.positions, args.chunk
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    head = torch.nn.Linear(d, V, bias=False).to(dtype)
    head.weight.requires_grad_(False)
    y = torch.randint(0, V, (n,))
    h0 = torch.randn(n, d).to(dtype)

    def checkpointed(h):
        total = h.new_zeros(())
        for i in range(0, n, chunk):
            total = total + checkpoint(lambda hc, yc: F.cross_entropy(head(hc), yc, reduction="sum"), h[i : i + chunk], y[i : i + chunk], use_reentrant=False)
        return total

    def fused(h):
        return -token_logps(head, None, h, y).sum()  # the CPU's default tiles

    best: dict[str, float] = {}
    out: dict[str, tuple[float, torch.Tensor]] = {}
    for _ in range(args.repeats):
        for name, f in (("checkpointed", checkpointed), ("fused", fused)):
            h = h0.clone().requires_grad_(True)
            t = time.perf_counter()
            loss = f(h)
            loss.backward()
            dt = time.perf_counter() - t
            best[name] = min(best.get(name, dt), dt)
            out[name] = (float(loss.detach()), h.grad.clone())
    (la, ga), (lb, gb) = out["checkpointed"], out["fused"]
    print(f"LM head loss + gradient, {n} positions, V={V:,}, d={d}, checkpointed chunk {chunk}, fused tiles {HEAD_TILE['cpu']}, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"  checkpointed head   {best['checkpointed']:8.2f} s")
    print(f"  fused head          {best['fused']:8.2f} s   ({best['checkpointed'] / best['fused']:.2f}x faster)")
    print(f"  loss relative difference {abs(la - lb) / abs(la):.1e}, gradient max abs difference {(ga - gb).abs().max():.1e}")
    if tiles:
        from benchmarks.memory import TensorPeak

        print(f"  fused head at other tiles ({args.dtype} head; time best of {args.repeats}, peak of live tensor bytes):")
        for rows, cols in tiles:
            times = []
            for r in range(args.repeats + 1):  # the last pass measures memory (the profiler slows it)
                h = h0.clone().requires_grad_(True)
                if r == args.repeats:
                    with TensorPeak() as tp:
                        (-token_logps(head, None, h, y, rows, cols).sum()).backward()
                    break
                t = time.perf_counter()
                (-token_logps(head, None, h, y, rows, cols).sum()).backward()
                times.append(time.perf_counter() - t)
            print(f"    {rows:>6} x {cols:<7} {min(times):8.2f} s   peak {tp.peak_mb:8.1f} MB", flush=True)


if __name__ == "__main__":
    main()
