"""``init_from``: start training from a registered adapter's weights (checked against this base and LoRA shape)."""

from __future__ import annotations

import json

from ..errors import LafError
from ..io import sha256_json
from .config import TrainConfig


def check_init_from(cfg: TrainConfig, registry: str | None = None, base_fingerprint: str | None = None):
    """``cfg.init_from`` resolved and checked before the model loads: registered, its files the ones registered
    (``laf registry verify``), its ``adapter_config.json`` readable with this run's LoRA shape, and (when known) of
    this base. Returns the registry entry."""
    from ..registry import Registry

    assert cfg.init_from
    reg = Registry(registry or cfg.registry)
    entry = reg.resolve(cfg.init_from)
    check = reg.verify(entry.ref)
    if not check.ok:
        bad = ", ".join(check.mismatched + check.missing + check.unexpected) or "no file hashes recorded"
        raise LafError(f"init_from {entry.ref} does not match its manifest ({bad}): its files changed since it was registered",
                       f"run `laf registry verify {entry.ref}`; retrain or restore the files, or start from another adapter")
    base_model = entry.manifest.get("base_model")
    base = base_model.get("fingerprint") if isinstance(base_model, dict) else None
    if base_fingerprint is not None and base != base_fingerprint:
        raise LafError(
            f"init_from {entry.ref} was trained on another base model (fingerprint {str(base)[:12]}, this run's base {base_fingerprint[:12]})",
            "start from an adapter of this base model, or set model: to the base it was trained on",
        )
    try:
        acfg = json.loads((entry.path / "adapter_config.json").read_text("utf-8"))
        if not isinstance(acfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, RecursionError) as e:
        raise LafError(f"init_from {entry.ref}: its adapter_config.json is unreadable ({type(e).__name__}: {str(e)[:200]})",
                       f"run `laf registry verify {entry.ref}`; retrain or restore the files") from None
    want = {"r": cfg.lora.r, "lora_alpha": cfg.lora.alpha}
    have = {"r": acfg.get("r"), "lora_alpha": acfg.get("lora_alpha")}
    if want != have:
        raise LafError(
            f"init_from {entry.ref} has LoRA r={have['r']}, alpha={have['lora_alpha']}; this config asks r={want['r']}, alpha={want['lora_alpha']}",
            "set lora.r and lora.alpha to the adapter's values",
        )
    return entry


def load_init_adapter(model, cfg: TrainConfig, base_fingerprint: str, registry: str | None = None) -> dict:
    """Load ``cfg.init_from``'s weights into the freshly attached LoRA; return its lineage for the manifest.

    Refused when the adapter was trained on another base or with another LoRA shape, or its files changed.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    entry = check_init_from(cfg, registry, base_fingerprint)
    base = entry.manifest["base_model"]["fingerprint"]
    weights = entry.path / "adapter_model.safetensors"
    try:
        state = load_file(str(weights))
        result = set_peft_model_state_dict(model, state)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a forged header
        raise LafError(f"init_from {entry.ref}: its weights do not fit this LoRA setup ({type(e).__name__}: {str(e)[:200]})",
                       "use the same lora settings as the adapter's manifest") from None
    if getattr(result, "unexpected_keys", None):
        raise LafError(f"init_from {entry.ref}: {len(result.unexpected_keys)} tensors match no LoRA module here (first: {result.unexpected_keys[0]})",
                       "use the adapter's lora.target_modules")
    return {"ref": str(entry.ref), "files_sha256": sha256_json(entry.manifest.get("files", {})), "base_fingerprint": base}
