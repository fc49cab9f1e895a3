"""The suite types: one declarative table, each type's function imported only when a suite of that type is used.

A suite type turns a suite's documents into an lm-eval task config and the
meaning of its metrics (:class:`~harness.suites.task.TaskBuild`). Each row
names the function as ``"module:function"``, the category a ``TYPE:PATH`` suite
reference gets, and the data format its published files come in.

Other packages add types through the entry-point group ``lost_and_found.suite_types``
(name = the type, value = ``"module:function"``)::

    [project.entry-points."lost_and_found.suite_types"]
    toxicity = "my_probes.toxicity:toxicity_type"

The function may carry ``category`` and ``data_format`` attributes to be usable
as ``toxicity:PATH``. A built-in name always wins over an entry point.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError, LafError

if TYPE_CHECKING:
    from .spec import Suite
    from .task import TaskBuild

ENTRY_POINT_GROUP = "lost_and_found.suite_types"
SuiteTypeFn = Callable[["Suite", list[dict]], "TaskBuild"]


@dataclass(frozen=True)
class SuiteType:
    name: str
    target: str  # "module:function"
    category: str | None = None  # category of a TYPE:PATH reference; None: the type needs a suite file
    data_format: str = "plain"  # how its published data files are normalised (harness.suites.sources)

    def load(self) -> SuiteTypeFn:
        module, _, attr = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise LafError(f"suite type '{self.name}': cannot load {self.target} ({type(e).__name__}: {e})",
                           "install the package that provides it, or fix its entry point") from e


BUILTIN: dict[str, SuiteType] = {t.name: t for t in (
    SuiteType("lm_eval", "harness.suites.lm_eval:lm_eval_type"),
    SuiteType("perplexity", "harness.suites.perplexity:perplexity_type"),
    SuiteType("freeform", "harness.suites.freeform:freeform", "domain"),  # generated answers vs references, harness.metrics
    SuiteType("truthfulqa_mc", "harness.suites.hallucination:truthfulqa_mc", "hallucination", "truthfulqa_mc_json"),
    SuiteType("abstention_mc", "harness.suites.hallucination:abstention_mc", "hallucination"),
    SuiteType("abstention_gen", "harness.suites.hallucination:abstention_gen", "hallucination"),
    SuiteType("factqa", "harness.suites.hallucination:factqa", "hallucination"),
    SuiteType("crows_pairs", "harness.suites.bias:crows_pairs", "bias", "crows_csv"),
    SuiteType("bbq", "harness.suites.bias:bbq", "bias"),
    SuiteType("counterfactual", "harness.suites.bias:counterfactual", "bias"),
    SuiteType("counterfactual_gen", "harness.suites.bias:counterfactual_gen", "bias"),
    SuiteType("preference", "harness.suites.preference:preference", "domain"),
)}


@lru_cache(maxsize=1)
def _plugins() -> dict[str, SuiteType]:
    out = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            continue
        try:
            fn = ep.load()
        except Exception as e:  # a broken plugin must not break the built-in types
            raise LafError(f"suite type '{ep.name}' from entry point {ep.value} failed to load ({type(e).__name__}: {e})",
                           "fix or uninstall the package that declares it") from e
        out[ep.name] = SuiteType(ep.name, ep.value, getattr(fn, "category", None), getattr(fn, "data_format", "plain"))
    return out


def all_types() -> dict[str, SuiteType]:
    """Every known type: the built-ins, then the entry points'."""
    return {**BUILTIN, **_plugins()}


def find(name: str) -> SuiteType | None:
    """The type called ``name`` (entry points are read only for a name that is not built in)."""
    return BUILTIN.get(name) or _plugins().get(name)


def path_types() -> dict[str, SuiteType]:
    """Types that run on a data file given as ``TYPE:PATH``."""
    return {n: t for n, t in all_types().items() if t.category}


def require(name: str, where) -> SuiteType:
    """The type called ``name``; an unknown name is a config error at ``where``'s ``type`` key."""
    t = find(name)
    if t is None:
        raise ConfigError(where, "type", f"unknown suite type '{name}'", f"use one of: {', '.join(sorted(all_types()))}")
    return t
