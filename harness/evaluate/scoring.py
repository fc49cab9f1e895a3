"""Fast log-likelihood scoring: the context's forward pass shared across continuations.

lm-eval scores every (context, continuation) pair as its own row and projects
the LM head at every position. A multiple-choice item repeats one context
for each choice, and only the continuation positions matter. Here requests
with the same context become one packed row::

    tokens     c0 c1 .. cC-1 | a1 a2 | b1 | d1 d2 d3      (each tail = continuation[:-1])
    positions  0  1  .. C-1  | C C+1 | C  | C  C+1 C+2

with a 4D mask in which each tail sees the context and its own earlier
tokens, never another tail (and, for sliding-window layers, only keys within
the window, measured in positions). The head runs only on the positions that
predict continuation tokens. Truncation follows lm-eval exactly: the input is
``(context + continuation)[-(max_length + 1):][:-1]``. Per-item
log-likelihoods match plain lm-eval within 1e-4 in fp32 (tests/test_eval.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..models.heads import body_and_head, head_logits

HEAD_CHUNK = 256

# opt-in hook: called once per batch with [(request index, first row, n positions)] and the
# [positions, vocab] float32 log-softmax at every scored position (harness.evaluate.parity)
CaptureFn = Callable[[list[tuple[int, int, int]], torch.Tensor], None]


@dataclass
class _Member:
    index: int  # position in the caller's request list
    tail: list[int]  # continuation[:-1]
    targets: list[int]  # continuation


@dataclass
class _Row:
    context: list[int]
    members: list[_Member]

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(m.tail) for m in self.members)

    @property
    def n_targets(self) -> int:
        return sum(len(m.targets) for m in self.members)


def _split(ctx: list[int], cont: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """lm-eval's left truncation, then the shared context and this request's tail."""
    inp = (ctx + cont)[-(max_length + 1):][:-1]
    n_ctx = len(inp) - (len(cont) - 1)
    return inp[:n_ctx], inp[n_ctx:]


def plan_rows(requests: list[tuple[list[int], list[int]]], max_length: int, row_budget: int, share_context: bool) -> list[_Row]:
    groups: dict[tuple, list[_Member]] = {}
    order: list[tuple] = []
    for i, (ctx, cont) in enumerate(requests):
        context, tail = _split(ctx, cont, max_length)
        key = tuple(context) if share_context else (i, *context)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(_Member(i, tail, list(cont)))
    rows: list[_Row] = []
    for key in order:
        context = list(key) if share_context else list(key[1:])
        current = _Row(context, [])
        for m in groups[key]:
            if current.members and current.length + len(m.tail) > max(row_budget, len(context) + len(m.tail)):
                rows.append(current)
                current = _Row(context, [])
            current.members.append(m)
        rows.append(current)
    # longest first (as lm-eval): stable batches, any out-of-memory shows at once
    rows.sort(key=lambda r: -r.length)
    return rows


def _masks(model, seg: torch.Tensor, pos: torch.Tensor):
    """Boolean [B, 1, L, L] masks (True = attend); a dict per layer type for hybrid models."""
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    q_pos, k_pos = pos[:, :, None], pos[:, None, :]
    same_or_ctx = (k_seg == 0) | (k_seg == q_seg)
    full = (k_pos <= q_pos) & same_or_ctx & (k_seg >= 0) & (q_seg >= 0)
    eye = torch.eye(seg.shape[1], dtype=torch.bool, device=seg.device)[None]
    full = full | (eye & (q_seg < 0))  # padding attends to itself only (no empty softmax rows)
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    layer_types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if layer_types and window and "sliding_attention" in layer_types:
        sliding = full & ((q_pos - k_pos) < window) | (eye & (q_seg < 0))
        return {"full_attention": full[:, None], "sliding_attention": sliding[:, None]}
    return full[:, None]


def _forward_rows(model, rows: list[_Row], pad_id: int, device, capture: CaptureFn | None = None,
                  padding_side: str = "right") -> list[tuple[int, float, bool]]:
    """One padded batch. ``padding_side`` moves the padding before (left) or after (right) each row; positions and
    the mask are explicit, so the numbers do not depend on it (tests/test_validity.py holds that)."""
    width = max(r.length for r in rows)
    B = len(rows)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    seg = torch.full((B, width), -1, dtype=torch.long)
    pos = torch.zeros((B, width), dtype=torch.long)
    where: list[tuple[int, list[int], list[int]]] = []  # (request index, flat positions, targets)
    for b, row in enumerate(rows):
        o = width - row.length if padding_side == "left" else 0  # where the row starts
        C = len(row.context)
        ids[b, o : o + C] = torch.tensor(row.context)
        seg[b, o : o + C] = 0
        pos[b, o : o + C] = torch.arange(C)
        at = o + C
        for j, m in enumerate(row.members, 1):
            n = len(m.tail)
            if n:
                ids[b, at : at + n] = torch.tensor(m.tail)
                seg[b, at : at + n] = j
                pos[b, at : at + n] = torch.arange(C, C + n)
            flat = [b * width + o + C - 1] + [b * width + at + t for t in range(n)]
            where.append((m.index, flat, m.targets))
            at += n
        if o:
            pos[b, :o] = torch.arange(o)
        pos[b, at:] = torch.arange(width - at)
    ids, seg, pos = ids.to(device), seg.to(device), pos.to(device)
    body, head, softcap = body_and_head(model)
    hidden = body(input_ids=ids, attention_mask=_masks(model, seg, pos), position_ids=pos, use_cache=False).last_hidden_state
    hidden = hidden.reshape(B * width, -1)
    flat_pos = torch.tensor([p for _, ps, _ in where for p in ps], device=hidden.device)
    targets = torch.tensor([t for _, _, ts in where for t in ts], device=hidden.device)
    lps, greedy, kept = [], [], []
    for i in range(0, flat_pos.numel(), HEAD_CHUNK):
        logits = head_logits(head, softcap, hidden[flat_pos[i : i + HEAD_CHUNK]])
        logp = torch.log_softmax(logits, dim=-1)
        if capture is not None:
            kept.append(logp.float().cpu())
        tgt = targets[i : i + HEAD_CHUNK]
        lps.append(logp.gather(1, tgt[:, None]).squeeze(1))
        greedy.append(logp.argmax(-1) == tgt)
    lp = torch.cat(lps).double().cpu()
    gr = torch.cat(greedy).cpu()
    out, spans, k = [], [], 0
    for index, ps, _ in where:
        n = len(ps)
        out.append((index, float(lp[k : k + n].sum()), bool(gr[k : k + n].all())))
        spans.append((index, k, n))
        k += n
    if capture is not None:
        capture(spans, torch.cat(kept))
    return out


def score_loglikelihood(
    model,
    requests: list[tuple[list[int], list[int]]],
    *,
    batch_size: int,
    max_length: int,
    pad_id: int,
    device,
    share_context: bool = True,
    row_budget: int = 512,
    capture: CaptureFn | None = None,
    padding_side: str = "right",
) -> Iterator[list[tuple[int, float, bool]]]:
    """Yield, batch by batch, ``(request index, log-likelihood, is_greedy)`` for every request.

    ``capture`` (opt-in, off in evaluation) receives each batch's full next-token log-softmax at the scored
    positions before the batch is yielded. The batches depend only on the requests and the settings, so two
    models scored in lockstep (``zip`` of two generators) see the same batches: that is how ``laf parity``
    compares their distributions without storing them."""
    rows = plan_rows(requests, max_length, row_budget, share_context)
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            yield _forward_rows(model, rows[i : i + batch_size], pad_id, device, capture, padding_side)
