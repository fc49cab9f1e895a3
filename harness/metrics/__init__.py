"""Answer metrics shipped as Hugging Face ``evaluate`` metric scripts, loadable offline.

Each metric is a standalone ``evaluate`` script in this package
(``harness/metrics/<name>/<name>.py``), so the numbers the ``freeform`` suite
type records are the numbers anyone gets from the same module in a notebook::

    import evaluate, harness.metrics
    f1 = evaluate.load(harness.metrics.path("token_f1"))   # no hub access, works with HF_EVALUATE_OFFLINE=1
    f1.compute(predictions=["relay stuck open"], references=[["Boiler relay stuck open."]])

``evaluate.load("token_f1")`` by name would go to the hub (and fails offline);
a path never does. Importing this module does not import ``evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import LafError

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class MetricInfo:
    name: str
    scale: tuple[float, float]  # the range of one item's value
    summary: str
    needs: str | None = None  # the package the script imports besides evaluate/datasets


METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("exact_match", (0.0, 1.0), "SQuAD-normalised exact match against any reference"),
    MetricInfo("token_f1", (0.0, 1.0), "SQuAD token F1, best reference"),
    MetricInfo("rouge_l", (0.0, 1.0), "ROUGE-L F-measure (rouge_score), best reference", "rouge_score"),
    MetricInfo("chrf", (0.0, 100.0), "sentence chrF (sacrebleu), best reference", "sacrebleu"),
)}


def names() -> list[str]:
    """The metrics shipped here."""
    return list(METRICS)


def path(name: str) -> str:
    """The folder of a shipped metric script, for ``evaluate.load(path)``."""
    if name not in METRICS:
        raise LafError(f"no shipped metric called '{name}'", f"use one of: {', '.join(METRICS)}")
    return str(HERE / name)


@lru_cache(maxsize=None)
def load(name: str):
    """The ``evaluate`` module of a shipped metric (kept in memory: no cache files, no locks), loaded once."""
    where = path(name)
    info = METRICS[name]
    try:
        import evaluate
    except ImportError as e:
        raise LafError("the answer metrics need Hugging Face evaluate", "pip install evaluate") from e
    try:
        return evaluate.load(where, keep_in_memory=True)
    except ImportError as e:  # evaluate reports a script's missing imports as ImportError
        raise LafError(f"metric '{name}' cannot load: {e}", f"pip install {info.needs}" if info.needs else "reinstall lost-and-found") from e
