"""Reading untrusted result documents: one error type that names the key, and typed getters that raise it."""

from __future__ import annotations

import math
from typing import Any, Mapping

from ..errors import LafError


def is_finite_number(x: Any) -> bool:
    """A real number a score may be: an int or float (never a bool), not NaN or infinite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class ResultsFormatError(LafError):
    """A results document (or part of one) that does not have the shape ``laf eval`` writes."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"results document: {where}: {problem}", "re-run the evaluation (`laf eval --out`) to rewrite it")


def as_mapping(d: Any, where: str) -> Mapping:
    """``d`` if it is a mapping, else an error naming ``where``."""
    if not isinstance(d, Mapping):
        raise ResultsFormatError(where, f"expected a mapping, got {type(d).__name__}")
    return d


def get_field(d: Mapping, key: str, where: str, kind: type | tuple[type, ...], default: Any = ..., optional: bool = False) -> Any:
    """``d[key]`` checked to be a ``kind`` (a bool is not a number); missing (or null where ``optional``) gives
    ``default``, and without a default is an error."""
    if key not in d or (d[key] is None and optional):
        if default is ...:
            raise ResultsFormatError(where, f"missing key '{key}'")
        return default
    v = d[key]
    if not isinstance(v, kind) or (kind in (int, float, (int, float)) and isinstance(v, bool)):
        raise ResultsFormatError(f"{where}.{key}", f"expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}")
    return v


def finite_number(d: Mapping, key: str, where: str) -> float | None:
    """An optional number that, when present, must be finite."""
    v = get_field(d, key, where, (int, float), None, optional=True)
    if v is not None and not math.isfinite(float(v)):
        raise ResultsFormatError(f"{where}.{key}", f"not a finite number ({v})")
    return v
