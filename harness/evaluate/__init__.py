"""The evaluation engine (suites live in :mod:`harness.suites`): our lm-eval model with a content-keyed cache, per-item records."""

from ..results import ItemRecord, load_run
from ..suites import Suite, available_suites, load_suite
from .engine import BASE, run_eval
from .spec import EvalSpec

__all__ = ["BASE", "EvalSpec", "ItemRecord", "Suite", "available_suites", "load_run", "load_suite", "run_eval"]
