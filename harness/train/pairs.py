"""Pair batching: a preference batch's rows, the prompt-shared layout and masks, and the completion log-probs.

The body runs once on ``[chosen..., rejected...]`` rows laid out by :func:`shared_rows` (each pair's shared prefix
once, chosen and rejected as two tails); the LM head runs only on completion positions (plus the chosen prompt for
ORPO's NLL), in chunks, through :func:`harness.train.loss.token_logps` as the SFT loss does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.preference import TokenizedPair
from ..data.tokenize import IGNORE
from ..models.heads import body_and_head
from .loss import token_logps


@dataclass
class PairBatch:
    """``n_pairs`` chosen rows then ``n_pairs`` rejected rows, right-padded."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # completion tokens only
    keys: list[str]
    ref: torch.Tensor | None = None  # [2 * n_pairs] reference log-probs (chosen then rejected)

    @property
    def n_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def supervised(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())

    def to(self, device) -> "PairBatch":
        return PairBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.keys,
                         None if self.ref is None else self.ref.to(device))


def pair_batch(pairs: list[TokenizedPair], pad_id: int) -> PairBatch:
    seqs = [(p.chosen_ids, p.chosen_labels) for p in pairs] + [(p.rejected_ids, p.rejected_labels) for p in pairs]
    width = max(len(s[0]) for s in seqs)
    n = len(seqs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (s, lab) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return PairBatch(ids, mask, labels, [p.key() for p in pairs])


@dataclass
class Logps:
    sums: torch.Tensor  # [2B] summed completion log-probs
    counts: torch.Tensor  # [2B] completion tokens
    nll_sum: torch.Tensor | None = None  # ORPO: -sum log p over the chosen rows' every real token (prompt included)
    nll_count: int = 0

    @property
    def avg(self) -> torch.Tensor:
        return self.sums / self.counts.clamp(min=1)


@dataclass
class SharedRows:
    """A pair batch laid out so that each pair's shared prefix runs once::

        tokens     p0 .. pS-1 | chosen tail | rejected tail | next pair ...
        positions  0  .. S-1  | S .. Lc-1   | S .. Lr-1     | 0 ..

    (S: the longest common prefix of the two sides, at least the prompt). The chosen tail sees the prefix
    and itself, the rejected tail the prefix and itself; pairs share rows (first-fit, longest first) and
    never see each other. ``flat``/``targets``/``owner`` list every position whose next token is scored:
    the flat index of the hidden state that predicts it, the token, and the side row (0..2B-1) it belongs to.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor  # 3 * pair + part (0 prefix, 1 chosen tail, 2 rejected tail); -1 padding
    flat: torch.Tensor
    targets: torch.Tensor
    owner: torch.Tensor
    completion: torch.Tensor  # bool: the target is a completion token (else: prompt, scored only for ORPO's NLL)


def shared_rows(batch: "PairBatch", full_chosen: bool = False, pad_id: int = 0) -> SharedRows:
    B = batch.n_pairs
    ids = batch.input_ids.tolist()
    lens = batch.attention_mask.sum(1).tolist()
    labels = batch.labels.tolist()
    sides = [ids[i][: lens[i]] for i in range(2 * B)]
    pairs = []
    for k in range(B):
        c, r = sides[k], sides[B + k]
        S = 0
        while S < min(len(c), len(r)) and c[S] == r[S]:
            S += 1
        pairs.append((k, S, len(c) + len(r) - S))
    budget = max(w for _, _, w in pairs)
    rows: list[list[tuple[int, int, int]]] = []
    used: list[int] = []
    for pr in sorted(pairs, key=lambda x: (-x[2], x[0])):
        for j in range(len(rows)):
            if used[j] + pr[2] <= budget:
                rows[j].append(pr)
                used[j] += pr[2]
                break
        else:
            rows.append([pr])
            used.append(pr[2])
    W = budget
    toks = [[pad_id] * W for _ in rows]
    pos = [list(range(W)) for _ in rows]
    seg = [[-1] * W for _ in rows]
    flat, targets, owner, completion = [], [], [], []
    for j, row in enumerate(rows):
        at = 0
        for k, S, w in row:
            c, r = sides[k], sides[B + k]
            Lc = len(c)
            toks[j][at : at + w] = c + r[S:]
            pos[j][at : at + w] = list(range(Lc)) + list(range(S, len(r)))
            seg[j][at : at + w] = [3 * k] * S + [3 * k + 1] * (Lc - S) + [3 * k + 2] * (len(r) - S)
            for side, seq in ((k, c), (B + k, r)):
                lab = labels[side]
                for t in range(1, len(seq)):
                    comp = lab[t] != IGNORE
                    if not (comp or (full_chosen and side < B)):
                        continue
                    src = t - 1
                    idx = at + src if (side < B or src < S) else at + Lc + src - S
                    flat.append(j * W + idx)
                    targets.append(seq[t])
                    owner.append(side)
                    completion.append(comp)
            at += w
        pos[j][at:] = list(range(W - at))
    dev = batch.input_ids.device
    t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=dev)  # noqa: E731
    return SharedRows(t(toks), t(pos), t(seg), t(flat), t(targets), t(owner), t(completion, torch.bool))


def shared_masks(config, seg: torch.Tensor, pos: torch.Tensor):
    """Boolean [R, 1, W, W] masks (True = attend) for :class:`SharedRows`; a dict per layer type for hybrid models
    (the sliding window counted in positions, as the model counts it)."""
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    q_pos, k_pos = pos[:, :, None], pos[:, None, :]
    same_pair = torch.div(q_seg, 3, rounding_mode="floor") == torch.div(k_seg, 3, rounding_mode="floor")
    visible = same_pair & ((k_seg % 3 == 0) | (k_seg == q_seg)) & (k_pos <= q_pos) & (k_seg >= 0) & (q_seg >= 0)
    eye = torch.eye(seg.shape[1], dtype=torch.bool, device=seg.device)[None]
    pad_self = eye & (q_seg < 0)  # padding attends to itself only (no empty softmax rows)
    full = visible | pad_self
    layer_types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if layer_types and window and "sliding_attention" in layer_types:
        sliding = (visible & ((q_pos - k_pos) < window)) | pad_self
        return {"full_attention": full[:, None], "sliding_attention": sliding[:, None]}
    return full[:, None]


def sequence_logps(model, batch: PairBatch, *, full_chosen: bool = False, chunk: int | None = None) -> Logps:
    """Summed completion log-probs of every row; with ``full_chosen`` also the NLL of the chosen rows' whole text.

    One body pass over :func:`shared_rows` (each pair's prompt once, chosen and rejected as two tails),
    then the head only at the scored positions (:func:`token_logps`)."""
    body, head, softcap = body_and_head(model)
    lay = shared_rows(batch, full_chosen)
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    out = body(input_ids=lay.input_ids, attention_mask=shared_masks(config, lay.segments, lay.position_ids),
               position_ids=lay.position_ids, use_cache=False)
    hidden = out.last_hidden_state
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, lay.flat)
    tok = token_logps(head, softcap, h, lay.targets, chunk)
    n = 2 * batch.n_pairs
    comp = lay.completion
    sums = tok.new_zeros(n).index_add(0, lay.owner[comp], tok[comp])
    counts = (batch.labels[:, 1:] != IGNORE).sum(1)
    res = Logps(sums, counts)
    if full_chosen:
        whole = lay.owner < batch.n_pairs
        res.nll_sum = -tok[whole].sum()
        res.nll_count = int(whole.sum())
    return res
