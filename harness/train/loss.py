"""Causal-LM loss on supervised tokens only, without materialising full-vocabulary logits.

For gemma-3-270m the LM head (640 x 262,144) costs more than the whole
transformer body, and its fp32 logits dominate peak memory. We run the body,
keep the hidden states of positions whose next token is supervised, and apply
the head to those only. A frozen plain head (LoRA leaves the tied head frozen)
runs in ``[rows, vocabulary tile]`` tiles with an online log-sum-exp, so no row
of logits is ever whole, and computes the gradient with respect to the hidden
states in the same pass: the projection runs twice per step instead of three
times under activation checkpointing (forward, recompute, backward). Any other
head takes the checkpointed path in full-vocabulary chunks of rows. The KL
anchor to the base walks the same tiles with both sides in one product. The
preference objectives use the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..data.tokenize import IGNORE
from ..models.heads import body_and_head, head_logits
from .batching import Batch

# Rows per full-vocabulary chunk, for the one path that still builds one: a trained or wrapped head, under activation
# checkpointing. On CPU 64 (64 x 262,144 fp32 logits = 64 MB alive at a time); on a GPU small chunks leave it idle
# between launches, so chunks are larger there (benchmarks/gpu_train.py's sweep on an H200, before the tiles).
HEAD_CHUNK = {"cpu": 64, "cuda": 256}
# Rows x vocabulary columns per tile of the fused heads (:class:`_FusedHeadLogp`, the KL anchor's
# :func:`_tiled_rows`), which never build a full row. On a 2-core CPU (AMD EPYC), at gemma-3-270m's head (1,020
# rows, forward and backward), 1024 x 4096 was the fastest of 256/1024 rows x 4096/16384 columns: bf16 2.28 s at a
# 31 MB peak against 4.70 s and 194 MB for the 64-row full chunks it replaced, fp32 5.51 s against 9.53 s. The CUDA
# tile is 64 MB of fp32 logits, not yet timed on a GPU.
HEAD_TILE = {"cpu": (1024, 4096), "cuda": (2048, 8192)}


def head_chunk(device: torch.device) -> int:
    return HEAD_CHUNK.get(device.type, HEAD_CHUNK["cpu"])


def head_tile(device: torch.device) -> tuple[int, int]:
    return HEAD_TILE.get(device.type, HEAD_TILE["cpu"])


def _fused(head, h: torch.Tensor, chunk: int | None, vocab_tile: int | None):
    """``(weight, bias, rows, columns)`` when ``head`` can take the fused, tiled path: a plain ``nn.Linear`` that is
    not trained (LoRA leaves the tied head frozen); the tile defaults to :data:`HEAD_TILE` for ``h``'s device.
    ``None`` for any other head (trained, quantised, wrapped), which the callers run under checkpointing."""
    w, b = getattr(head, "weight", None), getattr(head, "bias", None)
    if not (type(head) is torch.nn.Linear and w is not None and w.is_floating_point() and not w.requires_grad and (b is None or not b.requires_grad)):
        return None
    rows, cols = head_tile(h.device)
    return w, b, chunk or rows, vocab_tile or cols


def _running_max(m: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One tile's step of an online log-sum-exp: ``(the new running maximum, the shift to subtract from the tile, the
    factor that rescales the sums so far)``. A row whose maximum is still ``-inf`` (every logit so far masked, e.g. by
    a ``-inf`` bias) is shifted by 0 instead, so it stays an exact 0 in the sums rather than ``-inf - -inf = NaN``."""
    m_new = torch.maximum(m, z.amax(dim=1))
    shift = torch.where(m_new == -torch.inf, 0.0, m_new)
    return m_new, shift, torch.exp(m - shift)  # 0 on a row's first finite tile


class _FusedHeadLogp(torch.autograd.Function):
    """Per-row ``log softmax(head(h))[y]`` with d logp / d h computed in the same pass, never a full-vocabulary row.

    The head runs on ``[rows, vocab_tile]`` tiles of the ``[n, V]`` logits, and an online log-sum-exp carries each
    row across the vocabulary (a running maximum ``m``, ``s = sum exp(z - m)``, both rescaled when ``m`` grows), as a
    flash-attention kernel carries its softmax. The gradient ``W[y] - sum_v softmax_v W_v`` (each term times
    ``1 - tanh^2`` under a logit softcap) accumulates the same way: ``acc += exp(z_tile - m) @ W_tile``, rescaled
    with ``s``, divided by ``s`` at the end. So the projection still runs twice per tile (logits, then their
    weighted sum of head rows) and the backward is a broadcast multiply, while at most one ``[rows, vocab_tile]``
    tile is alive instead of ``[chunk, V]``: at gemma-3's 262,144 words a 256-row chunk's fp32 logits were 268 MB.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, y, softcap, rows, vocab_tile, need_grad):  # type: ignore[override]
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        grads = torch.empty_like(h) if need_grad else None
        for i, r, _, logq_y, _, parts in _tiled_rows(h, None, y, None, weight, bias, softcap, rows, vocab_tile, need_grad):
            out[i : i + r] = logq_y
            if parts is not None:
                wy, eq, _ = parts
                grads[i : i + r] = (wy - eq).to(h.dtype)  # type: ignore[index]
        if need_grad:
            ctx.save_for_backward(grads)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grads,) = ctx.saved_tensors
        return grads * grad_out.to(grads.dtype)[:, None], None, None, None, None, None, None, None


def _head_logp(head, softcap, h, y):
    return torch.log_softmax(head_logits(head, softcap, h), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def token_logps(head, softcap, h: torch.Tensor, y: torch.Tensor, chunk: int | None = None, vocab_tile: int | None = None) -> torch.Tensor:
    """``log p(y | h)`` for every row of ``h`` ([n, d]), fp32, never a [n, V] tensor at once.

    A plain ``nn.Linear`` head that is not trained (LoRA leaves the tied head frozen) takes the fused path, in
    tiles of ``chunk`` rows by ``vocab_tile`` columns (default :data:`HEAD_TILE` for the device); any other head
    (trained, quantised, wrapped) runs the log-softmax in full-vocabulary chunks of ``chunk`` rows (default
    :data:`HEAD_CHUNK`) under activation checkpointing."""
    if h.shape[0] == 0:
        return h.new_zeros(0, dtype=torch.float32)
    fused = _fused(head, h, chunk, vocab_tile)
    need_grad = torch.is_grad_enabled() and h.requires_grad
    if fused is not None:
        w, b, rows, cols = fused
        return _FusedHeadLogp.apply(h, w, b, y, softcap, rows, cols, need_grad)
    chunk = chunk or head_chunk(h.device)
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
    return -token_logps(head, softcap, h, targets[keep], chunk).sum()


# ---------------------------------------------------------------- the KL anchor to the base (preserve.kl)


def _tiled_rows(h, hb, y, mask, weight, bias, softcap, rows, vocab_tile, need_grad):
    """The fused heads' walk over ``[rows, vocab_tile]`` tiles (``hb`` and ``mask`` None: no KL, the plain loss of
    :class:`_FusedHeadLogp`; else the KL anchor's two sides): per chunk of ``rows`` rows, yields
    ``(start, rows in the chunk, the anchored rows' indices, log q(y), KL(p || q) on the anchored rows, and with
    need_grad: (1 - tanh^2) W[y], E_q[(1 - tanh^2) W], E_p[(1 - tanh^2) W])``, the tanh being the adapted side's (1
    without a logit softcap), so d log q(y)/dh = ``W[y] - E_q`` and d KL/dh = ``E_q - E_p``.

    The adapted rows and the base's anchored rows go through each tile as ONE product (the tile of the 262k x d
    weight is read once for both sides), and so do their gradient sums. Each side carries an online log-sum-exp; the
    base side also ``sum exp(z_p - m_p) (z_p - z_q)``, rescaled the same way, since KL(p || q) = E_p[z_p - z_q] -
    L_p + L_q with L the log-sum-exp of each side's logits. At most one [rows + anchored, vocab_tile] tile is alive."""
    n, d, vocab = h.shape[0], h.shape[1], weight.shape[0]
    for i in range(0, n, rows):
        hc, yc = h[i : i + rows], y[i : i + rows]
        r = hc.shape[0]
        sel = mask[i : i + rows].nonzero().squeeze(1) if mask is not None else None
        k = sel.numel() if sel is not None else 0
        every = k == r  # the usual case (kl.on: all): no row copies
        x = torch.cat([hc, hb[i : i + rows] if every else hb[i : i + rows][sel]]) if k else hc
        m = torch.full((r + k,), -torch.inf, dtype=torch.float32, device=h.device)
        s = torch.zeros(r + k, dtype=torch.float32, device=h.device)
        gap = torch.zeros(k, dtype=torch.float32, device=h.device)  # sum exp(z_p - m_p) (z_p - z_q)
        picked = torch.full((r,), torch.nan, dtype=torch.float32, device=h.device)
        acc = torch.zeros(r + k, d, dtype=torch.float32, device=h.device) if need_grad else None
        for v0 in range(0, vocab, vocab_tile):
            v1 = min(v0 + vocab_tile, vocab)
            w = weight[v0:v1]
            z = F.linear(x, w, None if bias is None else bias[v0:v1]).float()
            t = None
            if softcap:
                t = torch.tanh(z / softcap)
                z = t * softcap
            local = yc - v0
            inside = (local >= 0) & (local < v1 - v0)
            picked = torch.where(inside, z[:r].gather(1, local.clamp(0, v1 - v0 - 1)[:, None]).squeeze(1), picked)
            diff = (z[r:] - (z[:r] if every else z[:r][sel])) if k else None
            m_new, shift, rescale = _running_max(m, z)
            e = z.sub_(shift[:, None]).exp_()
            s.mul_(rescale).add_(e.sum(dim=1))
            if k:
                gap.mul_(rescale[r:]).add_(torch.linalg.vecdot(e[r:], diff))
            del diff
            if acc is not None:
                if t is not None:
                    dq = 1 - t[:r] * t[:r]
                    e[:r].mul_(dq)
                    if k:
                        e[r:].mul_(dq if every else dq[sel])
                    del dq
                acc.mul_(rescale[:, None]).add_((e.to(weight.dtype) @ w).float())
            m = m_new
            del z, e, t
        logq_y = picked - (m[:r] + s[:r].log())
        kl = gap  # no anchored row: empty
        if k:
            mq, sq = (m[:r], s[:r]) if every else (m[:r][sel], s[:r][sel])
            # L_q - L_p as (m_q - m_p) + log(s_q / s_p): the two log-sum-exps are each about log V, their difference small
            kl = gap / s[r:] + (mq - m[r:]) + (sq / s[r:]).log()
        grads = None
        if acc is not None:
            wy = weight[yc.clamp(0, vocab - 1)].float()
            if softcap:
                wy.mul_((1 - (picked / softcap) ** 2)[:, None])
            avg = acc / s[:, None]
            grads = (wy, avg[:r], avg[r:])
        yield i, r, sel, logq_y, kl, grads


class _FusedHeadLogpKL(torch.autograd.Function):
    """Per row: ``log q(y)`` and, where ``mask``, ``KL(p || q)`` with ``q = softmax(head(h))`` (the adapted model) and
    ``p = softmax(head(h_base))`` (the base, no gradient), tile by tile (:func:`_tiled_rows`), with both gradients
    w.r.t. ``h`` computed in the same pass: d log q(y)/dz = onehot(y) - q and d KL/dz = q - p, times ``1 - tanh^2``
    under a logit softcap. No full-vocabulary row of either side is built."""

    @staticmethod
    def forward(ctx, h, hb, mask, weight, bias, y, softcap, rows, vocab_tile, need_grad):  # type: ignore[override]
        n = h.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=h.device)
        kl = torch.zeros(n, dtype=torch.float32, device=h.device)
        g_nll = torch.empty_like(h) if need_grad else None
        g_kl = torch.zeros_like(h) if need_grad else None
        for i, r, sel, logq_y, kl_sel, grads in _tiled_rows(h, hb, y, mask, weight, bias, softcap, rows, vocab_tile, need_grad):
            logp[i : i + r] = logq_y
            kl[i + sel] = kl_sel
            if grads is not None:
                wy, eq, ep = grads
                g_nll[i : i + r] = (wy - eq).to(h.dtype)  # type: ignore[index]
                g_kl[i + sel] = (eq[sel] - ep).to(h.dtype)  # type: ignore[index]
        if need_grad:
            ctx.save_for_backward(g_nll, g_kl)
        return logp, kl

    @staticmethod
    def backward(ctx, go_logp, go_kl):  # type: ignore[override]
        g_nll, g_kl = ctx.saved_tensors
        grad = g_nll * go_logp.to(g_nll.dtype)[:, None] + g_kl * go_kl.to(g_kl.dtype)[:, None]
        return grad, None, None, None, None, None, None, None, None, None


class _FusedHeadLossKL(torch.autograd.Function):
    """``NLL / nll_div + kl_weight x KL / kl_div`` as one scalar, NLL the sum of ``-log q(y)`` over the rows and KL
    the sum of ``KL(p || q)`` where ``mask``, its gradient w.r.t. ``h`` formed in the same pass. Also returns the two
    sums (no gradient). The per-row numbers come from the same walk as :class:`_FusedHeadLogpKL`'s and the sums and the
    scalar are formed as the caller formed them from :func:`preserve_loss_sums`, so the numbers are the same to the
    last bit; the gradient to fp32 rounding."""

    @staticmethod
    def forward(ctx, h, hb, mask, weight, bias, y, softcap, rows, vocab_tile, nll_div, kl_weight, kl_div, need_grad):  # type: ignore[override]
        n = h.shape[0]
        nll_scale, kl_scale = 1.0 / nll_div, kl_weight / kl_div
        logp = torch.empty(n, dtype=torch.float32, device=h.device)
        kl = torch.zeros(n, dtype=torch.float32, device=h.device)
        grad = torch.empty_like(h) if need_grad else None
        for i, r, sel, logq_y, kl_sel, grads in _tiled_rows(h, hb, y, mask, weight, bias, softcap, rows, vocab_tile, need_grad):
            logp[i : i + r] = logq_y
            kl[i + sel] = kl_sel
            if grads is not None:
                wy, eq, ep = grads
                g = (eq - wy).mul_(nll_scale)  # d(-log q(y))/dh / nll_div
                g[sel] += (eq[sel] - ep).mul_(kl_scale)
                grad[i : i + r] = g.to(h.dtype)  # type: ignore[index]
        if need_grad:
            ctx.save_for_backward(grad)
        nll, kls = -logp.sum(), kl.sum()
        loss = nll / nll_div + kl_weight * kls / kl_div
        ctx.mark_non_differentiable(nll, kls)
        return loss, nll, kls

    @staticmethod
    def backward(ctx, go_loss, go_nll, go_kl):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * go_loss.to(grad.dtype), None, None, None, None, None, None, None, None, None, None, None, None


def _head_logp_kl(head, softcap, h, hb, y, mask):
    logq = torch.log_softmax(head_logits(head, softcap, h), dim=-1)
    logpb = torch.log_softmax(head_logits(head, softcap, hb), dim=-1)
    kl = (logpb.exp() * (logpb - logq)).sum(-1) * mask
    return logq.gather(-1, y.unsqueeze(-1)).squeeze(-1), kl


def token_logps_and_kl(head, softcap, h: torch.Tensor, hb: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, chunk: int | None = None,
                       vocab_tile: int | None = None):
    """``(log q(y|h), KL(p_base || q))`` per row of ``h`` ([n, d]); the KL is 0 where ``mask`` is False. ``hb``: the
    base's hidden states at the same positions (no gradient). Never a [n, V] tensor at once; ``chunk`` and
    ``vocab_tile`` as in :func:`token_logps`."""
    if h.shape[0] == 0:
        z = h.new_zeros(0, dtype=torch.float32)
        return z, z
    fused = _fused(head, h, chunk, vocab_tile)
    need_grad = torch.is_grad_enabled() and h.requires_grad
    hb = hb.detach()
    if fused is not None:
        w, b, rows, cols = fused
        return _FusedHeadLogpKL.apply(h, hb, mask, w, b, y, softcap, rows, cols, need_grad)
    chunk = chunk or head_chunk(h.device)
    lps, kls = [], []
    m = mask.to(torch.float32)
    for i in range(0, h.shape[0], chunk):
        args = (head, softcap, h[i : i + chunk], hb[i : i + chunk], y[i : i + chunk], m[i : i + chunk])
        lp, k = checkpoint(_head_logp_kl, *args, use_reentrant=False) if need_grad else _head_logp_kl(*args)
        lps.append(lp)
        kls.append(k)
    return torch.cat(lps), torch.cat(kls)


def _anchor_inputs(model, batch: Batch, kl_on: str):
    """``(head, softcap, h, h_base, targets, anchored mask)`` at the supervised positions: the base's hidden states
    from the same model inside ``disable_adapter()`` under ``no_grad`` (no second copy of the weights)."""
    body, head, softcap = body_and_head(model)
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False)
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE
    replay = batch.replay[:, 1:] if batch.replay is not None else torch.zeros_like(keep)
    anchored = {"all": keep, "replay": keep & replay, "train": keep & ~replay}[kl_on]
    with torch.no_grad(), model.disable_adapter():
        hb = body(**kwargs).last_hidden_state[:, :-1][keep]
    h = body(**kwargs).last_hidden_state[:, :-1][keep]
    return head, softcap, h, hb, targets[keep], anchored[keep]


def preserve_loss_sums(model, batch: Batch, kl_on: str | None, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(NLL sum over supervised positions, KL sum over the anchored ones, anchored count)``.

    ``kl_on``: ``None`` (no anchor: the KL sum is 0), ``"replay"`` (replay tokens), ``"train"`` (the domain's
    response tokens) or ``"all"``. The base's distribution is the same model inside ``disable_adapter()`` under
    ``no_grad``, on the same batch: no second copy of the weights."""
    if kl_on is None:
        loss = supervised_loss_sum(model, batch, chunk)
        return loss, loss.new_zeros(()), 0
    head, softcap, h, hb, y, mask = _anchor_inputs(model, batch, kl_on)
    logp, kl = token_logps_and_kl(head, softcap, h, hb, y, mask, chunk)
    return -logp.sum(), kl.sum(), int(mask.sum())


def preserve_loss(model, batch: Batch, kl_on: str, nll_div: float, kl_weight: float, kl_div: float,
                  chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(NLL sum / nll_div + kl_weight x KL sum / kl_div, NLL sum, KL sum, anchored count)``; the two sums carry
    no gradient. The same numbers as :func:`preserve_loss_sums` combined by the caller, with the gradient formed
    in the same pass as one [rows, d] tensor instead of two (:class:`_FusedHeadLossKL`; a trainable or non-linear
    head takes the general path)."""
    head, softcap, h, hb, y, mask = _anchor_inputs(model, batch, kl_on)
    fused = _fused(head, h, chunk, None)
    if fused is not None and h.shape[0]:
        w, b, rows, cols = fused
        need_grad = torch.is_grad_enabled() and h.requires_grad
        loss, nll, kl = _FusedHeadLossKL.apply(h, hb.detach(), mask, w, b, y, softcap, rows, cols, nll_div, kl_weight, kl_div, need_grad)
    else:
        logp, kls = token_logps_and_kl(head, softcap, h, hb, y, mask, chunk)
        nll, kl = -logp.sum(), kls.sum()
        loss = nll / nll_div + kl_weight * kl / kl_div
    return loss, nll.detach(), kl.detach(), int(mask.sum())
