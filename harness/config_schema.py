"""The config kinds a user writes: which model validates each, which command takes it, how a file's shape tells
them apart, and their JSON Schema (``laf config schema KIND``).

A file of the wrong shape (a run config given to ``laf gate --policy``, a training file given to ``laf run``, ...)
gets one message naming the command it is for, or the nesting it needs, and the keys the command allows, once.
Shapes are told apart by key names only, so this module loads no model stack and no other config module
(``harness.gate`` uses it and must stay torch-free); ``tests/test_config_schema.py`` checks the key sets below
against the models.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .errors import ConfigError

# kind -> (module, model, how it is used)
KINDS: dict[str, tuple[str, str, str]] = {
    "run": ("harness.pipeline.config", "RunConfig", "laf run FILE"),
    "train": ("harness.train.config", "TrainConfig", "laf train FILE"),
    "sweep": ("harness.sweep.config", "SweepConfig", "laf sweep FILE"),
    "merge": ("harness.merge.config", "MergeConfig", "laf merge FILE"),
    "policy": ("harness.gate.policy", "Policy", "laf gate --policy FILE"),
}

# top-level keys only a run (or sweep) config has: its stages
RUN_STAGE_KEYS = frozenset({"curate", "train", "eval", "parity", "diversity", "gate", "select", "out_root", "history"})
# the training settings (TrainSettings' fields): under train: in a run config, at the top of a flat training file
TRAIN_SETTING_KEYS = frozenset({
    "method", "objective", "preference", "init_from", "compute_dtype", "device", "allow_pickle", "trust_remote_code", "max_length",
    "packing", "chat_template", "lora", "optim", "preserve", "batch_size", "grad_accum", "max_steps", "epochs", "eval_every",
    "save_every", "keep_checkpoints", "seed", "gradient_checkpointing", "mixed_precision", "description",
})
# settings that only a training file has (a policy and a merge config share seed, and a merge config description)
_TRAIN_ONLY = TRAIN_SETTING_KEYS - {"seed", "description", "method"}

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def model_for(kind: str):
    """The pydantic model that validates a config of ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown config kind {kind!r}; one of {', '.join(KINDS)}")
    module, name, _ = KINDS[kind]
    return getattr(importlib.import_module(module), name)


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a ``kind`` config, generated from its model (so it cannot drift from what is validated)."""
    model = model_for(kind)
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": SCHEMA_DIALECT, "title": f"lost-and-found {kind} config ({KINDS[kind][2]})", **{k: v for k, v in schema.items() if k != "title"}}


def detect_kind(raw: Any) -> str | None:
    """What a parsed YAML document looks like: ``run``, ``sweep``, ``train`` (the flat training file), ``merge``,
    ``policy``, or None when it has none of their telling keys."""
    if not isinstance(raw, dict):
        return None
    keys = {k for k in raw if isinstance(k, str)}
    if "sweep" in keys:
        return "sweep"
    if keys & RUN_STAGE_KEYS:
        return "run"
    if "method" in keys and "adapters" in keys and not keys & _TRAIN_ONLY:
        return "merge"
    if "rules" in keys:
        return "policy"
    if keys & _TRAIN_ONLY:
        return "train"
    return None


_LABEL = {"run": "a run config", "sweep": "a sweep config", "train": "a training file", "merge": "a merge config", "policy": "a gate policy"}


def _allowed(accepted: tuple[str, ...], allowed: list[str] | None) -> str:
    return f"; the top-level keys of {_LABEL[accepted[0]]}: {', '.join(sorted(allowed))}" if allowed else ""


def check_shape(raw: Any, accepted: tuple[str, ...], path: str | Path, command: str, allowed: list[str] | None = None) -> str | None:
    """Refuse a document whose shape is another kind than ``accepted`` with ONE message naming the command it is for
    (or the nesting it needs) and ``allowed`` (the top-level keys ``command`` takes) once. Returns the kind found."""
    kind = detect_kind(raw)
    keys = sorted(k for k in raw if isinstance(k, str)) if isinstance(raw, dict) else []
    if kind in ("run", "sweep") and kind in accepted:
        misplaced = [k for k in keys if k in _TRAIN_ONLY]
        if misplaced:  # a run config with training settings at its top level: the nesting is wrong, not the command
            raise ConfigError(path, misplaced[0], f"{', '.join(misplaced)} {'is a training setting' if len(misplaced) == 1 else 'are training settings'}; "
                              f"in a {kind} config {'it goes' if len(misplaced) == 1 else 'they go'} under train: "
                              f"({', '.join(f'train.{k}' for k in misplaced)})",
                              f"indent {'it' if len(misplaced) == 1 else 'them'} under a train: block{_allowed(accepted, allowed)}")
    if kind is None or kind in accepted:
        return kind
    usage = KINDS[kind][2].replace("FILE", str(path))
    what = {**_LABEL, "sweep": "a sweep config (a run config with sweep: axes)", "train": "a training file (training settings at its top level)"}[kind]
    fix = f"run `{usage}`"
    if kind == "train" and ("run" in accepted or "sweep" in accepted):
        fix += ("; or, for this command, keep name, model, precision and data at the top, move the training settings under train: "
                "and add eval: {suites: [...]}")
    elif kind == "merge" and "run" in accepted:
        fix += "; or list it under merge: of a run config"
    elif kind == "policy" and "run" in accepted:
        fix += "; or put it under gate.policy: of a run config"
    elif kind in ("run", "sweep") and accepted == ("policy",):
        fix = "give the policy file itself; a run config holds its policy under gate.policy (write that block to a file of its own)"
    elif kind == "sweep" and "run" in accepted:
        fix = f"run it with `{usage}` (every point trained, evaluated, gated and costed)"
    raise ConfigError(path, None, f"this file is {what}, not input for `{command}`", fix + _allowed(accepted, allowed))
