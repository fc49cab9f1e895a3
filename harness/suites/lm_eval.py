"""The ``lm_eval`` suite type (the task is written in the suite file, checked before anything runs) and
lm-eval's registered tasks (``lm_eval:<task>``)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from ..errors import ConfigError, LafError
from .task import TaskBuild, base_task_config, meta_from_metric_list

if TYPE_CHECKING:
    from .spec import Suite


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


# ---------------------------------------------------------------- checking a suite's lm-eval task before anything runs

OUTPUT_TYPES = ("multiple_choice", "generate_until", "loglikelihood", "loglikelihood_rolling")
CODE_KEYS = ("process_docs", "process_results", "custom_dataset", "doc_to_decontamination_query")
MAX_GEN_TOKS = 8192
MAX_CHECKED_ITEMS = 5000  # items rendered by the check (every item of any built-in suite)


def _lm_eval_metrics() -> tuple[set[str], set[str]]:
    import lm_eval.api.metrics  # noqa: F401  (registers the metrics)
    from lm_eval.api import registry

    return set(registry.METRIC_REGISTRY), set(registry.AGGREGATION_REGISTRY)


def _render(field, doc: dict, where, key: str, i: int, limit: int | None = None):
    """What lm-eval makes of a ``doc_to_*`` value for one item (a field name, a template or a literal), rendered in
    the sandbox; an undefined variable, a refused operation, a template over its budget (size, CPU time, see
    :mod:`harness.suites.templates`) or any other failure of the template names the key and the item."""
    from jinja2 import TemplateError

    from .templates import MAX_RENDER_CHARS, SANDBOX, TemplateBudgetError

    if not isinstance(field, str):
        return field
    if field in doc:
        value = doc[field]
    else:
        try:
            value = SANDBOX.from_string(field).render(**doc)
        except TemplateBudgetError as e:
            raise ConfigError(where, f"task.{key}", f"item {i} cannot be rendered: {e}",
                              "a prompt template renders one item's fields: remove the large repetition, loop or recursion") from None
        except (RecursionError, MemoryError, OverflowError) as e:
            raise ConfigError(where, f"task.{key}", f"item {i} cannot be rendered: {type(e).__name__}: {str(e)[:200]}",
                              "a prompt template renders one item's fields: remove the recursion or the large range/value") from None
        except TemplateError as e:
            raise ConfigError(where, f"task.{key}", f"item {i} cannot be rendered: {e}",
                              "use only fields every item has (see the data file), or fix the template") from None
        except Exception as e:  # the template's own failure (1/0, a method on the wrong type): still the template
            raise ConfigError(where, f"task.{key}", f"item {i} cannot be rendered: {type(e).__name__}: {str(e)[:200]}",
                              "fix the template (it fails on this item's fields)") from None
    limit = limit or MAX_RENDER_CHARS
    if isinstance(value, str) and len(value) > limit:
        raise ConfigError(where, f"task.{key}", f"item {i}: the text is {len(value):,} characters; a prompt may hold at most {limit:,}",
                          "shorten that item's field (long documents belong in a perplexity suite of shorter passages)")
    return value


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
    for key in ("target_delimiter", "fewshot_delimiter"):
        if key in task and not isinstance(task[key], str):
            raise ConfigError(where, f"task.{key}", f"must be text (got {type(task[key]).__name__})", f"e.g. {key}: \" \" (lm-eval's default)")
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
    from .templates import MAX_DOCUMENT_CHARS

    for i, doc in enumerate(docs[:MAX_CHECKED_ITEMS]):
        text = _render(task.get("doc_to_text"), doc, where, "doc_to_text", i) if "doc_to_text" in task else None
        # a perplexity suite's target is a whole document, scored in rolling windows: one data line's worth, not a prompt's
        target = (_render(task.get("doc_to_target"), doc, where, "doc_to_target", i, MAX_DOCUMENT_CHARS if output_type == "loglikelihood_rolling" else None)
                  if "doc_to_target" in task else None)
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
        delimiter = task.get("target_delimiter", " ")
        odd = next((j for j, c in enumerate(choices) if not isinstance(c, str)), None)
        if odd is not None:  # lm-eval reads each choice as text (its task check indexes the first item's)
            raise ConfigError(where, "task.doc_to_choice", f"item {i}: choice {odd} is not text ({type(choices[odd]).__name__})",
                              "give every answer choice as a string")
        empty = next((j for j, c in enumerate(choices) if isinstance(c, str) and not c), None)
        if empty is not None and (i == 0 or delimiter == ""):  # nothing to score (HFLM asserts), or lm-eval's task check
            # indexes the first item's choices (choice[0]): either way lm-eval fails; say so here, naming the item
            raise ConfigError(where, "task.doc_to_choice", f"item {i}: choice {empty} is empty" + (" and target_delimiter is empty: nothing to score"
                              if delimiter == "" else " (lm-eval's task check reads the first character of the first item's choices)"),
                              "give every answer choice some text")
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
