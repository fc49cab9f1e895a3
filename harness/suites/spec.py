"""Suites: an lm-eval task config plus a category, options, metric directions and a data source.

A suite is a YAML file (found by name under the suite folders, or by path) or
a registered lm-eval task (``lm_eval:<task>``). Suite *types* turn documents
into an lm-eval task config: ``lm_eval`` (the task is written in the YAML),
``perplexity`` (general-text cross-entropy) and the probe types of
``harness.suites``, all listed in :mod:`harness.suites.suite_types`. Everything is validated before any model is loaded; errors
name the file and the key.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from ..config import StrictModel, load_yaml, resolve_path, validate
from ..errors import ConfigError, LafError
from ..io import sha256_json
from ..results import MetricMeta
from . import suite_types
from .sources import SourceContext, data_dir, load_hub, normalize, read_records

REPO_SUITES = Path(__file__).resolve().parents[1] / "suites_builtin"  # the built-in suites ship inside the package (and the wheel)


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


def _suite_type(name: str, where) -> suite_types.SuiteType:
    t = suite_types.find(name)
    if t is None:
        raise ConfigError(where, "type", f"unknown suite type '{name}'", f"use one of: {', '.join(sorted(suite_types.all_types()))}")
    return t


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
        return _suite_type(self.spec.type, self.file or self.name).load()(self, self.load_docs())

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


# ---------------------------------------------------------------- finding suites


def suite_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("LAF_SUITES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / "suites")
    dirs.append(REPO_SUITES)
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [x.resolve() for x in out]:
            out.append(d)
    return out


def available_suites() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in suite_dirs():
        for p in sorted(root.rglob("*.yaml")):
            name = p.relative_to(root).with_suffix("").as_posix()
            found.setdefault(name, p)
    return found


def suite_origin(name: str, path: Path) -> str:
    """Where a suite found by name comes from, said plainly: ``built-in``, or ``yours: PATH`` with
    ``(replaces the built-in)`` when a file in ./suites or LAF_SUITES has a built-in suite's name."""
    try:
        path.resolve().relative_to(REPO_SUITES.resolve())
        return "built-in"
    except ValueError:
        pass
    shadowed = (REPO_SUITES / name).with_suffix(".yaml").exists()
    return f"yours: {path}" + (" (replaces the built-in)" if shadowed else "")


def load_suite_file(path: Path, name: str | None = None, data_root: Path | None = None) -> Suite:
    raw = load_yaml(path)
    spec = validate(SuiteSpec, raw, path)
    if spec.lm_eval is None and spec.type == "lm_eval" and not spec.task:
        raise ConfigError(path, "task", "an lm_eval suite needs a 'task' (an lm-eval task config) or 'lm_eval: <registered task>'")
    _suite_type(spec.type, path)
    return Suite(spec.suite or name or path.stem, spec, path, data_root)


def load_suite(ref: str, data_root: str | Path | None = None) -> Suite:
    """``ref``: a suite name (``general/world-facts``), a YAML path, or ``lm_eval:<task>``."""
    root = data_dir(data_root)
    if ref.startswith("lm_eval:"):
        task = ref.split(":", 1)[1]
        check_lm_eval_task(task)
        spec = SuiteSpec(category="general", lm_eval=task, description=f"lm-eval registered task {task} (hub data)")
        return Suite(ref, spec, None, root)
    kind, sep, rest = ref.partition(":")
    if sep and not Path(ref).exists():
        on_files = suite_types.path_types()
        if kind in on_files:  # TYPE:PATH runs a probe on a data file in its published schema
            t = on_files[kind]
            path = Path(rest).expanduser()
            if not path.exists():
                raise LafError(f"data file not found: {path}", f"pass an existing file after {kind}:")
            spec = SuiteSpec(category=t.category, type=kind, description=f"{kind} on {path}",
                             data=DataSpec(path=str(path.resolve()), format=t.data_format))
            return Suite(f"{kind}:{path.name}", spec, None, root)
        raise LafError(f"unknown suite kind '{kind}' in '{ref}'", f"use lm_eval:<task>, or one of {', '.join(sorted(on_files))} followed by :PATH")
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise LafError(f"suite file not found: {p}", "check the path")
        return load_suite_file(p, None, root)
    known = available_suites()
    if ref in known:
        suite = load_suite_file(known[ref], ref, root)
        suite.origin = suite_origin(ref, known[ref])
        return suite
    close = difflib.get_close_matches(ref, list(known), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise LafError(f"unknown suite '{ref}'", f"{hint}see `laf suites list`, pass a YAML path, or lm_eval:<task>")


_LM_EVAL_TASKS: list[str] | None = None


def lm_eval_task_names() -> list[str]:
    global _LM_EVAL_TASKS
    if _LM_EVAL_TASKS is None:
        from lm_eval.tasks import TaskManager

        _LM_EVAL_TASKS = sorted(TaskManager().all_tasks)
    return _LM_EVAL_TASKS


def check_lm_eval_task(task: str) -> None:
    names = lm_eval_task_names()
    if task not in names:
        close = difflib.get_close_matches(task, names, n=5, cutoff=0.6)
        raise LafError(
            f"lm-eval has no registered task '{task}'",
            (f"did you mean: {', '.join(close)}" if close else "see `lm_eval --tasks list`") + " (written lm_eval:<task>)",
        )


# ---------------------------------------------------------------- built-in suite types


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


def base_task_config(suite: Suite, docs: list[dict]) -> dict:
    return {
        "task": suite.task_name,
        "custom_dataset": docs_dataset(suite, docs),
        "test_split": "test",
        "num_fewshot": suite.spec.options.num_fewshot,
        "metadata": {"version": 1.0},
    }


def lm_eval_type(suite: Suite, docs: list[dict]) -> TaskBuild:
    task = dict(suite.spec.task)
    for k in ("dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "test_split", "fewshot_split"):
        task.pop(k, None)  # data comes from the suite's source
    if suite.spec.options.num_fewshot:
        task["fewshot_split"] = "test"  # few-shot examples drawn from the other items (seeded)
    from .templates import install_sandbox

    install_sandbox()
    check_task_config(task, docs, suite.file or suite.name)
    metric_list = task.get("metric_list") or [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
    task["metric_list"] = metric_list
    cfg = {**task, **base_task_config(suite, docs)}
    metrics = meta_from_metric_list(metric_list, suite.spec.metrics)
    primary = suite.spec.primary_metric or metric_list[0]["metric"]
    return TaskBuild(cfg, metrics, primary)


def perplexity_type(suite: Suite, docs: list[dict]) -> TaskBuild:
    """General-text cross-entropy: lm-eval's rolling log-likelihood over each document's ``text``."""
    if "text" not in docs[0]:
        raise LafError(f"suite {suite.name}: a perplexity suite needs a 'text' field in every item", "rename the field to text")
    metric_list = [
        {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
        {"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
        {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
    ]
    cfg = {
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": metric_list,
        **base_task_config(suite, docs),
    }
    return TaskBuild(cfg, meta_from_metric_list(metric_list, suite.spec.metrics), suite.spec.primary_metric or "bits_per_byte")


# ---------------------------------------------------------------- checking a suite's lm-eval task before anything runs

OUTPUT_TYPES = ("multiple_choice", "generate_until", "loglikelihood", "loglikelihood_rolling")
CODE_KEYS = ("process_docs", "process_results", "custom_dataset", "doc_to_decontamination_query")
MAX_GEN_TOKS = 8192
MAX_CHECKED_ITEMS = 5000  # items rendered by the check (every item of any built-in suite)


def _lm_eval_metrics() -> tuple[set[str], set[str]]:
    import lm_eval.api.metrics  # noqa: F401  (registers the metrics)
    from lm_eval.api import registry

    return set(registry.METRIC_REGISTRY), set(registry.AGGREGATION_REGISTRY)


def _render(field, doc: dict, where, key: str, i: int):
    """What lm-eval makes of a ``doc_to_*`` value for one item (a field name, a template or a literal), rendered in
    the sandbox; an undefined variable or a refused operation names the key and the item."""
    from jinja2 import TemplateError

    from .templates import SANDBOX

    if not isinstance(field, str):
        return field
    if field in doc:
        return doc[field]
    try:
        return SANDBOX.from_string(field).render(**doc)
    except TemplateError as e:
        raise ConfigError(where, f"task.{key}", f"item {i} cannot be rendered: {e}",
                          "use only fields every item has (see the data file), or fix the template") from None


def check_task_config(task: dict, docs: list[dict], where) -> None:
    """Everything lm-eval would otherwise accept and get silently wrong or crash on later: code hooks, unsafe or
    undefined templates, unknown metrics, out-of-range generation settings, empty choices, gold indices out of
    range. Errors name the file and the key."""
    import ast

    from .templates import check_templates

    for k in CODE_KEYS:
        if k in task:
            raise ConfigError(where, f"task.{k}", f"a suite file cannot name code ({k} needs a Python function)",
                              "prepare the data file so that it needs no processing, or write a suite type (see docs/suites.md)")
    check_templates(task, where)
    output_type = task.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise ConfigError(where, "task.output_type", f"unknown output type {output_type!r}", f"use one of {', '.join(OUTPUT_TYPES)}")
    known, aggregations = _lm_eval_metrics()
    metric_list = task.get("metric_list")
    if metric_list is not None:
        if not isinstance(metric_list, list) or not metric_list:
            raise ConfigError(where, "task.metric_list", "must be a non-empty list of {metric: NAME, ...}", f"e.g. [{{metric: acc}}]; known: {', '.join(sorted(known))}")
        for j, m in enumerate(metric_list):
            if not isinstance(m, dict) or not isinstance(m.get("metric"), str):
                raise ConfigError(where, f"task.metric_list[{j}]", "each entry needs 'metric: NAME'", f"known metrics: {', '.join(sorted(known))}")
            if m["metric"] not in known:
                close = difflib.get_close_matches(m["metric"], sorted(known), n=3)
                raise ConfigError(where, f"task.metric_list[{j}].metric", f"unknown metric '{m['metric']}' (lm-eval would score nothing and report an empty table)",
                                  (f"did you mean {', '.join(close)}? " if close else "") + f"known metrics: {', '.join(sorted(known))}")
            agg = m.get("aggregation")
            if agg is not None and (not isinstance(agg, str) or agg not in aggregations):
                raise ConfigError(where, f"task.metric_list[{j}].aggregation", f"unknown aggregation {agg!r}", f"use one of {', '.join(sorted(aggregations))}")
            if "higher_is_better" in m and not isinstance(m["higher_is_better"], bool):
                raise ConfigError(where, f"task.metric_list[{j}].higher_is_better", "must be true or false")
    gen = task.get("generation_kwargs")
    if gen is not None:
        if not isinstance(gen, dict):
            raise ConfigError(where, "task.generation_kwargs", "must be a mapping")
        mgt = gen.get("max_gen_toks")
        if mgt is not None and (isinstance(mgt, bool) or not isinstance(mgt, int) or not 1 <= mgt <= MAX_GEN_TOKS):
            raise ConfigError(where, "task.generation_kwargs.max_gen_toks", f"must be a whole number from 1 to {MAX_GEN_TOKS} (got {str(mgt)[:40]})",
                              "answers are short: e.g. max_gen_toks: 64")
        for k in ("temperature", "top_p"):
            v = gen.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf")):
                raise ConfigError(where, f"task.generation_kwargs.{k}", f"must be a finite number >= 0 (got {str(v)[:40]})")
        until = gen.get("until")
        if until is not None and not (isinstance(until, str) or (isinstance(until, list) and all(isinstance(u, str) for u in until))):
            raise ConfigError(where, "task.generation_kwargs.until", "must be a string or a list of strings")
    for i, doc in enumerate(docs[:MAX_CHECKED_ITEMS]):
        text = _render(task.get("doc_to_text"), doc, where, "doc_to_text", i) if "doc_to_text" in task else None
        target = _render(task.get("doc_to_target"), doc, where, "doc_to_target", i) if "doc_to_target" in task else None
        if "gen_prefix" in task:
            _render(task["gen_prefix"], doc, where, "gen_prefix", i)
        if output_type != "multiple_choice":
            continue
        if "doc_to_choice" not in task:
            raise ConfigError(where, "task.doc_to_choice", "a multiple_choice task needs doc_to_choice", "e.g. doc_to_choice: \"{{choices}}\"")
        choices = _render(task["doc_to_choice"], doc, where, "doc_to_choice", i)
        if isinstance(choices, str) and isinstance(task["doc_to_choice"], str) and task["doc_to_choice"] not in doc:
            try:
                choices = ast.literal_eval(choices)
            except (ValueError, SyntaxError):
                raise ConfigError(where, "task.doc_to_choice", f"item {i}: the choices are not a list ({choices[:60]!r})",
                                  "give each item a list of choices, e.g. \"choices\": [\"a\", \"b\"]") from None
        if isinstance(choices, dict):
            choices = list(choices.values())
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(where, "task.doc_to_choice", f"item {i} has no choices ({str(choices)[:60]!r})", "give every item at least two choices")
        if isinstance(text, int) and not isinstance(text, bool):
            continue  # multiple-input mode (the contexts are the choices, the target a continuation)
        if target is None:
            raise ConfigError(where, "task.doc_to_target", f"item {i} has no gold answer", "add doc_to_target (the index of the right choice)")
        if isinstance(target, str) and target.strip().lstrip("-").isdigit():
            target = int(target.strip())
        if isinstance(target, bool) or (not isinstance(target, (int, str)) and not isinstance(target, list)):
            raise ConfigError(where, "task.doc_to_target", f"item {i}: the gold answer {str(target)[:60]!r} is not a choice index", "use the index of the right choice (0 = first)")
        golds = target if isinstance(target, list) else [target]
        for g in golds:
            if isinstance(g, int) and not 0 <= g < len(choices):
                raise ConfigError(where, "task.doc_to_target", f"item {i}: gold index {g} is out of range for its {len(choices)} choices",
                                  f"use 0 to {len(choices) - 1} (0 = the first choice)")
            if isinstance(g, str) and g not in choices:
                raise ConfigError(where, "task.doc_to_target", f"item {i}: the gold answer {g[:60]!r} is not one of its choices",
                                  "use the index of the right choice, or exactly one of the choice strings")
