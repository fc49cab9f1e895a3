"""What a merged adapter's manifest says about its own accuracy, read and checked without a model stack.

``laf merge`` records, for an adapter output, whether it is exact (rank = sum
of the parents' ranks) and the relative error ``||dW_hat - dW|| / ||dW||`` of
the stored factors against the method's update, per module. Everything that
shows a merged candidate (evaluation provenance, the gate's verdict, compare,
the report) reads it through :func:`merge_summary`, so the same figure is
shown everywhere, and a manifest whose claim does not hold (exact, but with an
error; non-finite or negative errors) is one clear error instead of a number
that means something else. Manifests written before ``approximate`` and
``overall`` were recorded stay readable.
"""

from __future__ import annotations

import math

from ..errors import LafError

# Kept equal to harness.merge.methods.EXACT_TOLERANCE and harness.merge.config.APPROXIMATE_MERGE (tested); this
# module must not import the merge package (it loads torch).
EXACT_TOLERANCE = 1e-5
APPROXIMATE_MERGE = 0.05


def _number(label: str, key: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise LafError(f"adapter {label}: its manifest records a merge relative error {key} of {v!r}, not a finite number >= 0",
                       f"re-run the merge that made {label} (`laf merge`); the registered copy is not what laf merge writes")
    return float(v)


def merge_summary(manifest: dict | None, label: str) -> dict | None:
    """``{method, exact, rank, relative_error_max, relative_error_mean, relative_error_overall, approximate}`` for a
    merged adapter output; ``None`` for anything else (a trained adapter, no manifest)."""
    if not isinstance(manifest, dict) or manifest.get("kind") != "merge":
        return None
    lineage = manifest.get("lineage")
    if not isinstance(lineage, dict):
        return None
    out = lineage.get("output")
    if not isinstance(out, dict) or out.get("kind") != "adapter":
        return None
    err = out.get("relative_error")
    if not isinstance(err, dict) or "max" not in err:
        raise LafError(f"adapter {label}: its manifest says it is a merged adapter but records no relative error",
                       f"re-run the merge that made {label} with this version of laf")
    worst = _number(label, "max", err["max"])
    mean = _number(label, "mean", err.get("mean", worst))
    overall = _number(label, "overall", err["overall"]) if "overall" in err else None
    exact = out.get("exact")
    if not isinstance(exact, bool):
        raise LafError(f"adapter {label}: its manifest's lineage.output.exact is {exact!r}, not true or false", f"re-run the merge that made {label}")
    if exact and worst > EXACT_TOLERANCE:
        per_module = err.get("per_module")
        per: dict = per_module if isinstance(per_module, dict) else {}
        bad = sorted((k for k, v in per.items() if isinstance(v, (int, float)) and v > EXACT_TOLERANCE), key=str)[:5]
        raise LafError(
            f"adapter {label}: its manifest claims an exact merge but records a relative error of {worst:.3g} "
            f"(exact means at most {EXACT_TOLERANCE:g}){'; modules: ' + ', '.join(bad) if bad else ''}",
            f"do not trust {label} as exact: re-run the merge (`laf merge`, output.rank: exact), or register it as a truncated merge")
    return {
        "method": lineage.get("method"),
        "exact": exact,
        "rank": out.get("rank"),
        "relative_error_max": worst,
        "relative_error_mean": mean,
        "relative_error_overall": overall,
        "approximate": worst > APPROXIMATE_MERGE,
    }


def merge_label(summary: dict | None) -> str:
    """A short tag for beside a candidate's name: '' for anything not merged."""
    if not summary:
        return ""
    if summary["exact"]:
        return f"exact {summary['method']} merge"
    tag = "approximate merge" if summary["approximate"] else "truncated merge"
    return f"{tag}: {summary['method']} rank {summary['rank']}, rel. error max {summary['relative_error_max']:.3g}, mean {summary['relative_error_mean']:.3g}"
