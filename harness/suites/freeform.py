"""The ``freeform`` suite type: a generated answer scored against reference answers with metrics users know.

Each item is ``{"question": ..., "answers": [...]}`` (or ``"answer": "..."``,
optionally with ``"aliases"``); the model answers greedily and every chosen
metric scores the answer against all the references (the best one counts).
The metrics are the ``evaluate`` scripts shipped in :mod:`harness.metrics`
(exact match, token F1, ROUGE-L, chrF), loaded from the package, never from
the hub, so ``evaluate.load(harness.metrics.path(name))`` gives a user the
very numbers in the records. Settings live under the suite's ``probe:`` key::

    type: freeform
    probe:
      metrics: [exact_match, token_f1, rouge_l]     # the first is the primary unless primary_metric says otherwise
      prompt: "### Instruction:\\n{{question}}\\n\\n### Response:\\n"
      until: ["\\n"]
      max_gen_toks: 64
      metric_args: {rouge_l: {use_stemmer: true}}

The prompt template only substitutes ``{{field}}`` with the item's field (no
expressions): a suite file is data, never code.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Union

from pydantic import Field

from .. import metrics as shipped
from ..config import StrictModel, validate
from ..errors import ConfigError, LafError
from ..results import MetricMeta
from .task import TaskBuild

if TYPE_CHECKING:
    from .spec import Suite

DEFAULT_PROMPT = "### Instruction:\n{{question}}\n\n### Response:\n"  # the training template (harness.data.template)
_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

MetricArg = Union[bool, int, float, str]


class FreeformOptions(StrictModel):
    metrics: list[str] = Field(default_factory=lambda: ["exact_match", "token_f1", "rouge_l"], min_length=1)
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, max_length=20_000)
    until: list[str] = Field(default_factory=lambda: ["\n"], max_length=16)
    max_gen_toks: int = Field(64, gt=0, le=4096)
    metric_args: dict[str, dict[str, MetricArg]] = {}


class _ProbeKey(StrictModel):
    probe: FreeformOptions = FreeformOptions()


def references(doc: dict) -> list[str]:
    """An item's reference answers: ``answers``, else ``answer`` plus ``aliases``."""
    if "answers" in doc:
        refs = doc["answers"]
        return [refs] if isinstance(refs, str) else list(refs)
    return [doc["answer"], *(doc.get("aliases") or [])]


def _check_docs(suite: Suite, docs: list[dict], fields: list[str]) -> None:
    schema = "each item needs the prompt's fields as strings and 'answers' (a list of strings) or 'answer' (a string)"
    for i, d in enumerate(docs):
        where = f"suite {suite.name}, item {i + 1} ({suite.source})"
        for f in fields:
            v = d.get(f)
            if not isinstance(v, str) or not v.strip():
                got = "missing" if v is None else ("empty" if isinstance(v, str) else f"a {type(v).__name__}")
                raise LafError(f"{where}: field '{f}' (used by the prompt) is {got}", schema)
        if "answers" not in d and "answer" not in d:
            raise LafError(f"{where}: no reference answer", schema)
        refs = d["answers"] if "answers" in d else [d["answer"], *(d.get("aliases") or [])]
        if isinstance(refs, str):
            refs = [refs]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise LafError(f"{where}: the reference answers must be non-empty strings (got {str(refs)[:80]})", schema)


def _render(template: str, doc: dict) -> str:
    return _FIELD.sub(lambda m: doc[m.group(1)], template)


def freeform(suite: Suite, docs: list[dict]) -> TaskBuild:
    where = suite.file or suite.name
    opts = validate(_ProbeKey, {"probe": suite.spec.probe}, where).probe
    unknown = [m for m in opts.metrics if m not in shipped.METRICS]
    if unknown:
        raise ConfigError(where, "probe.metrics", f"unknown metric '{unknown[0]}'", f"use some of: {', '.join(shipped.METRICS)}")
    if len(set(opts.metrics)) != len(opts.metrics):
        raise ConfigError(where, "probe.metrics", "a metric is listed twice", "list each metric once")
    stray = [m for m in opts.metric_args if m not in opts.metrics]
    if stray:
        raise ConfigError(where, "probe.metric_args", f"arguments for '{stray[0]}', which probe.metrics does not list", "add it to probe.metrics or drop its arguments")
    primary = suite.spec.primary_metric or opts.metrics[0]
    if primary not in opts.metrics:
        raise ConfigError(where, "primary_metric", f"'{primary}' is not one of probe.metrics ({', '.join(opts.metrics)})", "name one of them")
    fields = list(dict.fromkeys(_FIELD.findall(opts.prompt)))
    if not fields:
        raise ConfigError(where, "probe.prompt", "the prompt uses no item field", "write the question's place as {{question}}")
    _check_docs(suite, docs, fields)

    modules = {}
    for name in opts.metrics:  # load each once, and try its arguments now: a bad one fails before any model loads
        modules[name] = shipped.load(name)
        args = opts.metric_args.get(name, {})
        try:
            modules[name].compute(predictions=["a b"], references=[["a b c"]], use_aggregator=False, **args)
        except (TypeError, ValueError) as e:
            raise ConfigError(where, f"probe.metric_args.{name}", f"rejected by the metric ({type(e).__name__}: {e})",
                              f"see evaluate.load(harness.metrics.path({name!r})).inputs_description") from None

    meta = {m: MetricMeta(True, None, "mean", shipped.METRICS[m].scale) for m in opts.metrics}
    for name, o in suite.spec.metrics.items():  # a suite file's corrections, as for every type
        if name not in meta:
            raise ConfigError(where, f"metrics.{name}", "corrects a metric that probe.metrics does not list", f"use one of: {', '.join(meta)}")
        m = meta[name]
        meta[name] = MetricMeta(m.higher_is_better if o.higher_is_better is None else o.higher_is_better,
                                m.ideal if o.ideal is None else o.ideal, m.aggregation, m.scale)
    gen_kwargs = {"until": list(opts.until), "max_gen_toks": opts.max_gen_toks, "do_sample": False}

    def run(lm, items: list[dict]) -> list[dict]:
        """Generate every answer, then score them all with one ``compute`` call per metric (evaluate's per-call
        overhead, tens of milliseconds, paid once per suite instead of once per item)."""
        from lm_eval.api.instance import Instance

        from ..io import sha256_json

        reqs = [Instance("generate_until", d, (_render(opts.prompt, d), dict(gen_kwargs)), 0, (suite.task_name, i, 1)) for i, d in enumerate(items)]
        answers = [str(a) for a in lm.generate_until(reqs)]
        refs = [references(d) for d in items]
        scores = {}
        for name, module in modules.items():
            values = module.compute(predictions=answers, references=refs, use_aggregator=False, **opts.metric_args.get(name, {}))[name]
            bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
            if len(values) != len(items) or bad:
                raise LafError(f"suite {suite.name}: metric {name} gave {len(values)} scores for {len(items)} answers"
                               + (f", item {bad[0] + 1} not finite" if bad else ""), "report this: the shipped metrics give one bounded score per answer")
            scores[name] = values
        return [{
            "doc_id": i, "doc": d, "doc_hash": sha256_json(d), "prompt_hash": sha256_json(r.args[0]),
            "arguments": [r.args], "resps": [[a]], "filtered_resps": [a], "target": refs[i][0],
            "metrics": list(modules), **{name: scores[name][i] for name in modules},
        } for i, (d, r, a) in enumerate(zip(items, reqs, answers))]

    breakdown = "kind" if all(isinstance(d.get("kind"), str) for d in docs) else None
    return TaskBuild({}, meta, primary, breakdown=breakdown, native=run, output_type="generate_until")

