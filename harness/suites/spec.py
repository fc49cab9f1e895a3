"""The suite spec: what a suite file says (validated, errors name the file and the key) and a loaded suite.

A suite is a YAML file (found by name under the suite folders, see
:mod:`harness.suites.discovery`, or by path) or a registered lm-eval task
(``lm_eval:<task>``). Its *type* (:mod:`harness.suites.suite_types`) turns its
documents into an lm-eval task config and the meaning of its metrics
(:class:`harness.suites.task.TaskBuild`). Everything is validated before any
model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..config import StrictModel, resolve_path
from ..errors import ConfigError, LafError
from ..io import NAME_RULE, check_name, sha256_json
from . import suite_types
from .sources import SourceContext, load_hub, normalize, read_records
from .task import TaskBuild


class SourceSpec(StrictModel):
    path: str
    format: str = "plain"
    name: str | None = None  # hub config name
    split: str | None = None
    labels: str | None = None  # extra file some formats need (PIQA)


class DataSpec(StrictModel):
    path: str | None = None  # project data, relative to the suite file
    format: str = "plain"
    local: SourceSpec | None = None  # a local copy, under --data-dir / LAF_DATA_DIR or the suite folder
    hub: SourceSpec | None = None


class SuiteOptions(StrictModel):
    limit: int | None = Field(None, gt=0)
    num_fewshot: int = Field(0, ge=0)
    seed: int = 1234


class MetricOverride(StrictModel):
    """A suite file's correction of a metric's meaning (lm-eval's metric_list has no ideal values)."""

    higher_is_better: bool | None = None
    ideal: float | None = None  # e.g. 0.5 for pct_stereotype: distance from it is what matters


MAX_NAME_PARTS = 4  # general/world-facts, benchmarks/arc_easy: a name is a short path of plain names


def check_suite_name(name: object) -> str:
    """A suite name becomes part of results, records and report paths: one to ``MAX_NAME_PARTS`` plain names
    (each the project's safe-name rule, :func:`harness.io.check_name`) joined by '/', e.g. ``general/world-facts``."""
    if not isinstance(name, str):
        raise ValueError("the suite name must be a string")
    parts = name.split("/")
    try:
        if len(parts) > MAX_NAME_PARTS:
            raise ValueError("too many parts")
        for part in parts:
            check_name(part, "the suite name")
    except ValueError:
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise ValueError(f"the suite name {shown!r} is not allowed: must be 1 to {MAX_NAME_PARTS} names joined by '/' "
                         f"(e.g. general/world-facts), each {NAME_RULE}") from None
    return name


class SuiteSpec(StrictModel):
    suite: str | None = None
    category: Literal["domain", "general", "hallucination", "bias"]
    description: str = ""
    type: str = "lm_eval"
    lm_eval: str | None = None
    data: DataSpec | None = None
    task: dict[str, Any] = {}
    options: SuiteOptions = SuiteOptions()
    primary_metric: str | None = None
    metrics: dict[str, MetricOverride] = {}
    probe: dict[str, Any] = {}

    @field_validator("suite")
    @classmethod
    def _suite_name(cls, v):
        return v if v is None else check_suite_name(v)


@dataclass
class Suite:
    name: str
    spec: SuiteSpec
    file: Path | None
    data_root: Path | None = None
    source: str = ""
    origin: str = ""  # for a suite found by name: suite_origin()
    _docs: list[dict] | None = field(default=None, repr=False)

    @property
    def category(self) -> str:
        return self.spec.category

    @property
    def task_name(self) -> str:
        return "laf__" + "".join(c if c.isalnum() else "_" for c in self.name)

    def load_docs(self) -> list[dict]:
        if self._docs is None:
            docs, source = _load_docs(self)
            bad = next((i for i, d in enumerate(docs) if not isinstance(d, dict)), None)
            if bad is not None:  # a list or null row reached the templates as a traceback (found by tests/test_trust_properties.py)
                raise LafError(f"suite {self.name}: item {bad} of its data is a JSON {type(docs[bad]).__name__}, not an object ({source})",
                               "write every item as a JSON object with the fields the templates use")
            self._docs, self.source = docs, source
            if not self._docs:
                raise LafError(f"suite {self.name}: its data holds no items ({self.source})", "add items to the data file")
        return self._docs

    @cached_property
    def data_sha256(self) -> str:
        return sha256_json(self.load_docs())

    @cached_property
    def build(self) -> TaskBuild:
        if self.spec.lm_eval:
            raise RuntimeError("registered lm-eval tasks are built by the engine")
        return suite_types.require(self.spec.type, self.file or self.name).load()(self, self.load_docs())

    def describe(self) -> dict:
        return {
            "name": self.name,
            "category": self.category,
            "type": "lm_eval:" + self.spec.lm_eval if self.spec.lm_eval else self.spec.type,
            "description": self.spec.description,
            "file": str(self.file) if self.file else None,
        }


def _load_docs(suite: Suite) -> tuple[list[dict], str]:
    d = suite.spec.data
    if d is None:
        raise ConfigError(suite.file or suite.name, "data", "this suite names no data", "add data.path (or data.local / data.hub)")
    base = suite.file.parent if suite.file else Path.cwd()
    if d.path:
        p = resolve_path(d.path, base)
        return normalize(read_records(p), d.format, SourceContext(p, {})), f"file {p}"
    tried = []
    if d.local:
        candidates = []
        if suite.data_root:
            candidates.append(suite.data_root / d.local.path)
        candidates.append(base / d.local.path)
        for p in candidates:
            if p.exists():
                rows = read_records(p)
                return normalize(rows, d.local.format, SourceContext(p, d.local.model_dump())), f"local copy {p}"
            tried.append(str(p))
    if d.hub:
        try:
            rows = load_hub(d.hub.model_dump())
        except LafError as e:
            if tried:
                raise LafError(
                    f"suite {suite.name}: no local copy found (looked for {', '.join(tried)}) and {e.cause}",
                    "set --data-dir / LAF_DATA_DIR to a folder holding " + (d.local.path if d.local else "the data") + ", or run online",
                ) from None
            raise
        return normalize(rows, d.hub.format, SourceContext(None, d.hub.model_dump())), f"hub {d.hub.path}"
    raise LafError(f"suite {suite.name}: data not found (looked for {', '.join(tried) or 'nothing'})", "set --data-dir / LAF_DATA_DIR to the folder holding the local copy")


