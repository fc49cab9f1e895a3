"""The evaluation engine: suites, our lm-eval model with a content-keyed cache, per-item records."""

from ..results import ItemRecord, load_run
from .engine import BASE, run_eval
from .spec import EvalSpec
from .suites import Suite, available_suites, load_suite

__all__ = ["BASE", "EvalSpec", "ItemRecord", "Suite", "available_suites", "load_run", "load_suite", "run_eval"]
