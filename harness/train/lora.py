"""LoRA setup: which linear layers an adapter can target, and a seeded attach."""

from __future__ import annotations

import torch

from ..errors import LafError
from .config import LoraSettings


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


def target_modules(model, lora: LoraSettings) -> str | list[str]:
    """``lora.target_modules`` checked against the model: ``"all-linear"`` or a list of leaf names it has."""
    targets = lora.target_modules
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


def keep_frozen_embeddings_in(model, dtype: torch.dtype) -> int:
    """Cast the frozen input and output embeddings to ``dtype``; returns the bytes saved.

    PEFT's ``prepare_model_for_kbit_training`` upcasts every non-quantised weight to fp32 for stability. That is
    right for the norms (small) but not for a frozen embedding: gemma-3-270m's tied 262,144 x 640 matrix is
    168 M parameters, 671 MB in fp32 against 335 MB in bf16, and as the LM head it then ran in fp32 on every
    chunk. On an H200 this made our QLoRA step use 3.7x TRL's peak GPU memory. TRL keeps these weights in the
    compute dtype (``peft_module_casting_to_bf16``); so do we (:func:`prepare_kbit` never upcasts them; this
    casts one loaded in another dtype). Norms stay fp32, trained weights are untouched."""
    saved = 0
    seen: set[int] = set()
    for m in (model.get_input_embeddings(), model.get_output_embeddings()):
        w = getattr(m, "weight", None)
        if w is None or id(w) in seen or not w.is_floating_point() or w.requires_grad or w.dtype == dtype:
            continue
        seen.add(id(w))
        before = w.numel() * w.element_size()
        m.to(dtype)
        saved += before - m.weight.numel() * m.weight.element_size()
    return saved


def prepare_kbit(model, keep_embeddings_in: torch.dtype | None = None):
    """PEFT's ``prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)`` (freeze every weight,
    upcast each fp16/bf16 weight that is not NF4 to fp32, release the CUDA cache), except that with a half
    ``keep_embeddings_in`` the frozen input and output embeddings are never upcast and end in that dtype.

    PEFT's upcast followed by a cast back (:func:`keep_frozen_embeddings_in`) ends in the same state, but for a
    moment holds the embedding twice: 671 MB in fp32 beside 335 MB in bf16 at gemma-3-270m, the peak of a whole
    QLoRA run (measured with benchmarks/memory.py: 1,010 MB of tensors, against TRL's 855 MB). The state this leaves
    is held equal to PEFT's + the cast back by tests/test_train.py."""
    half = keep_embeddings_in in (torch.float16, torch.bfloat16)
    skip = set()
    if half:
        for m in (model.get_input_embeddings(), model.get_output_embeddings()):
            w = getattr(m, "weight", None)
            if w is not None:
                skip.add(id(w))
    for param in model.parameters():
        param.requires_grad = False
    for param in model.parameters():
        if param.dtype in (torch.float16, torch.bfloat16) and param.__class__.__name__ != "Params4bit" and id(param) not in skip:
            param.data = param.data.to(torch.float32)
    if half:
        keep_frozen_embeddings_in(model, keep_embeddings_in)  # type: ignore[arg-type]
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return model


def attach_lora(model, lora: LoraSettings, *, precision: str, seed: int, compute_dtype: torch.dtype | None = None):
    """Wrap ``model`` in a PEFT LoRA model with the ``lora:`` block of the config (``cfg.lora``); the adapter's initial
    weights depend only on ``seed``. ``precision``: how the base was loaded (``nf4`` prepares it for k-bit training).

    ``compute_dtype``: the NF4 matmul dtype the model was loaded with; when it is a half type, the frozen
    embeddings stay in it while the rest is prepared for k-bit training (:func:`prepare_kbit`)."""
    from peft import LoraConfig, get_peft_model

    targets = target_modules(model, lora)
    if precision == "nf4":
        model = prepare_kbit(model, compute_dtype)
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        use_rslora=lora.rslora,
        use_dora=lora.dora,
        bias=lora.bias,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)  # LoRA init is seeded right before the adapter is created
    return get_peft_model(model, peft_config)


def model_linear_names(resolved) -> list[str]:
    """:func:`linear_module_names` of a resolved model without loading its weights (built on the meta device from
    its config): what a sweep checks every point's ``lora.target_modules`` against before the first one trains."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as e:  # an unusual folder: the trainer checks the targets when it loads the model
        raise LafError(f"cannot read the architecture of {resolved.spec} to check lora.target_modules ({type(e).__name__}: {e})",
                       "check the model folder's config.json") from None
    return linear_module_names(model)


def unknown_targets(targets, available: list[str]) -> list[str] | None:
    """The names in ``targets`` the model lacks (``[]`` when all are known, None for 'all-linear')."""
    if targets == "all-linear":
        return None
    wanted = [targets] if isinstance(targets, str) else list(targets)
    return [t for t in wanted if t not in available] or ([] if wanted else ["(empty list)"])
