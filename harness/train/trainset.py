"""The training set, for every objective: the data file read strictly, the seeded held-out split, and the
tokenisation under the config's template and length with drops logged (nothing usable is one clear error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar

import torch

from ..data.tokenize import Tokenized
from ..errors import LafError
from .config import TrainConfig


class ReadRows(Protocol):
    """A read result (``ReadResult`` of SFT examples, ``PreferenceRead`` of pairs): its rows in file order."""

    @property
    def examples(self) -> Sequence[Any]: ...


R = TypeVar("R", bound=ReadRows)
T = TypeVar("T", bound=Tokenized)  # TokenizedData (SFT examples) or TokenizedPairs


def resolve_path(path: str, config_dir: Path) -> Path:
    """A data path from a config: absolute as given, relative to the config's folder otherwise."""
    return Path(path) if Path(path).is_absolute() else config_dir / path


def split_eval(n: int, cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """Indices ``(train, held_out)``: a seeded held-out sample unless an eval file is given or data is tiny."""
    if cfg.data.eval_path or cfg.data.eval_fraction == 0 or n < 20:
        return list(range(n)), []
    k = min(cfg.data.eval_max, max(1, int(round(n * cfg.data.eval_fraction))))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 7919)).tolist()
    held = sorted(perm[:k])
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], held


def read_split(read: R, read_eval: Callable[[Path], Sequence], cfg: TrainConfig, config_dir: Path) -> tuple[R, list, list]:
    """``read`` (the training file, already read) with its train and held-out rows: the eval file's rows
    (``read_eval``) when the config names one, else the seeded held-out sample of ``read``'s own rows."""
    rows = read.examples
    if cfg.data.eval_path:
        return read, list(rows), list(read_eval(resolve_path(cfg.data.eval_path, config_dir)))
    tr, ev = split_eval(len(rows), cfg)
    return read, [rows[i] for i in tr], [rows[i] for i in ev]


def tokenize_split(tokenize: Callable[..., T], train_rows, eval_rows, tok, cfg: TrainConfig, log, noun: str, none_usable: str, fix: str) -> tuple[T, T]:
    """Tokenize the training and held-out rows under the config's template and length; drops are logged, and a
    training split with nothing left is one clear error naming the first drop."""
    use_chat = None if cfg.chat_template == "auto" else bool(cfg.chat_template)
    data = tokenize(train_rows, tok, cfg.max_length, use_chat)
    held = tokenize(eval_rows, tok, cfg.max_length, use_chat)
    if data.dropped:
        log(f"dropped {len(data.dropped)} of {len(train_rows)} {noun}: {data.drop_summary()}")
    if not data.examples:
        first = data.dropped[0]
        raise LafError(f"{none_usable} (all {len(data.dropped)} dropped; first, line {first.line}: {first.reason})", fix)
    return data, held
