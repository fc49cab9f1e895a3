"""What each sweep point cost, and what full fine-tuning of the same model would have cost (an extrapolation).

Measured per point: trainable parameters (the manifest's count; for a merged adapter, the tensors in its
safetensors file) and their share of the model, adapter size on disk, training time, tokens seen, peak
memory, evaluation time. Extrapolated for full fine-tuning of the same model on the same tokens:

- memory for weights, gradients and AdamW states: 16 bytes per parameter (bf16 weights 2 + bf16 gradients 2
  + fp32 master weights 4 + two fp32 Adam moments 8; the mixed-precision accounting of the ZeRO paper),
  activations not included;
- checkpoint on disk: 2 bytes per parameter (bf16);
- time: training FLOPs per token are ~6 N for full fine-tuning (forward 2 N, backward 4 N) and ~4 N for LoRA
  on a frozen base (forward 2 N, backward through the activations 2 N, no weight gradients for the frozen
  weights), so the measured LoRA time x 6/4 at the same hardware efficiency.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

FULL_FT_BYTES_PER_PARAM = 16
FULL_FT_CHECKPOINT_BYTES_PER_PARAM = 2
FULL_FT_TIME_FACTOR = 6 / 4
METHOD = ("full fine-tuning extrapolated from the measured LoRA run: memory = parameters x 16 bytes (bf16 weights and gradients, "
          "fp32 master weights and two AdamW moments; activations not included), checkpoint = parameters x 2 bytes (bf16), "
          "time = LoRA training time x 6/4 (training FLOPs per token ~6N for full fine-tuning vs ~4N for LoRA on a frozen base: "
          "no weight gradients for the frozen weights), at the same tokens")
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors_params(path: Path) -> int:
    """The number of values in a safetensors file, read from its header (bounded; no tensor is loaded)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            return 0
        (n,) = struct.unpack("<Q", head)
        if n > 64 << 20:
            return 0
        meta = json.loads(f.read(n))
    total = 0
    for k, v in meta.items():
        if k == "__metadata__" or not isinstance(v, dict):
            continue
        count = 1
        for d in v.get("shape", []):
            count *= int(d)
        total += count
    return total


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


def point_cost(entry, eval_seconds: float | None, total_params_hint: int | None = None) -> dict:
    """The cost record of one registered adapter (``AdapterEntry``)."""
    m = entry.manifest or {}
    weights = Path(entry.path) / "adapter_model.safetensors"
    trainable = m.get("trainable_parameters")
    if not isinstance(trainable, int):
        trainable = safetensors_params(weights) if weights.is_file() else None
    total = m.get("total_parameters") if isinstance(m.get("total_parameters"), int) else total_params_hint
    train_s = m.get("train_time_s")
    tokens = m.get("tokens_seen")
    out = {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_percent": round(100 * trainable / total, 4) if trainable and total else None,
        "adapter_bytes": dir_bytes(Path(entry.path)),
        "train_time_s": train_s,
        "tokens": tokens,
        "tokens_per_s": round(tokens / train_s, 1) if tokens and train_s else None,
        "peak_memory_mb": m.get("peak_memory_mb"),
        "eval_time_s": None if eval_seconds is None else round(eval_seconds, 2),
        "steps": m.get("steps"),
    }
    if total:
        out["full_finetune"] = {
            "trainable_parameters": total,
            "state_memory_mb": round(total * FULL_FT_BYTES_PER_PARAM / 2**20, 1),
            "checkpoint_bytes": total * FULL_FT_CHECKPOINT_BYTES_PER_PARAM,
            "train_time_s": None if train_s is None else round(train_s * FULL_FT_TIME_FACTOR, 2),
        }
    return out
