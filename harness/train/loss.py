"""Causal-LM loss on supervised tokens only, without materialising full-vocabulary logits.

For gemma-3-270m the LM head (640 x 262,144) costs more than the whole
transformer body, and its fp32 logits dominate peak memory. We run the body,
keep the hidden states of positions whose next token is supervised, and apply
the head to those in chunks, so at most one chunk of logits is alive at a time.
A frozen plain head (LoRA leaves the tied head frozen) computes each chunk's
gradient with respect to the hidden states while its logits are alive, so the
``[chunk, V]`` projection runs twice per step instead of three times under
activation checkpointing (forward, recompute, backward); any other head takes
the checkpointed path. The preference objectives use the same function.
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


class _FusedHeadLogp(torch.autograd.Function):
    """Per-row ``log softmax(head(h))[y]`` in chunks, with d logp / d h computed in the same pass.

    The gradient of one token's log-prob with respect to its hidden state is ``(onehot(y) - softmax) @ W``
    (times ``1 - tanh^2`` under a logit softcap), a ``[d]`` vector. Computing it while the chunk's logits
    are alive costs one more matmul and keeps ``[n, d]``; the backward is then a broadcast multiply.
    Activation checkpointing of the head would instead run the ``[chunk, V]`` projection a third time
    (forward, recompute, backward). At most one chunk of fp32 logits is alive at a time.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, y, softcap, chunk, need_grad):  # type: ignore[override]
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        grads = torch.empty_like(h) if need_grad else None
        for i in range(0, h.shape[0], chunk):
            hc, yc = h[i : i + chunk], y[i : i + chunk]
            logits = F.linear(hc, weight, bias).float()
            t = None
            if softcap:
                t = torch.tanh(logits / softcap)
                logits = t * softcap
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, yc[:, None]).squeeze(1)
            out[i : i + chunk] = picked - lse
            if need_grad:
                g = logits.sub_(lse[:, None]).exp_().neg_()  # -softmax, in place
                g.scatter_add_(1, yc[:, None], torch.ones_like(picked)[:, None])  # onehot - softmax
                if t is not None:
                    g.mul_(1 - t * t)
                grads[i : i + chunk] = (g.to(weight.dtype) @ weight).to(h.dtype)  # type: ignore[index]
            del logits, t
        if need_grad:
            ctx.save_for_backward(grads)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grads,) = ctx.saved_tensors
        return grads * grad_out.to(grads.dtype)[:, None], None, None, None, None, None, None


def _head_logp(head, softcap, h, y):
    return torch.log_softmax(head_logits(head, softcap, h), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def token_logps(head, softcap, h: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
    """``log p(y | h)`` for every row of ``h`` ([n, d]), fp32, never a [n, V] tensor at once.

    A plain ``nn.Linear`` head that is not trained (LoRA leaves the tied head frozen) takes the fused path;
    any other head (trained, quantised, wrapped) runs the chunked log-softmax under activation checkpointing."""
    if h.shape[0] == 0:
        return h.new_zeros(0, dtype=torch.float32)
    w = getattr(head, "weight", None)
    b = getattr(head, "bias", None)
    plain = type(head) is torch.nn.Linear and w is not None and w.is_floating_point() and not w.requires_grad and (b is None or not b.requires_grad)
    need_grad = torch.is_grad_enabled() and h.requires_grad
    if plain:
        return _FusedHeadLogp.apply(h, w, b, y, softcap, chunk, need_grad)
    parts = []
    for i in range(0, h.shape[0], chunk):
        hc, yc = h[i : i + chunk], y[i : i + chunk]
        parts.append(checkpoint(_head_logp, head, softcap, hc, yc, use_reentrant=False) if need_grad else _head_logp(head, softcap, hc, yc))
    return torch.cat(parts)


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
    return -token_logps(head, softcap, h, targets[keep], chunk or head_chunk(h.device)).sum()
