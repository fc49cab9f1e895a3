"""Supervised fine-tuning: next-token loss on response tokens (``loss.py``) over packed or padded batches
(``batching.py``), with the preserve terms: replay rows mixed into each epoch's stream (``ReplayMix``) and the KL
anchor to the base on the positions ``preserve.kl.on`` names."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ..data.formats import Example, ReadResult, read_examples
from ..data.preference import peek_is_preference
from ..data.tokenize import TokenizedData, TokenizedExample, tokenize_examples
from ..errors import LafError
from .batching import Batch, epoch_order, make_batches
from .checkpoint import TrainState
from .config import TrainConfig
from .loss import preserve_loss, supervised_loss_sum
from .objective import Log, Objective
from .preserve import ReplayMix, anchored_count
from .schedule import count_steps
from .trainset import read_split, tokenize_split


class SFTObjective(Objective[Batch]):
    """Mean NLL over a step's supervised tokens; with ``preserve.kl`` plus ``kl.weight x`` the KL to the base averaged
    over the anchored positions; with ``preserve.replay`` each epoch's rows are the domain examples plus that epoch's
    replay draw."""

    def __init__(self, cfg: TrainConfig, data: TokenizedData, held: TokenizedData, pad_id: int, device: str, autocast: Callable,
                 replay: list[TokenizedExample]):
        super().__init__(cfg, data, held, pad_id, device, autocast, replay)
        self.data: TokenizedData = data
        self.held: TokenizedData = held
        self.mix = ReplayMix(data.examples, replay, self.replay_ratio, cfg.seed)
        self.batches = EpochBatches(data, cfg, pad_id, self.mix)
        self._nll = self._kl = 0.0
        self._anchored = 0

    @classmethod
    def read_data(cls, cfg: TrainConfig, data_path: Path, config_dir: Path) -> tuple[ReadResult, list[Example], list[Example]]:
        if peek_is_preference(data_path, cfg.data.format):
            raise LafError(f"{data_path} holds preference pairs (prompt/chosen/rejected) but objective is sft",
                           "set objective: dpo, orpo or simpo, or train on SFT examples")
        read = read_examples(data_path, schema=cfg.data.schema_, file_format=cfg.data.format, strict=True)
        return read_split(read, lambda p: read_examples(p, schema=cfg.data.schema_, strict=True).examples, cfg, config_dir)

    @classmethod
    def tokenize(cls, train_rows: list[Example], eval_rows: list[Example], tok, cfg: TrainConfig, log: Log) -> tuple[TokenizedData, TokenizedData]:
        return tokenize_split(tokenize_examples, train_rows, eval_rows, tok, cfg, log, "examples", "no training example keeps a supervised token",
                              "raise max_length, shorten the prompts, or fix empty responses")

    def total_steps(self) -> int:
        return count_steps(self.mix.rows(0), self.cfg)

    def next_group(self, state: TrainState) -> list[Batch] | None:
        return self.batches.next_group(state)

    def losses(self, model, group: Sequence[Batch], step: int) -> Iterator[torch.Tensor]:
        kl = self.kl
        n_sup = sum(b.supervised for b in group)
        n_anchor = sum(anchored_count(b, kl.on) for b in group) if kl is not None else 0
        self._nll, self._kl, self._anchored = 0.0, 0.0, n_anchor
        for b in group:
            with self.autocast():
                if kl is not None:  # nll / n_sup + weight x kl / n_anchor, its gradient projected through the head once
                    loss, nll, kl_sum, _ = preserve_loss(model, b.to(self.device), kl.on, n_sup, kl.weight, max(1, n_anchor))
                    self._nll += float(nll) / n_sup
                    self._kl += float(kl_sum) / max(1, n_anchor)
                else:
                    loss = supervised_loss_sum(model, b.to(self.device)) / n_sup
            yield loss

    def step_metrics(self, group: Sequence[Batch], log: Log) -> dict:
        m: dict = {}
        if self.mix.replay:
            m["replay_tokens"] = sum(b.replay_tokens for b in group)
        if self.kl is not None:
            m.update(kl=round(self._kl, 6), kl_tokens=self._anchored, nll=round(self._nll, 6))
        return m

    @property
    def has_held_out(self) -> bool:
        return bool(self.held.examples)

    def evaluate(self, model, log: Log) -> tuple[float | None, dict]:
        loss = evaluate_loss(model, self.held, self.cfg, self.pad_id, self.device, self.autocast)
        return loss, {"eval_loss": round(loss, 6)} if loss is not None else {}

    def manifest_block(self) -> dict | None:
        lineage = self.start.init_from if self.start is not None else None
        return {"name": "sft", "init_from": lineage} if lineage else None


class EpochBatches:
    """The batches of the current epoch (a seeded order, so a resumed run rebuilds the same ones); with replay, each
    epoch's rows are the domain examples plus that epoch's replay draw (:class:`ReplayMix`)."""

    def __init__(self, data: TokenizedData, cfg: TrainConfig, pad_id: int, mix: ReplayMix | None = None):
        self.data, self.cfg, self.pad_id, self.mix = data, cfg, pad_id, mix
        self._epoch: int | None = None
        self._batches: list[Batch] = []

    def next_group(self, state: TrainState) -> list[Batch] | None:
        """The ``grad_accum`` micro-batches of the next optimizer step; ``None`` (and ``state`` moved to the next epoch) at an epoch's end."""
        cfg = self.cfg
        if self._epoch != state.epoch:
            rows = self.mix.rows(state.epoch) if self.mix is not None else self.data.examples
            order = epoch_order(len(rows), cfg.seed, state.epoch)
            self._batches = make_batches(rows, order, batch_size=cfg.batch_size, max_length=cfg.max_length, packing=cfg.packing, pad_id=self.pad_id)
            self._epoch = state.epoch
        if state.batch_in_epoch >= len(self._batches):
            state.epoch += 1
            state.batch_in_epoch = 0
            return None
        return self._batches[state.batch_in_epoch : state.batch_in_epoch + cfg.grad_accum]


def evaluate_loss(model, data: TokenizedData, cfg: TrainConfig, pad_id: int, device: str, autocast) -> float | None:
    """Mean supervised-token loss on the held-out examples (``None`` without any)."""
    if not data.examples:
        return None
    batches = make_batches(data.examples, list(range(len(data.examples))), batch_size=cfg.batch_size, max_length=cfg.max_length, packing=cfg.packing, pad_id=pad_id)
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), autocast():
        for b in batches:
            total += float(supervised_loss_sum(model, b.to(device)))
            n += b.supervised
    if was_training:
        model.train()
    return total / max(1, n)
