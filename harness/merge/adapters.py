"""Reading registered LoRA adapters as factors, checking they can be merged, writing the result.

A registered adapter is untrusted input: its config may name features whose
update is not scale * B @ A (DoRA, trained biases, modules_to_save, embedding
LoRA), its weights may be corrupt or non-finite. Each is one clear error
naming the adapter, before anything is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LafError
from ..registry import AdapterEntry, AdapterRef, Registry
from ..registry.lora import CONFIG, PEFT_PREFIX, WEIGHTS, read_lora_factors


@dataclass
class LoadedAdapter:
    ref: str  # name@version
    entry: AdapterEntry
    config: dict
    scale: float
    rank: int
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A (r, in), B (out, r))

    @property
    def base_fingerprint(self) -> str | None:
        return (self.entry.manifest.get("base_model") or {}).get("fingerprint")

    @property
    def weights_sha256(self) -> str | None:
        return (self.entry.manifest.get("files") or {}).get(WEIGHTS)


def load_adapter(registry: Registry, ref: str) -> LoadedAdapter:
    entry = registry.resolve(AdapterRef.parse(ref))
    check = registry.verify(entry.ref)
    if not check.ok:
        bad = ", ".join(check.mismatched + check.missing + check.unexpected) or "no file hashes recorded"
        raise LafError(
            f"adapter {entry.ref} does not match its manifest ({bad}): its files changed since it was registered",
            f"run `laf registry verify {entry.ref}`; retrain or restore the files",
        )
    label = str(entry.ref)
    try:
        config = json.loads((entry.path / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise LafError(f"adapter {label}: {CONFIG} is unreadable: {e}", f"run `laf registry verify {label}`") from e
    if not isinstance(config, dict):
        raise LafError(f"adapter {label}: {CONFIG} is not a JSON object", "re-register the adapter")
    _check_config(label, config)
    r, alpha = config["r"], config["lora_alpha"]
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    factors = _read_factors(label, entry.path / WEIGHTS, r)
    return LoadedAdapter(label, entry, config, float(scale), int(r), factors)


def _check_config(label: str, c: dict) -> None:
    def unsupported(what: str, fix: str):
        raise LafError(f"adapter {label}: {what}, so its update is not scale * B @ A and cannot be merged here", fix)

    if c.get("peft_type") != "LORA":
        raise LafError(f"adapter {label} is a {c.get('peft_type')!r} adapter, not LoRA", "merge LoRA adapters only")
    r, alpha = c.get("r"), c.get("lora_alpha")
    if not (isinstance(r, int) and r > 0 and isinstance(alpha, (int, float)) and math.isfinite(alpha)):
        raise LafError(f"adapter {label}: {CONFIG} has r={r!r}, lora_alpha={alpha!r}", "re-register the adapter")
    if c.get("use_dora"):
        unsupported("it is a DoRA adapter (a learned magnitude rescales W0 + dW)", "merge plain LoRA adapters, or merge the DoRA adapters into full models elsewhere")
    if c.get("bias", "none") != "none" or c.get("lora_bias"):
        unsupported("it trains biases", "train with lora.bias: none")
    if c.get("modules_to_save"):
        unsupported(f"it fully trains modules_to_save {c['modules_to_save']}", "merge adapters without modules_to_save")
    if c.get("rank_pattern") or c.get("alpha_pattern"):
        unsupported("it uses per-module rank_pattern/alpha_pattern", "merge adapters with one rank and alpha")


def _read_factors(label: str, path: Path, r: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    read = read_lora_factors(path, label)
    refused = read.other + [k for pair in read.modules.values() if pair.embedding for k in pair.keys]
    if refused:
        raise LafError(f"adapter {label}: tensor {refused[0]!r} is not a LoRA A/B weight (embedding LoRA, DoRA magnitude or a saved module?)",
                       "merge adapters that hold only lora_A/lora_B weights of linear layers")
    out = {}
    for module, pair in read.modules.items():
        for key, value in zip(pair.keys, (pair.A, pair.B)):
            if not np.isfinite(value).all():
                bad = int((~np.isfinite(value)).sum())
                raise LafError(f"adapter {label}: tensor {key} holds {bad} non-finite values (NaN or inf)",
                               "retrain the adapter (training diverged or the file is corrupt); a merge with it would be meaningless")
        if pair.A.shape[0] != r:
            raise LafError(f"adapter {label}: module {module} has A {tuple(pair.A.shape)} and B {tuple(pair.B.shape)}, not a rank-{r} pair",
                           "re-register the adapter")
        out[module] = (torch.from_numpy(pair.A.astype(np.float32)), torch.from_numpy(pair.B.astype(np.float32)))
    if not out:
        raise LafError(f"adapter {label}: {path.name} holds no LoRA weights", "re-register the adapter")
    return out


def check_compatible(adapters: list[LoadedAdapter]) -> None:
    """Same base, same adapted modules with the same shapes, same layout."""
    first = adapters[0]
    if first.base_fingerprint is None:
        raise LafError(f"adapter {first.ref}'s manifest records no base model fingerprint", "re-register it with `laf train`")
    for a in adapters[1:]:
        if a.base_fingerprint != first.base_fingerprint:
            fb = (first.entry.manifest.get("base_model") or {}).get("spec")
            ab = (a.entry.manifest.get("base_model") or {}).get("spec")
            raise LafError(
                f"adapters {first.ref} and {a.ref} were trained on different bases: "
                f"{first.ref} on {fb} (sha256:{first.base_fingerprint}), {a.ref} on {ab} (sha256:{a.base_fingerprint})",
                "merge adapters trained on the same base model",
            )
    for a in adapters[1:]:
        mine, theirs = set(first.factors), set(a.factors)
        if mine != theirs:
            only_first = sorted(mine - theirs)[:3]
            only_other = sorted(theirs - mine)[:3]
            raise LafError(
                f"adapters {first.ref} and {a.ref} adapt different modules ({len(mine)} vs {len(theirs)}; "
                f"only in {first.ref}: {only_first or 'none'}; only in {a.ref}: {only_other or 'none'})",
                "merge adapters trained with the same lora.target_modules",
            )
        for module in sorted(mine):
            s1 = (first.factors[module][1].shape[0], first.factors[module][0].shape[1])
            s2 = (a.factors[module][1].shape[0], a.factors[module][0].shape[1])
            if s1 != s2:
                raise LafError(f"module {module} is {s1} in {first.ref} but {s2} in {a.ref}", "merge adapters of the same base model")
        if bool(a.config.get("fan_in_fan_out")) != bool(first.config.get("fan_in_fan_out")):
            raise LafError(f"adapters {first.ref} and {a.ref} differ in fan_in_fan_out", "merge adapters of the same architecture")


def adapter_config(template: dict, rank: int, modules: list[str]) -> dict:
    """The merged adapter's PEFT config: scale 1 (lora_alpha = r), every adapted module named."""
    c = dict(template)
    c.update(r=rank, lora_alpha=rank, use_rslora=False, use_dora=False, rank_pattern={}, alpha_pattern={},
             target_modules=sorted(modules), lora_dropout=0.0, inference_mode=True,
             layers_to_transform=None, layers_pattern=None, exclude_modules=None)
    return c


def lora_key(module: str, ab: str) -> str:
    return f"{PEFT_PREFIX}{module}.lora_{ab}.weight"
