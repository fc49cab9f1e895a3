"""The sweep config: a ``laf run`` config plus ``sweep:`` axes, expanded into named points.

    sweep:
      lora.r: [2, 4, 8]          # every axis a non-empty list; the points are the grid product
      optim.lr: [1.0e-3, 3.0e-4]
    recommend: {margin: 2.0}     # points of domain gain a cheaper point may give up (default 2)

Training axes take any setting of ``train:`` that changes the numbers, by its dotted path (``train.lora.r``; the
``train.`` may be left out, as for ``--set``: ``lora.r``, ``optim.lr``, ``max_steps``, ``objective``, ...; the
list comes from the model's fields, :data:`TRAIN_AXES`) and ``data.limit`` (a count of training examples, or a
fraction in (0, 1)). Merge axes (``merge.t``, ``merge.weights``, ``merge.density``,
``merge.lambda``) apply to every entry of ``merge:``; each merge grid point is a candidate of its own. The
points are the training grid plus the merge grid (a merge's parents are registered adapters, so the two grids
do not multiply).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ..config import StrictModel, _first_model, apply_overrides, load_yaml, short_repr
from ..config_schema import check_shape
from ..errors import ConfigError, LafError
from ..io import sha256_json
from ..merge.config import MergeConfig
from ..pipeline.config import RunConfig, run_overrides, validate_deferred
from ..train.config import TrainSettings

DEFAULT_MAX_POINTS = 1000

# how a point's name abbreviates an axis (names of existing sweeps must not change); any other axis: its path, '_' for '.'
ABBREV: dict[str, str] = {
    "lora.r": "r", "lora.alpha": "a", "lora.dropout": "do", "lora.target_modules": "tm", "lora.rslora": "rslora", "lora.dora": "dora",
    "optim.lr": "lr", "optim.weight_decay": "wd", "optim.warmup_steps": "wu", "optim.scheduler": "sch", "optim.min_lr_ratio": "minlr",
    "max_steps": "steps", "epochs": "ep", "batch_size": "bs", "grad_accum": "ga", "max_length": "len", "packing": "pack",
    "objective": "", "seed": "seed", "preference.beta": "beta", "data.limit": "n",
    "preserve.replay.ratio": "rp", "preserve.replay.source": "rsrc", "preserve.kl.weight": "kl", "preserve.kl.on": "klon",
    "preserve.self_distill": "sd", "method": "",
}
# settings of train: that do not change what is trained (TrainConfig.math_dict leaves them out) or only where it runs
NOT_AXES = frozenset({"compute_dtype", "eval_every", "save_every", "keep_checkpoints", "description", "preference.ref_cache", "preserve.replay.against",
                      "device", "allow_pickle", "trust_remote_code"})


def setting_paths(model: type[StrictModel], prefix: str = "") -> list[str]:
    """The dotted paths of every leaf setting of ``model`` (nested settings blocks followed, optional ones too)."""
    paths: list[str] = []
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        nested = _first_model(info.annotation)
        paths += setting_paths(nested, key + ".") if nested is not None else [key]
    return paths


# training keys a sweep may vary (the numbers-changing settings of train:, from the model) and how a point's name abbreviates them
TRAIN_AXES: dict[str, str] = {p: ABBREV.get(p, p.replace(".", "_")) for p in setting_paths(TrainSettings) if p not in NOT_AXES} | {"data.limit": "n"}
MERGE_AXES: dict[str, str] = {"merge.t": "t", "merge.weights": "w", "merge.density": "d", "merge.lambda": "lam"}


class Recommend(StrictModel):
    margin: float = Field(2.0, ge=0, le=100, description="points of domain gain the recommended point may give up against the best")


class SweepConfig(RunConfig):
    sweep: dict[str, list[Any]] = Field(min_length=1)
    recommend: Recommend = Recommend()

    @field_validator("sweep")
    @classmethod
    def _axes(cls, v: dict) -> dict:
        known = {**TRAIN_AXES, **MERGE_AXES}
        for raw, values in v.items():
            if _axis_key(raw) not in known:
                raise ValueError(unknown_axis(raw))
            if not values:
                raise ValueError(f"axis {raw!r} is empty: give at least one value")
            if len({repr(x) for x in values}) != len(values):
                raise ValueError(f"axis {raw!r} lists a value twice")
            for x in values:
                if isinstance(x, float) and not math.isfinite(x):
                    raise ValueError(f"axis {raw!r}: {x} is not a finite number")
        return {(k[len("train."):] if k.startswith("train.") else k): vals for k, vals in v.items()}


def _axis_key(raw: str) -> str:
    return raw[len("train."):] if raw.startswith("train.") else raw


def unknown_axis(raw: object) -> str:
    """The message for an axis that is not a training setting (a path of train:, from the model) or a merge axis."""
    return (f"unknown axis {short_repr(raw, 80)}; known axes (train: settings by their path, the train. optional; data.limit; merge axes): "
            f"{', '.join(sorted({**TRAIN_AXES, **MERGE_AXES}))}")


@dataclass
class Point:
    """One candidate of the sweep: its name (the registry name), the axis values, and what it runs."""

    name: str
    params: dict[str, Any]
    kind: str  # "train" or "merge"
    train: dict[str, Any] = field(default_factory=dict)  # the point's train: as written (the base's, axis values set)
    data_limit: int | float | None = None
    merge: dict[str, Any] | None = None  # the point's merge entry as written
    settings: TrainSettings | None = None  # ``train`` validated (by the sweep's point check)
    merge_config: MergeConfig | None = None  # ``merge`` validated


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):  # the shortest exact spelling: 0.5, 1e-3, 3e-4, 2.5e-5
        forms = [f"{v:g}", *(f"{v:.{k}e}" for k in range(0, 17))]
        forms = [re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), f) for f in forms]
        return min((f for f in forms if float(f) == v), key=len, default=repr(v))
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt(x) for x in v)
    return str(v)


def point_name(prefix: str, params: dict[str, Any], abbrev: dict[str, str]) -> str:
    """A stable registry name from the parameters, e.g. ``rs-r4-lr1e-3``: letters, digits, '-', '_', '.' only,
    at most 64 characters (a long one ends with a short hash of the parameters)."""
    parts = [f"{abbrev[k]}{_fmt(v)}" for k, v in params.items()]
    name = "-".join([prefix, *parts]) if parts else prefix
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "p"
    name = re.sub(r"\.{2,}", ".", name)
    if len(name) > 64:
        name = name[:55].rstrip("._-") + "-" + sha256_json(params)[:8]
    return name


def _set(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        cur = d.get(k)
        d[k] = dict(cur) if isinstance(cur, dict) else {}
        d = d[k]
    d[keys[-1]] = value


def count_points(cfg: SweepConfig) -> int:
    t = [len(v) for k, v in cfg.sweep.items() if k in TRAIN_AXES]
    m = [len(v) for k, v in cfg.sweep.items() if k in MERGE_AXES]
    n_train = math.prod(t) if (t or cfg.data is not None) else 0
    return n_train + (math.prod(m) * len(cfg.merge) if m else len(cfg.merge))


def expand(cfg: SweepConfig, max_points: int | None = None) -> list[Point]:
    """The sweep's points in a fixed order (axis order as written, values as listed); refuses more than
    ``max_points`` (default 1,000) before building any."""
    n = count_points(cfg)
    cap = DEFAULT_MAX_POINTS if max_points is None else max_points
    if n > cap:
        raise LafError(f"the sweep has {n:,} points, more than {cap:,}" + ("" if max_points is not None else " (the default cap)"),
                       f"shorten the axes, or pass --max-points {n} if you mean it")
    train_axes = {k: v for k, v in cfg.sweep.items() if k in TRAIN_AXES}
    merge_axes = {k: v for k, v in cfg.sweep.items() if k in MERGE_AXES}
    points: list[Point] = []
    if cfg.data is not None:
        for combo in itertools.product(*train_axes.values()):
            params = dict(zip(train_axes, combo))
            train = cfg.train.model_dump(mode="json", exclude_unset=True)
            for k, v in params.items():
                if k != "data.limit":
                    _set(train, k, v)
            points.append(Point(point_name(cfg.name, params, TRAIN_AXES), params, "train", train=train, data_limit=params.get("data.limit")))
    for i, typed in enumerate(cfg.merge):
        entry = typed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        base_name = str(entry.get("name", f"{cfg.name}-merge{i}")).partition("@")[0]
        for combo in itertools.product(*merge_axes.values()):
            params = dict(zip(merge_axes, combo))
            m = dict(entry)
            for k, v in params.items():
                m[k.split(".", 1)[1]] = v
            m["name"] = point_name(base_name, params, MERGE_AXES)
            points.append(Point(m["name"], params, "merge", merge=m))
    names = [p.name for p in points]
    if len(set(names)) != len(names):  # e.g. 0.001 and 1e-3 written both: the names would collide
        seen: set[str] = set()
        for p in points:
            if p.name in seen or names.count(p.name) > 1:
                p.name = (p.name[:55].rstrip("._-") + "-" + sha256_json({k: repr(v) for k, v in p.params.items()})[:8])
                if p.merge is not None:
                    p.merge["name"] = p.name
            seen.add(p.name)
    return points


def load_sweep_config(path: str | Path, overrides: list[str] | None = None) -> tuple[SweepConfig, Path]:
    """The validated sweep config and the folder its relative paths resolve against."""
    path = Path(path)
    raw = load_yaml(path)
    check_shape(raw, ("sweep", "run"), path, "laf sweep", sorted(SweepConfig.model_fields))
    raw = apply_overrides(raw, run_overrides(overrides, set(SweepConfig.model_fields)))
    if isinstance(raw, dict) and "sweep" not in raw:
        raise ConfigError(path, "sweep", "this config has no 'sweep:' block of axes",
                          "add e.g. `sweep: {lora.r: [2, 4, 8]}` (or run it with `laf run`)")
    axes = raw.get("sweep") if isinstance(raw, dict) else None
    for k in axes if isinstance(axes, dict) else ():
        if not isinstance(k, str) or _axis_key(k) not in {**TRAIN_AXES, **MERGE_AXES}:  # named here: the list is longer than a field error shows
            raise ConfigError(path, "sweep", unknown_axis(k), "use one of the known axes (every one also works as `--set` on a run config)")
    cfg = validate_deferred(SweepConfig, raw, path)  # train: and merge: problems are listed with the rest by validate_run
    merge_keys = [k for k in cfg.sweep if k in MERGE_AXES]
    if merge_keys and not cfg.merge and not cfg._invalid_merges:
        raise ConfigError(path, "sweep", f"axis {merge_keys[0]!r} varies a merge, but the config has no 'merge:' entries",
                          "add a merge (a `laf merge` config under merge:) or drop the axis")
    train_keys = [k for k in cfg.sweep if k in TRAIN_AXES]
    if train_keys and cfg.data is None:
        raise ConfigError(path, "sweep", f"axis {train_keys[0]!r} varies training, but the config has no 'data:' to train on",
                          "add data: {path: ...} or drop the axis")
    for p in cfg.sweep.get("data.limit", []):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or p <= 0 or (isinstance(p, float) and p >= 1):
            raise ConfigError(path, "sweep.data.limit", f"{p!r} is neither a count (a whole number >= 1) nor a fraction in (0, 1)",
                              "use e.g. data.limit: [100, 500] or [0.25, 0.5]")
    return cfg, path.resolve().parent
