"""YAML configuration: load, apply ``--set`` overrides, validate with errors that name file and key.

Every stage's config is a pydantic model with ``extra="forbid"``, so a typo
is an error naming the key instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError, LafError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """The base of every config model: an unknown key is an error naming it, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise LafError(f"config file not found: {path}", "check the path")
    if path.is_dir():
        raise LafError(f"{path} is a folder, not a YAML config file", "pass the .yaml file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise LafError(f"{path} is not UTF-8 text", "save the config as UTF-8") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(path, None, f"YAML syntax error{where}: {problem}", "fix the YAML syntax") from e
    if data is None:
        raise ConfigError(path, None, "the file is empty", "add the settings (see the README's config reference)")
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """``--set a.b=value``: dotted key, value parsed as YAML (so 1e-4, true, [a, b] work)."""
    for item in overrides or []:
        if "=" not in item:
            raise LafError(f"--set {item!r} is not KEY=VALUE", "write e.g. --set lora.r=16")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return data


def _loc(loc: tuple) -> str:
    return ".".join(str(x) for x in loc if not (isinstance(x, str) and x.startswith("function-")))


def validate(model: type[M], data: Any, path: str | Path) -> M:
    """Validate ``data`` against ``model``; all problems are reported together."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = _loc(err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(model, err["loc"][:-1])
                msg = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
            elif "input" in err and err["type"] not in ("missing",):
                shown = repr(err["input"])
                msg += f" (got {shown[:60]})"
            lines.append(f"key '{key}': {msg}")
        first = lines[0]
        more = "".join(f"\n  {path}: {line}" for line in lines[1:])
        raise ConfigError(path, None, first + more, "fix the keys above (see the README's config reference)") from None


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    node: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(node, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        node = _first_model(ann)
        if node is None:
            return []
    return sorted(getattr(node, "model_fields", {}))


def _first_model(ann) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found:
            return found
    return None


def resolve_path(value: str | Path | None, base: Path) -> Path | None:
    """Relative input paths in a config resolve against the config file's folder."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)
