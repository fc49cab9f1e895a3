"""The optimiser and the learning-rate schedule, and how many optimizer steps a run takes.

The schedule is transformers' ``get_cosine_schedule_with_warmup`` (and its
linear / min-lr variants) shifted by one step: transformers spends step 0 at
learning rate 0, we start warmup at ``1/(warmup+1)`` of the peak instead, so
``ours(step) == transformers(warmup+1, total+1)(step+1)`` for every step
(tests/test_train_parity.py checks it step by step).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .batching import epoch_order, pack_rows
from .config import OptimSettings, TrainConfig


def make_optimizer(params, o: OptimSettings, device: str) -> torch.optim.Optimizer:
    """AdamW with ``optim:``'s settings; bitsandbytes' paged AdamW on CUDA when ``paged`` is ``auto`` or true."""
    paged = o.paged is True or (o.paged == "auto" and device.startswith("cuda"))
    if paged:
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)


def warmup_steps(o: OptimSettings, total_steps: int) -> int:
    return o.warmup_steps if o.warmup_steps is not None else math.ceil(o.warmup_ratio * total_steps)


def lr_lambda(o: OptimSettings, total_steps: int) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at each optimizer step (0-based), from ``optim:``'s schedule."""
    warmup = warmup_steps(o, total_steps)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if o.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if o.scheduler == "linear":
            decay = 1.0 - progress
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * decay

    return f


def make_scheduler(opt: torch.optim.Optimizer, o: OptimSettings, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o, total_steps))


def count_steps(examples, cfg: TrainConfig) -> int:
    """Optimizer steps in the run: ``max_steps``, or ``epochs`` worth of (packed) batches over ``grad_accum``."""

    def batches_in(epoch: int) -> int:
        order = epoch_order(len(examples), cfg.seed, epoch)
        units = len(pack_rows(examples, order, cfg.max_length)) if cfg.packing else len(examples)
        return math.ceil(units / cfg.batch_size)

    if cfg.max_steps:
        return cfg.max_steps
    total = 0
    full = int(cfg.epochs)
    for e in range(full):
        total += math.ceil(batches_in(e) / cfg.grad_accum)
    frac = cfg.epochs - full
    if frac > 0:
        total += max(1, round(frac * math.ceil(batches_in(full) / cfg.grad_accum)))
    return max(1, total)
