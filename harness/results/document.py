"""Typed models of ``results.json``: suites, metric meanings, provenance, model identities.

``laf eval`` builds a :class:`ResultsDoc` and writes ``to_dict()``; the gate,
the report, the pipeline and the CLI read it back with :meth:`ResultsDoc.from_dict`
and use attributes (``meta.aggregation``, ``suite.primary``) instead of
string-keyed lookups with defaults scattered over every reader. The file is
untrusted input: a document that does not have the expected shape is one
:class:`~harness.errors.LafError` naming the key, never a ``KeyError`` later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import LafError

SCHEMA = "laf.results/1"
BASE = "base"

# metrics that are shares of items (shown in percent and points); anything else keeps its own units
PROPORTION_METRICS = frozenset({
    "acc", "acc_norm", "exact_match", "em", "f1", "mc1", "mc2", "pct_stereotype", "hallucination_rate", "abstention_rate", "answer_rate",
    "answer_accuracy", "accuracy_amb", "accuracy_disamb", "answer_changed",
})


class ResultsFormatError(LafError):
    """A results document (or part of one) that does not have the shape ``laf eval`` writes."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"results document: {where}: {problem}", "re-run the evaluation (`laf eval --out`) to rewrite it")


def _mapping(d: Any, where: str) -> Mapping:
    if not isinstance(d, Mapping):
        raise ResultsFormatError(where, f"expected a mapping, got {type(d).__name__}")
    return d


def _get(d: Mapping, key: str, where: str, kind: type | tuple[type, ...], default: Any = ..., optional: bool = False) -> Any:
    if key not in d or (d[key] is None and optional):
        if default is ...:
            raise ResultsFormatError(where, f"missing key '{key}'")
        return default
    v = d[key]
    if v is None and optional:
        return None
    if not isinstance(v, kind) or (kind in (int, float, (int, float)) and isinstance(v, bool)):
        raise ResultsFormatError(f"{where}.{key}", f"expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}")
    return v


def _number(d: Mapping, key: str, where: str) -> float | None:
    v = _get(d, key, where, (int, float), None, optional=True)
    if v is not None and not math.isfinite(float(v)):
        raise ResultsFormatError(f"{where}.{key}", f"not a finite number ({v})")
    return v


def is_proportion(metric: str, *values: float | None) -> bool:
    """Whether ``metric`` is a share of items and every given value lies in [0, 1] (shown in percent and points)."""
    return metric in PROPORTION_METRICS and all(v is None or 0.0 <= v <= 1.0 for v in values)


@dataclass(frozen=True)
class MetricMeta:
    """What a metric's number means: which way is better, an ideal value, how items aggregate, its range."""

    higher_is_better: bool = True
    ideal: float | None = None  # e.g. 0.5 for pct_stereotype: the distance from it is what matters
    aggregation: str = "mean"
    scale: tuple[float, float] | None = None  # the range its values can take, where bounded

    @classmethod
    def from_dict(cls, d: Any, where: str = "metric") -> "MetricMeta":
        d = _mapping(d, where)
        hib = _get(d, "higher_is_better", where, bool, True, optional=True)
        agg = _get(d, "aggregation", where, str, "mean", optional=True)
        from ..stats.aggregations import AGGREGATIONS

        if agg not in AGGREGATIONS:
            raise ResultsFormatError(f"{where}.aggregation", f"unknown aggregation '{agg}' (known: {', '.join(sorted(AGGREGATIONS))})")
        scale = _get(d, "scale", where, (list, tuple), None, optional=True)
        if scale is not None and (len(scale) != 2 or not all(isinstance(x, (int, float)) for x in scale)):
            raise ResultsFormatError(f"{where}.scale", "expected [low, high]")
        return cls(hib, _number(d, "ideal", where), agg, None if scale is None else (float(scale[0]), float(scale[1])))

    def to_dict(self) -> dict:
        out: dict = {"higher_is_better": self.higher_is_better, "ideal": self.ideal, "aggregation": self.aggregation}
        if self.scale is not None:
            out["scale"] = list(self.scale)
        return out

    @property
    def is_mean(self) -> bool:
        return self.aggregation == "mean"

    @property
    def sign(self) -> float:
        """+1 where higher is better, -1 where lower is (orients values so that larger is better)."""
        return 1.0 if self.higher_is_better else -1.0

    def direction(self) -> str:
        if self.ideal is not None:
            return f"ideal {self.ideal:g}"
        return "higher is better" if self.higher_is_better else "lower is better"

    def better(self, candidate: float, base: float) -> bool:
        """Whether ``candidate`` is better than ``base`` under this metric's direction or ideal value."""
        if self.ideal is not None:
            return abs(candidate - self.ideal) < abs(base - self.ideal)
        return candidate > base if self.higher_is_better else candidate < base


@dataclass(frozen=True)
class SuiteMeta:
    """One evaluated suite: where its items came from and what its metrics mean."""

    name: str
    category: str
    primary_metric: str
    metrics: dict[str, MetricMeta]
    type: str = "lm_eval"
    description: str = ""
    file: str | None = None
    n_docs: int = 0
    data_sha256: str = ""
    source: str = ""
    output_type: str | None = None
    num_fewshot: int = 0
    breakdown: str | None = None
    limit: int | None = None
    seed: int | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "suite") -> "SuiteMeta":
        d = _mapping(d, where)
        metrics = _mapping(_get(d, "metrics", where, Mapping), f"{where}.metrics")
        primary = _get(d, "primary_metric", where, str)
        return cls(
            name=_get(d, "name", where, str, ""),
            category=_get(d, "category", where, str),
            primary_metric=primary,
            metrics={str(k): MetricMeta.from_dict(v, f"{where}.metrics.{k}") for k, v in metrics.items()},
            type=_get(d, "type", where, str, "lm_eval"),
            description=_get(d, "description", where, str, "", optional=True),
            file=_get(d, "file", where, str, None, optional=True),
            n_docs=_get(d, "n_docs", where, int, 0, optional=True),
            data_sha256=_get(d, "data_sha256", where, str, "", optional=True),
            source=_get(d, "source", where, str, "", optional=True),
            output_type=_get(d, "output_type", where, str, None, optional=True),
            num_fewshot=_get(d, "num_fewshot", where, int, 0, optional=True),
            breakdown=_get(d, "breakdown", where, str, None, optional=True),
            limit=_get(d, "limit", where, int, None, optional=True),
            seed=_get(d, "seed", where, int, None, optional=True),
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name, "category": self.category, "type": self.type, "description": self.description, "file": self.file,
            "n_docs": self.n_docs, "data_sha256": self.data_sha256, "source": self.source, "output_type": self.output_type,
            "num_fewshot": self.num_fewshot, "breakdown": self.breakdown, "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "primary_metric": self.primary_metric, "limit": self.limit, "seed": self.seed,
        }

    @property
    def primary(self) -> MetricMeta:
        return self.metric(None)[1]

    def metric(self, name: str | None) -> tuple[str, MetricMeta]:
        """``name`` (default: the primary metric) and its meaning; an unknown name is an error naming the suite's metrics."""
        name = name or self.primary_metric
        if name not in self.metrics:
            raise LafError(f"suite {self.name} has no metric '{name}' (it has {', '.join(self.metrics)})", "fix the policy's metric")
        return name, self.metrics[name]

    @property
    def poolable(self) -> bool:
        """Whether the primary metric can be pooled with others of its category: a per-item share (0/1 or 0..1, averaged)
        with a plain direction. Continuous metrics (log-likelihood gaps, bits per byte) keep their own units and
        ideal-value metrics their own orientation, so pooling them would mix scales."""
        m = self.metrics.get(self.primary_metric)
        return m is not None and self.primary_metric in PROPORTION_METRICS and m.is_mean and m.ideal is None


@dataclass(frozen=True)
class BaseModelInfo:
    spec: str
    fingerprint: str
    kind: str = ""
    source: str = ""

    @classmethod
    def from_dict(cls, d: Any, where: str = "provenance.base_model") -> "BaseModelInfo":
        d = _mapping(d, where)
        return cls(_get(d, "spec", where, str, ""), _get(d, "fingerprint", where, str),
                   _get(d, "kind", where, str, "", optional=True), _get(d, "source", where, str, "", optional=True))

    def to_dict(self) -> dict:
        return {"spec": self.spec, "kind": self.kind, "source": self.source, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Provenance:
    """How the run was scored (what two runs must share to be paired) and where it ran."""

    base_model: BaseModelInfo
    load: dict  # precision, compute_dtype, device
    batch_size: int
    max_length: int
    scoring_version: str | None = None
    share_context: bool | None = None
    cache: str | None = None
    wall_time_s: float | None = None
    environment: dict = field(default_factory=dict)  # time, command, packages, machine (harness.env.provenance)

    _OWN = ("base_model", "load", "batch_size", "max_length", "share_context", "scoring_version", "cache", "wall_time_s")

    @classmethod
    def from_dict(cls, d: Any, where: str = "provenance") -> "Provenance":
        d = _mapping(d, where)
        load = dict(_mapping(_get(d, "load", where, Mapping), f"{where}.load"))
        _get(load, "precision", f"{where}.load", str)
        return cls(
            base_model=BaseModelInfo.from_dict(_get(d, "base_model", where, Mapping)),
            load=load,
            batch_size=_get(d, "batch_size", where, int),
            max_length=_get(d, "max_length", where, int),
            scoring_version=_get(d, "scoring_version", where, str, None, optional=True),
            share_context=_get(d, "share_context", where, bool, None, optional=True),
            cache=_get(d, "cache", where, str, None, optional=True),
            wall_time_s=_number(d, "wall_time_s", where),
            environment={k: v for k, v in d.items() if k not in cls._OWN},
        )

    def to_dict(self) -> dict:
        return {**self.environment, "base_model": self.base_model.to_dict(), "load": self.load, "batch_size": self.batch_size,
                "max_length": self.max_length, "share_context": self.share_context, "scoring_version": self.scoring_version,
                "cache": self.cache, "wall_time_s": self.wall_time_s}

    def comparable(self) -> dict:
        """What two runs must share for their items to be paired."""
        return {
            "base_fingerprint": self.base_model.fingerprint,
            "precision": self.load.get("precision"),
            "compute_dtype": self.load.get("compute_dtype"),
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "scoring_version": self.scoring_version,
        }


@dataclass(frozen=True)
class AdapterInfo:
    ref: str
    path: str | None = None
    weights_sha256: str | None = None
    trained_on: str | None = None  # the base fingerprint in its manifest
    forced_base_mismatch: bool = False
    manifest: dict | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "adapter") -> "AdapterInfo":
        d = _mapping(d, where)
        return cls(_get(d, "ref", where, str), _get(d, "path", where, str, None, optional=True),
                   _get(d, "weights_sha256", where, str, None, optional=True), _get(d, "trained_on", where, str, None, optional=True),
                   _get(d, "forced_base_mismatch", where, bool, False, optional=True), _get(d, "manifest", where, Mapping, None, optional=True))

    def to_dict(self, with_manifest: bool = True) -> dict:
        out = {"ref": self.ref, "path": self.path, "weights_sha256": self.weights_sha256, "trained_on": self.trained_on,
               "forced_base_mismatch": self.forced_base_mismatch}
        if with_manifest:
            out["manifest"] = self.manifest
        return out


@dataclass(frozen=True)
class ModelInfo:
    """One scored model: the base, or an adapter on it, with the identity its cached responses are keyed on."""

    kind: str  # base | adapter
    identity: str
    adapter: AdapterInfo | None = None
    requests: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str = "model") -> "ModelInfo":
        d = _mapping(d, where)
        a = _get(d, "adapter", where, Mapping, None, optional=True)
        return cls(_get(d, "kind", where, str), _get(d, "identity", where, str, ""), None if a is None else AdapterInfo.from_dict(a, f"{where}.adapter"),
                   dict(_get(d, "requests", where, Mapping, {}, optional=True)))

    def to_dict(self, with_manifest: bool = True) -> dict:
        return {"kind": self.kind, "identity": self.identity, "adapter": None if self.adapter is None else self.adapter.to_dict(with_manifest),
                "requests": self.requests}


@dataclass(frozen=True)
class ResultsDoc:
    """``results.json``: every model's aggregates per suite and metric, with the suites' meaning and the provenance."""

    provenance: Provenance
    models: dict[str, ModelInfo]
    suites: dict[str, SuiteMeta]
    results: dict[str, dict[str, dict[str, dict]]]  # model -> suite -> metric -> {value, stderr, n, filter}
    breakdowns: dict = field(default_factory=dict)  # model -> suite -> {field, groups}
    spec: dict | None = None  # the evaluation's settings (EvalSpec)
    out: str | None = None
    schema: str = SCHEMA

    @classmethod
    def from_dict(cls, d: Any, where: str = "results.json") -> "ResultsDoc":
        d = _mapping(d, where)
        schema = _get(d, "schema", where, str, SCHEMA)
        if schema != SCHEMA:
            raise ResultsFormatError(where, f"schema '{schema}' is not {SCHEMA}")
        models = _mapping(_get(d, "models", where, Mapping), f"{where}.models")
        if not models:
            raise ResultsFormatError(f"{where}.models", "no models")
        suites = _mapping(_get(d, "suites", where, Mapping), f"{where}.suites")
        results = _mapping(_get(d, "results", where, Mapping), f"{where}.results")
        return cls(
            provenance=Provenance.from_dict(_get(d, "provenance", where, Mapping)),
            models={str(k): ModelInfo.from_dict(v, f"{where}.models.{k}") for k, v in models.items()},
            suites={str(k): SuiteMeta.from_dict(v, f"{where}.suites.{k}") for k, v in suites.items()},
            results={str(m): {str(s): dict(_mapping(mv, f"{where}.results.{m}.{s}")) for s, mv in _mapping(v, f"{where}.results.{m}").items()}
                     for m, v in results.items()},
            breakdowns=dict(_get(d, "breakdowns", where, Mapping, {}, optional=True)),
            spec=_get(d, "spec", where, Mapping, None, optional=True),
            out=_get(d, "out", where, str, None, optional=True),
            schema=schema,
        )

    def to_dict(self) -> dict:
        return {
            "schema": self.schema,
            "out": self.out,
            "spec": self.spec,
            "provenance": self.provenance.to_dict(),
            "models": {k: m.to_dict() for k, m in self.models.items()},
            "suites": {k: s.to_dict() for k, s in self.suites.items()},
            "results": self.results,
            "breakdowns": self.breakdowns,
        }

    @property
    def adapters(self) -> list[str]:
        return [m for m in self.models if m != BASE]

    def value(self, model: str, suite: str, metric: str) -> float | None:
        """A model's aggregate of one metric on one suite (None where it is undefined)."""
        return (self.results.get(model, {}).get(suite, {}).get(metric) or {}).get("value")
