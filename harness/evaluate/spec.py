"""What to evaluate and how: the settings of one ``laf eval`` run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults
from ..env import cache_dir


@dataclass
class EvalSpec:
    suites: list[str]
    model: str = defaults.MODEL
    adapters: list[str] = field(default_factory=list)
    out: str = defaults.EVAL_OUT
    limit: int | None = None
    precision: str = "auto"  # auto = the adapters' training precision (QLoRA-faithful), else fp32
    compute_dtype: str | None = None
    device: str = defaults.DEVICE
    batch_size: int = defaults.BATCH_SIZE
    max_length: int = defaults.MAX_LENGTH
    registry: str = defaults.REGISTRY
    cache: str | None = None  # default: <LAF_CACHE>/eval-cache.sqlite
    no_cache: bool = False
    data_dir: str | None = None
    force_base_mismatch: bool = False
    share_context: bool = True
    # a preamble shared by a suite's contexts computed once per model; not part of the model identity (equal within
    # 1e-5 in fp32, as a batch's order), so responses cached with or without it stay valid
    share_preamble: bool = True
    allow_pickle: bool = False
    trust_remote_code: bool = False
    seed: int = 1234


def default_cache_path() -> Path:
    return cache_dir() / "eval-cache.sqlite"
