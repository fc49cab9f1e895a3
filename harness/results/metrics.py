"""What a suite's numbers mean: each metric's direction, ideal value, aggregation and range, and the suite's meta."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import LafError
from .checks import ResultsFormatError, as_mapping, finite_number, get_field

# metrics that are shares of items (shown in percent and points); anything else keeps its own units
PROPORTION_METRICS = frozenset({
    "acc", "acc_norm", "exact_match", "em", "f1", "mc1", "mc2", "pct_stereotype", "hallucination_rate", "abstention_rate", "answer_rate",
    "answer_accuracy", "accuracy_amb", "accuracy_disamb", "answer_changed", "pref_acc", "pref_acc_norm",
})


def is_proportion(metric: str, *values: float | None) -> bool:
    """Whether ``metric`` is a share of items and every given value lies in [0, 1] (shown in percent and points)."""
    return metric in PROPORTION_METRICS and all(v is None or (isinstance(v, (int, float)) and 0.0 <= v <= 1.0) for v in values)


@dataclass(frozen=True)
class MetricMeta:
    """What a metric's number means: which way is better, an ideal value, how items aggregate, its range."""

    higher_is_better: bool = True
    ideal: float | None = None  # e.g. 0.5 for pct_stereotype: the distance from it is what matters
    aggregation: str = "mean"
    scale: tuple[float, float] | None = None  # the range its values can take, where bounded

    @classmethod
    def from_dict(cls, d: Any, where: str = "metric") -> "MetricMeta":
        d = as_mapping(d, where)
        hib = get_field(d, "higher_is_better", where, bool, True, optional=True)
        agg = get_field(d, "aggregation", where, str, "mean", optional=True)
        from ..stats.aggregations import AGGREGATIONS

        if agg not in AGGREGATIONS:
            raise ResultsFormatError(f"{where}.aggregation", f"unknown aggregation '{agg}' (known: {', '.join(sorted(AGGREGATIONS))})")
        scale = get_field(d, "scale", where, (list, tuple), None, optional=True)
        if scale is not None and (len(scale) != 2 or not all(isinstance(x, (int, float)) for x in scale)):
            raise ResultsFormatError(f"{where}.scale", "expected [low, high]")
        return cls(hib, finite_number(d, "ideal", where), agg, None if scale is None else (float(scale[0]), float(scale[1])))

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
        d = as_mapping(d, where)
        metrics = as_mapping(get_field(d, "metrics", where, Mapping), f"{where}.metrics")
        primary = get_field(d, "primary_metric", where, str)
        return cls(
            name=get_field(d, "name", where, str, ""),
            category=get_field(d, "category", where, str),
            primary_metric=primary,
            metrics={str(k): MetricMeta.from_dict(v, f"{where}.metrics.{k}") for k, v in metrics.items()},
            type=get_field(d, "type", where, str, "lm_eval"),
            description=get_field(d, "description", where, str, "", optional=True),
            file=get_field(d, "file", where, str, None, optional=True),
            n_docs=get_field(d, "n_docs", where, int, 0, optional=True),
            data_sha256=get_field(d, "data_sha256", where, str, "", optional=True),
            source=get_field(d, "source", where, str, "", optional=True),
            output_type=get_field(d, "output_type", where, str, None, optional=True),
            num_fewshot=get_field(d, "num_fewshot", where, int, 0, optional=True),
            breakdown=get_field(d, "breakdown", where, str, None, optional=True),
            limit=get_field(d, "limit", where, int, None, optional=True),
            seed=get_field(d, "seed", where, int, None, optional=True),
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name, "category": self.category, "type": self.type, "description": self.description, "file": self.file,
            "n_docs": self.n_docs, "data_sha256": self.data_sha256, "source": self.source, "output_type": self.output_type,
            "num_fewshot": self.num_fewshot, "breakdown": self.breakdown, "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "primary_metric": self.primary_metric, "limit": self.limit, "seed": self.seed,
        }

    def fingerprint(self) -> str:
        """sha256 of what makes two runs of this suite the same measurement (its data, size, limit, seed, shots and
        metric meanings), without where its file lay or its description: the release history pairs versions on it."""
        from ..io import sha256_json

        return sha256_json({k: v for k, v in self.to_dict().items() if k not in ("file", "description")})

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
