"""The evaluation engine: suites, our lm-eval model with a content-keyed cache, per-item records."""

from .engine import BASE, EvalSpec, run_eval
from .records import ItemRecord
from .store import load_run
from .suites import Suite, available_suites, load_suite

__all__ = ["BASE", "EvalSpec", "ItemRecord", "Suite", "available_suites", "load_run", "load_suite", "run_eval"]
