"""The results layer: per-item records, the results store and the typed results document.

Torch-free by rule (tests/test_layers.py): ``laf eval`` writes through it; the
gate, the report, the statistics, the pipeline and the CLI read through it, so
a gate in CI or a report on a laptop needs no model stack.
"""

from .checks import ResultsFormatError
from .document import BASE, AdapterInfo, BaseModelInfo, ModelInfo, Provenance, ResultsDoc
from .format import fmt_change, fmt_value
from .metrics import PROPORTION_METRICS, MetricMeta, SuiteMeta, is_proportion
from .records import ItemRecord
from .refs import RunRef, parse_run_ref
from .store import INTEGRITY, RECORDS, RESULTS, STORE, ResultsStore, RunLock, commit_run, dumps_strict, load_results, load_run, seal_run, write_results

__all__ = [
    "BASE", "INTEGRITY", "PROPORTION_METRICS", "RECORDS", "RESULTS", "STORE", "AdapterInfo", "BaseModelInfo", "ItemRecord", "MetricMeta", "ModelInfo",
    "Provenance", "ResultsDoc", "ResultsFormatError", "ResultsStore", "RunLock", "RunRef", "SuiteMeta", "commit_run", "dumps_strict", "fmt_change", "fmt_value",
    "is_proportion", "load_results", "load_run", "parse_run_ref", "seal_run", "write_results",
]
