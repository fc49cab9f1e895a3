"""Split a causal LM into its body (decoder) and its output head.

Training and scoring both need only a few positions of the vocabulary
projection (response tokens, continuation tokens). For gemma-3-270m the head
(640 x 262,144) costs more than all 18 layers, so running the body once and
the head on the selected positions is the largest speed and memory lever.
LoRA layers are injected into the modules in place, so calling the body of a
PeftModel runs the adapter (or not, inside ``disable_adapter()``).
"""

from __future__ import annotations

import torch


def body_and_head(model):
    """Return ``(decoder, head, softcap)`` for a HF causal LM or a PeftModel around one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    head = base.get_output_embeddings()
    softcap = getattr(base.config, "final_logit_softcapping", None)
    return decoder, head, softcap


def head_logits(head, softcap, hidden: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits
