"""Score the base model and each adapter on the same items of every suite.

    validate suites and adapters -> load the base once -> for each model (base = no adapter,
    then each adapter hot-swapped onto the same base): for each suite: lm-eval evaluate() with
    our LM -> per-item records into the store -> results.json with aggregates and provenance

Adapters are scored on the base they were trained on (QLoRA-faithful: an NF4
adapter on the NF4 base), with one batch size, dtype and max length for all
models, recorded in the results.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..env import provenance, reduce_malloc_fragmentation
from ..errors import LafError
from ..models import resolve_model
from ..results import BASE, AdapterInfo, BaseModelInfo, ModelInfo, Provenance, ResultsDoc, ResultsStore, RunLock, commit_run
from .aggregation import breakdown, suite_aggregates
from .applied import PROBE_VERSION
from .cache import NullCache, ResponseCache, request_key
from .identity import SCORING_VERSION, CheckedAdapter, check_adapters, load_spec_for, model_identity
from .lm import CachedLM, RequestStats
from .pool import ModelPool, ModelRun
from .records import from_lm_eval_sample, nonfinite_items
from .spec import EvalSpec, default_cache_path
from .suites import Suite, load_suite
from .tasks import build_tasks, evaluate_suite, suite_meta

ProgressCallback = Callable[[str, str, int, int, int], None]  # model, suite, done, total, hits

__all__ = ["BASE", "SCORING_VERSION", "EvalSpec", "ProgressCallback", "default_cache_path", "run_eval"]


def run_eval(spec: EvalSpec, progress: ProgressCallback | None = None, log: Callable[[str], None] = lambda s: None,
             suites_override: list[Suite] | None = None) -> dict:
    """Score the base and every adapter of ``spec`` on the same items of every suite.

    Writes ``spec.out``: ``results.sqlite`` and ``records.jsonl`` (one :class:`~harness.results.ItemRecord` per
    model and item) and ``results.json`` (aggregates, the suites' metric meanings, provenance), and returns
    that document as a dict. Everything is validated before a model is loaded; responses come from the
    content-keyed cache where they can. ``suites_override``: already loaded suites (the pipeline's, with
    per-suite limits), in ``spec.suites`` order.
    """
    started = time.time()
    reduce_malloc_fragmentation()
    if not spec.suites:
        raise LafError("no suites to evaluate", "pass at least one --suite (see `laf suites list`)")
    if spec.batch_size <= 0:
        raise LafError(f"--batch-size must be positive (got {spec.batch_size})", "use e.g. --batch-size 8")
    with RunLock(spec.out, "laf eval"):  # held for the whole run: a second run into this folder fails at once
        return _run_locked(spec, started, progress, log, suites_override)


def _run_locked(spec: EvalSpec, started: float, progress, log, suites_override) -> dict:
    # -- validate everything before any model is loaded
    suites = suites_override if suites_override is not None else [load_suite(s, spec.data_dir) for s in spec.suites]
    names = [s.name for s in suites]
    for s in suites:
        if "replaces the built-in" in s.origin:
            log(f"warning: suite {s.name} is {s.origin}; results.json records that file")
    if len(set(names)) != len(names):
        raise LafError(f"a suite is listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}", "list each suite once")
    resolved, adapters, load, tasks, metas, runs = plan_runs(spec, suites)
    return _score_and_publish(spec, suites, resolved, adapters, load, tasks, metas, runs, started, progress, log)


def plan_runs(spec: EvalSpec, suites: list[Suite]):
    """Everything checked and decided before a model is loaded: the resolved base, the checked adapters, the load
    spec, lm-eval tasks and suite metadata, and one :class:`ModelRun` (label, identity) per model, base first.
    The distributed path (``evaluate/distributed.py``) plans with this same function."""
    for s in suites:
        if not s.spec.lm_eval:
            _ = s.build  # loads data, checks fields
    resolved = resolve_model(spec.model, allow_pickle=spec.allow_pickle, trust_remote_code=spec.trust_remote_code)
    base_fp = resolved.fingerprint
    adapters = check_adapters(spec, base_fp, resolved)
    load = load_spec_for(spec, adapters).resolved()  # device and compute dtype are part of the identity
    tasks = build_tasks(suites)
    metas = {s.name: suite_meta(s, tasks[s.name]) for s in suites}

    runs = [ModelRun(BASE, model_identity(base_fp, load, None, spec), None)]
    runs += [ModelRun(str(a.entry.ref), model_identity(base_fp, load, a.identity, spec), a.entry) for a in adapters]
    if len({r.label for r in runs}) != len(runs):
        raise LafError("an adapter is listed twice", "list each adapter once")
    return resolved, adapters, load, tasks, metas, runs


def _score_and_publish(spec, suites, resolved, adapters, load, tasks, metas, runs, started, progress, log) -> dict:
    """The run itself, under the output folder's lock."""
    base_fp = resolved.fingerprint
    cache = NullCache() if spec.no_cache else ResponseCache(spec.cache or default_cache_path())
    store = ResultsStore(spec.out, partial=True)

    # -- score every model on every suite
    pool = ModelPool(resolved, load, spec, log)
    lm = CachedLM(cache, pool.backend, spec.batch_size)
    results: dict[str, dict] = {}
    breakdowns: dict[str, dict] = {}
    applied: dict[str, dict] = {}
    try:
        for i, run in enumerate(runs):
            pool.select(run, i)
            lm.identity = run.identity
            results[run.label] = {}
            for suite in suites:
                meta = metas[suite.name]
                lm.progress = (lambda d, t, h, _m=run.label, _s=suite.name: progress(_m, _s, d, t, h)) if progress else None
                before = RequestStats(**asdict(lm.stats))
                limit = spec.limit or suite.spec.options.limit
                samples, aggregated = evaluate_suite(lm, suite, tasks[suite.name], limit, suite.spec.options.seed)
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
                if meta.breakdown:
                    breakdowns.setdefault(run.label, {})[suite.name] = {"field": meta.breakdown, "groups": breakdown(records, meta.breakdown, meta.metrics)}
                run.stats.add(RequestStats(*(getattr(lm.stats, f) - getattr(before, f) for f in asdict(before))))
            if run.adapter is not None:
                applied[run.label] = _applied_figure(pool, cache, run)
    except BaseException:
        store.close()
        raise
    finally:
        lm.progress = None
        if getattr(cache, "bad_rows", 0):
            log(f"response cache: {cache.bad_rows} invalid cached row(s) ignored and re-scored")
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
    return doc.to_dict()


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
