"""``laf sweep CONFIG``: a grid of candidates trained, scored on the same items, gated, compared, costed, and one
recommended.

    validate the config and every point -> lock the run folder -> curate once
    -> train each point (skipped when registered with the same inputs; Ray tasks with --workers/--ray-address)
    -> merge points -> ONE evaluation of the base and every point (Ray actors fill the response cache first)
    -> gate each point against the base -> compare (CIs, Pareto front, Holm) -> cost per point
    -> the recommendation -> sweep.json and the report (with its sweep section)

A thin orchestration over ``laf run``'s stages (``harness.pipeline.stages``): the same fingerprints in
``state.json`` (one ``train:POINT`` entry per point), so an interrupted or extended sweep redoes only what changed.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, LafError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, exclusive_lock, hash_path, sha256_json
from ..results.artifacts import Delta, SweepDoc
from .config import MERGE_AXES, TRAIN_AXES, Point, SweepConfig, count_points, expand, load_sweep_config, point_name

__all__ = ["MERGE_AXES", "TRAIN_AXES", "Point", "SweepConfig", "count_points", "expand", "load_sweep_config", "point_name", "run_sweep"]


def run_sweep(config_path: str | Path, overrides: list[str] | None = None, *, workers: int | None = None, ray_address: str | None = None,
              cache: str | None = None, max_points: int | None = None, log: Callable[[str], None] = lambda m: None,
              train_progress=None, eval_progress=None, on_actors=None, history: str | None = None) -> dict:
    """Run the sweep of ``config_path`` into ``<out_root>/<name>/``; returns the summary (also ``sweep.json``).

    ``workers``: start a local Ray cluster with that many CPU slots; ``ray_address``: join a running cluster;
    neither: one process, Ray never imported. ``cache``: the response cache (default: the config's
    ``eval.cache``, else the user cache). ``max_points``: allow a grid larger than 1,000 points. ``history``: the
    release history the sweep is recorded in, as ``laf run`` (default: the config's ``history:``, else
    LAF_HISTORY_URL, else ``<out_root>/history.sqlite``; ``off``: none).
    """
    t0 = time.time()
    config_path = Path(config_path)
    cfg, base = load_sweep_config(config_path, overrides)
    if cache:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"cache": cache})})
    points = expand(cfg, max_points)
    from ..pipeline.config import validate_run

    suites, policy = validate_run(cfg, base, config_path)
    _validate_points(cfg, points, config_path)
    use_ray = workers is not None or ray_address is not None
    if use_ray:
        from .scale import require_ray

        require_ray()
    run_dir = Path(cfg.out_root) / cfg.name
    from ..history import resolve_url

    history_url = resolve_url(history, cfg.history, default=Path(cfg.out_root) / "history.sqlite")
    with exclusive_lock(run_dir, "laf sweep"):  # a second sweep into this folder fails at once, naming this one
        if not use_ray:
            return _sweep_locked(cfg, base, config_path, points, suites, policy, run_dir, t0, log, train_progress, eval_progress,
                                 use_ray, workers, on_actors, history_url)
        from .scale import cluster

        with cluster(workers, ray_address):
            return _sweep_locked(cfg, base, config_path, points, suites, policy, run_dir, t0, log, train_progress, eval_progress,
                                 use_ray, workers, on_actors, history_url)


def _validate_points(cfg: SweepConfig, points: list[Point], config_path: Path) -> None:
    from pydantic import ValidationError

    from ..merge.config import MergeConfig, check_method_params
    from ..train.config import DataConfig, TrainSettings
    from ..train.lora import unknown_targets

    problems = []
    seen: dict[str, str] = {}  # the validated configuration of a point -> the first point with it
    available: list[str] | None = None
    for p in points:
        try:
            if p.kind == "train":
                p.settings = TrainSettings.model_validate(p.train)
                tc = cfg.model_copy(update={"name": p.name, "train": p.settings}).train_config(DataConfig(path="x"))
                same = sha256_json({"train": tc.model_dump(mode="json", exclude={"name"}), "data_limit": _limit_key(p.data_limit)})
                targets = tc.lora.target_modules
                if targets != "all-linear":
                    if available is None:
                        from ..models import resolve_model
                        from ..train.lora import model_linear_names

                        available = model_linear_names(resolve_model(cfg.model))
                    unknown = unknown_targets(targets, available)
                    if unknown:
                        problems.append(f"point {p.name}: lora.target_modules names modules the model does not have: {', '.join(unknown)} "
                                        f"(it has {', '.join(available)})")
            else:
                mc = p.merge_config = MergeConfig.model_validate({"registry": cfg.registry, **(p.merge or {})})
                check_method_params(mc, f"{config_path} (point {p.name})")
                same = sha256_json({"merge": mc.model_dump(mode="json", by_alias=True, exclude={"name"})})
            if same in seen:  # e.g. lora.r: [4, 4.0, "4"]: three names, one configuration, trained and compared three times
                problems.append(f"point {p.name} is the same configuration as point {seen[same]} (equivalent axis values: "
                                f"{', '.join(f'{k}={v!r}' for k, v in p.params.items())})")
            else:
                seen[same] = p.name
        except ValidationError as e:
            for err in e.errors():
                problems.append(f"point {p.name}: key '{'.'.join(str(x) for x in err['loc'])}': {err['msg']}")
        except LafError as e:
            problems.append(f"point {p.name}: {e.cause}")
    if problems:
        raise ConfigError(config_path, "sweep", f"{len(problems)} point(s) are invalid:\n  - " + "\n  - ".join(problems[:20]),
                          "fix the axis values they come from")


def _limit_key(limit) -> object:
    """data.limit as the subset it selects: 100 and 100.0 are one count; a fraction stays a fraction."""
    if isinstance(limit, float) and limit.is_integer() and limit >= 1:
        return int(limit)
    return limit


def _subset(train_data: Path, limit: int | float, seed: int, out_dir: Path) -> Path:
    """The first ``limit`` examples (a count, or a fraction) of a seeded shuffle of the training data (JSON lines)."""
    lines = [x for x in train_data.read_bytes().splitlines(keepends=True) if x.strip()]
    if not train_data.name.endswith(".jsonl") and train_data.suffix != ".jsonl":
        raise LafError(f"data.limit needs JSON-lines training data; {train_data.name} is not", "convert the data to JSONL, or drop the data.limit axis")
    k = max(1, round(limit * len(lines))) if isinstance(limit, float) else int(limit)
    if k > len(lines):
        raise LafError(f"data.limit {limit} asks for {k} examples; the (curated) data has {len(lines)}", f"use a count of at most {len(lines)}")
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    path = out_dir / f"limit-{k}.jsonl"
    atomic_write_bytes(path, b"".join(lines[i] for i in sorted(order[:k])))
    return path


def _sweep_locked(cfg: SweepConfig, base: Path, config_path: Path, points: list[Point], suites, policy, run_dir: Path, t0: float, log,
                  train_progress, eval_progress, use_ray: bool, workers: int | None, on_actors, history_url: str | None) -> dict:
    from ..models import resolve_model
    from ..pipeline import score_and_decide
    from ..pipeline.config import saved_config_text
    from ..pipeline.stages import RunContext, curate_stage, merge_stage, report_stage, resolve_adapters
    from ..pipeline.state import RunState, StageLog
    from ..registry import Registry

    atomic_write_text(run_dir / "config.yaml", saved_config_text(cfg, base))  # re-runnable from the run folder
    ctx = RunContext(cfg, base, run_dir, RunState(run_dir), StageLog(), resolve_model(cfg.model).fingerprint, log)
    extra, _ = resolve_adapters(ctx)
    log(f"sweep {cfg.name}: {len(points)} point(s) over {', '.join(cfg.sweep)}" + (" on Ray" if use_ray else ""))

    refs: dict[str, str] = {}
    split = None
    if cfg.select is not None:
        from ..pipeline.select import make_split

        split = make_split(cfg, base, policy, suites, config_path)
        atomic_write_json(run_dir / "select" / "split.json", split)
    train_points = [p for p in points if p.kind == "train"]
    if train_points:
        train_data = curate_stage(ctx, suites)
        refs.update(_train_points(ctx, train_points, train_data, use_ray, train_progress, (suites, policy, split) if split else None, eval_progress,
                                  suites))
    merge_points = [p for p in points if p.kind == "merge"]
    if merge_points:
        mctx = dataclasses.replace(ctx, cfg=cfg.model_copy(update={"merge": [p.merge_config for p in merge_points]}))
        refs.update(zip((p.name for p in merge_points), merge_stage(mctx)))
    adapters = [refs[p.name] for p in points] + [a for a in extra if a not in refs.values()]

    # -- one evaluation of the base and every point
    times: dict[str, list[float]] = {}

    def timed(model, suite, done, total, hits):
        now = time.perf_counter()
        t = times.setdefault(model, [now, now])
        t[1] = now
        if eval_progress:
            eval_progress(model, suite, done, total, hits)

    prefilled: dict = {}

    def prefill(spec, loaded):
        from .scale import prefill as prefill_on_ray

        prefilled["report"] = prefill_on_ray(spec, loaded, workers, lambda m: log(f"  {m}"), on_actors)

    # the stages after training are laf run's, in its order (evaluate, diversity, parity, gate, compare, history); the
    # points were chosen on the selection split, so with one they are scored and gated on the confirmation split only
    decided = score_and_decide(ctx, suites, policy, adapters, split, history_url, timed, prefill=prefill if use_ray else None, always_compare=True)
    results, verdicts, compare = decided.results, decided.verdicts, decided.compare
    assert compare is not None  # always_compare
    rep = prefilled.get("report")
    if rep is not None:
        eval_seconds = dict(rep.seconds_by_model)
        distributed = dataclasses.asdict(rep)
    else:
        eval_seconds = {m: t[1] - t[0] for m, t in times.items()}
        distributed = None
    if "eval" in ctx.stages.ran and (rep is None or rep.computed):
        ctx.state.mark("eval_times", seconds=eval_seconds)
    else:
        eval_seconds = ctx.state.started("eval_times").get("seconds") or eval_seconds

    rows = {r.model: r for r in compare.ranking}  # the document the compare stage wrote to compare.json, not a re-read
    by_model = {m: v for m, v in verdicts}

    from .cost import METHOD, point_cost
    from .recommend import recommend

    reg = Registry(cfg.registry)
    total_hint = None
    table = []
    for p in points:
        ref = refs[p.name]
        entry = reg.resolve(ref)
        c = point_cost(entry, eval_seconds.get(ref), total_hint)
        total_hint = total_hint or c.get("total_parameters")
        row = rows.get(ref)
        v = by_model.get(ref)
        table.append({"name": p.name, "kind": p.kind, "params": p.params, "model": ref, "cost": c,
                      "domain": _cell(row.categories.get("domain") if row else None), "general": _cell(row.categories.get("general") if row else None),
                      "columns": {k: cell.to_dict() for k, cell in row.columns.items()} if row else {},
                      "pareto": row.pareto if row else None, "rank": row.rank if row else None,
                      "verdict": None if v is None else v.status, "failed_rules": [] if v is None else [r.rule for r in v.rules if r.status != "pass"]})
    for p in table:  # a merged adapter records no total: the sweep's base is the same model
        c = p["cost"]
        if c.get("total_parameters") is None and total_hint and c.get("trainable_parameters"):
            c["total_parameters"] = total_hint
            c["trainable_percent"] = round(100 * c["trainable_parameters"] / total_hint, 4)
    rec = recommend(ctx.eval_dir, table, cfg.recommend.margin, policy, gated=policy is not None)
    from .frontier import frontier, markdown

    front = frontier(table, {m: v.to_dict() for m, v in verdicts})
    selection = {p.name: {k: ctx.state.started(f"select:{p.name}").get(k) for k in ("curve", "chosen_step", "adapter")}
                 for p in points if ctx.state.started(f"select:{p.name}")}
    doc = {
        "schema": "laf.sweep/1", "name": cfg.name, "axes": cfg.sweep, "points": table, "recommendation": rec,
        "base_eval_time_s": None if eval_seconds.get("base") is None else round(eval_seconds["base"], 2),
        "cost_method": METHOD, "eval_time_method": ("seconds of the Ray work units of each model (summed over its suites)" if distributed
                                                    else "seconds between a model's first and last scoring event (the base's include loading it)"),
        "distributed": distributed, "winner": compare.winner.to_dict(), "compare": "compare.json",
        "frontier": front, "selection": selection or None,
        "select": None if cfg.select is None else {**cfg.select.model_dump(mode="json"), "note": "each point's checkpoint was chosen on the selection "
                                                   "split; every figure here is on the confirmation split"},
    }
    doc = SweepDoc.from_dict(doc).to_dict()  # the typed shape (laf schema sweep) checked before it is written
    if front:
        atomic_write_text(run_dir / "frontier.md", markdown(front))
    atomic_write_json(ctx.eval_dir / "sweep.json", doc)
    atomic_write_json(run_dir / "sweep.json", doc)
    report = report_stage(ctx)
    atomic_write_text(run_dir / "recommendation.txt", rec["sentence"] + "\n")
    from ..gate.compare import combined_exit

    exit_code, explanation = combined_exit([{"model": m, **v.to_dict()} for m, v in verdicts])
    return {"run_dir": str(run_dir), "report": str(report), "sweep_json": str(run_dir / "sweep.json"), "points": table, "recommendation": rec,
            "frontier": front,
            "exit_code": exit_code, "exit_explanation": explanation, "stages_ran": ctx.stages.ran, "stages_skipped": ctx.stages.skipped,
            "distributed": distributed, "wall_time_s": round(time.time() - t0, 1), "results": results.results, "history": decided.recorded}


def _cell(d: Delta | None) -> dict | None:
    if d is None:
        return None
    return {"improvement": d.improvement, "ci_low": d.ci_low, "ci_high": d.ci_high, "p_value": d.p_value, "base": d.base, "candidate": d.candidate}


def _train_points(ctx, points: list[Point], train_data: Path, use_ray: bool, train_progress, select=None, eval_progress=None,
                  suites=None) -> dict[str, str]:
    """Train (or reuse) every training point; on Ray, the points that need training run as tasks at once. ``select``:
    ``(suites, policy, split)``: each point's registered adapter is chosen among its snapshots on the selection split."""
    from ..pipeline.stages import replay_filter, train_finish, train_plan
    from ..registry import Registry

    cfg = ctx.cfg
    refs: dict[str, str] = {}
    jobs = []
    for p in points:
        pcfg = cfg.model_copy(update={"name": p.name, "train": p.settings})
        pctx = dataclasses.replace(ctx, cfg=pcfg)
        data, data_fp = train_data, None
        if p.data_limit is not None:
            data = _subset(train_data, p.data_limit, pcfg.train.seed, ctx.run_dir / "data")
            data_fp = hash_path(data)
        job = train_plan(pctx, data, key=f"train:{p.name}", work=ctx.run_dir / "points" / p.name, data_fp=data_fp, split=select[2] if select else None)
        if isinstance(job, str):
            refs[p.name] = job
        else:
            jobs.append((p, pctx, data, job))
    if not jobs:
        return refs

    def options(p, pctx, job) -> tuple:
        tcfg = job.tcfg
        if select:  # the trained run registers into the point's selection registry; only the chosen snapshot reaches the sweep's
            tcfg = tcfg.model_copy(update={"registry": str(ctx.run_dir / "points" / p.name / "select" / "registry")})
        return tcfg, {"replay_filter": replay_filter(pctx, suites) if suites is not None else None,
                      "snapshot_every": ctx.cfg.select.every if select else 0, "init_registry": job.tcfg.registry}

    def finish(p, pctx, job, res) -> None:
        if select:
            from ..pipeline.select import select_checkpoint

            pctx_sel = dataclasses.replace(pctx, run_dir=ctx.run_dir / "points" / p.name)
            ref, doc = select_checkpoint(pctx_sel, job, res, select[0], select[1], select[2], eval_progress)
            ctx.state.mark(f"select:{p.name}", curve=doc["curve"], chosen_step=doc["chosen_step"], adapter=ref)
            ctx.state.finish(job.key, job.fingerprint, adapter=ref)
            ctx.stages.ran.append(job.key)
            refs[p.name] = ref
        else:  # on Ray, the driver's own registry entry (the worker wrote it); in process, the one training returned
            refs[p.name] = train_finish(pctx, job, Registry(cfg.registry).resolve(str(res.entry.ref)) if use_ray else res.entry)

    if not use_ray:
        from ..train import train

        for p, pctx, data, job in jobs:
            ctx.log(f"train: {p.name} on {data.name}" + (" (resuming)" if job.resume else ""))
            tcfg, opts = options(p, pctx, job)
            finish(p, pctx, job, train(tcfg, config_dir=ctx.base, resume=job.resume, on_step=train_progress, log=lambda m: ctx.log(f"  {m}"), **opts))
        return refs
    from .scale import train_on_ray

    # on Ray the points train as tasks at once (one CPU slot or GPU each); with select:, each point's snapshots are
    # scored here as soon as it finishes, while the others still train
    by_name, on_ray = {}, []
    for p, pctx, _, job in jobs:
        by_name[p.name] = (p, pctx, job)
        tcfg, opts = options(p, pctx, job)
        on_ray.append((p.name, tcfg, job.resume, opts))
    for name, res in train_on_ray(on_ray, ctx.base, ctx.log):
        finish(*by_name[name], res)
    return refs
