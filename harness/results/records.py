"""Per-item records: what each model did on each item of each suite.

Every later stage (paired statistics, the gate, the report's drill-down)
reads these, matched across models by (suite, doc_hash).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class ItemRecord:
    model: str
    suite: str
    category: str
    doc_id: int
    doc_hash: str
    prompt_hash: str
    prompt: str | list[str]
    choices: list[str] | None
    target: Any
    loglikelihoods: list[float] | None
    is_greedy: list[bool] | None
    generation: str | None
    prediction: Any
    metrics: dict[str, Any]
    doc: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The record as a dict of plain values, nested containers copied (what ``dataclasses.asdict`` gives for
        these JSON values, at a fifth of its cost: a cached run writes every record twice)."""
        return {name: _copied(getattr(self, name)) for name in _FIELDS}

    @classmethod
    def from_dict(cls, d: dict, where: str = "record") -> "ItemRecord":
        """A record read from a run folder, its types checked (``ResultsFormatError`` naming the field otherwise):
        a string doc id or a metrics list would otherwise surface as a traceback in the gate or the report."""
        from .checks import ResultsFormatError, as_mapping, get_field

        d = dict(as_mapping(d, where))
        fields: dict[str, Any] = {k: d.get(k) for k in cls.__dataclass_fields__}
        for key in ("model", "suite", "doc_hash"):
            get_field(d, key, where, str)
        if isinstance(d.get("doc_id"), int) and not isinstance(d.get("doc_id"), bool):
            where = f"{where} (model {d['model']!r}, suite {d['suite']!r}, item {d['doc_id']})"
        get_field(d, "category", where, str, "", optional=True)
        get_field(d, "prompt_hash", where, str, "", optional=True)
        get_field(d, "doc_id", where, int)
        metrics = get_field(d, "metrics", where, dict, {}, optional=True)
        if not all(isinstance(k, str) for k in metrics):
            raise ResultsFormatError(f"{where}.metrics", "keys must be metric names")
        for k, v in metrics.items():
            problem = _metric_problem(v)
            if problem:
                raise ResultsFormatError(f"{where}.metrics.{k}", problem)
        deep = _too_deep(d, MAX_DEPTH)
        if deep:
            raise ResultsFormatError(f"{where}.{deep}", f"nested deeper than {MAX_DEPTH} levels")
        for key, kind in (("loglikelihoods", (int, float)), ("is_greedy", bool), ("choices", str)):
            v = get_field(d, key, where, list, None, optional=True)
            if v is not None and not all(isinstance(x, kind) and not (kind != bool and isinstance(x, bool)) for x in v):
                raise ResultsFormatError(f"{where}.{key}", f"expected a list of {getattr(kind, '__name__', 'numbers')}")
        p = d.get("prompt")
        if p is not None and not isinstance(p, str) and not (isinstance(p, list) and all(isinstance(x, str) for x in p)):
            raise ResultsFormatError(f"{where}.prompt", "expected text or a list of texts")
        get_field(d, "generation", where, str, None, optional=True)
        fields["doc"] = get_field(d, "doc", where, dict, {}, optional=True)
        fields["metrics"] = metrics
        fields["category"] = fields["category"] or ""
        return cls(**fields)


_FIELDS = tuple(f.name for f in fields(ItemRecord))
MAX_DEPTH = 64  # a record's values (doc, target, prediction) nest no deeper: every later reader walks them recursively
_MAX_PARTS = 8  # a per-item metric is a number, or a few (bits_per_byte's log-likelihood and byte count)


def _number_problem(x: Any) -> str | None:
    if x is None:  # a missing value: refused with the item named where the statistics read it (gate.deltas)
        return None
    if not isinstance(x, (int, float)):  # a bool is 0/1, as lm-eval's own metrics give it
        return f"expected a number, got {type(x).__name__}"
    try:
        float(x)
    except OverflowError:
        return "a number too large for a float"
    return None  # NaN and infinity are refused with the whole run's count (store.load_run)


def _metric_problem(v: Any) -> str | None:
    """Why ``v`` is not a per-item metric value, or None."""
    if isinstance(v, list):
        if not 0 < len(v) <= _MAX_PARTS:
            return f"expected a number or a list of 1 to {_MAX_PARTS} numbers, got a list of {len(v)}"
        return next((p for p in map(_number_problem, v) if p), None)
    return _number_problem(v)


def _too_deep(value: Any, limit: int) -> str | None:
    """The first field (by name) whose value nests deeper than ``limit`` lists and mappings, or None; iterative, so a
    hostile record cannot exhaust the stack here."""
    for key, top in value.items():
        stack = [(top, 1)]
        while stack:
            v, depth = stack.pop()
            if isinstance(v, (dict, list)):
                if depth > limit:
                    return str(key)
                stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return None


_SHARED = (str, int, float, bool, type(None))  # immutable leaves: shared, not copied


def _copied(value: Any) -> Any:
    """A copy of the dicts, lists and tuples in ``value``, immutable leaves shared; anything else deep-copied."""
    kind = type(value)
    if kind is dict:
        return {k: _copied(v) for k, v in value.items()}
    if kind is list:
        return [_copied(v) for v in value]
    if kind is tuple:
        return tuple(_copied(v) for v in value)
    if kind in _SHARED:
        return value
    return copy.deepcopy(value)
