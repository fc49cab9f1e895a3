"""Suites: what is measured. The suite spec and its discovery, the data sources, the sandboxed templates, and
the suite types that turn a suite's documents into an lm-eval task (``lm_eval``, ``perplexity``, ``freeform``,
the hallucination, bias and preference probes). :mod:`harness.evaluate` is the engine that runs them.

The API of a suite type of another package (entry-point group ``lost_and_found.suite_types``) is
:class:`Suite`, :class:`TaskBuild`, :func:`base_task_config`, :func:`meta_from_metric_list` and the built-in
types :func:`lm_eval_type` and :func:`perplexity_type`; ``harness.evaluate.suites`` stays as an alias of it.
"""

from .discovery import available_suites, load_suite, load_suite_file, suite_origin
from .lm_eval import lm_eval_type
from .perplexity import perplexity_type
from .spec import Suite, SuiteSpec
from .task import TaskBuild, base_task_config, meta_from_metric_list

__all__ = ["Suite", "SuiteSpec", "TaskBuild", "available_suites", "base_task_config", "lm_eval_type", "load_suite",
           "load_suite_file", "meta_from_metric_list", "perplexity_type", "suite_origin"]
