"""The stages of ``laf run``, one function each: curate, train, evaluate, gate, compare, report.

Each stage fingerprints its inputs (content, never a path) and is skipped when
``state.json`` holds the same fingerprint from a finished run of it.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import resolve_path
from ..errors import LafError
from ..io import atomic_write_json, hash_path, read_json, sha256_json
from ..models.fingerprint import cached_file_sha256
from ..results import BASE, ResultsDoc, load_results
from ..results.artifacts import CompareDoc
from .config import RunConfig, suite_refs
from .state import RunState, StageLog


@dataclass
class RunContext:
    cfg: RunConfig
    base: Path  # the config file's folder: relative paths resolve against it
    run_dir: Path
    state: RunState
    stages: StageLog
    base_fingerprint: str
    log: Callable[[str], None]

    @property
    def curation(self) -> Path:
        return self.run_dir / "curation.json"

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"


def resolve_adapters(ctx: RunContext) -> tuple[list[str], list[dict]]:
    """Resolve the config's adapter references once, before any stage: ``name`` and ``name@latest`` become the
    registry's latest ``name@version`` now. Returns the resolved refs (duplicates dropped) and, per given reference,
    what it resolved to with the weights digest (logged as ``quickstart -> quickstart@2``)."""
    from ..registry import Registry

    reg = Registry(ctx.cfg.registry)
    refs: list[str] = []
    resolved = []
    for given in ctx.cfg.adapters:
        entry = reg.resolve(given)
        resolved.append({"given": given, "ref": str(entry.ref), "weights_digest": entry.digest})
        if str(entry.ref) not in refs:
            refs.append(str(entry.ref))
    if resolved:
        ctx.log("adapters: " + ", ".join(entry_line(r) for r in resolved))
        ctx.state.mark("adapters", resolved=resolved)
    return refs, resolved


def entry_line(r: dict) -> str:
    shown = r["ref"] if r["given"].strip() == r["ref"] else f"{r['given'].strip()} -> {r['ref']}"
    return f"{shown} (weights {r['weights_digest'][:12]})"


def curate_stage(ctx: RunContext, suites) -> Path:
    """Validate, deduplicate and decontaminate the training data; returns the data training should read."""
    from ..data.curate import CurationSettings, curate, write_clean, write_manifest

    cfg, log = ctx.cfg, ctx.log
    data_path = resolve_path(cfg.data.path, ctx.base)
    settings = CurationSettings(schema=cfg.data.schema_, file_format=cfg.data.format, model=cfg.model, max_length=cfg.train.max_length,
                                near_duplicate_threshold=cfg.curate.near_duplicate_threshold, ngram=cfg.curate.ngram,
                                against=[s.name if s.file is None else str(s.file) for s in suites if not s.spec.lm_eval],
                                data_dir=cfg.eval.data_dir, drop_contaminated=cfg.curate.drop_contaminated)
    fp = sha256_json({"data": hash_path(data_path, digest=cached_file_sha256), "settings": settings.__dict__,
                      "suites": {s.name: s.data_sha256 for s in suites if not s.spec.lm_eval}, "enabled": cfg.curate.enabled, "base": ctx.base_fingerprint})
    cleaned = ctx.run_dir / "train.clean.jsonl"
    if ctx.state.done("curate", fp) and cleaned.exists() and ctx.curation.exists():
        ctx.stages.skipped.append("curate")
    elif cfg.curate.enabled:
        log(f"curate: {data_path}")
        res = curate(data_path, settings, log=lambda m: log(f"  {m}"))
        write_clean(res, data_path, cleaned)
        write_manifest(res, ctx.curation)
        c = res.manifest["counts"]
        log(f"  {c['examples']} examples, {c['kept']} kept ({res.manifest['dropped'] or 'nothing dropped'})")
        ctx.state.finish("curate", fp, kept=c["kept"])
        ctx.stages.ran.append("curate")
    else:
        if data_path.is_file():
            shutil.copyfile(data_path, cleaned)
        ctx.state.finish("curate", fp)
        ctx.stages.skipped.append("curate")
    return cleaned if cleaned.exists() else data_path


@dataclass
class TrainJob:
    """A training run the train stage decided to do: its config, input fingerprint, state key and whether it resumes."""

    key: str
    tcfg: object  # TrainConfig
    fingerprint: str
    resume: bool


def train_plan(ctx: RunContext, train_data: Path, key: str = "train", work: Path | None = None, data_fp: str | None = None,
               split: dict | None = None) -> TrainJob | str:
    """What the train stage would do for ``ctx.cfg`` on ``train_data``: the registered ref when an adapter of the same
    inputs is registered and intact (state key ``key``), else the :class:`TrainJob` to run (checkpoints of other
    settings in its folder removed). ``work``: the training folder (default ``RUN_DIR/train``); ``data_fp``: the
    data's fingerprint (default: the curated content, or the file's hash)."""
    from ..registry import Registry
    from ..train.checkpoint import list_checkpoints

    cfg, log, state = ctx.cfg, ctx.log, ctx.state
    data_cfg = cfg.data.model_copy(update={"path": str(train_data.resolve()), "schema_": "auto", "format": "auto"})
    tcfg = cfg.train_config(data_cfg, output_dir=str(work or ctx.run_dir / "train"))
    if data_fp is None:
        curated = cfg.curate.enabled and ctx.curation.exists()
        data_fp = read_json(ctx.curation)["fingerprints"]["output_content_sha256"] if curated else hash_path(train_data, digest=cached_file_sha256)
    # init_from: X@latest names whatever X is now: the adapter it resolves to is an input (a retrained X retrains this).
    # Not registered yet: nothing to hold (training stops on it with one clear error), so the plan is what it was.
    start = {}
    if tcfg.init_from:
        try:
            start = {"init_from": Registry(cfg.registry).resolve(tcfg.init_from).digest}
        except LafError:
            pass
    fp = sha256_json({"config": tcfg.math_dict() | {"data": None}, "data": data_fp, "base": ctx.base_fingerprint,
                      **({"select": [ctx.cfg.select.model_dump(mode="json"), sha256_json(split)]} if split else {}), **start})
    done = state.done(key, fp)
    if done:
        try:
            if Registry(cfg.registry).verify(done["adapter"]).ok:
                ctx.stages.skipped.append(key)
                log(f"train: unchanged, using {done['adapter']}")
                return str(done["adapter"])
        except LafError:
            pass
    checkpoints = list_checkpoints(tcfg.run_dir())
    resume = bool(checkpoints) and state.started(f"{key}_started").get("fingerprint") == fp
    if checkpoints and not resume:
        shutil.rmtree(tcfg.run_dir() / "checkpoints", ignore_errors=True)  # checkpoints of other settings
    state.mark(f"{key}_started", fingerprint=fp)
    return TrainJob(key, tcfg, fp, resume)


def train_finish(ctx: RunContext, job: TrainJob, entry) -> str:
    """Record a finished training run (its registry entry) in state.json; returns its ref."""
    ref = str(entry.ref)
    m = entry.manifest
    ctx.log(f"  registered {ref}: {m['steps']} steps, final loss {m['final_train_loss']:.3f}, held-out {m['final_eval_loss'] if m['final_eval_loss'] is None else round(m['final_eval_loss'], 3)}, {m['train_time_s']:.0f} s")
    ctx.state.finish(job.key, job.fingerprint, adapter=ref)
    ctx.stages.ran.append(job.key)
    return ref


def replay_filter(ctx: RunContext, suites):
    """The contamination check of replay texts against the run's own eval suites (as the curate stage checks data)."""
    from ..data.curate import replay_contamination

    r = ctx.cfg.train.preserve.replay
    ngram = r.ngram if r is not None and "ngram" in r.model_fields_set else ctx.cfg.curate.ngram  # unset: the curate stage's
    against = [s.name if s.file is None else str(s.file) for s in suites if not s.spec.lm_eval]
    return functools.partial(replay_contamination, against=against, ngram=ngram, data_dir=ctx.cfg.eval.data_dir)  # picklable: Ray tasks get it


def train_stage(ctx: RunContext, train_data: Path, train_progress=None, key: str = "train", work: Path | None = None, data_fp: str | None = None,
                select=None, eval_progress=None, suites=None) -> str:
    """Train (or resume, or reuse the unchanged) adapter on ``train_data``; returns its registry ref. ``select``:
    ``(suites, policy, split)``: snapshots every ``select.every`` steps, the registered one chosen on the selection
    split (``harness/pipeline/select.py``)."""
    from ..train import train

    job = train_plan(ctx, train_data, key, work, data_fp, split=select[2] if select else None)
    if isinstance(job, str):
        return job
    ctx.log(f"train: {ctx.cfg.name} on {train_data.name}" + (" (resuming)" if job.resume else ""))
    all_suites = select[0] if select else suites
    tcfg = job.tcfg
    if select:  # the trained run registers into the selection's own registry; only the chosen snapshot reaches the run's
        tcfg = tcfg.model_copy(update={"registry": str(ctx.run_dir / "select" / "registry")})
    result = train(tcfg, config_dir=ctx.base, resume=job.resume, on_step=train_progress, log=lambda m: ctx.log(f"  {m}"),
                   replay_filter=replay_filter(ctx, all_suites) if all_suites is not None else None,
                   snapshot_every=ctx.cfg.select.every if select else 0, init_registry=job.tcfg.registry)
    if not select:
        return train_finish(ctx, job, result.entry)
    from .select import select_checkpoint

    ref, doc = select_checkpoint(ctx, job, result, select[0], select[1], select[2], eval_progress)
    ctx.state.mark(f"select:{key}", curve=doc["curve"], chosen_step=doc["chosen_step"], adapter=ref)
    shutil.copyfile(ctx.run_dir / "select" / "selection.json", ctx.run_dir / f"selection{'' if key == 'train' else '-' + key.split(':', 1)[-1]}.json")
    ctx.log(f"  registered {ref} (step {doc['chosen_step']} of {result.state.step}, chosen on the selection split)")
    ctx.state.finish(job.key, job.fingerprint, adapter=ref)
    ctx.stages.ran.append(job.key)
    return ref


def eval_stage(ctx: RunContext, suites, adapters: list[str], eval_progress=None, prefill=None) -> ResultsDoc:
    """Score the base and the adapters (the response cache makes an unchanged or interrupted evaluation cheap).
    ``prefill(spec, suites)``, when given, runs before the evaluation when it is not unchanged (``laf sweep`` fills
    the response cache from Ray workers there; the evaluation then reads every response from the cache)."""
    from ..evaluate import run_eval
    from ..registry import Registry

    cfg, log = ctx.cfg, ctx.log
    refs, limits = suite_refs(cfg, ctx.base)
    spec = eval_spec(ctx, adapters)
    fp = sha256_json({"spec": spec.__dict__, "limits": limits, "suites": {s.name: (s.data_sha256 if not s.spec.lm_eval else s.spec.lm_eval) for s in suites},
                      "adapters": {a: Registry(cfg.registry).resolve(a).digest for a in adapters}, "base": ctx.base_fingerprint})
    if ctx.state.done("eval", fp) and (ctx.eval_dir / "results.json").exists():
        ctx.stages.skipped.append("eval")
        log("evaluate: unchanged")
        results = load_results(ctx.eval_dir)
    else:
        log(f"evaluate: base + {', '.join(adapters)} on {len(refs)} suites")
        apply_limits(ctx, suites)
        if prefill is not None:
            prefill(spec, suites)
        results = run_eval(spec, progress=eval_progress, log=lambda m: log(f"  {m}"), suites_override=suites)
        ctx.state.finish("eval", fp, adapters={a: Registry(cfg.registry).resolve(a).digest for a in adapters})
        ctx.stages.ran.append("eval")
    if ctx.curation.exists():
        shutil.copyfile(ctx.curation, ctx.eval_dir / "curation.json")
    return results


def apply_limits(ctx: RunContext, suites) -> None:
    """The config's per-suite limits onto the loaded suites (in ``eval.suites`` order)."""
    refs, limits = suite_refs(ctx.cfg, ctx.base)
    for ref, s in zip(refs, suites):
        if limits.get(ref):
            s.spec.options.limit = limits[ref]


def eval_spec(ctx: RunContext, adapters: list[str]):
    """The evaluation's EvalSpec from the run config: the base loaded as the adapters were trained on it (precision,
    and for NF4 the compute dtype ``train.compute_dtype`` names; unset, the device's default)."""
    from ..evaluate import EvalSpec

    cfg = ctx.cfg
    refs, _ = suite_refs(cfg, ctx.base)
    return EvalSpec(suites=refs, model=cfg.model, adapters=adapters, out=str(ctx.eval_dir), limit=cfg.eval.limit, precision=cfg.precision,
                    compute_dtype=cfg.train.compute_dtype if cfg.precision == "nf4" else None,
                    batch_size=cfg.eval.batch_size, max_length=cfg.eval.max_length, registry=cfg.registry, cache=cfg.eval.cache, data_dir=cfg.eval.data_dir)


def merge_stage(ctx: RunContext) -> list[str]:
    """Merge registered adapters (``merge:``, each a ``laf merge`` config) into new candidates; an unchanged merge
    (same config, same parents' files) reuses its registered adapter."""
    from ..merge import merge_adapters
    from ..registry import Registry

    cfg, log = ctx.cfg, ctx.log
    reg = Registry(cfg.registry)
    refs = []
    for i, mc in enumerate(cfg.merge_configs()):
        parents = [reg.resolve(a.ref) for a in mc.inputs()]
        fp = sha256_json({"config": mc.model_dump(mode="json", by_alias=True), "parents": [[str(p.ref), p.manifest.get("files")] for p in parents],
                          "base": ctx.base_fingerprint})
        key = f"merge-{i}"
        done = ctx.state.done(key, fp)
        if done:
            try:
                if reg.verify(done["adapter"]).ok:
                    ctx.stages.skipped.append(key)
                    log(f"merge: unchanged, using {done['adapter']}")
                    refs.append(done["adapter"])
                    continue
            except LafError:
                pass
        log(f"merge: {mc.method} of {', '.join(str(p.ref) for p in parents)}")
        res = merge_adapters(mc, source=f"merge[{i}]", log=lambda m: log(f"  {m}"))
        ref = str(res.ref)
        log(f"  registered {ref} ({res.seconds:.2f} s)")
        ctx.state.finish(key, fp, adapter=ref)
        ctx.stages.ran.append(key)
        refs.append(ref)
    return refs


def parity_stage(ctx: RunContext, adapters: list[str]) -> Path:
    """``laf parity`` of one candidate (``parity.adapter``, default the first) into ``eval/parity/``, where the gate's
    parity rules and the report find it."""
    from ..merge.parity import ParitySpec, run_parity
    from ..registry import Registry

    cfg, log = ctx.cfg, ctx.log
    p = cfg.parity
    assert p is not None
    ref = str(Registry(cfg.registry).resolve(p.adapter or adapters[0]).ref)
    refs, _ = suite_refs(cfg, ctx.base)
    out = ctx.eval_dir / "parity"
    spec = ParitySpec(adapter=ref, suites=refs, out=str(out), model=cfg.model, registry=cfg.registry, forms=list(p.forms),
                      limit=p.limit or cfg.eval.limit, dtype=p.dtype, base_weights=p.base_weights, batch_size=cfg.eval.batch_size,
                      max_length=cfg.eval.max_length, cache=cfg.eval.cache, data_dir=cfg.eval.data_dir)
    fp = sha256_json({"spec": {k: v for k, v in spec.__dict__.items() if k != "out"}, "adapter": Registry(cfg.registry).resolve(ref).manifest.get("files"),
                      "base": ctx.base_fingerprint})
    if ctx.state.done("parity", fp) and (out / "parity.json").exists():
        ctx.stages.skipped.append("parity")
        log("parity: unchanged")
        return out / "parity.json"
    shutil.rmtree(out, ignore_errors=True)  # our own output of other settings
    log(f"parity: {ref} on the fly vs {', '.join(p.forms)}")
    run_parity(spec, log=lambda m: log(f"  {m}"))
    ctx.state.finish("parity", fp)
    ctx.stages.ran.append("parity")
    return out / "parity.json"


def diversity_stage(ctx: RunContext, adapters: list[str]) -> Path | None:
    """``laf diversity`` on the run's evaluation (every candidate; weight space on their adapter files) into
    ``eval/diversity.json`` + ``eval/diversity/*.svg``, where the report finds it; a copy of the JSON in the run folder.
    Skipped when the records, the candidates' files and the options are unchanged. A switched-off stage removes
    what it wrote before (so the report never shows a stale analysis)."""
    from ..diversity import FILE, SCHEMA, DiversityOptions, analyse_run
    from ..diversity.analyse import SVG_DIR
    from ..registry import Registry
    from ..results import INTEGRITY

    cfg, log = ctx.cfg, ctx.log
    d = cfg.diversity
    if d is None or not d.enabled:
        if ctx.state.started("diversity").get("finished"):
            (ctx.eval_dir / FILE).unlink(missing_ok=True)
            (ctx.run_dir / FILE).unlink(missing_ok=True)
            shutil.rmtree(ctx.eval_dir / SVG_DIR, ignore_errors=True)
            ctx.state.mark("diversity", finished=False, removed=True)
        return None
    options = DiversityOptions(weight_space=d.weight_space, function_space=d.function_space, probe_suite=d.probe_suite, probe_n=d.probe_n,
                               min_items=d.min_items, per_module=d.per_module, model=cfg.model)
    reg = Registry(cfg.registry)
    integrity = ctx.eval_dir / INTEGRITY
    fp = sha256_json({"schema": SCHEMA, "options": options.__dict__, "records": integrity.read_text("utf-8") if integrity.exists() else None,
                      "adapters": {a: reg.resolve(a).digest for a in adapters} if (d.weight_space or d.function_space) else sorted(adapters),
                      "base": ctx.base_fingerprint})
    out = ctx.eval_dir / FILE
    if ctx.state.done("diversity", fp) and out.exists():
        ctx.stages.skipped.append("diversity")
        log("diversity: unchanged")
        return out
    log(f"diversity: {len(adapters)} candidates" + (", weight space" if d.weight_space else "") + (", function space" if d.function_space else ""))
    path, doc = analyse_run(ctx.eval_dir, adapters if (d.weight_space or d.function_space) else [], options, registry=cfg.registry)
    shutil.copyfile(path, ctx.run_dir / FILE)
    check = (doc.model_extra or {}).get("prediction_check")
    summary = check.get("summary") if isinstance(check, dict) else None
    if summary:
        log(f"  predicted vs observed merges: {summary}")
    ctx.state.finish("diversity", fp)
    ctx.stages.ran.append("diversity")
    return path


def verdict_paths(ctx: RunContext, adapters: list[str]) -> list[Path]:
    """Where each candidate's verdict.json goes: the first (the trained adapter, or the first listed) in the run
    folder as ``verdict.json``, the others as ``verdict-NAME-VERSION.json``."""
    return [ctx.run_dir / ("verdict.json" if i == 0 else f"verdict-{ref.replace('@', '-')}.json") for i, ref in enumerate(adapters)]


@dataclass
class ReleasedPlan:
    """Where one candidate's released baseline comes from (``gate: {baseline: released}``)."""

    name: str
    release: dict | None  # the last release of ``name`` (None: nothing released yet)
    store: str
    rescore: str | None = None  # why the release is re-scored in this run's evaluation (None: its recorded records are used)
    folder: Path | None = None  # its recorded, verified run folder

    @property
    def ref(self) -> str | None:
        return None if self.release is None else str(self.release["candidate"])


def released_plans(ctx: RunContext, adapters: list[str], history: str | None) -> dict[str, ReleasedPlan]:
    """Before the evaluation: each candidate's last release. A release whose recorded run folder is this run's own
    evaluation folder (rewritten now) is re-scored here, next to the candidate."""
    from ..gate.released import adapter_name, find_release

    if history is None:
        raise LafError("gate.baseline: released reads the release history, which is switched off (history: off / LAF_HISTORY_URL=off)",
                       "name a history in the config (history: PATH or URL), or gate against the base")
    plans: dict[str, ReleasedPlan] = {}
    for ref in adapters:
        name = adapter_name(ref)
        rel, row, shown = find_release(name, history)
        plan = ReleasedPlan(name, rel, shown)
        if rel is not None and rel["candidate"] == ref:
            raise LafError(f"the candidate {ref} is itself the last release of {name}", "train or list a newer version, or set gate.baseline: base")
        if rel is not None:
            folder = Path(str(row["run_folder"])) if row and row.get("run_folder") else None
            if folder is None:
                plan.rescore = "the history records no run folder for it"
            elif folder.resolve() == ctx.eval_dir.resolve():
                plan.rescore = f"its recorded run folder {folder} is this run's evaluation folder, which this run rewrites"
        plans[ref] = plan
    return plans


def verify_released(ctx: RunContext, plans: dict[str, ReleasedPlan], history: str) -> list[str]:
    """After the evaluation: check each release that is not re-scored against the candidate's items (digest, suite
    fingerprints, item sets); returns the released refs that must be re-scored after all (in the registry), and
    refuses with the reason where one is not there."""
    from ..gate.released import ReleasedBaseline, refusal, released_baseline
    from ..gate.runs import load_side
    from ..registry import Registry

    more = []
    for ref, plan in plans.items():
        if plan.release is None or plan.rescore is not None:
            continue
        rb = released_baseline(load_side(f"{ctx.eval_dir}#{ref}", "candidate", default_base=False), history)
        if rb.side is not None:
            plan.folder = rb.folder
            continue
        plan.rescore = rb.reason
        more.append(plan.ref)
    for ref in [p.ref for p in plans.values() if p.rescore is not None]:
        try:
            Registry(ctx.cfg.registry).resolve(ref)
        except LafError as e:
            plan = next(p for p in plans.values() if p.ref == ref)
            raise LafError(refusal(ReleasedBaseline(plan.release, plan.store, reason=plan.rescore), ref).cause + f"; and it cannot be re-scored here ({e.cause})",
                           f"register {ref} in {ctx.cfg.registry} again, or set gate.baseline: base") from None
    return [r for r in dict.fromkeys(more) if r is not None]


def gate_stage(ctx: RunContext, policy, adapters: list[str], plans: dict[str, ReleasedPlan] | None = None, history: str | None = None) -> list:
    """One verdict per candidate, each with its own verdict.json, JUnit XML and Markdown summary (the first
    candidate's without a suffix), against the base or (``plans``) the candidate's last release; returns
    ``[(model, Verdict)]`` in candidate order."""
    from ..gate import run_gate
    from ..gate.signing import signature_path, verdict_kept

    out = []
    curation = ctx.curation if ctx.curation.exists() else None
    sign = resolve_path(ctx.cfg.gate.sign, ctx.base) if ctx.cfg.gate.sign else None  # gate: {sign: KEY}
    for i, (ref, path) in enumerate(zip(adapters, verdict_paths(ctx, adapters))):
        suffix = "" if i == 0 else f"-{ref.replace('@', '-')}"
        baseline, kind, notes = f"{ctx.eval_dir}#{BASE}", "base", []
        plan = (plans or {}).get(ref)
        if plan is not None and plan.release is None:
            notes.append(f"no version of {plan.name} has been released yet (history {plan.store}): gated against the base model instead")
        elif plan is not None:
            r = plan.release or {}
            kind = "released"
            when = f"released {r.get('released_at')} by {r.get('released_by')}"
            if plan.rescore is not None:
                baseline = f"{ctx.eval_dir}#{plan.ref}"
                notes.append(f"baseline: the last release {plan.ref} ({when}), re-scored in this run on the same items because {plan.rescore}")
            else:
                baseline = f"{plan.folder}#{plan.ref}"
                notes.append(f"baseline: the last release {plan.ref} ({when}); its records in {plan.folder} match the history and are paired "
                             "with the candidate's on the same items")
        history_info = None  # in the verdict before it is written (and signed), never added to it afterwards
        if plan is not None:
            history_info = {"store": plan.store, **({"release": {k: (plan.release or {}).get(k) for k in ("candidate", "released_at", "released_by", "git_commit", "run_id")}}
                                                    if plan.release else {})}
        out_path = (ctx.eval_dir / "verdict.json") if i == 0 else path
        with verdict_kept(out_path):  # a gate that fails (a key that cannot sign) keeps the earlier verdict and signature
            v, _ = run_gate(baseline, f"{ctx.eval_dir}#{ref}", policy, policy_source=ctx.cfg.policy_source(),
                            inconclusive_as=ctx.cfg.gate.inconclusive, curation=curation, out=out_path,
                            junit=ctx.run_dir / f"junit{suffix}.xml", summary=ctx.run_dir / f"summary{suffix}.md",
                            baseline_kind=kind, notes=notes, sign=sign, history_info=history_info)
        if i == 0:
            shutil.copyfile(ctx.eval_dir / "verdict.json", path)
            if sign is not None:
                shutil.copyfile(signature_path(ctx.eval_dir / "verdict.json"), signature_path(path))
            else:
                signature_path(path).unlink(missing_ok=True)
        out.append((ref, v))
    ctx.stages.ran.append("gate")
    return out


def history_stage(ctx: RunContext, history: str | None, verdicts: list, adapters: list[str], compare: CompareDoc | None) -> dict | None:
    """Record the run in the release history (its verdicts; where nothing was gated, the comparison of its candidates
    with the base) and write each candidate's trend into the evaluation folder for the report."""
    if history is None:
        return None
    from ..gate.compare import compare_runs
    from ..history import record_outcome

    if not verdicts and compare is None:
        compare = compare_runs([f"{ctx.eval_dir}#{a}" for a in adapters], f"{ctx.eval_dir}#{BASE}", None)
    paths = verdict_paths(ctx, adapters)
    artifacts = {a: {"verdict": str(p.resolve()), "report": str((ctx.run_dir / "report.html").resolve())} for a, p in zip(adapters, paths)}
    rec = record_outcome(history, "run", [v.to_dict() for _, v in verdicts] or None, compare.to_dict() if compare is not None and not verdicts else None,
                         config_fingerprint=sha256_json(ctx.cfg.model_dump(mode="json")), run_folder=ctx.eval_dir, trend_dir=ctx.eval_dir,
                         artifacts=artifacts)  # `laf run` prints where it was recorded with the verdict
    ctx.stages.ran.append("history")
    return rec


def compare_stage(ctx: RunContext, adapters: list[str], policy=None, verdicts: list | None = None) -> CompareDoc:
    """Rank several adapters against the base on the quantities the policy gates, each with its verdict
    (compare.json in the eval folder and the run folder); returns the document."""
    from ..gate.compare import compare_runs

    doc = compare_runs([f"{ctx.eval_dir}#{a}" for a in adapters], f"{ctx.eval_dir}#{BASE}", policy, policy.confidence if policy else 0.95,
                       verdicts=dict(verdicts or []))
    atomic_write_json(ctx.eval_dir / "compare.json", doc.to_dict())
    shutil.copyfile(ctx.eval_dir / "compare.json", ctx.run_dir / "compare.json")
    ctx.stages.ran.append("compare")
    return doc


def report_stage(ctx: RunContext) -> Path:
    """The self-contained HTML report of the run."""
    from ..report import write_report

    report = write_report(ctx.eval_dir, ctx.run_dir / "report.html")
    ctx.stages.ran.append("report")
    return report
