"""``laf run CONFIG``: curate -> train -> evaluate -> gate -> compare -> report, each stage cached.

Every stage records the fingerprint of its inputs in ``RUN_DIR/state.json``
(the curated data's content, not the curation run, feeds training) and is
skipped when it is unchanged, so re-running after an interruption
continues (training resumes from its last checkpoint, evaluation from the
response cache) and changing one input re-does only what depends on it.
The whole config is validated before any stage starts, and every problem is
reported together.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import apply_overrides, load_yaml
from .errors import ConfigError, LafError
from .io import atomic_write_json, read_json, sha256_json
from .train.config import DataConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCurate(Strict):
    enabled: bool = True
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1)
    ngram: int = Field(13, ge=4)
    drop_contaminated: bool = True


class RunEval(Strict):
    suites: list[str | dict] = Field(min_length=1)
    batch_size: int = Field(8, gt=0)
    max_length: int = Field(2048, gt=0)
    limit: int | None = Field(None, gt=0)
    cache: str | None = None
    data_dir: str | None = None


class RunGate(Strict):
    policy: str | dict
    inconclusive: Literal["inconclusive", "fail", "pass"] = "inconclusive"


class RunConfig(Strict):
    name: str
    model: str = "default"
    precision: Literal["nf4", "bf16", "fp32"] = "nf4"
    data: DataConfig | None = None  # the trainer's data settings (eval split etc.); the path is curated first
    curate: RunCurate = RunCurate()
    train: dict[str, Any] = {}
    adapters: list[str] = []
    eval: RunEval
    gate: RunGate | None = None
    registry: str = "adapters_registry"
    out_root: str = "reports"




@dataclass
class StageLog:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _suite_refs(cfg: RunConfig, base: Path) -> tuple[list[str], dict[str, int]]:
    """Suite references (paths resolved against the config) and per-suite limits."""
    refs, limits = [], {}
    for s in cfg.eval.suites:
        if isinstance(s, dict):
            ref, lim = s.get("suite"), s.get("limit")
        else:
            ref, lim = s, None
        p = base / ref if ref and (ref.endswith((".yaml", ".yml")) and not Path(ref).is_absolute()) else None
        ref = str(p) if p is not None and p.exists() else ref
        refs.append(ref)
        if lim:
            limits[ref] = int(lim)
    return refs, limits


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> tuple[RunConfig, Path]:
    path = Path(path)
    raw = apply_overrides(load_yaml(path), overrides)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError:
        from .config import validate

        validate(RunConfig, raw, path)  # raises with every problem listed
        raise
    return cfg, path.resolve().parent


def validate_run(cfg: RunConfig, base: Path, config_path: Path):
    """Everything that can be checked before a stage starts, reported together."""
    from .evaluate.suites import load_suite
    from .gate.policy import Policy
    from .train.config import TrainConfig

    problems: list[str] = []
    if cfg.data is None and not cfg.adapters:
        problems.append("nothing to evaluate against the base: give 'data' (to train an adapter) or 'adapters' (registered ones)")
    if cfg.data is not None:
        p = Path(cfg.data.path) if Path(cfg.data.path).is_absolute() else base / cfg.data.path
        if not p.exists():
            problems.append(f"key 'data.path': file not found: {p}")
        train_raw = {**cfg.train, "name": cfg.name, "model": cfg.model, "precision": cfg.precision, "data": {"path": str(p)}, "registry": cfg.registry}
        try:
            TrainConfig.model_validate(train_raw)
        except ValidationError as e:
            for err in e.errors():
                key = ".".join(str(x) for x in err["loc"])
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                problems.append(f"key 'train.{key}': {msg}" if key not in ("name",) else f"key 'name': {msg}")
    refs, _ = _suite_refs(cfg, base)
    suites = []
    for ref in refs:
        try:
            s = load_suite(ref, cfg.eval.data_dir)
            if not s.spec.lm_eval:
                s.load_docs()
            suites.append(s)
        except LafError as e:
            problems.append(f"key 'eval.suites': {ref}: {e.cause}")
    if cfg.adapters:
        from .registry import Registry

        reg = Registry(cfg.registry)
        for a in cfg.adapters:
            try:
                reg.resolve(a)
            except LafError as e:
                problems.append(f"key 'adapters': {e.cause}")
    policy = None
    if cfg.gate is not None:
        try:
            if isinstance(cfg.gate.policy, dict):
                policy = Policy.model_validate(cfg.gate.policy)
            else:
                pp = Path(cfg.gate.policy) if Path(cfg.gate.policy).is_absolute() else base / cfg.gate.policy
                from .gate.policy import load_policy

                policy = load_policy(pp)
        except ValidationError as e:
            for err in e.errors():
                problems.append(f"key 'gate.policy.{'.'.join(str(x) for x in err['loc'])}': {err['msg']}")
        except LafError as e:
            problems.append(f"key 'gate.policy': {e.cause}")
        if policy is not None:
            if policy.max_contamination is not None and cfg.data is None:
                problems.append("key 'gate.policy.max_contamination': this config has no training data to check against the suites "
                                "(give 'data', or remove max_contamination)")
            names = {s.name for s in suites}
            cats = {s.category for s in suites}
            for i, rule in enumerate(policy.rules):
                if rule.suite and rule.suite not in names:
                    problems.append(f"key 'gate.policy.rules.{i}': suite '{rule.suite}' is not run (eval.suites has {', '.join(sorted(names))})")
                if rule.category and rule.category not in cats:
                    problems.append(f"key 'gate.policy.rules.{i}': no suite of category '{rule.category}' is run")
    if problems:
        raise ConfigError(config_path, None, f"{len(problems)} problem(s) before any stage started:\n  - " + "\n  - ".join(problems),
                          "fix them all and run again (see the README's config reference)")
    return suites, policy


class RunState:
    def __init__(self, run_dir: Path):
        self.path = run_dir / "state.json"
        self.data = read_json(self.path) if self.path.exists() else {"stages": {}}

    def done(self, stage: str, fingerprint: str) -> dict | None:
        s = self.data["stages"].get(stage)
        return s if s and s.get("fingerprint") == fingerprint and s.get("finished") else None

    def finish(self, stage: str, fingerprint: str, **outputs) -> None:
        self.data["stages"][stage] = {"fingerprint": fingerprint, "finished": True, "time": time.time(), **outputs}
        atomic_write_json(self.path, self.data)



def run_pipeline(config_path: str | Path, overrides: list[str] | None = None, log: Callable[[str], None] = print,
                 train_progress=None, eval_progress=None) -> dict:
    from .data.curate import CurationSettings, curate, write_clean, write_manifest
    from .evaluate import EvalSpec, run_eval
    from .models import resolve_model
    from .registry import Registry

    t0 = time.time()
    config_path = Path(config_path)
    cfg, base = load_run_config(config_path, overrides)
    suites, policy = validate_run(cfg, base, config_path)
    refs, limits = _suite_refs(cfg, base)
    run_dir = Path(cfg.out_root) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_path, run_dir / "config.yaml")
    state = RunState(run_dir)
    stages = StageLog()
    resolved = resolve_model(cfg.model)
    adapters = list(cfg.adapters)

    # -- curate
    train_data = None
    if cfg.data is not None:
        data_path = Path(cfg.data.path) if Path(cfg.data.path).is_absolute() else base / cfg.data.path
        settings = CurationSettings(schema=cfg.data.schema_, file_format=cfg.data.format, model=cfg.model, max_length=int(cfg.train.get("max_length", 512)),
                                    near_duplicate_threshold=cfg.curate.near_duplicate_threshold, ngram=cfg.curate.ngram,
                                    against=[s.name if s.file is None else str(s.file) for s in suites if not s.spec.lm_eval],
                                    data_dir=cfg.eval.data_dir, drop_contaminated=cfg.curate.drop_contaminated)
        from .models.fingerprint import cached_file_sha256

        fp = sha256_json({"data": cached_file_sha256(data_path) if data_path.is_file() else str(data_path), "settings": settings.__dict__,
                          "suites": {s.name: s.data_sha256 for s in suites if not s.spec.lm_eval}, "enabled": cfg.curate.enabled, "base": resolved.fingerprint})
        cleaned = run_dir / "train.clean.jsonl"
        if state.done("curate", fp) and cleaned.exists() and (run_dir / "curation.json").exists():
            stages.skipped.append("curate")
        elif cfg.curate.enabled:
            log(f"curate: {data_path}")
            res = curate(data_path, settings, log=lambda m: log(f"  {m}"))
            write_clean(res, data_path, cleaned)
            write_manifest(res, run_dir / "curation.json")
            c = res.manifest["counts"]
            log(f"  {c['examples']} examples, {c['kept']} kept ({res.manifest['dropped'] or 'nothing dropped'})")
            state.finish("curate", fp, kept=c["kept"])
            stages.ran.append("curate")
        else:
            shutil.copyfile(data_path, cleaned) if data_path.is_file() else None
            state.finish("curate", fp)
            stages.skipped.append("curate")
        train_data = cleaned if cleaned.exists() else data_path

    # -- train
    if train_data is not None:
        from .train import TrainConfig, train

        data_cfg = cfg.data.model_dump(by_alias=True) | {"path": str(train_data.resolve()), "schema": "auto", "format": "auto"}
        tcfg = TrainConfig.model_validate({**cfg.train, "name": cfg.name, "model": cfg.model, "precision": cfg.precision, "data": data_cfg,
                                           "registry": cfg.registry, "output_dir": str(run_dir / "train")})
        fp = sha256_json({"config": tcfg.math_dict() | {"data": None}, "data": read_json(run_dir / "curation.json")["fingerprints"]["output_content_sha256"]
                          if (run_dir / "curation.json").exists() else sha256_json(train_data.read_text()), "base": resolved.fingerprint})
        done = state.done("train", fp)
        ref = None
        if done:
            try:
                if Registry(cfg.registry).verify(done["adapter"]).ok:
                    ref = done["adapter"]
            except LafError:
                ref = None
        if ref:
            stages.skipped.append("train")
            log(f"train: unchanged, using {ref}")
        else:
            from .train.loop import list_checkpoints

            resume = bool(list_checkpoints(tcfg.run_dir())) and (state.data["stages"].get("train_started") or {}).get("fingerprint") == fp
            if list_checkpoints(tcfg.run_dir()) and not resume:
                shutil.rmtree(tcfg.run_dir() / "checkpoints", ignore_errors=True)  # checkpoints of other settings
            state.data["stages"]["train_started"] = {"fingerprint": fp}
            atomic_write_json(state.path, state.data)
            log(f"train: {cfg.name} on {train_data.name}" + (" (resuming)" if resume else ""))
            result = train(tcfg, config_dir=base, resume=resume, on_step=train_progress, log=lambda m: log(f"  {m}"))
            ref = str(result.entry.ref)
            m = result.entry.manifest
            log(f"  registered {ref}: {m['steps']} steps, final loss {m['final_train_loss']:.3f}, held-out {m['final_eval_loss'] if m['final_eval_loss'] is None else round(m['final_eval_loss'], 3)}, {m['train_time_s']:.0f} s")
            state.finish("train", fp, adapter=ref)
            stages.ran.append("train")
        adapters = [ref] + [a for a in adapters if a != ref]

    # -- evaluate (the response cache makes an unchanged or interrupted evaluation cheap)
    eval_dir = run_dir / "eval"
    spec = EvalSpec(suites=refs, model=cfg.model, adapters=adapters, out=str(eval_dir), limit=cfg.eval.limit, precision=cfg.precision,
                    batch_size=cfg.eval.batch_size, max_length=cfg.eval.max_length, registry=cfg.registry, cache=cfg.eval.cache, data_dir=cfg.eval.data_dir)
    fp = sha256_json({"spec": spec.__dict__, "limits": limits, "suites": {s.name: (s.data_sha256 if not s.spec.lm_eval else s.spec.lm_eval) for s in suites},
                      "adapters": [Registry(cfg.registry).resolve(a).manifest.get("files") for a in adapters], "base": resolved.fingerprint})
    if state.done("eval", fp) and (eval_dir / "results.json").exists():
        stages.skipped.append("eval")
        log("evaluate: unchanged")
        results = read_json(eval_dir / "results.json")
    else:
        log(f"evaluate: base + {', '.join(adapters)} on {len(refs)} suites")
        for ref, s in zip(refs, suites):
            if limits.get(ref):
                s.spec.options.limit = limits[ref]
        results = run_eval(spec, progress=eval_progress, log=lambda m: log(f"  {m}"), suites_override=suites)
        state.finish("eval", fp)
        stages.ran.append("eval")
    if (run_dir / "curation.json").exists():
        shutil.copyfile(run_dir / "curation.json", eval_dir / "curation.json")

    # -- gate (one verdict per adapter; the first, usually the freshly trained one, decides the exit code)
    verdict = None
    exit_code = 0
    if policy is not None:
        from .gate import evaluate_gate, load_side
        from .gate.artifacts import write_artifacts

        a = load_side(f"{eval_dir}#base", "baseline", True)
        curation = read_json(run_dir / "curation.json").get("contamination") if (run_dir / "curation.json").exists() else None
        for i, ref in enumerate(adapters):
            b = load_side(f"{eval_dir}#{ref}", "candidate", False)
            v = evaluate_gate(a, b, policy, str(cfg.gate.policy) if isinstance(cfg.gate.policy, str) else "inline (config gate.policy)",
                              cfg.gate.inconclusive, curation)
            suffix = "" if i == 0 else f"-{ref.replace('@', '-')}"
            write_artifacts(v, (eval_dir if i == 0 else run_dir) / f"verdict{suffix}.json", run_dir / f"junit{suffix}.xml", run_dir / f"summary{suffix}.md")
            if i == 0:
                verdict, exit_code = v, v.exit_code
                shutil.copyfile(eval_dir / "verdict.json", run_dir / "verdict.json")
        stages.ran.append("gate")

    # -- compare several adapters
    if len(adapters) > 1:
        from .gate.compare import compare_runs

        doc = compare_runs([f"{eval_dir}#{a}" for a in adapters], f"{eval_dir}#base", None, 0.95)
        atomic_write_json(eval_dir / "compare.json", doc)
        shutil.copyfile(eval_dir / "compare.json", run_dir / "compare.json")
        stages.ran.append("compare")

    # -- report
    from .report import write_report

    report = write_report(eval_dir, run_dir / "report.html")
    stages.ran.append("report")
    summary = {
        "run_dir": str(run_dir), "report": str(report), "adapters": adapters, "verdict": verdict.status if verdict else None,
        "exit_code": exit_code, "stages_ran": stages.ran, "stages_skipped": stages.skipped, "wall_time_s": round(time.time() - t0, 1),
        "results": results.get("results"),
    }
    atomic_write_json(run_dir / "run.json", {k: v for k, v in summary.items() if k != "results"})
    return summary
