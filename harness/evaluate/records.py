"""Per-item records: what each model did on each item of each suite.

Every later stage (paired statistics, the gate, the report's drill-down)
reads these, matched across models by (suite, doc_hash).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
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
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ItemRecord":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


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
