"""``init_from``: start training from a registered adapter's weights (checked against this base and LoRA shape)."""

from __future__ import annotations

import json

from ..errors import LafError
from ..io import sha256_json
from .config import TrainConfig


def load_init_adapter(model, cfg: TrainConfig, base_fingerprint: str, registry: str | None = None) -> dict:
    """Load ``cfg.init_from``'s weights into the freshly attached LoRA; return its lineage for the manifest.

    Refused when the adapter was trained on another base or with another LoRA shape.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from ..registry import Registry

    assert cfg.init_from
    entry = Registry(registry or cfg.registry).resolve(cfg.init_from)
    base = (entry.manifest.get("base_model") or {}).get("fingerprint")
    if base != base_fingerprint:
        raise LafError(
            f"init_from {entry.ref} was trained on another base model (fingerprint {str(base)[:12]}, this run's base {base_fingerprint[:12]})",
            "start from an adapter of this base model, or set model: to the base it was trained on",
        )
    acfg = json.loads((entry.path / "adapter_config.json").read_text())
    want = {"r": cfg.lora.r, "lora_alpha": cfg.lora.alpha}
    have = {"r": acfg.get("r"), "lora_alpha": acfg.get("lora_alpha")}
    if want != have:
        raise LafError(
            f"init_from {entry.ref} has LoRA r={have['r']}, alpha={have['lora_alpha']}; this config asks r={want['r']}, alpha={want['lora_alpha']}",
            "set lora.r and lora.alpha to the adapter's values",
        )
    weights = entry.path / "adapter_model.safetensors"
    try:
        state = load_file(str(weights))
        result = set_peft_model_state_dict(model, state)
    except (OSError, RuntimeError, ValueError) as e:
        raise LafError(f"init_from {entry.ref}: its weights do not fit this LoRA setup ({e})", "use the same lora settings as the adapter's manifest") from None
    if getattr(result, "unexpected_keys", None):
        raise LafError(f"init_from {entry.ref}: {len(result.unexpected_keys)} tensors match no LoRA module here (first: {result.unexpected_keys[0]})",
                       "use the adapter's lora.target_modules")
    return {"ref": str(entry.ref), "files_sha256": sha256_json(entry.manifest.get("files", {})), "base_fingerprint": base}
