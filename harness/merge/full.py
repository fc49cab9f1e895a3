"""Write a full merged model folder: base weights + merged dW, safetensors, bf16 or fp32.

The folder is an ordinary Hugging Face folder (``config.json`` without any
``quantization_config``, the base's tokenizer files, ``merge.json`` with the
lineage), so ``--model FOLDER`` and ``laf models show FOLDER`` take it like any
other. It is assembled in a temporary folder beside the target and renamed
into place; one base weight file is held in memory at a time.

Which base weights? An adapter trained with QLoRA learned its update against
the NF4-dequantised base, not the original weights. ``nf4_dequantized`` adds
dW to exactly those (every ``Linear4bit`` weight quantised and dequantised by
bitsandbytes as ``load_model`` does, everything else as in the base files),
so the folder reproduces the adapter applied on the fly to the NF4 base.
``original`` adds dW to the unquantised weights: a different model, closer to
the base's full precision, that the adapter was never trained against.
``auto`` takes ``nf4_dequantized`` when every input adapter was trained on
NF4, ``original`` otherwise. The choice is recorded in ``merge.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import torch

from ..errors import LafError
from ..io import atomic_dir, atomic_write_json
from ..models import LoadSpec, ResolvedModel, load_model
from ..models.fingerprint import PICKLE_SUFFIXES, WEIGHT_SUFFIXES

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
MERGE_INFO = "merge.json"


def _dequantized_nf4(resolved: ResolvedModel, load: dict) -> dict[str, torch.Tensor]:
    """module name -> the dequantised weight the NF4 base computes with, for every Linear4bit."""
    import bitsandbytes as bnb

    spec = LoadSpec("nf4", load.get("compute_dtype") or "fp32", "cpu")
    model, _, _ = load_model(resolved, spec, with_tokenizer=False)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            out[name] = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float().cpu()
    del model
    return out


def write_model(
    resolved: ResolvedModel,
    target: Path,
    delta_for: Callable[[str], torch.Tensor | None],
    *,
    dtype: str,
    base_weights: str,
    load: dict,
    info: dict,
    expected: set[str],
    fan_in_fan_out: bool = False,
    before_info: Callable[[], None] = lambda: None,
) -> dict:
    """Write base + dW for every module ``delta_for`` returns a tensor for; returns what was done."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if target.exists():
        raise LafError(f"output folder {target} already exists; a merge never overwrites", "choose another output.path or remove the folder")
    files = sorted(p for p in resolved.path.iterdir() if p.is_file())
    weight_files = [p for p in files if p.name.endswith(WEIGHT_SUFFIXES)]
    if not weight_files:
        pickles = [p.name for p in files if p.name.endswith(PICKLE_SUFFIXES)]
        raise LafError(f"base {resolved.path} has no safetensors weights ({', '.join(pickles) or 'none'})",
                       "convert the base to safetensors first")
    nf4 = _dequantized_nf4(resolved, load) if base_weights == "nf4_dequantized" else {}
    out_dtype = DTYPES[dtype]
    merged_modules: list[str] = []
    with atomic_dir(target) as tmp:
        for p in files:
            if p.name == "config.json" or p.name.endswith(WEIGHT_SUFFIXES + PICKLE_SUFFIXES) or p.name == MERGE_INFO:
                continue
            shutil.copyfile(p, tmp / p.name)
        config = json.loads((resolved.path / "config.json").read_text())
        config.pop("quantization_config", None)
        config["dtype"] = {"bf16": "bfloat16", "fp32": "float32"}[dtype]
        config.pop("torch_dtype", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for wf in weight_files:
            tensors: dict[str, torch.Tensor] = {}
            with safe_open(str(wf), framework="pt") as f:
                metadata = f.metadata()
                for key in f.keys():
                    w = f.get_tensor(key)
                    module = key[: -len(".weight")] if key.endswith(".weight") else None
                    if module is not None and module in nf4:
                        w = nf4.pop(module)
                    delta = delta_for(module) if module is not None else None
                    if delta is not None:
                        if fan_in_fan_out:
                            delta = delta.T
                        if delta.shape != w.shape:
                            raise LafError(f"module {module}: merged update {tuple(delta.shape)} does not fit base weight {tuple(w.shape)}",
                                           "merge adapters trained on this base")
                        w = w.float() + delta
                        merged_modules.append(module)
                    tensors[key] = w.to(out_dtype).contiguous()
            save_file(tensors, str(tmp / wf.name), metadata=metadata or {"format": "pt"})
            del tensors
        missing = sorted(expected - set(merged_modules))
        if missing:
            raise LafError(f"{len(missing)} adapted modules (e.g. {missing[0]}) have no weight in the base {resolved.path}",
                           "merge adapters trained on this base")
        if nf4:
            raise LafError(f"{len(nf4)} quantised modules of the NF4 base (e.g. {next(iter(nf4))}) have no weight of that name in {resolved.path}",
                           "use output.base_weights: original for this model")
        before_info()
        done = {**info, "base_weights": base_weights, "dtype": dtype, "merged_modules": len(merged_modules)}
        atomic_write_json(tmp / MERGE_INFO, done)
    return done
