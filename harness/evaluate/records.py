"""lm-eval's logged samples -> per-item records (:class:`harness.results.ItemRecord`)."""

from __future__ import annotations

import math
from typing import Any

from ..results import ItemRecord


def _plain(v):
    """JSON-safe values (tuples of numpy scalars from lm-eval's process_results, NaN)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, TypeError):
            v = v.tolist()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def from_lm_eval_sample(sample: dict, *, model: str, suite: str, category: str, output_type: str) -> ItemRecord:
    args = sample["arguments"]
    filtered = sample.get("filtered_resps")
    metrics = {m: _plain(sample[m]) for m in sample.get("metrics", []) if m in sample}
    choices = lls = greedy = generation = None
    prediction: Any = None
    if output_type == "multiple_choice":
        contexts = [a[0] for a in args]
        prompt: str | list[str] = contexts[0] if len(set(contexts)) == 1 else contexts
        choices = [a[1] for a in args]
        lls = [float(r[0]) for r in filtered]
        greedy = [bool(r[1]) for r in filtered]
        prediction = max(range(len(lls)), key=lls.__getitem__)
    elif output_type == "generate_until":
        prompt = args[0][0] if len(args) == 1 else [a[0] for a in args]
        generation = filtered[0] if isinstance(filtered, list) and len(args) == 1 else filtered
        if isinstance(generation, (list, tuple)):  # several samples (self-consistency) or several prompts (counterfactual)
            generation = "\n---\n".join(str(g) for g in generation)
        prediction = generation
    elif output_type == "loglikelihood_rolling":
        prompt = args[0][0]
        lls = [float(filtered[0])] if isinstance(filtered, list) else [float(filtered)]
    else:  # loglikelihood
        prompt = args[0][0]
        lls = [float(r[0]) for r in filtered]
        greedy = [bool(r[1]) for r in filtered]
    return ItemRecord(
        model=model,
        suite=suite,
        category=category,
        doc_id=int(sample["doc_id"]),
        doc_hash=sample["doc_hash"],
        prompt_hash=sample.get("prompt_hash", ""),
        prompt=prompt,
        choices=choices,
        target=_plain(sample.get("target")),
        loglikelihoods=lls,
        is_greedy=greedy,
        generation=generation,
        prediction=_plain(prediction),
        metrics=metrics,
        doc=_plain(sample.get("doc") or {}),
    )


def _nonfinite(v) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if hasattr(v, "item") and callable(v.item) and getattr(v, "size", 1) == 1:
        try:
            return _nonfinite(float(v.item()))
        except (TypeError, ValueError):
            return False
    if isinstance(v, dict):
        return any(_nonfinite(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_nonfinite(x) for x in v)
    return False


def nonfinite_items(samples: list[dict]) -> list[int]:
    """Doc ids of the samples whose scores (responses or per-item metrics) hold NaN or infinity: a model that
    produces them has no valid score, and all-NaN log-likelihoods would otherwise "pick" choice 0."""
    out = []
    for s in samples:
        values = [s.get("filtered_resps"), s.get("resps")] + [s.get(m) for m in s.get("metrics", [])]
        if any(_nonfinite(v) for v in values):
            out.append(int(s.get("doc_id", -1)))
    return out
