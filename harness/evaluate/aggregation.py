"""Per-item metric values -> a suite's numbers: lm-eval's aggregates, our native suites' and per-group breakdowns."""

from __future__ import annotations

import math

from ..results import ItemRecord, MetricMeta
from ..stats import get_aggregation


def native_aggregates(samples: list[dict], metrics: dict[str, MetricMeta]) -> dict:
    """lm-eval-style 'metric,none' aggregates for natively run suites, with the mean's standard error."""
    out = {}
    for name, meta in metrics.items():
        values = [s[name] for s in samples if name in s]
        if not values:
            continue
        agg = get_aggregation(meta.aggregation)
        x = agg.columns(values)
        out[f"{name},none"] = float(agg.finish(x.sum(axis=0), len(values)))
        if agg.name == "mean" and len(values) > 1:
            mean = x[:, 0].mean()
            out[f"{name}_stderr,none"] = float(math.sqrt(((x[:, 0] - mean) ** 2).sum() / (len(values) - 1) / len(values)))
    return out


def breakdown(records: list[ItemRecord], field: str, metrics: dict[str, MetricMeta]) -> dict:
    """Every metric per value of a document field (bias type, BBQ category)."""
    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(str(r.doc.get(field)), []).append(r)
    out = {}
    for g, recs in sorted(groups.items()):
        out[g] = {"n": len(recs)}
        for name, meta in metrics.items():
            values = [r.metrics[name] for r in recs if r.metrics.get(name) is not None]
            if not values:
                continue
            agg = get_aggregation(meta.aggregation)
            try:
                v = float(agg.finish(agg.columns(values).sum(axis=0), len(values)))
            except (ValueError, TypeError, ZeroDivisionError):
                continue
            out[g][name] = None if v != v else v
    return out


def _finite(value):
    """A number, or None where lm-eval gives none or an undefined one (the stderr of one item is NaN)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def suite_aggregates(agg: dict, n: int) -> dict:
    """lm-eval's ``{'acc,none': v, 'acc_stderr,none': se}`` -> ``{acc: {value, filter, stderr, n}}``."""
    out: dict[str, dict] = {}
    for key, value in agg.items():
        if "," not in key:
            continue
        metric, filt = key.split(",", 1)
        if metric.endswith("_stderr"):
            out.setdefault(metric[: -len("_stderr")], {})["stderr"] = _finite(value)
        else:
            out.setdefault(metric, {})["value"] = _finite(value)
            out[metric]["filter"] = filt
    for v in out.values():
        v["n"] = n
    return out
