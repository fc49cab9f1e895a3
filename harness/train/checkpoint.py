"""Checkpoints: the trainable weights, optimizer, scheduler, RNG states and data position.

Enough to make ``--resume`` continue bit for bit (on CPU). A checkpoint is
written into a temporary folder and renamed into place, and it records the
hash of everything that shapes the math, so a resume under different settings
is refused instead of silently mixing two runs.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LafError
from ..io import atomic_dir, atomic_write_json

CHECKPOINTS = "checkpoints"


@dataclass
class TrainState:
    """Where the run is: what a checkpoint restores besides tensors."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    supervised_seen: int = 0
    elapsed_s: float = 0.0
    last_loss: float | None = None
    last_eval_loss: float | None = None


def rng_state() -> tuple[dict, dict]:
    """``(tensors, plain)``: torch/CUDA generator states, and Python/NumPy states as JSON-able lists."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    py = random.getstate()
    np_state = np.random.get_state()
    plain = {"python": [py[0], list(py[1]), py[2]], "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, plain


def set_rng_state(tensors: dict, plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
    v, st, g = plain["python"]
    random.setstate((v, tuple(st), g))
    n = plain["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of ``run_dir``, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / "state.json").exists())


def save_checkpoint(run_dir: Path, model, opt, sched, state: TrainState, math_hash: str, keep: int) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically and keep only the newest ``keep``."""
    from safetensors.torch import save_file

    folder = run_dir / CHECKPOINTS / f"step-{state.step:06d}"
    if folder.exists():
        shutil.rmtree(folder)
    tensors, plain = rng_state()
    with atomic_dir(folder) as tmp:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": tensors}, tmp / "state.pt")
        atomic_write_json(tmp / "state.json", {"state": asdict(state), "math_hash": math_hash, "rng": plain})
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: Path, model, opt, sched, math_hash: str) -> TrainState:
    """Restore weights, optimizer, scheduler and RNG states in place; refuse a checkpoint of other settings."""
    from safetensors.torch import load_file

    meta = json.loads((folder / "state.json").read_text())
    if meta["math_hash"] != math_hash:
        raise LafError(
            f"checkpoint {folder} was made with different training settings (data, model, LoRA, optimiser or seed)",
            "resume with the config it was made with, or start over without --resume (use another output_dir to keep it)",
        )
    weights = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].device))
    blob = torch.load(folder / "state.pt", weights_only=True)
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"], meta["rng"])
    return TrainState(**meta["state"])


def clear_checkpoints(run_dir: Path) -> None:
    """Remove every checkpoint (a registered adapter supersedes them)."""
    for ckpt in list_checkpoints(run_dir):
        shutil.rmtree(ckpt, ignore_errors=True)
