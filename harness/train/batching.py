"""Batches for the loop: packed (default) or padded.

Packing concatenates examples into rows of at most ``max_length`` tokens with
position ids that restart at 0 for every example and no 2D attention mask:
transformers then derives a block-diagonal causal mask from the position ids
(``masking_utils.find_packed_sequence_indices``), so no token attends across
examples and the packed loss equals the unpacked one (tests/test_train.py).
The order is a seeded permutation per epoch, so a resumed run rebuilds
exactly the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.tokenize import IGNORE, TokenizedExample


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor | None  # [B, L] for padded batches; None when packed
    n_examples: int

    @property
    def tokens(self) -> int:
        """Real tokens (padding excluded)."""
        if self.attention_mask is not None:
            return int(self.attention_mask.sum())
        return self._real

    @property
    def supervised(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())

    _real: int = 0
    replay: torch.Tensor | None = None  # [B, L] bool: the token belongs to a replay sequence (preserve.replay)

    @property
    def replay_tokens(self) -> int:
        return 0 if self.replay is None else int(self.replay.sum())

    def to(self, device) -> "Batch":
        return Batch(
            self.input_ids.to(device),
            self.labels.to(device),
            self.position_ids.to(device),
            None if self.attention_mask is None else self.attention_mask.to(device),
            self.n_examples,
            self._real,
            None if self.replay is None else self.replay.to(device),
        )


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def pack_rows(examples: list[TokenizedExample], order: list[int], max_length: int) -> list[list[int]]:
    """Greedy in-order packing: fill a row until the next example does not fit."""
    rows: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        n = len(examples[i].input_ids)
        if current and used + n > max_length:
            rows.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        rows.append(current)
    return rows


def _packed_batch(examples: list[TokenizedExample], rows: list[list[int]], pad_id: int) -> Batch:
    seqs = []
    flags = []
    for row in rows:
        ids, labels, pos, rep = [], [], [], []
        for i in row:
            ex = examples[i]
            ids += ex.input_ids
            labels += ex.labels
            pos += list(range(len(ex.input_ids)))
            rep += [ex.replay] * len(ex.input_ids)
        seqs.append((ids, labels, pos))
        flags.append(rep)
    width = max(len(s[0]) for s in seqs)
    real = sum(len(s[0]) for s in seqs)
    B = len(seqs)
    input_ids = torch.full((B, width), pad_id, dtype=torch.long)
    labels = torch.full((B, width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((B, width), dtype=torch.long)
    for b, (ids, lab, pos) in enumerate(seqs):
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids)
        labels[b, :n] = torch.tensor(lab)
        position_ids[b, :n] = torch.tensor(pos)
        # padding is its own segment (positions restart at 0) so nothing attends to it
        position_ids[b, n:] = torch.arange(width - n)
    replay = None
    if any(any(f) for f in flags):
        replay = torch.zeros((B, width), dtype=torch.bool)
        for b, f in enumerate(flags):
            replay[b, : len(f)] = torch.tensor(f, dtype=torch.bool)
    return Batch(input_ids, labels, position_ids, None, sum(len(r) for r in rows), real, replay)


def _padded_batch(examples: list[TokenizedExample], idx: list[int], pad_id: int) -> Batch:
    width = max(len(examples[i].input_ids) for i in idx)
    B = len(idx)
    input_ids = torch.full((B, width), pad_id, dtype=torch.long)
    labels = torch.full((B, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((B, width), dtype=torch.long)
    for b, i in enumerate(idx):
        ex = examples[i]
        n = len(ex.input_ids)
        input_ids[b, :n] = torch.tensor(ex.input_ids)
        labels[b, :n] = torch.tensor(ex.labels)
        mask[b, :n] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    replay = None
    if any(examples[i].replay for i in idx):
        replay = torch.zeros((B, width), dtype=torch.bool)
        for b, i in enumerate(idx):
            if examples[i].replay:
                replay[b, : len(examples[i].input_ids)] = True
    return Batch(input_ids, labels, position_ids, mask, B, int(mask.sum()), replay)


def make_batches(
    examples: list[TokenizedExample],
    order: list[int],
    *,
    batch_size: int,
    max_length: int,
    packing: bool,
    pad_id: int,
) -> list[Batch]:
    """All batches of one epoch, in training order."""
    if packing:
        rows = pack_rows(examples, order, max_length)
        return [_packed_batch(examples, rows[i : i + batch_size], pad_id) for i in range(0, len(rows), batch_size)]
    return [_padded_batch(examples, order[i : i + batch_size], pad_id) for i in range(0, len(order), batch_size)]
