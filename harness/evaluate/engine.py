"""Score the base model and each adapter on the same items of every suite.

    validate suites and adapters -> load the base once -> for each model (base = no adapter,
    then each adapter hot-swapped onto the same base): for each suite: lm-eval evaluate() with
    our LM -> per-item records into the store -> results.json with aggregates and provenance

Adapters are scored on the base they were trained on (QLoRA-faithful: an NF4
adapter on the NF4 base), with one batch size, dtype and max length for all
models, recorded in the results.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..env import cache_dir, provenance, reduce_malloc_fragmentation
from ..errors import LafError
from ..io import sha256_file, sha256_json
from ..models import LoadSpec, load_model, resolve_model
from ..registry import AdapterEntry, Registry
from .cache import NullCache, ResponseCache
from .lm import CachedLM, HarnessLM, RequestStats
from .records import from_lm_eval_sample
from .store import ResultsStore, write_results
from .suites import Suite, load_suite

SCORING_VERSION = "laf-scoring-1"
BASE = "base"
VOLATILE_ADAPTER_KEYS = ("base_model_name_or_path", "revision", "inference_mode", "peft_version")


@dataclass
class EvalSpec:
    suites: list[str]
    model: str = "default"
    adapters: list[str] = field(default_factory=list)
    out: str = "reports/eval"
    limit: int | None = None
    precision: str = "auto"  # auto = the adapters' training precision (QLoRA-faithful), else fp32
    compute_dtype: str | None = None
    device: str = "auto"
    batch_size: int = 8
    max_length: int = 2048
    registry: str = "adapters_registry"
    cache: str | None = None  # default: <LAF_CACHE>/eval-cache.sqlite
    no_cache: bool = False
    data_dir: str | None = None
    force_base_mismatch: bool = False
    share_context: bool = True
    allow_pickle: bool = False
    trust_remote_code: bool = False
    seed: int = 1234


@dataclass
class ModelRun:
    label: str
    identity: str
    adapter: AdapterEntry | None
    stats: RequestStats = field(default_factory=RequestStats)


ProgressCallback = Callable[[str, str, int, int, int], None]  # model, suite, done, total, hits


def default_cache_path() -> Path:
    return cache_dir() / "eval-cache.sqlite"


def _adapter_identity(entry: AdapterEntry) -> dict:
    weights = entry.path / "adapter_model.safetensors"
    config = json.loads((entry.path / "adapter_config.json").read_text())
    return {
        "weights_sha256": sha256_file(weights),
        "config": {k: v for k, v in sorted(config.items()) if k not in VOLATILE_ADAPTER_KEYS},
    }


def model_identity(base_fp: str, load: LoadSpec, adapter: dict | None, spec: EvalSpec) -> str:
    return sha256_json({
        "base": base_fp,
        "load": {"precision": load.precision, "compute_dtype": load.compute_dtype, "device": load.device.split(":")[0]},
        "adapter": adapter,
        "batch_size": spec.batch_size,
        "max_length": spec.max_length,
        "share_context": spec.share_context,
        "scoring": SCORING_VERSION,
    })


def _check_adapters(spec: EvalSpec, base_fp: str) -> list[tuple[AdapterEntry, dict, bool]]:
    registry = Registry(spec.registry)
    out = []
    for ref in spec.adapters:
        entry = registry.resolve(ref)
        check = registry.verify(entry.ref)
        if not check.ok:
            bad = ", ".join(check.mismatched + check.missing + check.unexpected)
            raise LafError(
                f"adapter {entry.ref} does not match its manifest ({bad}): its weights changed since it was registered",
                f"run `laf registry verify {entry.ref}`; retrain or restore the files",
            )
        trained_on = (entry.manifest.get("base_model") or {}).get("fingerprint")
        forced = False
        if trained_on != base_fp:
            if not spec.force_base_mismatch:
                raise LafError(
                    f"adapter {entry.ref} was trained on base {str(trained_on)[:16]}... "
                    f"({(entry.manifest.get('base_model') or {}).get('spec')}), not on {spec.model} ({base_fp[:16]}...)",
                    "evaluate it with the base it was trained on, or pass --force-base-mismatch (the results will say so)",
                )
            forced = True
        out.append((entry, _adapter_identity(entry), forced))
    return out


def _load_spec(spec: EvalSpec, adapters) -> LoadSpec:
    if spec.precision != "auto":
        return LoadSpec(spec.precision, spec.compute_dtype, spec.device)
    loads = {json.dumps(e.manifest.get("load", {}), sort_keys=True) for e, _, _ in adapters}
    if len(loads) > 1:
        raise LafError(
            "the adapters were trained on differently loaded bases (" + "; ".join(sorted(loads)) + ")",
            "evaluate them in separate runs, or set --precision explicitly",
        )
    if loads:
        load = json.loads(loads.pop())
        return LoadSpec(load.get("precision", "fp32"), load.get("compute_dtype"), spec.device)
    return LoadSpec("fp32", None, spec.device)


class ModelPool:
    """The base model, loaded on the first cache miss and shared by every model of the run.

    Adapters are hot-swapped onto it (PeftModel load_adapter / set_adapter); the base is
    scored with no adapter attached. A run served entirely from the cache loads nothing.
    """

    def __init__(self, resolved, load: LoadSpec, spec: EvalSpec, log):
        self.resolved, self.load, self.spec, self.log = resolved, load, spec, log
        self.lm: HarnessLM | None = None
        self.base_model = None
        self.peft = None
        self.loaded_adapters: set[str] = set()
        self.current: tuple[ModelRun, int] | None = None

    @property
    def loaded(self) -> bool:
        return self.lm is not None

    def select(self, run: ModelRun, index: int) -> None:
        self.current = (run, index)
        if self.lm is not None:
            self._activate()

    def backend(self) -> HarnessLM:
        if self.lm is None:
            self.log(f"loading {self.resolved.spec} ({self.load.precision})")
            self.base_model, tok, self.load = load_model(self.resolved, self.load)
            self.lm = HarnessLM(self.base_model, tok, batch_size=self.spec.batch_size, max_length=self.spec.max_length, share_context=self.spec.share_context)
            self._activate()
        return self.lm

    def _activate(self) -> None:
        run, index = self.current
        if run.adapter is None:
            if self.peft is not None:
                self.peft.base_model.disable_adapter_layers()
            return
        from peft import PeftModel

        name = f"adapter_{index}"
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base_model, str(run.adapter.path), adapter_name=name, is_trainable=False)
            self.lm._model = self.peft
        elif name not in self.loaded_adapters:
            self.peft.load_adapter(str(run.adapter.path), adapter_name=name, is_trainable=False)
        self.loaded_adapters.add(name)
        self.peft.base_model.enable_adapter_layers()
        self.peft.set_adapter(name)
        self.peft.eval()


def _evaluate_suite(lm: HarnessLM, suite: Suite, task, limit: int | None, seed: int):
    """lm-eval's evaluate() for one suite; returns (samples, aggregated results)."""
    from lm_eval.evaluator import evaluate

    if task is None:
        docs = suite.load_docs()[:limit] if limit else suite.load_docs()
        samples = suite.build.native(lm, docs)
        return samples, native_aggregates(samples, suite.build.metrics)
    task.set_fewshot_seed(seed)
    task_dict = {"tasks": {task.config.task: task}, "groups": {}, "group_map": {}}
    out = evaluate(lm=lm, task_dict=task_dict, limit=limit, log_samples=True, bootstrap_iters=1000, verbosity="ERROR")
    return out["samples"][task.config.task], out["results"][task.config.task]


def native_aggregates(samples: list[dict], metrics: dict[str, dict]) -> dict:
    """lm-eval-style 'metric,none' aggregates for natively run suites, with the mean's standard error."""
    import math

    from ..stats import get_aggregation

    out = {}
    for name, meta in metrics.items():
        values = [s[name] for s in samples if name in s]
        if not values:
            continue
        agg = get_aggregation(meta.get("aggregation", "mean"))
        x = agg.columns(values)
        out[f"{name},none"] = float(agg.finish(x.sum(axis=0), len(values)))
        if agg.name == "mean" and len(values) > 1:
            mean = x[:, 0].mean()
            out[f"{name}_stderr,none"] = float(math.sqrt(((x[:, 0] - mean) ** 2).sum() / (len(values) - 1) / len(values)))
    return out


def breakdown(records, field: str, metrics: dict[str, dict]) -> dict:
    """Every metric per value of a document field (bias type, BBQ category)."""
    from ..stats import get_aggregation

    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(str(r.doc.get(field)), []).append(r)
    out = {}
    for g, recs in sorted(groups.items()):
        out[g] = {"n": len(recs)}
        for name, meta in metrics.items():
            values = [r.metrics[name] for r in recs if r.metrics.get(name) is not None]
            if not values:
                continue
            agg = get_aggregation(meta.get("aggregation", "mean"))
            try:
                v = float(agg.finish(agg.columns(values).sum(axis=0), len(values)))
            except (ValueError, TypeError, ZeroDivisionError):
                continue
            out[g][name] = None if v != v else v
    return out


def build_tasks(suites: list[Suite]) -> dict[str, object]:
    """lm-eval Task objects, built once and reused for every model."""
    from lm_eval.tasks import TaskManager

    tasks = {}
    plain = TaskManager(include_defaults=False)
    registered = None
    for s in suites:
        if not s.spec.lm_eval and s.build.native:
            tasks[s.name] = None  # run by the engine itself (see TaskBuild.native)
            continue
        if s.spec.lm_eval:
            registered = registered or TaskManager()
            loaded = registered.load([s.spec.lm_eval])
            task = next(iter(loaded["tasks"].values()))
        else:
            loaded = plain.load([s.build.config])
            task = loaded["tasks"][s.task_name]
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        tasks[s.name] = task
    return tasks


def suite_meta(suite: Suite, task) -> dict:
    if suite.spec.lm_eval:
        metric_list = task.config.metric_list or []
        metrics = {m["metric"]: {"higher_is_better": m.get("higher_is_better", True), "ideal": None, "aggregation": m.get("aggregation", "mean") if isinstance(m.get("aggregation", "mean"), str) else "mean"} for m in metric_list}
        primary = suite.spec.primary_metric or (metric_list[0]["metric"] if metric_list else "acc")
        n = len(task.eval_docs)
        data_sha = sha256_json([dict(d) for d in task.eval_docs])
        source = f"lm-eval registered task {suite.spec.lm_eval}"
    else:
        b = suite.build
        metrics, primary, n, data_sha, source = b.metrics, b.primary, len(suite.load_docs()), suite.data_sha256, suite.source
    return {
        **suite.describe(),
        "n_docs": n,
        "data_sha256": data_sha,
        "source": source,
        "output_type": task.get_config("output_type") if task is not None else suite.build.output_type,
        "num_fewshot": task.get_config("num_fewshot") if task is not None else 0,
        "breakdown": None if suite.spec.lm_eval else suite.build.breakdown,
        "metrics": metrics,
        "primary_metric": primary,
        "limit": suite.spec.options.limit,
        "seed": suite.spec.options.seed,
    }


def run_eval(spec: EvalSpec, progress: ProgressCallback | None = None, log: Callable[[str], None] = lambda s: None,
             suites_override: list[Suite] | None = None) -> dict:
    """``suites_override``: already loaded suites (the pipeline's, with per-suite limits), in ``spec.suites`` order."""
    started = time.time()
    reduce_malloc_fragmentation()
    if not spec.suites:
        raise LafError("no suites to evaluate", "pass at least one --suite (see `laf suites list`)")
    if spec.batch_size <= 0:
        raise LafError(f"--batch-size must be positive (got {spec.batch_size})", "use e.g. --batch-size 8")
    # -- validate everything before any model is loaded
    suites = suites_override if suites_override is not None else [load_suite(s, spec.data_dir) for s in spec.suites]
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise LafError(f"a suite is listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}", "list each suite once")
    for s in suites:
        if not s.spec.lm_eval:
            _ = s.build  # loads data, checks fields
    resolved = resolve_model(spec.model, allow_pickle=spec.allow_pickle, trust_remote_code=spec.trust_remote_code)
    base_fp = resolved.fingerprint
    adapters = _check_adapters(spec, base_fp)
    load = _load_spec(spec, adapters).resolved()  # device and compute dtype are part of the identity
    tasks = build_tasks(suites)
    metas = {s.name: suite_meta(s, tasks[s.name]) for s in suites}

    runs = [ModelRun(BASE, model_identity(base_fp, load, None, spec), None)]
    for entry, ident, _ in adapters:
        runs.append(ModelRun(str(entry.ref), model_identity(base_fp, load, ident, spec), entry))
    if len({r.label for r in runs}) != len(runs):
        raise LafError("an adapter is listed twice", "list each adapter once")
    cache = NullCache() if spec.no_cache else ResponseCache(spec.cache or default_cache_path())
    store = ResultsStore(spec.out, partial=True)

    pool = ModelPool(resolved, load, spec, log)
    lm = CachedLM(cache, pool.backend, spec.batch_size)
    results: dict[str, dict] = {}
    breakdowns: dict[str, dict] = {}
    try:
        for i, run in enumerate(runs):
            pool.select(run, i)
            lm.identity = run.identity
            results[run.label] = {}
            for suite in suites:
                task = tasks[suite.name]
                lm.progress = (lambda d, t, h, _m=run.label, _s=suite.name: progress(_m, _s, d, t, h)) if progress else None
                before = RequestStats(**asdict(lm.stats))
                limit = spec.limit or suite.spec.options.limit
                samples, aggregated = _evaluate_suite(lm, suite, task, limit, suite.spec.options.seed)
                output_type = metas[suite.name]["output_type"]
                records = [from_lm_eval_sample(s, model=run.label, suite=suite.name, category=suite.category, output_type=output_type) for s in samples]
                store.write(records)
                results[run.label][suite.name] = _aggregates(aggregated, len(records))
                field = metas[suite.name].get("breakdown")
                if field:
                    breakdowns.setdefault(run.label, {})[suite.name] = {"field": field, "groups": breakdown(records, field, metas[suite.name]["metrics"])}
                run.stats.add(RequestStats(*(getattr(lm.stats, f) - getattr(before, f) for f in asdict(before))))
    finally:
        lm.progress = None
        cache.close()
    store.publish()
    store.export_jsonl()
    store.close()
    doc = {
        "schema": "laf.results/1",
        "out": str(Path(spec.out)),
        "spec": asdict(spec),
        "provenance": {
            **provenance(),
            "base_model": {"spec": resolved.spec, "kind": resolved.kind, "source": resolved.source, "fingerprint": base_fp},
            "load": load.as_dict(),
            "batch_size": spec.batch_size,
            "max_length": spec.max_length,
            "share_context": spec.share_context,
            "scoring_version": SCORING_VERSION,
            "cache": None if spec.no_cache else str(spec.cache or default_cache_path()),
            "wall_time_s": round(time.time() - started, 2),
        },
        "models": {
            r.label: {
                "kind": "base" if r.adapter is None else "adapter",
                "identity": r.identity,
                "adapter": None if r.adapter is None else {
                    "ref": str(r.adapter.ref),
                    "path": str(r.adapter.path),
                    "weights_sha256": ident["weights_sha256"],
                    "trained_on": (r.adapter.manifest.get("base_model") or {}).get("fingerprint"),
                    "forced_base_mismatch": forced,
                    "manifest": r.adapter.manifest,
                },
                "requests": asdict(r.stats),
            }
            for r, (_, ident, forced) in zip(runs, [(None, None, False)] + adapters)
        },
        "suites": metas,
        "results": results,
        "breakdowns": breakdowns,
    }
    write_results(Path(spec.out), doc)
    return doc


def _aggregates(agg: dict, n: int) -> dict:
    out: dict[str, dict] = {}
    for key, value in agg.items():
        if "," not in key:
            continue
        metric, filt = key.split(",", 1)
        if metric.endswith("_stderr"):
            out.setdefault(metric[: -len("_stderr")], {})["stderr"] = value if isinstance(value, (int, float)) else None
        else:
            out.setdefault(metric, {})["value"] = value if isinstance(value, (int, float)) else None
            out[metric]["filter"] = filt
    for v in out.values():
        v["n"] = n
    return out
