"""``laf run CONFIG``: curate -> train -> merge -> evaluate -> diversity -> parity -> gate -> compare -> report, each stage cached.

Every stage records the fingerprint of its inputs in ``RUN_DIR/state.json``
(the curated data's content, not the curation run, feeds training) and is
skipped when it is unchanged, so re-running after an interruption
continues (training resumes from its last checkpoint, evaluation from the
response cache) and changing one input re-does only what depends on it.
The whole config is validated before any stage starts, and every problem is
reported together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..gate.compare import combined_exit
from ..gate.verdict import Verdict
from ..io import atomic_write_json, atomic_write_text, exclusive_lock
from ..results import ResultsDoc
from ..results.artifacts import CompareDoc, RunDoc
from .config import RunConfig, load_run_config, saved_config_text, suite_refs, validate_run
from .stages import (
    RunContext,
    compare_stage,
    curate_stage,
    diversity_stage,
    eval_stage,
    gate_stage,
    history_stage,
    merge_stage,
    parity_stage,
    released_plans,
    report_stage,
    resolve_adapters,
    train_stage,
    verdict_paths,
    verify_released,
)
from .state import RunState, StageLog

__all__ = ["Decided", "RunConfig", "RunOutcome", "RunState", "execute_run", "load_run_config", "run_pipeline", "run_train_stages", "score_and_decide", "suite_refs",
           "validate_run"]


@dataclass(frozen=True)
class RunOutcome:
    """What ``laf run`` made, as objects: the summary (``run.json`` plus ``results``), every candidate's verdict,
    the comparison (several candidates) and the results document, for a caller that shows them without reading
    back the files the run just wrote."""

    summary: dict
    verdicts: list[tuple[str, Verdict]]
    compare: CompareDoc | None
    results: ResultsDoc


def run_pipeline(config_path: str | Path, overrides: list[str] | None = None, log: Callable[[str], None] = lambda m: None,
                 train_progress=None, eval_progress=None, history: str | None = None) -> dict:
    """:func:`execute_run`'s summary (see there)."""
    return execute_run(config_path, overrides, log, train_progress, eval_progress, history).summary


def execute_run(config_path: str | Path, overrides: list[str] | None = None, log: Callable[[str], None] = lambda m: None,
                train_progress=None, eval_progress=None, history: str | None = None) -> RunOutcome:
    """Run the whole flow of one run config (``--set`` style ``overrides`` applied) into ``<out_root>/<name>/``.

    Adapter references (``name``, ``name@latest``, ``name@version``) are resolved once, before any stage, and the
    resolved ``name@version`` is what every stage, state.json, the verdicts and the report use.
    Returns the run's :class:`RunOutcome`: its summary (also written to ``run.json``) holds the run folder, the report, the adapters (resolved, and
    what each given reference resolved to), every candidate's verdict, the run's exit code (0 when every candidate
    passed or there is no gate, 1 when any failed, 2 when none failed and some is inconclusive) and its explanation,
    which stages ran and which were unchanged.
    The run is recorded in the release history (``history``, else the config's ``history:``, else LAF_HISTORY_URL,
    else ``<out_root>/history.sqlite``; ``off``: not recorded); with ``gate: {baseline: released}`` each candidate
    is gated against the last release of its adapter name there.
    ``log`` receives progress lines; the library prints nothing itself.
    """
    t0 = time.time()
    config_path = Path(config_path)
    cfg, base = load_run_config(config_path, overrides)
    suites, policy = validate_run(cfg, base, config_path)
    run_dir = Path(cfg.out_root) / cfg.name
    from ..history import resolve_url

    history_url = resolve_url(history, cfg.history, default=Path(cfg.out_root) / "history.sqlite")
    with exclusive_lock(run_dir, "laf run"):  # a second `laf run` of this name fails at once, naming this one
        return _run_locked(cfg, base, config_path, suites, policy, run_dir, t0, log, train_progress, eval_progress, history_url)


def run_train_stages(config_path: str | Path, overrides: list[str] | None = None, log: Callable[[str], None] = lambda m: None,
                     train_progress=None, eval_progress=None) -> dict:
    """``laf train RUN_CONFIG``: the curate and train stages of a run config (``select:`` included), in the run
    folder ``laf run`` uses, with its state.json and fingerprints: a later ``laf run`` of the same config finds the
    adapter trained and goes on from there, and a re-run resumes or reuses it. Returns the run folder, the
    registry and the registered ``name@version``, and which stages ran and which were unchanged."""
    t0 = time.time()
    config_path = Path(config_path)
    cfg, base = load_run_config(config_path, overrides, command="laf train")
    if cfg.data is None:
        raise ConfigError(config_path, "data", "this run config has no data: to train on",
                          "give data: {path: ...}, or score its adapters with `laf run " + str(config_path) + "`")
    suites, policy = validate_run(cfg, base, config_path)
    run_dir = Path(cfg.out_root) / cfg.name
    with exclusive_lock(run_dir, "laf train"):
        ctx = _context(cfg, base, run_dir, log)
        ref, _ = _curate_and_train(ctx, config_path, suites, policy, train_progress, eval_progress)
    return {"run_dir": str(run_dir), "registry": cfg.registry, "adapter": ref, "stages_ran": ctx.stages.ran, "stages_skipped": ctx.stages.skipped,
            "wall_time_s": round(time.time() - t0, 1)}


def _context(cfg, base: Path, run_dir: Path, log) -> RunContext:
    from ..models import resolve_model

    # re-runnable from the run folder (absolute paths, the --set overrides), without the history URL's password
    atomic_write_text(run_dir / "config.yaml", _without_password(saved_config_text(cfg, base).encode("utf-8"), cfg.history).decode("utf-8"))
    return RunContext(cfg, base, run_dir, RunState(run_dir), StageLog(), resolve_model(cfg.model).fingerprint, log)


def _curate_and_train(ctx: RunContext, config_path: Path, suites, policy, train_progress, eval_progress) -> tuple[str | None, dict | None]:
    """The selection split (``select:``), the curate stage and the train stage; returns the trained ref (None when the
    config has no data) and the split."""
    cfg = ctx.cfg
    split = None
    if cfg.select is not None:
        from .select import make_split

        split = make_split(cfg, ctx.base, policy, suites, config_path)
        atomic_write_json(ctx.run_dir / "select" / "split.json", split)
    if cfg.data is None:
        return None, split
    train_data = curate_stage(ctx, suites)
    ref = train_stage(ctx, train_data, train_progress, select=(suites, policy, split) if split else None, eval_progress=eval_progress, suites=suites)
    return ref, split


def _without_password(text: bytes, history: str | None) -> bytes:
    """The config's bytes with the history URL's password replaced by ``***`` (the run folder is shared; the secret is not)."""
    if not history or "://" not in history:
        return text
    try:
        from sqlalchemy.engine import make_url

        password = make_url(history).password
    except Exception:  # noqa: BLE001 - an unparsable URL is refused later, by the store, with its own message
        return text
    return text.replace(str(password).encode("utf-8"), b"***") if password else text


def _run_locked(cfg, base: Path, config_path: Path, suites, policy, run_dir: Path, t0: float, log, train_progress, eval_progress,
                history_url: str | None) -> RunOutcome:
    ctx = _context(cfg, base, run_dir, log)
    adapters, resolved = resolve_adapters(ctx)
    ref, split = _curate_and_train(ctx, config_path, suites, policy, train_progress, eval_progress)
    if ref is not None:
        adapters = [ref] + [a for a in adapters if a != ref]
    if cfg.merge:
        adapters += [m for m in merge_stage(ctx) if m not in adapters]
    decided = score_and_decide(ctx, suites, policy, adapters, split, history_url, eval_progress)
    report = report_stage(ctx)
    verdicts, results = decided.verdicts, decided.results

    exit_code, explanation = combined_exit([{"model": m, **v.to_dict()} for m, v in verdicts])
    statuses = {v.status for _, v in verdicts}
    summary = {
        "run_dir": str(run_dir), "report": str(report), "adapters": adapters, "resolved": resolved,
        "verdict": None if not verdicts else ("pass" if statuses == {"pass"} else "fail" if "fail" in statuses else "inconclusive"),
        "verdicts": [{"model": m, "verdict": v.status, "exit_code": v.exit_code, "failed_rules": [r.rule for r in v.rules if r.status != "pass"],
                      "verdict_json": str(path)} for (m, v), path in zip(verdicts, verdict_paths(ctx, [m for m, _ in verdicts]))],
        "exit_code": exit_code, "exit_explanation": explanation, "stages_ran": ctx.stages.ran, "stages_skipped": ctx.stages.skipped,
        "wall_time_s": round(time.time() - t0, 1), "results": results.results, "history": decided.recorded,
    }
    atomic_write_json(run_dir / "run.json", RunDoc.from_dict({k: v for k, v in summary.items() if k != "results"}).to_dict())
    return RunOutcome(summary, verdicts, decided.compare, results)


@dataclass(frozen=True)
class Decided:
    """What the stages after training made: the results, every candidate's verdict, the comparison, the history record."""

    results: ResultsDoc
    verdicts: list[tuple[str, Verdict]]
    compare: CompareDoc | None
    recorded: dict | None


def score_and_decide(ctx: RunContext, suites, policy, adapters: list[str], split: dict | None, history_url: str | None, eval_progress=None,
                     prefill=None, always_compare: bool = False) -> Decided:
    """The stages after training, in their order, for ``laf run`` and ``laf sweep`` alike: evaluate the base and every
    candidate (and a release re-scored beside them; ``prefill`` fills the response cache first, on Ray), diversity,
    parity, gate (against the base or the last release), compare (several candidates, or ``always_compare``) and the
    release history. With a selection ``split`` every one of them sees the confirmation items only."""
    cfg, base, run_dir, log = ctx.cfg, ctx.base, ctx.run_dir, ctx.log
    if split:  # every stage from here sees the confirmation split only: the items that chose never certify
        from .select import subset_suites

        suites = subset_suites(suites, split, "confirmation", cfg, base)
    plans = released_plans(ctx, adapters, history_url) if policy is not None and cfg.gate and cfg.gate.baseline == "released" else {}
    rescored = [p.ref for p in plans.values() if p.rescore is not None and p.ref is not None]
    results = eval_stage(ctx, suites, adapters + [r for r in dict.fromkeys(rescored) if r not in adapters], eval_progress, prefill=prefill)
    if plans and history_url is not None:
        more = verify_released(ctx, plans, history_url)
        if more:  # recorded records that do not pair with the candidate's: score the release here too (the rest comes from the cache)
            rescored += more
            log(f"gate: re-scoring {', '.join(more)} next to the candidates ({'; '.join(str(p.rescore) for p in plans.values() if p.ref in more)})")
            results = eval_stage(ctx, suites, adapters + [r for r in dict.fromkeys(rescored) if r not in adapters], eval_progress, prefill=prefill)
    import shutil

    selection = run_dir / "selection.json"
    if split and selection.exists():  # the report shows the curve the checkpoint was chosen on
        shutil.copyfile(selection, ctx.eval_dir / "selection.json")
    elif not split:
        (ctx.eval_dir / "selection.json").unlink(missing_ok=True)
    diversity_stage(ctx, adapters)
    if cfg.parity is not None:
        parity_stage(ctx, adapters)
    verdicts = gate_stage(ctx, policy, adapters, plans, history_url) if policy is not None else []
    if split and selection.exists() and (run_dir / "summary.md").exists():
        from ..io import read_json
        from .select import selection_markdown

        atomic_write_text(run_dir / "summary.md", (run_dir / "summary.md").read_text("utf-8") + selection_markdown(read_json(selection)))
    compare_doc = compare_stage(ctx, adapters, policy, verdicts) if len(adapters) > 1 or always_compare else None
    recorded = history_stage(ctx, history_url, verdicts, adapters, compare_doc)
    return Decided(results, verdicts, compare_doc, recorded)
