"""Alias of the suite-type plugin API, kept for suite types written before suites moved to :mod:`harness.suites`.

A package that registers a type through the entry-point group ``lost_and_found.suite_types`` may import
these names from here or (preferred) from :mod:`harness.suites`; they are the same objects.
"""

from ..suites import Suite, TaskBuild, base_task_config, lm_eval_type, meta_from_metric_list, perplexity_type

__all__ = ["Suite", "TaskBuild", "base_task_config", "lm_eval_type", "meta_from_metric_list", "perplexity_type"]
