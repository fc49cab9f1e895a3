"""What the registry stores about an adapter: its manifest (how it was made) and its files.

The manifest records the base model's fingerprint, the load settings, the
data's hashes and counts, the full config, seed, package versions, hardware,
command line, parameter counts, tokens seen, time, memory and final losses:
enough to tell two adapters apart and to redo a run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError

from ..env import command_line, machine_info, now_iso, package_versions
from ..errors import LafError
from ..io import hash_path, sha256_json
from ..models.fingerprint import cached_file_sha256
from ..registry import AdapterEntry, Registry
from .checkpoint import TrainState
from .config import TrainConfig

METRICS = "metrics.jsonl"
WRITE_ERRORS: tuple[type[BaseException], ...] = (OSError, SafetensorError)  # safetensors reports I/O errors as its own type


def data_fingerprint(path: Path, examples) -> dict:
    """The training file's (or folder's) bytes hash and the hash of the examples as read."""
    return {"file_sha256": hash_path(path, digest=cached_file_sha256), "content_sha256": sha256_json([e.to_canonical() for e in examples])}


@dataclass
class RunFacts:
    """What the loop measured, for the manifest."""

    n_trainable: int
    n_total: int
    wall_time_s: float
    peak_memory_mb: float


def build_manifest(cfg: TrainConfig, resolved, load: dict, data_path: Path, read, data, held, state: TrainState, facts: RunFacts, run_dir: Path) -> dict:
    """The manifest dict of an adapter (``Registry.register`` adds name, version and file hashes)."""
    return {
        "created": now_iso(),
        "kind": "full" if cfg.method == "full" else "lora" if cfg.precision != "nf4" else "qlora",
        "description": cfg.description,
        "base_model": {"spec": resolved.spec, "kind": resolved.kind, "source": resolved.source, "fingerprint": resolved.fingerprint},
        "load": load,
        "data": {
            "path": str(data_path),
            "schema": read.schema,
            "file_format": read.file_format,
            **data_fingerprint(data_path, read.examples),
            "examples": len(read.examples),
            "train_examples": len(data.examples),
            "eval_examples": len(held.examples),
            "dropped": len(data.dropped),
            "dropped_reasons": data.drop_summary(),
            "truncated": data.truncated,
        },
        "config": cfg.model_dump(mode="json", by_alias=True),
        "seed": cfg.seed,
        "packages": package_versions(),
        "hardware": machine_info(),
        "command": command_line(),
        "trainable_parameters": facts.n_trainable,
        "total_parameters": facts.n_total,
        "trainable_percent": round(100 * facts.n_trainable / max(1, facts.n_total), 4),
        "steps": state.step,
        "tokens_seen": state.tokens_seen,
        "supervised_tokens_seen": state.supervised_seen,
        "wall_time_s": round(facts.wall_time_s, 2),
        "train_time_s": round(state.elapsed_s, 2),
        "peak_memory_mb": round(facts.peak_memory_mb, 1),
        "final_train_loss": state.last_loss,
        "final_eval_loss": state.last_eval_loss,
        "run_dir": str(run_dir),
    }


def register_adapter(model, cfg: TrainConfig, base_spec: str, manifest: dict, metrics_path: Path) -> AdapterEntry:
    """Save the PEFT adapter with its metrics and register it as the next version of ``cfg.name``."""
    try:
        return _register(model, cfg, base_spec, manifest, metrics_path)
    except WRITE_ERRORS as e:  # the staging copy in the temp folder: disk full, file too large
        raise LafError(f"saving adapter {cfg.name} failed: {getattr(e, 'strerror', None) or e}; nothing was registered and the run folder {cfg.run_dir()} is kept",
                       "free disk space (or set TMPDIR to a folder with room) and run again") from e


FULL_WEIGHTS = "model.safetensors"


def strip_quantization_config(folder: Path) -> None:
    """Drop a ``quantization_config`` (a GGUF or bitsandbytes one inherited from the base's config) from a saved full
    model's ``config.json``: its weights are plain, and BitsAndBytes loading refuses the stale entry."""
    p = folder / "config.json"
    cfg = json.loads(p.read_text())
    if cfg.pop("quantization_config", None) is not None:
        p.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def register_full_model(model, tok, cfg: TrainConfig, manifest: dict, metrics_path: Path) -> AdapterEntry:
    """Save a full fine-tune (``method: full``) as a Hugging Face model folder (safetensors in the trained dtype, config,
    tokenizer) with its metrics, and register it as the next version of ``cfg.name`` (manifest ``kind: full``)."""
    try:
        with tempfile.TemporaryDirectory(prefix="laf-full-") as tmp_name:
            tmp = Path(tmp_name)
            model.save_pretrained(tmp, safe_serialization=True, max_shard_size="100GB")
            tok.save_pretrained(tmp)
            (tmp / "README.md").unlink(missing_ok=True)
            strip_quantization_config(tmp)
            if not (tmp / FULL_WEIGHTS).is_file():
                raise LafError(f"saving the full model {cfg.name} wrote no {FULL_WEIGHTS}", "report this: the model's save_pretrained changed its layout")
            shutil.copyfile(metrics_path, tmp / METRICS)
            return Registry(cfg.registry).register(cfg.name, tmp, manifest)
    except WRITE_ERRORS as e:
        raise LafError(f"saving the full model {cfg.name} failed: {getattr(e, 'strerror', None) or e}; nothing was registered and the run folder "
                       f"{cfg.run_dir()} is kept", "free disk space (or set TMPDIR to a folder with room) and run again") from e


def _register(model, cfg: TrainConfig, base_spec: str, manifest: dict, metrics_path: Path) -> AdapterEntry:
    with tempfile.TemporaryDirectory(prefix="laf-adapter-") as tmp_name:
        tmp = Path(tmp_name)
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "README.md").unlink(missing_ok=True)
        cfg_path = tmp / "adapter_config.json"
        acfg = json.loads(cfg_path.read_text())
        acfg["base_model_name_or_path"] = base_spec  # the machine-specific path says nothing; the manifest has the fingerprint
        cfg_path.write_text(json.dumps(acfg, indent=2, sort_keys=True) + "\n")
        shutil.copyfile(metrics_path, tmp / METRICS)
        return Registry(cfg.registry).register(cfg.name, tmp, manifest)
