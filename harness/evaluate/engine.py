"""Score the base model and each adapter on the same items of every suite.

    validate suites and adapters -> load the base once -> for each model (base = no adapter,
    then each adapter hot-swapped onto the same base): for each suite: lm-eval evaluate() with
    our LM -> per-item records into the store -> results.json with aggregates and provenance

Adapters are scored on the base they were trained on (QLoRA-faithful: an NF4
adapter on the NF4 base), with one batch size, dtype and max length for all
models, recorded in the results.

A (model, suite) already finished with the same identity, suite content and
code is read from the cache's stored suite results (``cache.py``) instead; when
every one is there, the run builds no lm-eval task, loads no model and imports
neither torch nor lm-eval (``lm.py``, the only module that needs them, is
imported on the first miss).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..env import provenance, reduce_malloc_fragmentation
from ..errors import LafError
from ..models import resolve_model
from ..results import BASE, AdapterInfo, BaseModelInfo, ItemRecord, ModelInfo, Provenance, ResultsDoc, ResultsStore, RunLock, SuiteMeta, commit_run
from ..suites import Suite, load_suite
from .cache import NullCache, RequestStats, ResponseCache, request_key, suite_result_key
from .identity import PROBE_VERSION, SCORING_VERSION, CheckedAdapter, check_adapters, load_spec_for, model_identity
from .pool import ModelPool, ModelRun
from .records import from_lm_eval_sample, nonfinite_items
from .spec import EvalSpec, default_cache_path

ProgressCallback = Callable[[str, str, int, int, int], None]  # model, suite, done, total, hits

__all__ = ["BASE", "SCORING_VERSION", "EvalSpec", "ProgressCallback", "default_cache_path", "run_eval"]


def run_eval(spec: EvalSpec, progress: ProgressCallback | None = None, log: Callable[[str], None] = lambda s: None,
             suites_override: list[Suite] | None = None) -> ResultsDoc:
    """Score the base and every adapter of ``spec`` on the same items of every suite.

    Writes ``spec.out``: ``results.sqlite`` and ``records.jsonl`` (one :class:`~harness.results.ItemRecord` per
    model and item) and ``results.json`` (aggregates, the suites' metric meanings, provenance), and returns
    that document (``to_dict()`` is the file's content). Everything is validated before a model is loaded; responses come from the
    content-keyed cache where they can. ``suites_override``: already loaded suites (the pipeline's, with
    per-suite limits), in ``spec.suites`` order.
    """
    started = time.time()
    reduce_malloc_fragmentation()
    if not spec.suites:
        raise LafError("no suites to evaluate", "pass at least one --suite (see `laf suites list`)")
    if spec.batch_size <= 0:
        raise LafError(f"--batch-size must be positive (got {spec.batch_size})", "use e.g. --batch-size 8")
    if Path(spec.out).is_symlink():  # a link would make this run replace whatever run folder it points to
        raise LafError(f"--out {spec.out} is a symlink: laf does not write a run through a link", "pass the real folder, or a new one")
    with RunLock(spec.out, "laf eval"):  # held for the whole run: a second run into this folder fails at once
        return _run_locked(spec, started, progress, log, suites_override)


def _run_locked(spec: EvalSpec, started: float, progress, log, suites_override) -> ResultsDoc:
    # -- validate everything before any model is loaded
    suites = suites_override if suites_override is not None else [load_suite(s, spec.data_dir) for s in spec.suites]
    names = [s.name for s in suites]
    for s in suites:
        if "replaces the built-in" in s.origin:
            log(f"warning: suite {s.name} is {s.origin}; results.json records that file")
    if len(set(names)) != len(names):
        raise LafError(f"a suite is listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}", "list each suite once")
    for s in suites:  # data problems surface before the model is resolved (and perhaps converted)
        _ = s.data_sha256 if not s.spec.lm_eval else None
    try:
        resolved, adapters, load, runs = plan_models(spec, suites)
    except LafError:
        build_suites(suites)  # a broken suite is named before a model problem, as it was before the warm path
        raise
    return _score_and_publish(spec, suites, resolved, adapters, load, runs, started, progress, log)


def plan_models(spec: EvalSpec, suites: list[Suite]):
    """The resolved base, the checked adapters, the load spec and one :class:`ModelRun` (label, identity) per
    model, base first. Needs no model stack (``LoadSpec.resolved`` imports torch only where a GPU may be present)."""
    resolved = resolve_model(spec.model, allow_pickle=spec.allow_pickle, trust_remote_code=spec.trust_remote_code)
    base_fp = resolved.fingerprint
    adapters = check_adapters(spec, base_fp, resolved)
    load = load_spec_for(spec, adapters).resolved()  # device and compute dtype are part of the identity
    runs = [ModelRun(BASE, model_identity(base_fp, load, None, spec), None)]
    runs += [ModelRun(str(a.entry.ref), model_identity(base_fp, load, a.identity, spec), a.entry) for a in adapters]
    if len({r.label for r in runs}) != len(runs):
        raise LafError("an adapter is listed twice", "list each adapter once")
    return resolved, adapters, load, runs


def build_suites(suites: list[Suite]):
    """Every suite checked (its lm-eval config, templates, metrics) and built as an lm-eval task, with its
    ``results.json`` description: what a run needs as soon as one (model, suite) must be scored."""
    from .tasks import build_tasks, suite_meta

    for s in suites:
        if not s.spec.lm_eval:
            _ = s.build  # loads data, checks fields
    tasks = build_tasks(suites)
    return tasks, {s.name: suite_meta(s, tasks[s.name]) for s in suites}


def plan_runs(spec: EvalSpec, suites: list[Suite]):
    """Everything checked and decided before a model is loaded: the resolved base, the checked adapters, the load
    spec, lm-eval tasks and suite metadata, and one :class:`ModelRun` (label, identity) per model, base first.
    The distributed path (``evaluate/distributed.py``) plans with this same function."""
    tasks, metas = build_suites(suites)
    resolved, adapters, load, runs = plan_models(spec, suites)
    return resolved, adapters, load, tasks, metas, runs


def suite_content(suite: Suite, limit: int | None) -> dict | None:
    """What a suite's stored result is keyed on besides the model: everything that decides its requests and
    records (None for a registered lm-eval task, whose data only lm-eval can load: it is always scored)."""
    if suite.spec.lm_eval:
        return None
    return {"describe": suite.describe(), "spec": suite.spec.model_dump(mode="json"), "source": (suite.load_docs(), suite.source)[1],
            "data_sha256": suite.data_sha256, "limit": limit, "seed": suite.spec.options.seed}


def _score_and_publish(spec, suites, resolved, adapters, load, runs, started, progress, log) -> ResultsDoc:
    """The run itself, under the output folder's lock."""
    base_fp = resolved.fingerprint
    cache = NullCache() if spec.no_cache else ResponseCache(spec.cache or default_cache_path())
    store = ResultsStore(spec.out, partial=True)

    # -- score every model on every suite
    pool = ModelPool(resolved, load, spec, log)
    lm = None  # the lm-eval model (CachedLM), created at the first (model, suite) not in the stored suite results
    results: dict[str, dict] = {}
    breakdowns: dict[str, dict] = {}
    applied: dict[str, dict] = {}
    try:
        limits = {s.name: spec.limit or s.spec.options.limit for s in suites}
        contents = {s.name: suite_content(s, limits[s.name]) for s in suites}
        keys = {(r.label, s.name): suite_result_key(r.identity, contents[s.name]) for r in runs for s in suites if contents[s.name] is not None}
        found = cache.get_suite_results(list(keys.values()))
        stored = {k: found[v] for k, v in keys.items() if v in found}
        for k in [k for k, e in stored.items() if e["records"][0]["suite"] != k[1]]:  # a sealed row of another suite: a miss
            del stored[k]
            cache.bad_rows += 1
        if len(stored) == len(runs) * len(suites):
            metas = {s.name: SuiteMeta.from_dict(stored[(runs[0].label, s.name)]["meta"]) for s in suites}
            tasks: dict = {}
        else:
            tasks, metas = build_suites(suites)
        for i, run in enumerate(runs):
            pool.select(run, i)
            results[run.label] = {}
            for suite in suites:
                meta = metas[suite.name]
                entry = stored.get((run.label, suite.name))
                if entry is not None:
                    n = entry["requests"]
                    if progress:
                        progress(run.label, suite.name, n, n, n)
                    store.write([ItemRecord.from_dict({**r, "model": run.label}) for r in entry["records"]])
                    results[run.label][suite.name] = entry["results"]
                    if entry["breakdown"] is not None:
                        breakdowns.setdefault(run.label, {})[suite.name] = entry["breakdown"]
                    run.stats.add(RequestStats(requests=n, cache_hits=n))
                    continue
                if lm is None:
                    from .aggregation import breakdown, suite_aggregates  # numpy: only a run that scores imports it
                    from .lm import CachedLM

                    lm = CachedLM(cache, pool.backend, spec.batch_size)
                lm.identity, lm.suite = run.identity, suite.name
                lm.progress = (lambda d, t, h, _m=run.label, _s=suite.name: progress(_m, _s, d, t, h)) if progress else None
                before = RequestStats(**asdict(lm.stats))
                samples, aggregated = _evaluate(lm, suite, tasks[suite.name], limits[suite.name])
                bad = nonfinite_items(samples)
                if bad:
                    raise LafError(
                        f"model {run.label}: {len(bad)} of {len(samples)} items of suite {suite.name} got non-finite scores "
                        f"(NaN or infinite log-likelihoods or metrics; first doc ids: {', '.join(map(str, bad[:5]))}) -- "
                        "its weights or activations are broken, so it has no valid score",
                        "check the adapter's weights (retrain it; `laf registry verify`), or score in fp32 if this happens only in half precision")
                records = [from_lm_eval_sample(s, model=run.label, suite=suite.name, category=suite.category, output_type=meta.output_type) for s in samples]
                store.write(records)
                results[run.label][suite.name] = suite_aggregates(aggregated, len(records))
                group = None
                if meta.breakdown:
                    group = {"field": meta.breakdown, "groups": breakdown(records, meta.breakdown, meta.metrics)}
                    breakdowns.setdefault(run.label, {})[suite.name] = group
                delta = RequestStats(*(getattr(lm.stats, f) - getattr(before, f) for f in asdict(before)))
                run.stats.add(delta)
                key = keys.get((run.label, suite.name))
                if key is not None:
                    cache.put_suite_result(key, {"records": [r.to_dict() for r in records], "results": results[run.label][suite.name],
                                                 "breakdown": group, "meta": meta.to_dict(), "requests": delta.requests})
            if run.adapter is not None and run.adapter.manifest.get("kind") != "full":  # a full fine-tune has no adapter to check
                applied[run.label] = _applied_figure(pool, cache, run)
    except BaseException:
        store.close()
        raise
    finally:
        if lm is not None:
            lm.progress = None
        if getattr(cache, "bad_rows", 0):
            log(f"response cache: {cache.bad_rows} invalid cached row(s) ignored and re-scored")
        if getattr(cache, "locked", None):
            log(f"response cache {cache.path}: another process held it ({cache.locked}); this run's answers were not stored in it")
        cache.close()

    # -- results.json
    doc = ResultsDoc(
        out=str(Path(spec.out)),
        spec=asdict(spec),
        provenance=Provenance(
            base_model=BaseModelInfo(spec=resolved.spec, kind=resolved.kind, source=resolved.source, fingerprint=base_fp),
            load=load.as_dict(), batch_size=spec.batch_size, max_length=spec.max_length, share_context=spec.share_context,
            scoring_version=SCORING_VERSION, cache=None if spec.no_cache else str(spec.cache or default_cache_path()),
            wall_time_s=round(time.time() - started, 2), environment=provenance(),
        ),
        models={r.label: _model_info(r, a, applied.get(r.label)) for r, a in zip(runs, [None, *adapters])},
        suites=metas,
        results=results,
        breakdowns=breakdowns,
    )
    commit_run(store, doc)
    return doc


def _evaluate(lm, suite: Suite, task, limit: int | None):
    from .tasks import evaluate_suite

    return evaluate_suite(lm, suite, task, limit, suite.spec.options.seed)


def probe_key(identity: str) -> str:
    """The response-cache key of a model's "adapter is applied" figure (a function of the model's identity)."""
    return request_key(identity, "adapter_probe", [PROBE_VERSION])


def _applied_figure(pool: ModelPool, cache, run: ModelRun) -> dict:
    """The check's figure for ``run``'s adapter: from this process's check (run when the adapter was loaded, before
    its first item), else from the cache next to the responses it vouches for, else checked now (loads the base)."""
    key = probe_key(run.identity)
    figure = pool.applied.get(run.label)
    if figure is None:
        figure = cache.get_many([key]).get(key)
        if figure is not None:
            return figure  # type: ignore[return-value]
        pool.backend()  # loading activates the current run's adapter, which runs the check
        figure = pool.applied[run.label]
    cache.put_many([(key, "adapter_probe", figure)])
    return figure


def _model_info(run: ModelRun, checked: CheckedAdapter | None, applied: dict | None = None) -> ModelInfo:
    adapter = None
    if checked is not None:
        e = checked.entry
        adapter = AdapterInfo(ref=str(e.ref), path=str(e.path), weights_sha256=checked.identity["weights_sha256"],
                              trained_on=(e.manifest.get("base_model") or {}).get("fingerprint"),
                              forced_base_mismatch=checked.forced_base_mismatch, manifest=e.manifest, applied=applied)
    return ModelInfo(kind="base" if checked is None else "adapter", identity=run.identity, adapter=adapter, requests=asdict(run.stats))
