"""YAML configuration: load, apply ``--set`` overrides, validate with errors that name file and key.

Every stage's config is a pydantic model with ``extra="forbid"``, so a typo
is an error naming the key instead of a silently ignored setting.

Every YAML a user hands us (run and train configs, suites, gate policies,
``--set`` values) is read by :func:`load_yaml` / :func:`parse_yaml` with a
loader that is bounded before anything is built: at most ``MAX_CONFIG_BYTES``
read, nesting at most ``MAX_DEPTH`` deep, at most ``MAX_NODES`` values once
every alias is expanded (a 400-byte "billion laughs" alias bomb is refused at
parse time instead of expanding to gigabytes), no recursive aliases, no
duplicate keys, only plain YAML types (no ``!!python/...`` or other tags that
build objects), and finite numbers only. No error message formats an
unbounded input: values are cut with :func:`short_repr` before formatting.
"""

from __future__ import annotations

import math
import os
import reprlib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, SequenceNode

from .errors import ConfigError, LafError

DEVICE_RULE = "auto, cpu, mps, cuda or cuda:N (N a GPU index below 64)"


def check_device(value: object) -> str:
    """A device string torch knows, checked before anything loads (``ValueError`` otherwise; pydantic turns it into a
    config error). An unknown string reached ``torch.device`` or ``model.to`` as a traceback."""
    import re

    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:(\d|[1-5]\d|6[0-3]))?", value):
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
        raise ValueError(f"device {shown!r} is not one of {DEVICE_RULE}")
    return value

M = TypeVar("M", bound=BaseModel)

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a config, suite or policy is settings, not data
MAX_DEPTH = 64  # nesting levels of mappings and lists
MAX_NODES = 200_000  # values in the document once every alias is expanded
MAX_SHOWN = 200  # characters of a user value shown in an error message
MAX_LINES = 20  # problems listed in one validation error


_short = reprlib.Repr()
_short.maxlevel, _short.maxdict, _short.maxlist, _short.maxtuple, _short.maxset = 3, 6, 6, 6, 6
_short.maxstring, _short.maxother, _short.maxlong = 80, 80, 40


def short_repr(value: Any, limit: int = MAX_SHOWN) -> str:
    """A repr that costs O(limit) whatever ``value`` is (a huge string, an alias bomb, a deep list)."""
    try:
        s = _short.repr(value)
    except Exception:  # a hostile __repr__ cannot come from YAML, but never let a message fail
        s = f"<{type(value).__name__}>"
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _cut(text: str, limit: int = MAX_SHOWN) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class YamlLimitError(yaml.YAMLError):
    """A YAML document that is refused before it is built (too deep, too big once expanded, duplicate keys...)."""

    def __init__(self, problem: str, mark=None, fix: str | None = None):
        self.problem = problem
        self.problem_mark = mark
        self.fix = fix
        super().__init__(problem)


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts while it composes: depth, expanded size, aliases to themselves, duplicate keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._weight: dict[int, int] = {}  # id(node) -> number of values it stands for, aliases expanded

    def compose_document(self):
        node = super().compose_document()
        self._weight.clear()
        return node

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._weight:
                raise YamlLimitError(f"the alias *{_cut(event.anchor, 60)} refers to the node that contains it (a recursive alias)",
                                     event.start_mark, "write the value out instead of a self-referencing alias")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimitError(f"the YAML is nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark,
                                 "flatten the structure; a config never needs this depth")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, SequenceNode):
            weight = 1 + sum(self._weight.get(id(c), 1) for c in node.value)
        elif isinstance(node, MappingNode):
            weight = 1 + sum(self._weight.get(id(k), 1) + self._weight.get(id(v), 1) for k, v in node.value)
        else:
            weight = 1
        if weight > MAX_NODES:
            raise YamlLimitError(f"the YAML expands to more than {MAX_NODES:,} values (aliases such as *name are counted each time "
                                 "they are used; this is how an 'alias bomb' takes gigabytes)", node.start_mark,
                                 "write the values out, or use fewer and smaller aliases")
        self._weight[id(node)] = weight
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults`: explicit keys may override merged ones, as YAML says
                key = self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeConstructor names unhashable keys itself
                if key is not None and key in seen:
                    raise YamlLimitError(f"duplicate key {short_repr(key, 80)} (first on line {seen[key] + 1}, again on line "
                                         f"{key_node.start_mark.line + 1}); YAML would silently keep only the last one",
                                         key_node.start_mark, "keep one of them")
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as e:  # e.g. a 5,000-digit integer, the date 2024-13-45
            raise ConstructorError(None, None, f"cannot read the value {_cut(getattr(node, 'value', ''), 80)!r}: {_cut(e, 120)}",
                                   node.start_mark) from e

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise YamlLimitError(f"{_cut(node.value, 40)} is not a finite number", node.start_mark,
                                 "write a finite number (NaN and infinity are never valid settings)")
        return value


BoundedLoader.add_constructor("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float)


def _mark(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""


def parse_yaml(text: str | bytes):
    """Parse one YAML document with every limit of :class:`BoundedLoader` (raises ``yaml.YAMLError``)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise YamlLimitError(f"the YAML is {len(text):,} bytes; the limit is {MAX_CONFIG_BYTES:,}", None,
                             "a config holds settings; put data in a data file and point at it")
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _takes_numbers_only(annotation) -> tuple[bool, bool]:
    """``(a number setting that takes no boolean, a list of such numbers)`` for a field's type."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_numbers_only(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        parts = [_takes_numbers_only(a) for a in typing.get_args(annotation) if a is not type(None)]
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if any(a is bool for a in args):
            return False, False
        return any(p[0] for p in parts), any(p[1] for p in parts)
    if origin in (list, tuple):
        inner = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return False, bool(inner) and all(_takes_numbers_only(a)[0] for a in inner)
    return annotation in (int, float), False


_YES_NO = "expected a number, got a yes/no value (YAML reads yes, no, true, false, on and off as booleans)"


class StrictModel(BaseModel):
    """The base of every config model: an unknown key is an error naming it, never silently ignored; a float setting
    must be finite (YAML reads ``1e999`` as a string that would otherwise parse to infinity); a number setting given
    as YAML's ``yes``/``on``/``true`` is an error, not 1 (a learning rate of 1.0, a LoRA rank of 1)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_no_for_numbers(cls, v, info):
        if isinstance(v, bool) or (isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v)):
            field = cls.model_fields.get(info.field_name or "")
            if field is not None:
                number, numbers = _takes_numbers_only(field.annotation)
                if (number and isinstance(v, bool)) or (numbers and isinstance(v, (list, tuple))):
                    raise ValueError(_YES_NO)
        return v


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise LafError(f"config file not found: {path}", "check the path")
    if path.is_dir():
        raise LafError(f"{path} is a folder, not a YAML config file", "pass the .yaml file")
    try:
        # bounded read: /dev/zero or a 50 MB line must not fill memory. A named pipe opens without waiting for a
        # writer (O_NONBLOCK), then reads as usual: with no writer it reads as empty instead of hanging; <(cat x) works
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
            os.set_blocking(f.fileno(), True)
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise LafError(f"cannot read {path}: {e.strerror or e}", "check the path and its permissions") from e
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(path, None, f"the file is larger than {MAX_CONFIG_BYTES:,} bytes, too large for a config",
                          "a config holds settings; put data in a data file and point at it")
    if b"\x00" in raw:
        raise ConfigError(path, None, "the file holds NUL bytes, so it is binary, not a YAML config", "pass the YAML config file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LafError(f"{path} is not UTF-8 text", "save the config as UTF-8") from e
    try:
        data = parse_yaml(text)
    except YamlLimitError as e:
        raise ConfigError(path, None, f"{e.problem}{_mark(e)}", e.fix or "fix the YAML") from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        if isinstance(e, ConstructorError) and "could not determine a constructor" in str(problem):
            problem = f"{_cut(problem)}; only plain YAML values (mappings, lists, strings, numbers, booleans) are allowed"
        raise ConfigError(path, None, f"YAML syntax error{_mark(e)}: {_cut(problem, 300)}", "fix the YAML syntax") from None
    except RecursionError:  # belt and braces: MAX_DEPTH stops this first
        raise ConfigError(path, None, "the YAML is nested too deeply", "flatten the structure") from None
    if data is None:
        raise ConfigError(path, None, "the file is empty", "add the settings (see docs/config.md)")
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """``--set a.b=value``: dotted key, value parsed as YAML (so 1e-4, true, [a, b] work)."""
    for item in overrides or []:
        if "=" not in item:
            raise LafError(f"--set {_cut(repr(item))} is not KEY=VALUE", "write e.g. --set lora.r=16")
        key, raw = item.split("=", 1)
        try:
            value = parse_yaml(raw)
        except YamlLimitError as e:
            raise LafError(f"--set {_cut(key, 80)}: {e.problem}", e.fix or "pass a plain value") from None
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
    return _cut(".".join(str(x) for x in loc if not (isinstance(x, str) and x.startswith("function-"))), 120)


def error_lines(model: type[BaseModel], e: ValidationError) -> list[str]:
    """One ``key 'a.b': problem`` line per validation error (the first MAX_LINES of them), every user value bounded;
    the allowed keys of a mapping are listed once, with its first unknown key."""
    errors = e.errors(include_url=False, include_context=False, include_input=True)
    lines = []
    listed: set[str] = set()
    for err in errors[:MAX_LINES]:
        key = _loc(err["loc"]) or "(top level)"
        msg = _cut(err["msg"], 300)
        if err["type"] == "extra_forbidden":
            parent = _loc(err["loc"][:-1])
            allowed = _allowed_keys(model, err["loc"][:-1]) if parent not in listed else []
            listed.add(parent)
            msg = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif "input" in err and _reads_as_non_finite(err["input"]):  # e.g. 'inf' against a bounded float
            msg = "is not a finite number"
        elif "input" in err and err["type"] not in ("missing",):
            msg += f" (got {short_repr(err['input'], 80)})"  # bounded BEFORE formatting: the input may be huge
        lines.append(f"key '{key}': {msg}")
    if len(errors) > MAX_LINES:
        lines.append(f"... and {len(errors) - MAX_LINES} more problem(s)")
    return lines


def validate(model: type[M], data: Any, path: str | Path) -> M:
    """Validate ``data`` against ``model``; all problems are reported together (the first MAX_LINES of them)."""
    try:
        obj = model.model_validate(data)
    except ValidationError as e:
        lines = error_lines(model, e)
        first = lines[0]
        more = "".join(f"\n  {path}: {line}" for line in lines[1:])
        raise ConfigError(path, None, first + more, "fix the keys above (see docs/config.md)") from None
    bad = _non_finite(obj.model_dump(mode="python"))
    if bad is not None:  # pydantic turns the strings "inf", "nan" and "1e999" into floats without a word
        raise ConfigError(path, bad, "is not a finite number", "write a finite number (NaN and infinity are never valid settings)")
    return obj


def _reads_as_non_finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, float)) or (isinstance(value, str) and len(value) > 40):
        return False
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _non_finite(value: Any, where: str = "") -> str | None:
    """The dotted key of the first NaN or infinity in a validated config, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "(top level)"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return _cut(found, 120)
    return None


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
    return sorted((f.alias or n) for n, f in getattr(node, "model_fields", {}).items())


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
