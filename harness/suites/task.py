"""What a suite type produces (:class:`TaskBuild`) and the pieces every type builds it from.

A suite type is a function ``(suite, docs) -> TaskBuild`` (see
:mod:`harness.suites.suite_types`); this module is all it needs at run time,
so the types import no suite loading and no registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError, LafError
from ..results import MetricMeta

if TYPE_CHECKING:
    from .spec import MetricOverride, Suite


@dataclass
class TaskBuild:
    """What a suite type produces: the lm-eval config and the metrics' meaning.

    ``breakdown`` names a document field (bias type, BBQ category) by which the
    engine also reports every metric per group. ``native`` is for the few probes
    lm-eval's task model cannot express (two generations per item): a function
    ``(lm, docs) -> lm-eval-style samples`` run by the engine through the same
    cached model.
    """

    config: dict
    metrics: dict[str, MetricMeta]
    primary: str
    breakdown: str | None = None
    native: Callable | None = None
    output_type: str | None = None


def meta_from_metric_list(metric_list: list[dict], overrides: dict[str, MetricOverride] | None = None) -> dict[str, MetricMeta]:
    """The meaning of each entry of an lm-eval ``metric_list`` (ours or a registered task's), with a suite file's
    corrections. An aggregation given as a function is ours when it carries ``laf_name`` (probe metrics), else
    lm-eval's mean."""
    out = {}
    for m in metric_list:
        agg = m.get("aggregation", "mean")
        agg = agg if isinstance(agg, str) else getattr(agg, "laf_name", "mean")
        out[m["metric"]] = MetricMeta(bool(m.get("higher_is_better", True)), m.get("ideal"), agg)
    for name, o in (overrides or {}).items():
        meta = out.get(name, MetricMeta())
        out[name] = MetricMeta(meta.higher_is_better if o.higher_is_better is None else o.higher_is_better,
                               meta.ideal if o.ideal is None else o.ideal, meta.aggregation, meta.scale)
    return out


def docs_dataset(suite: Suite, docs: list[dict]):
    """A ``custom_dataset`` callable for lm-eval: our already-loaded documents as one split, built now so
    a data problem (a field of mixed types) is an error naming the suite, not a traceback inside lm-eval."""
    import datasets

    try:
        ds = datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})
    except Exception as e:  # pyarrow's type errors
        raise LafError(
            f"suite {suite.name}: its items cannot form a table ({type(e).__name__}: {str(e).splitlines()[0]})",
            "give each field one type in every item (e.g. all strings), and keep the item shape the same",
        ) from None

    def make(**_kwargs):
        return ds

    return make


def check_num_fewshot(suite: Suite, n_docs: int) -> None:
    """Few-shot examples are drawn from the suite's other items: ``options.num_fewshot`` must leave one to score."""
    k = suite.spec.options.num_fewshot
    if k and k >= n_docs:
        raise ConfigError(suite.file or suite.name, "options.num_fewshot",
                          f"asks for {k:,} few-shot examples but the data holds {n_docs:,} items (examples are drawn from the other items)",
                          f"use at most {max(n_docs - 1, 0)} (num_fewshot must be smaller than the number of items), or add items")


def base_task_config(suite: Suite, docs: list[dict]) -> dict:
    check_num_fewshot(suite, len(docs))
    return {
        "task": suite.task_name,
        "custom_dataset": docs_dataset(suite, docs),
        "test_split": "test",
        "num_fewshot": suite.spec.options.num_fewshot,
        "metadata": {"version": 1.0},
    }


