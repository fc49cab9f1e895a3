"""Suites as lm-eval tasks: built once per run, evaluated per model, described for ``results.json``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LafError
from ..io import sha256_json
from ..results import SuiteMeta
from ..suites.spec import Suite
from ..suites.task import meta_from_metric_list
from .aggregation import native_aggregates

if TYPE_CHECKING:
    from .lm import HarnessLM


def build_tasks(suites: list[Suite]) -> dict[str, object]:
    """lm-eval Task objects, built once and reused for every model (None: a suite the engine runs natively)."""
    from lm_eval.tasks import TaskManager

    from ..suites.templates import check_templates, install_sandbox

    install_sandbox()  # every template lm-eval renders from here on runs sandboxed
    tasks = {}
    plain = TaskManager(include_defaults=False)
    registered = None
    for s in suites:
        if not s.spec.lm_eval and s.build.native:
            tasks[s.name] = None  # run by the engine itself (see TaskBuild.native)
            continue
        if not s.spec.lm_eval:
            check_templates(s.build.config, s.file or s.name)
        try:  # lm-eval renders the first item while it builds a task: a suite's bad item fails here, in lm-eval's code
            if s.spec.lm_eval:
                registered = registered or TaskManager()
                task = next(iter(registered.load([s.spec.lm_eval])["tasks"].values()))
            else:
                task = plain.load([s.build.config])["tasks"][s.task_name]
        except (LafError, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - whatever lm-eval raises on a bad suite is one error naming the suite (--debug: the cause)
            raise LafError(f"suite {s.name}: lm-eval cannot build its task ({type(e).__name__}: {e})",
                           "for an lm_eval: task, check that lm-eval can load it here (its data may need the hub); otherwise check the suite's "
                           "templates and items (`laf suites validate` names each problem; --debug shows lm-eval's traceback)") from e
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        tasks[s.name] = task
    return tasks


def suite_meta(suite: Suite, task) -> SuiteMeta:
    """What ``results.json`` says about a suite: its source and data hash, its metrics' meaning, its settings."""
    if suite.spec.lm_eval:
        metric_list = task.config.metric_list or []
        metrics = meta_from_metric_list(metric_list)
        primary = suite.spec.primary_metric or (metric_list[0]["metric"] if metric_list else "acc")
        n = len(task.eval_docs)
        data_sha = sha256_json([dict(d) for d in task.eval_docs])
        source = f"lm-eval registered task {suite.spec.lm_eval}"
    else:
        b = suite.build
        metrics, primary, n, data_sha, source = b.metrics, b.primary, len(suite.load_docs()), suite.data_sha256, suite.source
    d = suite.describe()
    return SuiteMeta(
        name=d["name"], category=d["category"], type=d["type"], description=d["description"], file=d["file"],
        n_docs=n, data_sha256=data_sha, source=source,
        output_type=task.get_config("output_type") if task is not None else suite.build.output_type,
        num_fewshot=task.get_config("num_fewshot") if task is not None else 0,
        breakdown=None if suite.spec.lm_eval else suite.build.breakdown,
        metrics=metrics, primary_metric=primary, limit=suite.spec.options.limit, seed=suite.spec.options.seed,
    )


def evaluate_suite(lm: HarnessLM, suite: Suite, task, limit: int | None, seed: int) -> tuple[list[dict], dict]:
    """lm-eval's evaluate() for one suite (or the suite's native runner); returns (samples, aggregated results)."""
    from lm_eval.evaluator import evaluate

    if task is None:
        docs = suite.load_docs()[:limit] if limit else suite.load_docs()
        samples = suite.build.native(lm, docs)
        return samples, native_aggregates(samples, suite.build.metrics)
    task.set_fewshot_seed(seed)
    task_dict = {"tasks": {task.config.task: task}, "groups": {}, "group_map": {}}
    out = evaluate(lm=lm, task_dict=task_dict, limit=limit, log_samples=True, bootstrap_iters=1000, verbosity="ERROR")
    return out["samples"][task.config.task], out["results"][task.config.task]
