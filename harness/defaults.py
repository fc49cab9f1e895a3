"""Defaults shared by the commands and the library, in one place so a flag's default and the matching config
field cannot drift apart (``--registry`` and ``registry:``, ``--max-length`` and ``eval.max_length``, ...).

Plain constants, no imports: every layer may read them."""

from __future__ import annotations

REGISTRY = "adapters_registry"  # the adapter registry folder
OUT_ROOT = "reports"  # where runs, reports and the history go
EVAL_OUT = f"{OUT_ROOT}/eval"  # laf eval --out
DIVERSITY_OUT = f"{OUT_ROOT}/diversity"  # laf diversity --out without a run folder
DATA_OUT = f"{OUT_ROOT}/data"  # laf data check|clean --out (one folder per data file under it)
HISTORY = f"{OUT_ROOT}/history.sqlite"  # the release history (LAF_HISTORY_URL overrides it)
MODEL = "default"  # the base model spec (the embedded gemma-3-270m)
DEVICE = "auto"

MAX_LENGTH = 2048  # context window for scoring (tokens)
MAX_TOKENS = 1 << 20  # the largest length accepted anywhere: a context no model here comes near
BATCH_SIZE = 8  # rows per forward pass when scoring (the same for every model of an evaluation)
TRAIN_MAX_LENGTH = 512  # training max length that `laf data` checks truncation against
CONFIDENCE = 0.95
