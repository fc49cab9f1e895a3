"""The ``perplexity`` suite type: general-text cross-entropy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LafError
from .task import TaskBuild, base_task_config, meta_from_metric_list

if TYPE_CHECKING:
    from .spec import Suite


def perplexity_type(suite: Suite, docs: list[dict]) -> TaskBuild:
    """General-text cross-entropy: lm-eval's rolling log-likelihood over each document's ``text``."""
    for i, d in enumerate(docs):
        text = d.get("text")
        if text is None:
            raise LafError(f"suite {suite.name}: item {i} has no 'text' field (a perplexity suite needs one in every item)", "rename the field to text")
        if not isinstance(text, str) or not text.strip():
            what = "is empty" if isinstance(text, str) else f"is a {type(text).__name__}, not text"
            raise LafError(f"suite {suite.name}: item {i}'s 'text' {what} (a perplexity score is per byte and word of text)",
                           "give every item some text, or remove that item")
    metric_list = [
        {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
        {"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
        {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
    ]
    cfg = {
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": metric_list,
        **base_task_config(suite, docs),
    }
    return TaskBuild(cfg, meta_from_metric_list(metric_list, suite.spec.metrics), suite.spec.primary_metric or "bits_per_byte")


