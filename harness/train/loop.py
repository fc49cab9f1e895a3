"""The training recipe: ``train()`` reads top to bottom like the algorithm.

    read the data -> load the base (NF4/bf16/fp32) and tokenize -> seeded LoRA (lora.py)
    -> the objective (objective.py: SFT in sft.py; DPO/ORPO/SimPO in preference.py)
    -> AdamW + warmup/cosine from ``optim:`` (schedule.py) -> the objective's preparation (DPO: the reference pass)
    -> resume from the last checkpoint (checkpoint.py)
    -> for each optimizer step: the objective's micro-batches and their losses (loss.py),
       NaN guard, clip, step, metrics line, held-out eval every N, checkpoint every N
    -> register the adapter with its manifest (manifest.py)

The loop knows no objective by name: it calls the :class:`~harness.train.objective.Objective` interface only.

Checkpoints hold the trainable weights, optimizer, scheduler, RNG states and
the data position, so ``--resume`` continues bit for bit (on CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..env import reduce_malloc_fragmentation
from ..errors import LafError
from ..io import atomic_write_text, exclusive_lock, sha256_json
from ..models import LoadSpec, load_model, resolve_model
from ..registry import AdapterEntry
from .checkpoint import TrainState, clear_checkpoints, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .init_adapter import check_init_from, load_init_adapter
from .lora import attach_lora
from .manifest import METRICS, WRITE_ERRORS, RunFacts, build_manifest, data_fingerprint, register_adapter, register_full_model, strip_quantization_config
from .objective import Objective, StartPoint
from .preference import PreferenceObjective
from .preserve import ReplayFilter, build_replay, self_distill
from .schedule import make_optimizer, make_scheduler
from .sft import SFTObjective
from .trainset import resolve_path

__all__ = ["OBJECTIVES", "StepEvent", "TrainResult", "TrainState", "TrainingDiverged", "list_checkpoints", "train"]

# the objective each ``objective:`` value trains with (objective.py: what the loop needs of one)
OBJECTIVES: dict[str, type[Objective]] = {"sft": SFTObjective, "dpo": PreferenceObjective, "orpo": PreferenceObjective, "simpo": PreferenceObjective}


class TrainingDiverged(LafError):
    pass


@dataclass
class StepEvent:
    """What the progress display (or a test) sees after each optimizer step."""

    step: int
    total_steps: int
    metrics: dict


@dataclass
class TrainResult:
    entry: AdapterEntry
    run_dir: Path
    state: TrainState
    dropped: dict = field(default_factory=dict)


def train(
    cfg: TrainConfig,
    *,
    config_dir: Path = Path("."),
    resume: bool = False,
    on_step: Callable[[StepEvent], None] | None = None,
    log: Callable[[str], None] = lambda s: None,
    replay_filter: ReplayFilter | None = None,
    snapshot_every: int = 0,
    init_registry: str | None = None,
) -> TrainResult:
    """Train a LoRA/QLoRA adapter as ``cfg`` says and register it; return the registry entry.

    ``config_dir`` anchors relative data paths. With ``resume`` the run continues
    from the newest checkpoint in ``cfg.run_dir()`` (refused if the settings
    changed); without it a run folder that holds checkpoints is an error, never
    overwritten. ``on_step`` receives a :class:`StepEvent` after every optimizer
    step; ``log`` receives progress lines (the library never prints). ``replay_filter``: the contamination check
    of ``preserve.replay`` texts (``laf run`` passes its eval suites; default: every known suite). ``snapshot_every``:
    save the adapter as ``RUN_DIR/snapshots/step-N`` every N steps and at the last (checkpoint selection, ``select:``).
    ``init_registry``: where ``init_from`` is looked up when it is not ``cfg.registry`` (with ``select:`` the run
    registers into the selection's own registry, but starts from an adapter of the run's).

    Raises :class:`~harness.errors.LafError` for bad input (unreadable data, no
    example with a supervised token, unknown LoRA targets...) and
    :class:`TrainingDiverged` when the loss or gradient norm becomes non-finite.
    """
    run_dir = cfg.run_dir()
    check_outputs(cfg, run_dir)
    # one run per output folder: a second `laf train` into it fails at once naming this one, instead of
    # interleaving its steps into our metrics.jsonl (and so into the registered adapter)
    with exclusive_lock(run_dir, "training run"):
        return _train_locked(cfg, run_dir, config_dir=config_dir, resume=resume, on_step=on_step, log=log, replay_filter=replay_filter,
                             snapshot_every=snapshot_every, init_registry=init_registry)


_RUN_NAMES = ("metrics.jsonl", "snapshots", "checkpoints", ".laf.lock",  # what a training writes in its output_dir
              "select")  # and a sweep point's checkpoint selection (harness.sweep: points/NAME/select)
_OWN_ENTRY = re.compile(r"\.?(metrics\.jsonl|step-\d+|\.laf\.lock)([.\w-]*)")  # those, and their atomic writes' temporaries


def check_outputs(cfg: TrainConfig, run_dir: Path) -> None:
    """Before anything is loaded or written: ``output_dir`` is not inside the registry (registered versions are
    immutable), holds nothing laf did not write (a fresh run empties its ``snapshots/`` and ``metrics.jsonl``), and
    the registry can be written (else hours of training would end in an adapter with nowhere to go)."""
    registry = Path(cfg.registry).resolve()
    out = run_dir.resolve()
    if out == registry or registry in out.parents:
        raise LafError(f"output_dir {run_dir} is inside the registry {cfg.registry}: a training run would change registered versions",
                       "set output_dir to a folder outside the registry (the default is reports/train/NAME)")
    if run_dir.is_symlink():
        raise LafError(f"output_dir {run_dir} is a symlink: laf does not write a run through a link", "set output_dir to the real folder, or a new one")
    if run_dir.exists():
        if not run_dir.is_dir():
            raise LafError(f"output_dir {run_dir} is a file, not a folder", "set output_dir to a new folder")
        foreign = [p.name for p in run_dir.iterdir() if p.name not in _RUN_NAMES and not _OWN_ENTRY.fullmatch(p.name)]
        snaps = run_dir / "snapshots"
        if snaps.is_dir() and not snaps.is_symlink():
            foreign += [f"snapshots/{p.name}" for p in snaps.iterdir() if not _OWN_ENTRY.fullmatch(p.name)]
        elif snaps.exists() or snaps.is_symlink():
            foreign.append("snapshots (not a folder of laf's)")
        if foreign:
            shown = ", ".join(sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else "")
            raise LafError(f"output_dir {run_dir} holds files laf did not write ({shown}): a training run replaces its metrics.jsonl and snapshots/",
                           "set output_dir to a new folder (or one an earlier `laf train` wrote)")
    probe = registry
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise LafError(f"the registry {cfg.registry} cannot be created: {probe} is a file, not a folder", "set registry to a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LafError(f"the registry {cfg.registry} is not writable ({probe})", "fix its permissions, or set registry to a writable folder")


def _train_locked(cfg: TrainConfig, run_dir: Path, *, config_dir: Path, resume: bool, on_step, log, replay_filter=None, snapshot_every: int = 0,
                  init_registry: str | None = None) -> TrainResult:
    t_start = time.perf_counter()
    reduce_malloc_fragmentation()
    existing = list_checkpoints(run_dir)
    if cfg.init_from and cfg.method != "full":  # before the model loads: a missing or damaged adapter is found in a second
        check_init_from(cfg, init_registry)
    replay = cfg.preserve.replay if cfg.preserve.active else None
    if replay is not None and replay.source != "self" and replay.ratio:
        from ..data.formats import check_readable_data_path

        source = resolve_path(replay.source, config_dir)
        check_readable_data_path(source)
        if not source.is_file():
            raise LafError(f"preserve.replay.source {source} is not a file", "give a .txt/.md text file, a JSONL file with a 'text' field, or an instruction file")
    if existing and not resume:
        raise LafError(
            f"{run_dir} already holds checkpoints of an earlier run (last: {existing[-1].name})",
            "pass --resume to continue it, or set output_dir to a new folder (or delete the old one)",
        )

    # -- data: the objective's kind reads and tokenizes its own rows (SFT examples or preference pairs)
    data_path = resolve_path(cfg.data.path, config_dir)
    kind = OBJECTIVES[cfg.objective]
    read, train_rows, eval_rows = kind.read_data(cfg, data_path, config_dir)

    # -- base model, tokenized data
    resolved = resolve_model(cfg.model, allow_pickle=cfg.allow_pickle, trust_remote_code=cfg.trust_remote_code)
    log(f"loading {resolved.spec} ({cfg.precision})")
    model, tok, spec = load_model(resolved, LoadSpec(cfg.precision, cfg.compute_dtype, cfg.device))
    device = spec.device
    # -- forgetting control data, made by the base before any adapter exists (cached: free the second time)
    distill_info = None
    if cfg.preserve.self_distill:
        train_rows, distill_info = self_distill(train_rows, model, tok, cfg, resolved.fingerprint, cfg.precision, log)
    preserve = build_replay(cfg, model, tok, resolved.fingerprint, cfg.precision, config_dir, replay_filter, log)
    data, held = kind.tokenize(train_rows, eval_rows, tok, cfg, log)

    # -- LoRA (from init_from's weights when given) or every weight (method: full), gradient checkpointing, mixed precision
    if cfg.method == "full":  # the reference LoRA is measured against: every weight trained, the tied embedding/head included
        for p in model.parameters():
            p.requires_grad_(True)
        lineage = None
    else:
        model = attach_lora(model, cfg.lora, precision=cfg.precision, seed=cfg.seed, compute_dtype={"bf16": torch.bfloat16}.get(spec.compute_dtype or ""))
        lineage = load_init_adapter(model, cfg, resolved.fingerprint, registry=init_registry) if cfg.init_from else None
    if cfg.gradient_checkpointing in (True, "auto"):  # auto = on: measured -35 % peak memory for +10 % time on CPU
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.method == "lora":
            model.enable_input_require_grads()
    autocast = make_autocast(cfg, device)
    objective = kind(cfg, data, held, tok.pad_token_id, device, autocast, preserve.replay)

    # -- optimizer and schedule
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    total_steps = objective.total_steps()
    opt = make_optimizer(params, cfg.optim, device)
    sched = make_scheduler(opt, cfg.optim, total_steps)

    # -- fresh start or resume
    math_hash = sha256_json({"config": cfg.math_dict(), "base": resolved.fingerprint, "data": data_fingerprint(data_path, read.examples), "spec": spec.as_dict(), "init_from": lineage,
                             **({"replay": preserve.digest, "distill": distill_info and distill_info["cache_key"]} if cfg.preserve.active else {})})
    # work before the first step (DPO: the reference pass), before a resumed run loads its checkpoint
    objective.prepare(model, StartPoint(resolved.fingerprint, spec.as_dict(), lineage), log)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / METRICS
    state = TrainState()
    with _output_errors(run_dir):
        if resume and existing:
            state = load_checkpoint(existing[-1], model, opt, sched, math_hash)
            log(f"resumed from {existing[-1].name}")
            _truncate_metrics(metrics_path, state.step)
        else:
            atomic_write_text(metrics_path, "")
            import shutil

            shutil.rmtree(run_dir / SNAPSHOTS, ignore_errors=True)  # snapshots of an earlier run are not this run's candidates
    with _output_errors(run_dir):
        _loop(model, tok, cfg, objective, state, total_steps, params, opt, sched, device, run_dir, metrics_path, math_hash, on_step, log, snapshot_every)
    if cfg.method == "full":
        model.config.use_cache = True  # gradient checkpointing turned it off; the saved model is for inference

    # -- register (never non-finite weights: a NaN adapter would score as confidently right)
    check_finite_weights(model, run_dir, state)
    facts = RunFacts(n_trainable, n_total, time.perf_counter() - t_start, peak_memory_mb(device))
    manifest = build_manifest(cfg, resolved, spec.as_dict(), data_path, read, data, held, state, facts, run_dir)
    block = objective.manifest_block()
    if block is not None:
        manifest["objective"] = block
    if cfg.preserve.active:
        manifest["preserve"] = {**cfg.preserve.model_dump(mode="json"), "replay_data": preserve.info or None, "self_distill_data": distill_info,
                                "replay_digest": preserve.digest}
    entry = register_full_model(model, tok, cfg, manifest, metrics_path) if cfg.method == "full" else register_adapter(model, cfg, resolved.spec, manifest, metrics_path)
    clear_checkpoints(run_dir)  # the registered adapter supersedes them
    return TrainResult(entry, run_dir, state, data.drop_summary())


def _loop(model, tok, cfg: TrainConfig, objective: Objective, state: TrainState, total_steps: int, params, opt, sched, device: str,
          run_dir: Path, metrics_path: Path, math_hash: str, on_step, log=lambda m: None, snapshot_every: int = 0) -> None:
    """The optimizer steps from ``state`` to ``total_steps``: the objective's micro-batch losses (each checked and
    backpropagated), clip, step, a metrics line per step, held-out eval and checkpoints every N."""
    model.train()
    session_start = time.perf_counter()
    elapsed_before = state.elapsed_s
    with open(metrics_path, "a", encoding="utf-8") as metrics_file:
        while state.step < total_steps:
            group = objective.next_group(state)
            if group is None:  # epoch finished
                continue
            t0 = time.perf_counter()
            step_loss = 0.0
            for loss in objective.losses(model, group, state.step):
                if not torch.isfinite(loss):
                    _diverged(run_dir, state, "loss", float(loss))
                loss.backward()
                step_loss += float(loss.detach())
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip if cfg.optim.grad_clip else float("inf"))
            if not torch.isfinite(grad_norm):
                _diverged(run_dir, state, "gradient norm", float(grad_norm))
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0

            tokens = sum(b.tokens for b in group)
            n_sup = sum(b.supervised for b in group)
            state.step += 1
            state.batch_in_epoch += len(group)
            state.tokens_seen += tokens
            state.supervised_seen += n_sup
            state.last_loss = step_loss
            state.elapsed_s = elapsed_before + (time.perf_counter() - session_start)
            m = {
                "step": state.step,
                "epoch": state.epoch,
                "loss": round(step_loss, 6),
                "lr": lr,
                "grad_norm": round(float(grad_norm), 6),
                "tokens": tokens,
                "supervised_tokens": n_sup,
                "tokens_per_s": round(tokens / dt, 1),
                "elapsed_s": round(state.elapsed_s, 2),
                "memory_mb": round(peak_memory_mb(device), 1),
                **objective.step_metrics(group, log),
            }
            last = state.step == total_steps
            if objective.has_held_out and ((cfg.eval_every and state.step % cfg.eval_every == 0) or last):
                state.last_eval_loss, eval_metrics = objective.evaluate(model, log)
                m.update(eval_metrics)
            metrics_file.write(json.dumps(m) + "\n")
            metrics_file.flush()
            if snapshot_every and (state.step % snapshot_every == 0 or last):
                save_snapshot(model, run_dir, state.step, m, tok if cfg.method == "full" else None)
            if cfg.save_every and state.step % cfg.save_every == 0 and not last:
                save_checkpoint(run_dir, model, opt, sched, state, math_hash, cfg.keep_checkpoints)
            if on_step:
                on_step(StepEvent(state.step, total_steps, m))


# ---------------------------------------------------------------- the steps of train()


def make_autocast(cfg: TrainConfig, device: str) -> Callable[[], torch.autocast]:
    amp_dtype = None
    if cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and device.startswith("cuda") and torch.cuda.is_bf16_supported()):
        amp_dtype = torch.bfloat16
    elif cfg.mixed_precision == "fp16":
        amp_dtype = torch.float16

    def autocast() -> torch.autocast:
        return torch.autocast(device_type=device.split(":")[0], dtype=amp_dtype, enabled=amp_dtype is not None)

    return autocast


def _truncate_metrics(metrics_path: Path, step: int) -> None:
    """Drop metrics lines written after the checkpoint being resumed."""
    kept = []
    if metrics_path.exists():
        for ln in metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(ln)
            except ValueError:
                continue  # a line torn by a crash mid-write
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                kept.append(ln)
    atomic_write_text(metrics_path, "".join(ln + "\n" for ln in kept))


SNAPSHOTS = "snapshots"


def save_snapshot(model, run_dir: Path, step: int, metrics: dict, tok=None) -> Path:
    """The adapter as it is after ``step`` (PEFT files + the step's metrics), written whole or not at all: a
    candidate for checkpoint selection (``select:`` in a run config). ``tok``: a full fine-tune's snapshot is a whole
    model folder, with the tokenizer."""
    from ..io import atomic_dir

    final = run_dir / SNAPSHOTS / f"step-{step:06d}"
    if final.exists():
        import shutil

        shutil.rmtree(final)  # a resumed run re-reaches this step with the same weights (bit-exact resume)
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "README.md").unlink(missing_ok=True)
        if tok is not None:
            tok.save_pretrained(tmp)
            strip_quantization_config(tmp)
        atomic_write_text(tmp / "step.json", json.dumps({"step": step, "metrics": metrics}) + "\n")
    return final


def list_snapshots(run_dir: Path) -> list[Path]:
    d = run_dir / SNAPSHOTS
    return sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith("step-") and not p.is_symlink()) if d.is_dir() else []


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def _output_errors(run_dir: Path):
    """A failed write into the run folder (disk full, file too large, read-only) is one clear error; the
    checkpoints already written stay (they are written whole or not at all)."""
    try:
        yield
    except WRITE_ERRORS as e:
        ckpts = list_checkpoints(run_dir)
        kept = f"the last checkpoint {ckpts[-1].name} is kept (resume with --resume)" if ckpts else "no checkpoint had been written yet"
        raise LafError(f"writing the training output in {run_dir} failed: {getattr(e, 'strerror', None) or e}; {kept}",
                       "free disk space (or fix the folder's permissions) and run again") from e


def check_finite_weights(model, run_dir: Path, state: TrainState) -> None:
    """Refuse to register LoRA weights holding NaN or inf (raises :class:`TrainingDiverged`, nothing registered)."""
    bad = [n for n, p in model.named_parameters() if p.requires_grad and not bool(torch.isfinite(p.detach()).all())]
    eval_loss = state.last_eval_loss
    if not bad and (eval_loss is None or math.isfinite(eval_loss)) and (state.last_loss is None or math.isfinite(state.last_loss)):
        return
    what = f"{len(bad)} LoRA tensors hold NaN/inf (first: {bad[0]})" if bad else f"the final eval loss is {eval_loss}"
    ckpts = list_checkpoints(run_dir)
    kept = f"the last good checkpoint {ckpts[-1].name} is kept (resume with --resume after fixing the settings)" if ckpts else "no checkpoint had been written"
    raise TrainingDiverged(f"training produced non-finite weights at step {state.step}: {what}; nothing was registered, {kept}",
                           "lower optim.lr (or raise warmup), check the data for extreme examples, and retry")


def _diverged(run_dir: Path, state: TrainState, what: str, value: float):
    ckpts = list_checkpoints(run_dir)
    kept = f"the last good checkpoint {ckpts[-1]} is kept (resume with --resume)" if ckpts else "no checkpoint had been written yet"
    raise TrainingDiverged(
        f"training stopped: the {what} became {value} at step {state.step + 1}; {kept}",
        "lower optim.lr (or raise warmup), check the data for extreme examples, and retry",
    )
