"""What a model's ``config.json`` may say: checked before anything is built or allocated.

A hostile or broken config.json must be one clear error naming the key, never
a traceback from transformers and never a model so large that building it on
the meta device (or loading it) runs for ever. Two layers:

- :func:`check_model_config` (pure Python, run by every resolution): no NaN or
  infinity anywhere, ``model_type`` a name, ``architectures`` a list of names,
  ``auto_map`` an object, every size key (layers, hidden and intermediate
  sizes, heads, vocabulary, positions, experts; at any depth, so
  ``text_config`` too) a whole number within :data:`SIZE_BOUNDS`, and the
  parameters those sizes imply at most :data:`MAX_PARAMETERS` (10^12);
- :func:`hf_config` (needs transformers, run before a model is built or
  loaded): the ``model_type`` is a causal language model this transformers
  knows (or ``auto_map`` code the user trusts with ``--trust-remote-code``),
  and transformers' own validation of the config, its errors turned into one
  error naming config.json.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import ConfigError, LafError

MAX_PARAMETERS = 10**12  # the largest public models are under 2 x 10^12 with experts; laf trains on one machine
# key -> largest accepted value (each at least 1, or 0 for those in _ZERO_OK; null means "the architecture's default")
SIZE_BOUNDS: dict[str, int] = {
    **dict.fromkeys(("num_hidden_layers", "n_layer", "n_layers", "num_layers"), 1024),
    **dict.fromkeys(("hidden_size", "n_embd", "d_model"), 1 << 17),
    **dict.fromkeys(("intermediate_size", "n_inner", "ffn_dim", "moe_intermediate_size", "shared_expert_intermediate_size"), 1 << 20),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_heads", "num_key_value_heads"), 1 << 12),
    "head_dim": 1 << 14,
    "vocab_size": 1 << 22,
    **dict.fromkeys(("max_position_embeddings", "n_positions", "sliding_window"), 1 << 24),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "num_experts_per_tok"), 1 << 14),
}
_LAYERS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
_HIDDEN = ("hidden_size", "n_embd", "d_model")
_INTER = ("intermediate_size", "n_inner", "ffn_dim", "moe_intermediate_size")
_HEADS = ("num_attention_heads", "n_head", "num_heads")
_EXPERTS = ("num_experts", "num_local_experts", "n_routed_experts")
# keys where 0 means "none" (dense models sharing a class with their mixture-of-experts forms, no sliding window)
_ZERO_OK = frozenset({"num_experts", "num_local_experts", "n_routed_experts", "num_experts_per_tok", "sliding_window"})
_FIX = "restore the model's config.json from its original download or conversion"


def _first(d: dict, keys) -> int:
    for k in keys:
        v = d.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return 0


def _non_finite(value, where: str):
    """The first key path holding NaN or +-infinity, or ``None``."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return at, v
        if isinstance(v, dict):
            stack.extend((x, f"{at}.{k}" if at else str(k)) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, f"{at}[{i}]") for i, x in enumerate(v))
    return None


def check_finite(data, path: Path) -> None:
    bad = _non_finite(data, "")
    if bad is not None:
        raise ConfigError(path, bad[0], f"is {bad[1]}, not a finite number; non-finite numbers are not accepted",
                          f"set it to a finite number, or {_FIX}")


def _estimate(d: dict) -> int:
    """Parameters a transformer with these sizes has, roughly (attention, MLP with experts, embeddings and head)."""
    layers, hidden = _first(d, _LAYERS), _first(d, _HIDDEN)
    inter = _first(d, _INTER) or 4 * hidden
    heads, head_dim = _first(d, _HEADS), _first(d, ("head_dim",))
    attn = max(hidden, heads * head_dim)
    experts = max(1, _first(d, _EXPERTS))
    return layers * (4 * hidden * attn + 3 * hidden * inter * experts) + 2 * _first(d, ("vocab_size",)) * hidden


def _check_sizes(d: dict, at: str, path: Path) -> int:
    """Check the size keys of one (sub)config and those below it; returns the estimated parameters of them all."""
    for key, bound in SIZE_BOUNDS.items():
        if key not in d or d[key] is None:
            continue
        v, name = d[key], f"{at}{key}"
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(path, name, f"is {v!r} ({type(v).__name__}), not a whole number", f"set it to a positive whole number, or {_FIX}")
        if v < (0 if key in _ZERO_OK else 1):
            raise ConfigError(path, name, f"is {v}; a model size must be at least {0 if key in _ZERO_OK else 1}", f"set it to a positive whole number, or {_FIX}")
        if v > bound:
            raise ConfigError(path, name, f"is {v:,}, over laf's bound of {bound:,} for this key (see docs/setup.md, "
                              "'Model folders')", f"use a model of a size laf can train, or {_FIX}")
    total = _estimate(d)
    if total > MAX_PARAMETERS:
        sizes = {k: d[k] for k in (*_LAYERS, *_HIDDEN, *_INTER, *_EXPERTS, "vocab_size") if isinstance(d.get(k), int)}
        key = max(sizes, key=lambda k: d[k] / SIZE_BOUNDS[k])  # the one nearest its own bound
        raise ConfigError(path, f"{at}{key}", f"with {', '.join(f'{k}={v:,}' for k, v in sizes.items())} the model would have "
                          f"about {total:.1e} parameters, over laf's bound of 10^12", f"use a smaller model, or {_FIX}")
    for k, sub in d.items():
        if isinstance(sub, dict):
            total += _check_sizes(sub, f"{at}{k}.", path)
    return total


def check_model_config(config: dict, path: Path, trust_remote_code: bool = False) -> None:
    """The checks that need no transformers: one :class:`ConfigError` naming config.json and the key."""
    check_finite(config, path)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type.strip():
        shown = "missing" if model_type is None else f"{model_type!r}"
        raise ConfigError(path, "model_type", f"is {shown}; it must name the architecture (e.g. \"gemma3_text\", \"llama\")", _FIX)
    archs = config.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise ConfigError(path, "architectures", f"is {archs!r}, not a list of class names", _FIX)
    auto_map = config.get("auto_map")
    if auto_map is not None and not isinstance(auto_map, dict):
        raise ConfigError(path, "auto_map", f"is {type(auto_map).__name__}, not an object", _FIX)
    total = _check_sizes(config, "", path)
    if total > MAX_PARAMETERS:
        raise ConfigError(path, None, f"its sizes imply about {total:.1e} parameters, over laf's bound of 10^12", f"use a smaller model, or {_FIX}")


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def hf_config(folder: Path, config: dict, trust_remote_code: bool):
    """The transformers config of a checked folder, or one :class:`LafError` naming config.json and the fix."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = folder / "config.json"
    model_type = config["model_type"]
    auto_map = config.get("auto_map") or {}
    remote = "AutoConfig" in auto_map and "AutoModelForCausalLM" in auto_map
    if model_type not in CONFIG_MAPPING_NAMES:
        if remote and not trust_remote_code:
            raise ConfigError(path, "auto_map", f"model_type {model_type!r} is not an architecture transformers knows, and "
                              "auto_map asks to run Python code shipped with the model", "pass --trust-remote-code (or set "
                              "trust_remote_code: true) if you trust its origin; otherwise use a model transformers supports")
        if not remote:
            raise ConfigError(path, "model_type", f"is {model_type!r}, an architecture this transformers does not know",
                              "set model_type to the architecture's name (e.g. \"llama\", \"gemma3_text\"), or upgrade transformers")
    elif model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not (remote and trust_remote_code):
        raise ConfigError(path, "model_type", f"is {model_type!r}, which is not a causal language model (no AutoModelForCausalLM class)",
                          "use a decoder (causal LM) model")
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except LafError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers' validation of a user's file: strict types, divisibility, ...
        raise LafError(f"{path} is not a valid {model_type} configuration ({_short(e)})",
                       f"correct the key it names, or {_FIX}") from None


def build_meta_model(folder: Path, config: dict, trust_remote_code: bool):
    """The model built on the meta device from its checked config (nothing allocated), or one :class:`LafError`."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = hf_config(folder, config, trust_remote_code)
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    except LafError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a hidden size not divisible by the heads
        raise LafError(f"{folder / 'config.json'} describes a model transformers cannot build ({_short(e)})",
                       f"correct the key it names, or {_FIX}") from None
