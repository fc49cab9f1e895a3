"""What the training loop needs of an objective, and nothing else: SFT (``sft.py``) and the preference objectives
DPO / ORPO / SimPO (``preference.py``) implement it, each with its preserve terms (replay, KL anchor).

The loop (``loop.py``) reads top to bottom through this interface only::

    kind = OBJECTIVES[cfg.objective]
    read, train, held = kind.read_data(...)        the data file, strictly, and its held-out split
    data, held = kind.tokenize(...)                tokens and labels; drops logged, nothing usable is one error
    objective = kind(cfg, data, held, ...)
    objective.prepare(model, start, log)           once, before any step (DPO: the reference pass)
    objective.total_steps()
    each step:  group = objective.next_group(state)              None at an epoch's end
                for loss in objective.losses(model, group, step): check, backward, sum
                metrics |= objective.step_metrics(group, log)
                objective.evaluate(model, log)                    every eval_every steps and at the last
    manifest["objective"] = objective.manifest_block()

A batch in a group is anything with ``tokens`` (real tokens) and ``supervised`` (scored positions): the SFT
``Batch`` and the preference ``PairBatch`` (an objective is generic in it: ``Objective[Batch]``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Protocol, Sequence, TypeVar

import torch

from ..data.tokenize import Tokenized, TokenizedExample
from .checkpoint import TrainState
from .config import TrainConfig

Log = Callable[[str], None]


class TrainBatch(Protocol):
    @property
    def tokens(self) -> int: ...

    @property
    def supervised(self) -> int: ...


B = TypeVar("B", bound=TrainBatch)


@dataclass(frozen=True)
class StartPoint:
    """What training starts from: the base's fingerprint, how it is loaded, and the ``init_from`` adapter's lineage
    (``None``: a fresh LoRA, or every weight for ``method: full``). The DPO reference is this model."""

    base_fingerprint: str
    load: dict
    init_from: dict | None = None


class Objective(ABC, Generic[B]):
    """One training objective over tokenized data: its batches, its loss, its metrics, its held-out pass and its
    manifest block. ``data`` and ``held`` are the tokenized training and held-out sets (the manifest counts them)."""

    start: StartPoint | None = None  # set by prepare()

    def __init__(self, cfg: TrainConfig, data: Tokenized, held: Tokenized, pad_id: int, device: str, autocast: Callable,
                 replay: list[TokenizedExample]):
        """``replay``: the preserve stage's replay rows (empty without ``preserve.replay``); ``autocast``: the mixed
        precision context every forward runs in."""
        self.cfg, self.data, self.held, self.pad_id, self.device, self.autocast = cfg, data, held, pad_id, device, autocast
        self.replay_ratio = cfg.preserve.replay.ratio if cfg.preserve.replay else 0.0
        self.kl = cfg.preserve.kl if cfg.preserve.kl is not None and cfg.preserve.kl.weight > 0 else None  # the KL anchor, when on

    @classmethod
    @abstractmethod
    def read_data(cls, cfg: TrainConfig, data_path: Path, config_dir: Path) -> tuple[Any, list, list]:
        """Read the training file strictly; return the read result with the train and held-out rows."""

    @classmethod
    @abstractmethod
    def tokenize(cls, train_rows: list, eval_rows: list, tok, cfg: TrainConfig, log: Log) -> tuple[Tokenized, Tokenized]:
        """The tokenized train and held-out sets under the config's template and length."""

    def prepare(self, model, start: StartPoint, log: Log) -> None:
        """Work done once before the first step (and before a resumed run loads its checkpoint)."""
        self.start = start

    @abstractmethod
    def total_steps(self) -> int:
        """Optimizer steps in the run."""

    @abstractmethod
    def next_group(self, state: TrainState) -> Sequence[B] | None:
        """The micro-batches of the next optimizer step; ``None`` (and ``state`` moved to the next epoch) at an epoch's end."""

    @abstractmethod
    def losses(self, model, group: Sequence[B], step: int) -> Iterator[torch.Tensor]:
        """Each micro-batch's loss, already scaled so that their sum is the step's loss; the loop checks each is
        finite, runs its backward and sums them. ``step``: the optimizer steps taken before this one."""

    @abstractmethod
    def step_metrics(self, group: Sequence[B], log: Log) -> dict:
        """The objective's own metrics for the step whose losses were just taken (added to the metrics line)."""

    @property
    @abstractmethod
    def has_held_out(self) -> bool:
        """Whether there is a held-out set to evaluate."""

    @abstractmethod
    def evaluate(self, model, log: Log) -> tuple[float | None, dict]:
        """``(eval loss, metrics)`` on the held-out set: the loss the run state keeps, the metrics line's entries."""

    @abstractmethod
    def manifest_block(self) -> dict | None:
        """The manifest's ``objective`` entry (``None``: the manifest has none)."""
