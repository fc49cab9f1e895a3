"""The training recipe: ``train()`` reads top to bottom like the algorithm.

    read the data -> load the base (NF4/bf16/fp32) and tokenize -> seeded LoRA (lora.py)
    -> AdamW + warmup/cosine (schedule.py) -> resume from the last checkpoint (checkpoint.py)
    -> for each optimizer step: grad-accumulated micro-batches, loss on response tokens (loss.py),
       NaN guard, clip, step, metrics line, held-out eval every N, checkpoint every N
    -> register the adapter with its manifest (manifest.py)

Checkpoints hold the trainable weights, optimizer, scheduler, RNG states and
the data position, so ``--resume`` continues bit for bit (on CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..data.formats import Example, ReadResult, read_examples
from ..data.preference import peek_is_preference, read_pairs, tokenize_pairs
from ..data.tokenize import TokenizedData, tokenize_examples
from ..env import reduce_malloc_fragmentation
from ..errors import LafError
from ..io import atomic_write_text, exclusive_lock, sha256_json
from ..models import LoadSpec, load_model, resolve_model
from ..registry import AdapterEntry
from .batching import Batch, epoch_order, make_batches
from .checkpoint import TrainState, clear_checkpoints, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .lora import attach_lora
from .loss import preserve_loss_sums, supervised_loss_sum
from .manifest import METRICS, WRITE_ERRORS, RunFacts, build_manifest, data_fingerprint, register_adapter, register_full_model, strip_quantization_config
from .preference import PreferenceObjective, load_init_adapter, reference_identity
from .preserve import PreferenceReplay, ReplayFilter, ReplayMix, build_replay, chosen_rows, self_distill
from .schedule import count_steps, make_optimizer, make_scheduler

__all__ = ["StepEvent", "TrainResult", "TrainState", "TrainingDiverged", "list_checkpoints", "train"]


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
) -> TrainResult:
    """Train a LoRA/QLoRA adapter as ``cfg`` says and register it; return the registry entry.

    ``config_dir`` anchors relative data paths. With ``resume`` the run continues
    from the newest checkpoint in ``cfg.run_dir()`` (refused if the settings
    changed); without it a run folder that holds checkpoints is an error, never
    overwritten. ``on_step`` receives a :class:`StepEvent` after every optimizer
    step; ``log`` receives progress lines (the library never prints). ``replay_filter``: the contamination check
    of ``preserve.replay`` texts (``laf run`` passes its eval suites; default: every known suite). ``snapshot_every``:
    save the adapter as ``RUN_DIR/snapshots/step-N`` every N steps and at the last (checkpoint selection, ``select:``).

    Raises :class:`~harness.errors.LafError` for bad input (unreadable data, no
    example with a supervised token, unknown LoRA targets...) and
    :class:`TrainingDiverged` when the loss or gradient norm becomes non-finite.
    """
    run_dir = cfg.run_dir()
    # one run per output folder: a second `laf train` into it fails at once naming this one, instead of
    # interleaving its steps into our metrics.jsonl (and so into the registered adapter)
    with exclusive_lock(run_dir, "training run"):
        return _train_locked(cfg, run_dir, config_dir=config_dir, resume=resume, on_step=on_step, log=log, replay_filter=replay_filter,
                             snapshot_every=snapshot_every)


def _train_locked(cfg: TrainConfig, run_dir: Path, *, config_dir: Path, resume: bool, on_step, log, replay_filter=None, snapshot_every: int = 0) -> TrainResult:
    t_start = time.perf_counter()
    reduce_malloc_fragmentation()
    existing = list_checkpoints(run_dir)
    if existing and not resume:
        raise LafError(
            f"{run_dir} already holds checkpoints of an earlier run (last: {existing[-1].name})",
            "pass --resume to continue it, or set output_dir to a new folder (or delete the old one)",
        )

    # -- data
    data_path = _resolve(cfg.data.path, config_dir)
    pref = cfg.objective != "sft"
    read, train_examples, eval_examples = (read_preference_data if pref else read_training_data)(cfg, data_path, config_dir)

    # -- base model, tokenized data
    resolved = resolve_model(cfg.model, allow_pickle=cfg.allow_pickle, trust_remote_code=cfg.trust_remote_code)
    log(f"loading {resolved.spec} ({cfg.precision})")
    model, tok, spec = load_model(resolved, LoadSpec(cfg.precision, cfg.compute_dtype, cfg.device))
    device = spec.device
    # -- forgetting control data, made by the base before any adapter exists (cached: free the second time)
    distill_info = None
    if cfg.preserve.self_distill:
        train_examples, distill_info = self_distill(train_examples, model, tok, cfg, resolved.fingerprint, cfg.precision, log)
    preserve = build_replay(cfg, model, tok, resolved.fingerprint, cfg.precision, config_dir, replay_filter, log)
    data, held = (tokenize_pairs_for_training if pref else tokenize_for_training)(train_examples, eval_examples, tok, cfg, log)
    ratio = cfg.preserve.replay.ratio if cfg.preserve.replay else 0.0
    # SFT mixes replay rows into the packed stream; pairs cannot be packed with them, so a preference objective adds
    # replay batches to each step (PreferenceReplay)
    mix = ReplayMix(data.examples, [] if pref else preserve.replay, ratio, cfg.seed)
    pref_replay = PreferenceReplay(preserve.replay, ratio, cfg.seed, cfg.batch_size, cfg.max_length, tok.pad_token_id) if pref else None

    # -- LoRA (from init_from's weights when given) or every weight (method: full), gradient checkpointing, mixed precision
    if cfg.method == "full":  # the reference LoRA is measured against: every weight trained, the tied embedding/head included
        for p in model.parameters():
            p.requires_grad_(True)
        lineage = None
    else:
        model = attach_lora(model, cfg.lora, precision=cfg.precision, seed=cfg.seed, compute_dtype={"bf16": torch.bfloat16}.get(spec.compute_dtype or ""))
        lineage = load_init_adapter(model, cfg, resolved.fingerprint) if cfg.init_from else None
    if cfg.gradient_checkpointing in (True, "auto"):  # auto = on: measured -35 % peak memory for +10 % time on CPU
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.method == "lora":
            model.enable_input_require_grads()
    autocast = make_autocast(cfg, device)

    # -- optimizer and schedule
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    total_steps = count_steps(mix.rows(0), cfg.model_copy(update={"packing": False}) if pref else cfg)
    opt = make_optimizer(params, cfg, device)
    sched = make_scheduler(opt, cfg, total_steps)

    # -- fresh start or resume
    math_hash = sha256_json({"config": cfg.math_dict(), "base": resolved.fingerprint, "data": data_fingerprint(data_path, read.examples), "spec": spec.as_dict(), "init_from": lineage,
                             **({"replay": preserve.digest, "distill": distill_info and distill_info["cache_key"]} if cfg.preserve.active else {})})
    objective = None
    if pref:  # the reference runs once, before any step (and before a resumed run loads its checkpoint)
        objective = PreferenceObjective(cfg, data, held, tok.pad_token_id, device, autocast)
        ref_id = reference_identity(resolved.fingerprint, spec.as_dict(), cfg, lineage)
        objective.prepare_reference(model, ref_id, log)
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
        _loop(model, tok, cfg, data, held, state, total_steps, params, opt, sched, device, autocast, run_dir, metrics_path, math_hash, on_step,
              objective, log, mix, snapshot_every, pref_replay)
    if cfg.method == "full":
        model.config.use_cache = True  # gradient checkpointing turned it off; the saved model is for inference

    # -- register (never non-finite weights: a NaN adapter would score as confidently right)
    check_finite_weights(model, run_dir, state)
    facts = RunFacts(n_trainable, n_total, time.perf_counter() - t_start, peak_memory_mb(device))
    manifest = build_manifest(cfg, resolved, spec.as_dict(), data_path, read, data, held, state, facts, run_dir)
    if objective is not None:
        manifest["objective"] = {
            "name": cfg.objective, **cfg.preference.model_dump(mode="json", exclude={"ref_cache"}),
            "reference": {"identity": ref_id, "model": "base + init_from adapter" if cfg.init_from else "base (adapter disabled)",
                          "computed_pairs": objective.ref_stats.computed, "cached_pairs": objective.ref_stats.cached,
                          "seconds": round(objective.ref_stats.seconds, 2)} if objective.needs_reference else None,
            "init_from": lineage, "warning_chosen_logps_fall": objective.warned,
        }
    elif lineage:
        manifest["objective"] = {"name": "sft", "init_from": lineage}
    if cfg.preserve.active:
        manifest["preserve"] = {**cfg.preserve.model_dump(mode="json"), "replay_data": preserve.info or None, "self_distill_data": distill_info,
                                "replay_digest": preserve.digest}
    entry = register_full_model(model, tok, cfg, manifest, metrics_path) if cfg.method == "full" else register_adapter(model, cfg, resolved.spec, manifest, metrics_path)
    clear_checkpoints(run_dir)  # the registered adapter supersedes them
    return TrainResult(entry, run_dir, state, data.drop_summary())


def _loop(model, tok, cfg: TrainConfig, data, held, state: TrainState, total_steps: int, params, opt, sched, device: str, autocast,
          run_dir: Path, metrics_path: Path, math_hash: str, on_step, objective=None, log=lambda m: None, mix: ReplayMix | None = None,
          snapshot_every: int = 0, pref_replay: PreferenceReplay | None = None) -> None:
    """The optimizer steps from ``state`` to ``total_steps``: metrics line per step, eval and checkpoints every N;
    ``objective`` (DPO/ORPO/SimPO) supplies the batches and the loss instead of the SFT loss. With ``preserve:`` a
    preference step adds, per micro-batch, ``kl.weight x`` the KL to the base on the chosen completions (``kl.on``
    train/all), and after the pairs the replay batches' mean NLL (plus their KL for ``kl.on`` replay/all)."""

    # -- the loop
    pad_id = tok.pad_token_id
    model.train()
    batches = objective if objective is not None else EpochBatches(data, cfg, pad_id, mix)
    kl = cfg.preserve.kl if cfg.preserve.kl is not None and cfg.preserve.kl.weight > 0 else None
    session_start = time.perf_counter()
    elapsed_before = state.elapsed_s
    with open(metrics_path, "a", encoding="utf-8") as metrics_file:
        while state.step < total_steps:
            group = batches.next_group(state)
            if group is None:  # epoch finished
                continue
            t0 = time.perf_counter()
            n_sup = sum(b.supervised for b in group)
            n_pairs = sum(getattr(b, "n_pairs", 0) for b in group)
            nll_tokens = objective.nll_tokens(group) if objective is not None else None
            replay_batches = pref_replay.batches(state.step, sum(b.tokens for b in group)) if pref_replay else []
            if objective is None:
                n_anchor = sum(anchored_count(b, kl.on) for b in group) if kl is not None else 0
            else:
                n_anchor = sum(pref_anchored_count(b, kl.on) for b in group) + sum(anchored_count(b, kl.on) for b in replay_batches) if kl is not None else 0
            n_replay = sum(b.supervised for b in replay_batches)
            step_loss, step_nll, step_kl = 0.0, 0.0, 0.0
            for b in group:
                with autocast():
                    if objective is not None:
                        loss, stats = objective.batch_loss(model, b.to(device), n_pairs, nll_tokens)
                        objective.accumulate(stats)
                        if kl is not None and kl.on != "replay":
                            _, kl_sum, _ = preserve_loss_sums(model, chosen_rows(b).to(device), "all")
                            step_kl += float(kl_sum.detach()) / max(1, n_anchor)
                            loss = loss + kl.weight * kl_sum / max(1, n_anchor)
                    elif kl is not None:
                        nll, kl_sum, _ = preserve_loss_sums(model, b.to(device), kl.on)
                        step_nll += float(nll.detach()) / n_sup
                        step_kl += float(kl_sum.detach()) / max(1, n_anchor)
                        loss = nll / n_sup + kl.weight * kl_sum / max(1, n_anchor)
                    else:
                        loss = supervised_loss_sum(model, b.to(device)) / n_sup
                if not torch.isfinite(loss):
                    _diverged(run_dir, state, "loss", float(loss))
                loss.backward()
                step_loss += float(loss.detach())
            for b in replay_batches:  # a preference objective's replay: mean NLL over the step's replay tokens (+ their KL)
                with autocast():
                    nll, kl_sum, _ = preserve_loss_sums(model, b.to(device), kl.on if kl is not None and kl.on != "train" else None)
                    step_nll += float(nll.detach()) / max(1, n_replay)
                    loss = nll / max(1, n_replay)
                    if kl is not None and kl.on != "train":
                        step_kl += float(kl_sum.detach()) / max(1, n_anchor)
                        loss = loss + kl.weight * kl_sum / max(1, n_anchor)
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
            }
            if objective is not None:
                m.update(objective.step_metrics(log))
            if mix is not None and mix.replay:
                m["replay_tokens"] = sum(b.replay_tokens for b in group)
            if replay_batches:
                m.update(replay_tokens=sum(b.replay_tokens for b in replay_batches), replay_nll=round(step_nll, 6))
            if kl is not None:
                m.update(kl=round(step_kl, 6), kl_tokens=n_anchor)
                if objective is None:
                    m["nll"] = round(step_nll, 6)
            last = state.step == total_steps
            if held.examples and ((cfg.eval_every and state.step % cfg.eval_every == 0) or last):
                if objective is not None:
                    m.update(objective.evaluate(model, log))
                    state.last_eval_loss = m["eval_loss"]
                else:
                    state.last_eval_loss = evaluate_loss(model, held, cfg, pad_id, device, autocast)
                    m["eval_loss"] = round(state.last_eval_loss, 6)
            metrics_file.write(json.dumps(m) + "\n")
            metrics_file.flush()
            if snapshot_every and (state.step % snapshot_every == 0 or last):
                save_snapshot(model, run_dir, state.step, m, tok if cfg.method == "full" else None)
            if cfg.save_every and state.step % cfg.save_every == 0 and not last:
                save_checkpoint(run_dir, model, opt, sched, state, math_hash, cfg.keep_checkpoints)
            if on_step:
                on_step(StepEvent(state.step, total_steps, m))


# ---------------------------------------------------------------- the steps of train()


def _resolve(path: str, config_dir: Path) -> Path:
    return Path(path) if Path(path).is_absolute() else config_dir / path


def split_eval(n: int, cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """Indices ``(train, held_out)``: a seeded held-out sample unless an eval file is given or data is tiny."""
    if cfg.data.eval_path or cfg.data.eval_fraction == 0 or n < 20:
        return list(range(n)), []
    k = min(cfg.data.eval_max, max(1, int(round(n * cfg.data.eval_fraction))))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 7919)).tolist()
    held = sorted(perm[:k])
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], held


def read_training_data(cfg: TrainConfig, data_path: Path, config_dir: Path) -> tuple[ReadResult, list[Example], list[Example]]:
    """Read the training file strictly; return it with the train and held-out examples."""
    if peek_is_preference(data_path, cfg.data.format):
        raise LafError(f"{data_path} holds preference pairs (prompt/chosen/rejected) but objective is sft",
                       "set objective: dpo, orpo or simpo, or train on SFT examples")
    read = read_examples(data_path, schema=cfg.data.schema_, file_format=cfg.data.format, strict=True)
    if cfg.data.eval_path:
        eval_examples = read_examples(_resolve(cfg.data.eval_path, config_dir), schema=cfg.data.schema_, strict=True).examples
        return read, read.examples, eval_examples
    tr, ev = split_eval(len(read.examples), cfg)
    return read, [read.examples[i] for i in tr], [read.examples[i] for i in ev]


def read_preference_data(cfg: TrainConfig, data_path: Path, config_dir: Path):
    """Read a preference file strictly; return it with the train and held-out pairs."""
    read = read_pairs(data_path, file_format=cfg.data.format, strict=True)
    if cfg.data.eval_path:
        return read, read.examples, read_pairs(_resolve(cfg.data.eval_path, config_dir), strict=True).examples
    tr, ev = split_eval(len(read.examples), cfg)
    return read, [read.examples[i] for i in tr], [read.examples[i] for i in ev]


def _tokenize_split(tokenize, train_rows, eval_rows, tok, cfg: TrainConfig, log, noun: str, none_usable: str, fix: str):
    """Tokenize the training and held-out rows under the config's template and length; drops are logged, and a
    training split with nothing left is one clear error naming the first drop."""
    use_chat = None if cfg.chat_template == "auto" else bool(cfg.chat_template)
    data = tokenize(train_rows, tok, cfg.max_length, use_chat)
    held = tokenize(eval_rows, tok, cfg.max_length, use_chat)
    if data.dropped:
        log(f"dropped {len(data.dropped)} of {len(train_rows)} {noun}: {data.drop_summary()}")
    if not data.examples:
        first = data.dropped[0]
        raise LafError(f"{none_usable} (all {len(data.dropped)} dropped; first, line {first.line}: {first.reason})", fix)
    return data, held


def tokenize_pairs_for_training(train_pairs, eval_pairs, tok, cfg: TrainConfig, log):
    return _tokenize_split(tokenize_pairs, train_pairs, eval_pairs, tok, cfg, log, "pairs", "no preference pair is usable",
                           "fix empty or identical answers, raise max_length, or shorten the prompts")


def tokenize_for_training(train_examples: list[Example], eval_examples: list[Example], tok, cfg: TrainConfig, log) -> tuple[TokenizedData, TokenizedData]:
    return _tokenize_split(tokenize_examples, train_examples, eval_examples, tok, cfg, log, "examples", "no training example keeps a supervised token",
                           "raise max_length, shorten the prompts, or fix empty responses")


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


def pref_anchored_count(b, on: str) -> int:
    """Positions the KL anchor covers in a preference ``PairBatch``: its chosen completions, unless ``on`` is replay."""
    return 0 if on == "replay" else chosen_rows(b).supervised


def anchored_count(batch: Batch, on: str) -> int:
    """Positions the KL anchor covers in ``batch`` (``on``: replay, train or all supervised positions)."""
    keep = batch.labels[:, 1:] != -100
    if on == "all":
        return int(keep.sum())
    rep = batch.replay[:, 1:] if batch.replay is not None else torch.zeros_like(keep)
    return int((keep & rep).sum() if on == "replay" else (keep & ~rep).sum())


class EpochBatches:
    """The batches of the current epoch (a seeded order, so a resumed run rebuilds the same ones); with replay, each
    epoch's rows are the domain examples plus that epoch's replay draw (:class:`ReplayMix`)."""

    def __init__(self, data: TokenizedData, cfg: TrainConfig, pad_id: int, mix: ReplayMix | None = None):
        self.data, self.cfg, self.pad_id, self.mix = data, cfg, pad_id, mix
        self._epoch: int | None = None
        self._batches: list[Batch] = []

    def next_group(self, state: TrainState) -> list[Batch] | None:
        """The ``grad_accum`` micro-batches of the next optimizer step; ``None`` (and ``state`` moved to the next epoch) at an epoch's end."""
        cfg = self.cfg
        if self._epoch != state.epoch:
            rows = self.mix.rows(state.epoch) if self.mix is not None else self.data.examples
            order = epoch_order(len(rows), cfg.seed, state.epoch)
            self._batches = make_batches(rows, order, batch_size=cfg.batch_size, max_length=cfg.max_length, packing=cfg.packing, pad_id=self.pad_id)
            self._epoch = state.epoch
        if state.batch_in_epoch >= len(self._batches):
            state.epoch += 1
            state.batch_in_epoch = 0
            return None
        return self._batches[state.batch_in_epoch : state.batch_in_epoch + cfg.grad_accum]


def evaluate_loss(model, data: TokenizedData, cfg: TrainConfig, pad_id: int, device: str, autocast) -> float | None:
    """Mean supervised-token loss on the held-out examples (``None`` without any)."""
    if not data.examples:
        return None
    batches = make_batches(data.examples, list(range(len(data.examples))), batch_size=cfg.batch_size, max_length=cfg.max_length, packing=cfg.packing, pad_id=pad_id)
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), autocast():
        for b in batches:
            total += float(supervised_loss_sum(model, b.to(device)))
            n += b.supervised
    if was_training:
        model.train()
    return total / max(1, n)


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
