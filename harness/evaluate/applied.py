"""An adapter that does nothing is an error, not a result: the check before an adapter is scored.

lm-eval users have long reported adapters that were silently not applied
(target modules that match nothing, a ``peft`` argument lost on the way,
weights loaded under the wrong adapter name), with scores equal to the base.
Every time the engine hot-swaps an adapter on (``pool.py``) it checks, before
any item is scored:

1. the files against the base: every module the weights adapt exists in the
   base under that exact name, every entry of ``target_modules`` matches a
   module (PEFT's rule: the full name, or its last dotted components), every
   weighted module is targeted, and not every ``lora_B`` is zero;
2. what PEFT loaded: each of those modules carries this adapter, with the
   file's weights;
3. the effect: one forward pass on a fixed probe batch with the adapter on
   and off; the largest |delta logit| must exceed :data:`PROBE_TOLERANCE`, and
   both passes must be finite.

The figure (with the probe's digest) is recorded in results.json under the
adapter (``models.<ref>.adapter.applied``) and cached with the responses, so a
run served from the cache reports the figure of the check that produced them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from pathlib import Path

import torch

from ..errors import LafError
from .identity import PROBE_TOLERANCE, PROBE_VERSION, valid_figure  # noqa: F401  (torch-free: the cache checks figures)

PROBE_TEXT = "The adapter probe: a fixed sentence with numbers 1, 2, 3 and a question? Yes, it checks that the output changes."
PROBE_MAX_TOKENS = 32
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<name>[^.]+))?\.weight$")


def _near(name: str, known: list[str], n: int = 2) -> list[str]:
    """Modules of the base that the user probably meant: same name ignoring case, the name without a prefix, or close."""
    low = name.lower()
    same_case = [k for k in known if k.lower() == low or k.lower().endswith("." + low) or low.endswith("." + k.lower())]
    suffix = [k for k in known if name.endswith("." + k) or k.endswith("." + name.split(".", 1)[-1])]
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    out: list[str] = []
    for k in same_case + suffix + close:
        if k not in out:
            out.append(k)
    return out[:n]


def _hint(names: list[str], known: list[str]) -> str:
    parts = []
    names = sorted(names)  # the same message for the same adapter, whatever order a set gave
    for n in names[:5]:
        near = _near(n, known)
        parts.append(f"'{n}'" + (f" (the base has {', '.join(repr(x) for x in near)})" if near else ""))
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(parts) + more


def _targets_match(target, module: str) -> bool:
    """PEFT's ``check_target_module_exists`` for the common forms: a regex string (full match) or a list of names."""
    if isinstance(target, str):
        return target == "all-linear" or re.fullmatch(target, module) is not None
    return any(module == t or module.endswith("." + t) for t in target)


def check_files(label: str, path: Path, base_modules: list[str]) -> dict:
    """Step 1: the adapter's config and weights against the base's module names. Returns {module: (A, B)} stats."""
    from safetensors import safe_open

    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise LafError(f"adapter {label}: adapter_config.json is unreadable: {e}", f"run `laf registry verify {label}`") from None
    if not isinstance(config, dict):
        raise LafError(f"adapter {label}: adapter_config.json is not a JSON object", "re-register the adapter")
    known = sorted(base_modules)
    known_set = set(known)
    leaves = sorted({k.rsplit(".", 1)[-1] for k in known})
    factors: dict[str, dict[str, torch.Tensor]] = {}
    try:
        with safe_open(str(path / "adapter_model.safetensors"), framework="pt") as f:
            for key in f.keys():
                m = _KEY.match(key)
                if not m:
                    continue  # embedding LoRA, modules_to_save, DoRA magnitudes: not checked here
                if m["name"]:
                    raise LafError(
                        f"adapter {label}: its weights are saved under the adapter name '{m['name']}' ({key}), so PEFT would load them "
                        "into no adapter and leave it at its initialisation (lora_B = 0): the scores would be the base's",
                        "save the adapter with save_pretrained (it strips the adapter name), or rename the keys without it")
                factors.setdefault(m["module"], {})[m["ab"]] = f.get_tensor(key)
    except LafError:
        raise
    except Exception as e:  # a corrupt file: safetensors raises several types
        raise LafError(f"adapter {label}: cannot read adapter_model.safetensors: {e}", f"run `laf registry verify {label}`") from None
    if not factors:
        raise LafError(f"adapter {label}: adapter_model.safetensors holds no lora_A/lora_B weights, so it changes nothing",
                       "register the adapter's trained weights (adapter_model.safetensors from save_pretrained)")
    missing = sorted(m for m in factors if m not in known_set)
    if missing:
        raise LafError(f"adapter {label}: {len(missing)} of the {len(factors)} modules its weights adapt do not exist in the base: "
                       f"{_hint(missing, known)}; PEFT would skip them silently",
                       "score the adapter on the base it was trained on; module names must match exactly (case and prefix)")
    target = config.get("target_modules")
    if isinstance(target, (list, tuple)):
        unmatched = [t for t in target if not isinstance(t, str) or not any(_targets_match([t], k) for k in known)]
        if unmatched:
            raise LafError(f"adapter {label}: target_modules in adapter_config.json name modules the base does not have: "
                           f"{_hint([str(t) for t in unmatched], leaves + known)}",
                           "fix target_modules (names are case-sensitive; PEFT matches the full name or its last dotted parts)")
    if isinstance(target, (str, list, tuple)):
        untargeted = sorted(m for m in factors if not _targets_match(target, m))
        if untargeted:
            raise LafError(f"adapter {label}: its weights adapt modules that target_modules ({target!r}) does not select, so PEFT "
                           f"would not load them: {', '.join(untargeted[:5])}" + (f" and {len(untargeted) - 5} more" if len(untargeted) > 5 else ""),
                           "register the adapter_config.json that was saved with these weights")
    partial = sorted(m for m, ab in factors.items() if set(ab) != {"A", "B"})
    if partial:
        raise LafError(f"adapter {label}: modules with lora_A or lora_B but not both: {', '.join(partial[:5])}", f"run `laf registry verify {label}`")
    for m, ab in factors.items():
        for k, t in ab.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise LafError(f"adapter {label}: lora_{k} of module {m} holds non-finite values", "retrain the adapter; its scores would be meaningless")
    zero = sorted(m for m, ab in factors.items() if not bool(ab["B"].any()))
    if len(zero) == len(factors):
        raise LafError(f"adapter {label}: every lora_B is zero ({_hint(zero, known)}), so the adapter is the identity: its scores would be the base's",
                       "register the trained weights, not the initialisation (was training run, and did it save the final state?)")
    return {"modules": sorted(factors), "zero_b": zero, "factors": factors}


def check_loaded(label: str, peft, adapter_name: str, files: dict) -> None:
    """Step 2: each module of the file carries ``adapter_name`` in the PEFT model, with the file's weights."""
    base = peft.base_model.model
    loaded: dict[str, torch.nn.Module] = {}
    for name, module in base.named_modules():
        la = getattr(module, "lora_A", None)
        if isinstance(la, torch.nn.ModuleDict) and adapter_name in la:
            loaded[name] = module
    want = set(files["modules"])
    lost = sorted(want - set(loaded))
    if lost:
        raise LafError(f"adapter {label}: PEFT attached it to {len(loaded)} modules, but its weights adapt {len(want)}; not attached: {', '.join(lost[:5])}",
                       "check target_modules in adapter_config.json against the base's module names")
    wrong = []
    for m in sorted(want):
        mod = loaded[m]
        for ab, holder in (("A", mod.lora_A), ("B", mod.lora_B)):
            got = holder[adapter_name].weight.detach().float().cpu()
            ref = files["factors"][m][ab].float()
            if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-2, atol=1e-6):
                wrong.append(f"{m}.lora_{ab}")
    if wrong:
        raise LafError(f"adapter {label}: the weights PEFT loaded differ from the file's in {len(wrong)} tensors ({', '.join(wrong[:5])}): "
                       "they were loaded under another name or not at all",
                       "re-register the adapter with the files save_pretrained wrote")


def probe_ids(tokenizer) -> torch.Tensor:
    ids = tokenizer(PROBE_TEXT, add_special_tokens=True)["input_ids"][:PROBE_MAX_TOKENS]
    return torch.tensor([ids], dtype=torch.long)


def probe_delta(label: str, peft, ids: torch.Tensor, device) -> float:
    """Step 3: max |logit(adapter on) - logit(adapter off)| over every position and token of the probe batch."""
    from ..models.heads import body_and_head, head_logits

    body, head, softcap = body_and_head(peft)
    ids = ids.to(device)

    def logits() -> torch.Tensor:
        hidden = body(input_ids=ids, use_cache=False).last_hidden_state
        return head_logits(head, softcap, hidden).float()

    with torch.no_grad():
        on = logits()
        with peft.disable_adapter():
            off = logits()
    for what, x in (("with the adapter", on), ("without the adapter", off)):
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise LafError(f"adapter {label}: the probe batch gives {bad} non-finite logits {what}: the model cannot be scored",
                           "check the adapter's weights (retrain it) and the precision (score in fp32 if this happens only in half precision)")
    return float((on - off).abs().max())


def base_module_names(model) -> list[str]:
    """The base's module names, whether or not PEFT has wrapped it yet (without PEFT's own lora_* children)."""
    inner = model.base_model.model if hasattr(model, "peft_config") else model
    return [n for n, _ in inner.named_modules() if n and ".lora_" not in n and not n.endswith(".base_layer")]


def check_applied(label: str, peft, adapter_name: str, files: dict, tokenizer, device) -> dict:
    """Steps 2 and 3 for the adapter just loaded as ``adapter_name`` (active), after :func:`check_files` passed on
    its files before loading (PEFT raises its own traceback on a target that matches nothing); returns the figure."""
    check_loaded(label, peft, adapter_name, files)
    ids = probe_ids(tokenizer)
    delta = probe_delta(label, peft, ids, device)
    if not (math.isfinite(delta) and delta > PROBE_TOLERANCE):
        raise LafError(
            f"adapter {label} does not change the model: on the probe batch the largest |delta logit| with it on vs off is {delta:.3g} "
            f"(at most {PROBE_TOLERANCE:g}); its {len(files['modules'])} modules are attached, but their update is (numerically) zero",
            "register the trained weights; if the update is tiny, score in fp32 (a bf16/NF4 base can round it away)")
    return {
        "max_abs_delta_logit": float(f"{delta:.6g}"),
        "tolerance": PROBE_TOLERANCE,
        "probe": PROBE_VERSION,
        "probe_tokens": int(ids.shape[1]),
        "probe_sha256": hashlib.sha256(json.dumps(ids.tolist()).encode()).hexdigest()[:16],
        "modules": len(files["modules"]),
        "zero_b_modules": len(files["zero_b"]),
    }


