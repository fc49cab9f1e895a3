"""Causal-LM loss on supervised tokens only, without materialising full-vocabulary logits.

For gemma-3-270m the LM head (640 x 262,144) costs more than the whole
transformer body, and its fp32 logits dominate peak memory. We run the body,
keep the hidden states of positions whose next token is supervised, and apply
the head to those in chunks under activation checkpointing, so at most one
chunk of logits is alive at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..data.tokenize import IGNORE
from ..models.heads import body_and_head, head_logits
from .batching import Batch

# Positions per head chunk. On CPU 64 (64 x 262,144 fp32 logits = 64 MB alive at a time) keeps peak memory
# low at no cost in speed; on a GPU small chunks leave it idle between launches, so chunks are larger there
# (measured on an H200 by benchmarks/gpu_train.py; see its docstring).
HEAD_CHUNK = {"cpu": 64, "cuda": 256}


def head_chunk(device: torch.device) -> int:
    return HEAD_CHUNK.get(device.type, HEAD_CHUNK["cpu"])


def _head_ce_sum(head, softcap, h, y):
    return F.cross_entropy(head_logits(head, softcap, h), y, reduction="sum")


def supervised_loss_sum(model, batch: Batch, chunk: int | None = None) -> torch.Tensor:
    """Sum of next-token cross-entropy over supervised positions of ``batch``."""
    body, head, softcap = body_and_head(model)
    out = body(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    hidden = out.last_hidden_state[:, :-1]
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE
    h = hidden[keep]
    chunk = chunk or head_chunk(h.device)
    y = targets[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, h.shape[0], chunk):
        hc, yc = h[i : i + chunk], y[i : i + chunk]
        if torch.is_grad_enabled():
            total = total + checkpoint(_head_ce_sum, head, softcap, hc, yc, use_reentrant=False)
        else:
            total = total + _head_ce_sum(head, softcap, hc, yc)
    return total
