"""An adapter's LoRA factors read from its safetensors file, torch-free (numpy): the one reader behind merging
(:mod:`harness.merge`) and the weight-space measures (:mod:`harness.diversity`).

A tensor name is ``[base_model.model.]MODULE.lora_A|lora_B|lora_embedding_A|lora_embedding_B[.ADAPTER][.weight]``:
PEFT saves ``base_model.model.MODULE.lora_A.weight`` (and ``lora_embedding_A`` without ``.weight``), a raw
``state_dict`` keeps the adapter name (``lora_A.default.weight``), other tools drop the ``base_model.model.``
prefix. MODULE is the name without that prefix, so the same module of two adapters matches however each was
saved. A layer index is read from ``layers.N``, ``h.N``, ``blocks.N`` or ``layer.N`` (Llama/Qwen, GPT-2, others,
BERT). Everything else (a saved module, a DoRA magnitude, a LoRA bias) is returned as ``other`` for the caller to
refuse or skip. The file is untrusted: its header and offsets are bounds-checked, a bad file is one error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LafError

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
FACTOR_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                        r"(?:\.(?!weight$|bias$)[^.]+)?(?:\.weight)?$")
LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")
_MAX_HEADER = 100 * 1024 * 1024
_DTYPES: dict[str, Any] = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bf16"}


def layer_of(module: str) -> int | None:
    """The transformer block a module belongs to (``model.layers.3.self_attn.q_proj`` -> 3), None outside the blocks."""
    m = LAYER.search("." + module + ".")
    return int(m.group(1)) if m else None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A bounds-checked safetensors reader returning float64 arrays (bf16 included, which numpy lacks)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError("file shorter than its header")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > min(_MAX_HEADER, size - 8):
                raise ValueError(f"header length {n} does not fit the file ({size} bytes)")
            header = json.loads(f.read(n))
            data_start = 8 + n
            out = {}
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                dtype, shape, (lo, hi) = meta["dtype"], meta["shape"], meta["data_offsets"]
                if dtype not in _DTYPES:
                    raise ValueError(f"tensor {name} has dtype {dtype}; LoRA factors are floating point")
                width = 2 if dtype in ("F16", "BF16") else np.dtype(_DTYPES[dtype]).itemsize
                count = math.prod(shape)
                if not (0 <= lo <= hi <= size - data_start) or hi - lo != count * width:
                    raise ValueError(f"tensor {name}: offsets {lo}..{hi} do not match shape {shape} or the file size")
                f.seek(data_start + lo)
                raw = f.read(hi - lo)
                arr: np.ndarray
                if dtype == "BF16":
                    arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
                else:
                    arr = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
                out[name] = arr.astype(np.float64).reshape(shape)
            return out
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LafError(f"{path} is not a readable safetensors file: {e}", "restore the adapter (`laf registry verify` names changed files)") from e


@dataclass
class FactorPair:
    """One adapted module: dW = scale * B @ A (for an embedding: its transpose)."""

    A: np.ndarray  # (r, in)
    B: np.ndarray  # (out, r)
    embedding: bool  # lora_embedding_A/B
    keys: tuple[str, str]  # the tensor names in the file (A, B)


@dataclass
class LoraFactors:
    modules: dict[str, FactorPair]  # MODULE (no base_model.model. prefix) -> its factors, sorted by name
    other: list[str] = field(default_factory=list)  # tensors that are no LoRA factor, in file order


def read_lora_factors(path: Path, label: str) -> LoraFactors:
    """The factors of the adapter weights at ``path`` (``label`` names the adapter in errors): every module has
    both factors and they multiply. Values are checked by the caller (each says what a non-finite one means)."""
    tensors = read_safetensors(path)
    found: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
    kinds: dict[str, set[bool]] = {}
    other = []
    for key, arr in tensors.items():
        m = FACTOR_KEY.match(key)
        if not m:
            other.append(key)
            continue
        found.setdefault(m["module"], {})["A" if m["kind"].endswith("A") else "B"] = (key, arr)
        kinds.setdefault(m["module"], set()).add(m["kind"].startswith("lora_embedding"))
    modules = {}
    for module, f in sorted(found.items()):
        if set(f) != {"A", "B"}:
            raise LafError(f"adapter {label}: module {module} has a lora_{next(iter(f))} but no partner",
                           f"run `laf registry verify {label}`; restore or retrain the adapter")
        (ka, A), (kb, B) = f["A"], f["B"]
        if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1] or len(kinds[module]) != 1:
            raise LafError(f"adapter {label}: module {module} has factors of shapes {A.shape} and {B.shape}, which do not multiply",
                           "restore or retrain the adapter")
        modules[module] = FactorPair(A, B, kinds[module] == {True}, (ka, kb))
    return LoraFactors(modules, other)
