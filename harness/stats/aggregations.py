"""How a metric's per-item values become the suite's number, in a form the bootstrap can vectorise.

An aggregation turns per-item values into a matrix ``X`` (items x k columns)
and the k column *sums* of any resample into the aggregate. ``mean`` is one
column; ratio metrics (bits per byte, perplexity) keep numerator and
denominator columns so a resample recomputes the ratio, as lm-eval does
over the full set. Probe metrics register their own (``harness.probes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Aggregation:
    name: str
    columns: Callable[[list], np.ndarray]  # per-item values -> (n, k)
    finish: Callable[[np.ndarray, int], np.ndarray]  # column sums (..., k), n -> aggregate (...)
    binary: bool = False  # per-item values are 0/1: McNemar applies


AGGREGATIONS: dict[str, Aggregation] = {}


def register(agg: Aggregation) -> Aggregation:
    AGGREGATIONS[agg.name] = agg
    return agg


def _scalar_cols(values: list) -> np.ndarray:
    return np.asarray([[float(v)] for v in values], dtype=np.float64)


def _pair_cols(values: list) -> np.ndarray:
    return np.asarray([[float(v[0]), float(v[1])] for v in values], dtype=np.float64)


register(Aggregation("mean", _scalar_cols, lambda s, n: s[..., 0] / n))
register(Aggregation("bits_per_byte", _pair_cols, lambda s, n: -s[..., 0] / s[..., 1] / math.log(2)))
register(Aggregation("weighted_perplexity", _pair_cols, lambda s, n: np.exp(-s[..., 0] / s[..., 1])))


def get(name: str) -> Aggregation:
    if name not in AGGREGATIONS:
        import importlib

        importlib.import_module("harness.probes")  # probe aggregations register on import
    if name not in AGGREGATIONS:
        raise KeyError(name)
    return AGGREGATIONS[name]


def is_binary(values: np.ndarray) -> bool:
    return values.shape[1] == 1 and bool(np.all((values == 0) | (values == 1)))
