"""LoRA setup: which linear layers an adapter can target, and a seeded attach."""

from __future__ import annotations

import torch

from ..errors import LafError
from .config import TrainConfig


def linear_module_names(model) -> list[str]:
    """Leaf names of the linear layers LoRA can target (the output head excluded)."""
    import bitsandbytes as bnb

    head = model.get_output_embeddings()
    names = set()
    for full, module in model.named_modules():
        if module is head:
            continue
        if isinstance(module, (torch.nn.Linear, bnb.nn.Linear4bit)):
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def target_modules(model, cfg: TrainConfig) -> str | list[str]:
    """``cfg.lora.target_modules`` checked against the model: ``"all-linear"`` or a list of leaf names it has."""
    targets = cfg.lora.target_modules
    if targets == "all-linear":
        return targets
    available = linear_module_names(model)
    wanted = [targets] if isinstance(targets, str) else list(targets)
    unknown = [t for t in wanted if t not in available]
    if unknown or not wanted:
        raise LafError(
            f"lora.target_modules names modules this model does not have: {', '.join(unknown) or '(empty list)'}",
            f"use 'all-linear' or some of: {', '.join(available)}",
        )
    return wanted


def attach_lora(model, cfg: TrainConfig):
    """Wrap ``model`` in a PEFT LoRA model; the adapter's initial weights depend only on ``cfg.seed``."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    targets = target_modules(model, cfg)
    if cfg.precision == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        use_rslora=cfg.lora.rslora,
        use_dora=cfg.lora.dora,
        bias=cfg.lora.bias,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(cfg.seed)  # LoRA init is seeded right before the adapter is created
    return get_peft_model(model, lora)
