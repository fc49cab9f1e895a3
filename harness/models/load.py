"""Load a resolved base model in fp32, bf16 or NF4 (bitsandbytes, double quantisation).

The AVX512-BF16 fix lives here because every caller needs it: on CPUs with
AVX512-BF16, bitsandbytes 0.50 repacks ``Linear4bit`` weights in place during
any eval-mode no-grad forward, and later training forwards then compute wrong
LoRA gradients without any error. We switch that path off on every
``Linear4bit`` right after loading (tests/test_models.py guards it).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import asdict, dataclass
from typing import Literal

from ..errors import LafError
from .files import check_regular, read_bounded
from .resolve import ResolvedModel

Precision = Literal["fp32", "bf16", "nf4"]
PRECISIONS = ("fp32", "bf16", "nf4")


@dataclass(frozen=True)
class LoadSpec:
    """How to put a base model in memory; part of every model identity."""

    precision: Precision = "fp32"
    compute_dtype: Literal["fp32", "bf16"] | None = None  # NF4 matmul dtype; None = bf16 where supported
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        from ..config import DEVICE_RULE, check_device

        try:
            check_device(self.device)
        except ValueError as e:
            raise LafError(str(e), f"use a device torch knows: {DEVICE_RULE}") from None

    def resolved(self) -> "LoadSpec":
        """Fill in the automatic choices so the identity records what actually ran. ``auto`` asks torch only
        where a GPU may be present (:func:`cuda_certainly_absent`), so a fully cached eval never imports it."""
        device = self.device
        if device == "auto":
            if cuda_certainly_absent():
                device = "cpu"
            else:
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
        compute = self.compute_dtype
        if self.precision == "nf4" and compute is None:
            compute = "bf16" if bf16_supported(device) else "fp32"
        if self.precision == "bf16":
            compute = "bf16"
        if self.precision == "fp32":
            compute = "fp32"
        return LoadSpec(self.precision, compute, device)

    def as_dict(self) -> dict:
        return asdict(self)


_GPU_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL


def _torch_build_has_gpu() -> bool | None:
    """From torch's ``version.py`` (not importing torch, 1.5 s): whether the build has CUDA or ROCm; None when
    it cannot be read."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return None
        from pathlib import Path

        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except (OSError, ImportError, ValueError, StopIteration):
        return None
    found = dict(re.findall(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(.+?)\s*$", text, flags=re.M))
    if set(found) != {"cuda", "hip"}:
        return None
    return any(v != "None" for v in found.values())


def cuda_certainly_absent() -> bool:
    """True only where ``torch.cuda.is_available()`` cannot be true: torch already says so, or its build has
    no CUDA/ROCm, or (Linux) no GPU device node exists. False means: ask torch."""
    import os

    torch = sys.modules.get("torch")
    if torch is not None:
        return not torch.cuda.is_available()
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):  # every GPU hidden (also on ROCm)
        return True
    if _torch_build_has_gpu() is False:
        return True
    return sys.platform.startswith("linux") and not any(os.path.exists(n) for n in _GPU_NODES)


def bf16_supported(device: str) -> bool:
    """The default NF4 compute dtype: bf16 on CUDA GPUs with bf16; fp32 on CPU, where an early measurement found
    bf16 compute 1.5x slower (gemma-3-270m, 4 x 128 tokens, with the AVX512-BF16 fast path off, see the module
    docstring). On a CPU with AMX (the 2-core machine, torch 2.13) bf16 compute now pays: a packed 8 x 128 QLoRA
    step 1.7x faster and scoring 2-3x faster. It stays opt-in (``compute_dtype: bf16``; it is part of every
    identity, so a new default would re-score every cached NF4 run), and the preserve example sets it."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


def quiet_bitsandbytes() -> None:
    # "Failed to load CPU gemm_4bit_forward from kernels-community" is harmless offline.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def disable_avx512bf16_repack(model) -> int:
    """Turn off bitsandbytes' in-place CPU weight repacking on every Linear4bit; returns how many.

    A model can hold a Linear4bit only if bitsandbytes was imported to make it, so an fp32/bf16 load does not import
    it here (1.2 s of a cold evaluation's start-up on the 2-core machine)."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None or not hasattr(bnb, "nn"):
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


quiet_bitsandbytes()  # before anything imports bitsandbytes


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


_ADDED_TOKEN_KEYS = {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"}
_HEAD_CHARS = 8 << 20  # the added tokens sit at the head of tokenizer.json (Gemma 3: 6,384 of them in its first 1.2 MB)
# tokenizers writes {"version": ..., "truncation": ..., "padding": ..., "added_tokens": [...], then the rest
_TOP_LEVEL_LEAD = re.compile(r'\s*\{\s*(?:"(?:version|truncation|padding)"\s*:\s*(?:null|"[^"\\]{0,64}"|true|false|-?\d{1,12})\s*,\s*)*'
                             r'"added_tokens"\s*:\s*(?=\[)')


_HEAD_FIELDS = ("normalizer", "pre_tokenizer", "post_processor", "decoder")  # what tokenizers writes after the added tokens
_MODEL_SCALARS = re.compile(r'\s*+,?\s*+"([a-z_]{1,40})"\s*+:\s*+')  # possessive: a long whitespace run cannot backtrack


@dataclass
class _TokenizerHead:
    """What ``tokenizer.json``'s head says, read without parsing its 31 MB: the added tokens (as transformers builds
    them), and the top-level parts after them up to the model's vocabulary (``None`` where that part could not be
    read with certainty)."""

    config: dict
    decoder: dict
    parts: dict | None
    folder: object = None


def _tokenizer_head(folder) -> _TokenizerHead | None:
    """Read from the head because transformers 5 parses the whole ``tokenizer.json`` (31 MB for Gemma 3) in Python
    just to find the added tokens when ``tokenizer_config.json`` does not list them, as our converted folders' does
    not (1.5 s of every cold start); passed as ``added_tokens_decoder`` they need no such parse.

    ``None`` (transformers then reads everything itself) unless certain. Certain means: the config does not list
    the added tokens itself or name other tokenizer files, no ``special_tokens_map.json`` or ``added_tokens.json``
    exists (transformers reads those on the path this skips), the key is the top-level one right after the scalar
    header fields, and every entry has exactly the fields an added token has (``tests/test_models.py`` holds the
    tokenizer loaded this way equal to plain ``AutoTokenizer``, and each uncertain case to the plain load)."""
    from pathlib import Path

    folder = Path(folder)
    try:
        cfg_path = folder / "tokenizer_config.json"
        if not cfg_path.is_file() or cfg_path.stat().st_size > _HEAD_CHARS:
            return None
        cfg = json.loads(read_bounded(cfg_path, _HEAD_CHARS).decode("utf-8"))
        if not isinstance(cfg, dict) or any(k in cfg for k in ("added_tokens_decoder", "auto_map", "fast_tokenizer_files")):
            return None
        if (folder / "special_tokens_map.json").exists() or (folder / "added_tokens.json").exists():
            return None  # read only on transformers' own path (the one our kwarg skips)
        tok_path = folder / "tokenizer.json"
        check_regular(tok_path)  # a FIFO would block the open below
        with open(tok_path, encoding="utf-8") as f:
            head = f.read(_HEAD_CHARS)
        lead = _TOP_LEVEL_LEAD.match(head)  # the key at the top level, after nothing but the scalar header fields
        if lead is None:
            return None
        decoding = json.JSONDecoder()
        entries, at = decoding.raw_decode(head, lead.end())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, LafError):
        return None
    if not isinstance(entries, list):
        return None
    from tokenizers import AddedToken

    out: dict = {}
    for e in entries:
        if not (isinstance(e, dict) and set(e) == _ADDED_TOKEN_KEYS and type(e["id"]) is int and isinstance(e["content"], str)
                and all(isinstance(e[k], bool) for k in _ADDED_TOKEN_KEYS - {"id", "content"})):
            return None
        out[e["id"]] = AddedToken(e["content"], single_word=e["single_word"], lstrip=e["lstrip"], rstrip=e["rstrip"],
                                  normalized=e["normalized"], special=e["special"])
    return _TokenizerHead(cfg, out, _head_parts(decoding, head, at), folder)


def _model_type(folder) -> str | None:
    """``config.json``'s ``model_type`` (``None`` when it cannot be read: no routing by model type then)."""
    from pathlib import Path

    try:
        path = Path(folder) / "config.json"
        if path.stat().st_size > _HEAD_CHARS:
            return None
        cfg = json.loads(read_bounded(path, _HEAD_CHARS).decode("utf-8"))
    except (OSError, TypeError, ValueError, UnicodeDecodeError, RecursionError, LafError):
        return None
    value = cfg.get("model_type") if isinstance(cfg, dict) else None
    return value if isinstance(value, str) else None


def _head_parts(decoding, head: str, at: int) -> dict | None:
    """The top-level parts after the added tokens, in the order tokenizers writes them (``normalizer``,
    ``pre_tokenizer``, ``post_processor``, ``decoder``), then the model's scalar settings up to its vocabulary
    (``model``: ``{"type": "BPE", "dropout": None, ...}``); ``None`` if anything differs from that layout."""
    parts: dict = {}
    try:
        for name in _HEAD_FIELDS:
            key = re.compile(r'\s*+,\s*+"' + name + r'"\s*+:\s*+').match(head, at)
            if key is None:
                return None
            parts[name], at = decoding.raw_decode(head, key.end())
        key = re.compile(r'\s*+,\s*+"model"\s*+:\s*+\{').match(head, at)
        if key is None:
            return None
        at, model = key.end(), {}
        while True:
            field = _MODEL_SCALARS.match(head, at)
            if field is None:
                return None
            if field.group(1) in ("vocab", "merges"):
                break
            value, at = decoding.raw_decode(head, field.end())
            if isinstance(value, (dict, list)) or field.group(1) in model:
                return None  # only scalars come before the vocabulary
            model[field.group(1)] = value
    except (ValueError, RecursionError):
        return None
    parts["model"] = model
    return parts


def _gemma_backend_is_the_files(head: _TokenizerHead):
    """``GemmaTokenizer``'s own constructor throws away the backend ``tokenizer.json`` describes and builds one from
    the vocabulary and merges, which transformers 5 first parses out of the whole file in Python (1.5 to 2 s for
    Gemma 3's 262,144 entries). When the file's normalizer, pre-tokenizer, decoder and BPE settings are exactly
    what that constructor sets, the file's backend *is* the one it would build, and the Rust loader can read it
    directly. Returns the class that loads it so (a subclass without its own ``__init__``, which transformers loads
    from the file), or ``None``: a different class, transformers changed how it builds Gemma's, or the file differs."""
    if head.parts is None or head.config.get("tokenizer_class") not in ("GemmaTokenizer", "GemmaTokenizerFast"):
        return None
    unk = head.config.get("unk_token", "<unk>")
    if not isinstance(unk, str):
        return None
    ids = list(head.decoder)
    if ids != sorted(ids):  # transformers adds them sorted by id, the Rust loader in file order: the ids could differ
        return None
    try:
        from transformers import GemmaTokenizer
        from transformers.models.auto import tokenization_auto
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return None
    model_type = _model_type(head.folder)  # AutoTokenizer routes some model types past the tokenizer config's class
    if model_type is not None and (tokenization_auto.TOKENIZER_MAPPING_NAMES.get(model_type, "GemmaTokenizer") not in ("GemmaTokenizer", "GemmaTokenizerFast")
                                   or model_type in getattr(tokenization_auto, "MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS", ())):
        return None
    if not (issubclass(GemmaTokenizer, TokenizersBackend) and "__init__" in GemmaTokenizer.__dict__
            and "convert_to_native_format" not in GemmaTokenizer.__dict__):
        return None
    reference = GemmaTokenizer(unk_token=unk)._tokenizer  # its constructor on five tokens: under a millisecond
    built = json.loads(reference.to_str())
    want = {k: built.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")}
    want["model"] = {k: v for k, v in built["model"].items() if k not in ("vocab", "merges")}
    if any(head.parts.get(k) != v for k, v in want.items()):
        return None

    class _GemmaTokenizerFromFile(GemmaTokenizer):  # no __init__ of its own: transformers hands the file to Rust
        _reference = reference

    return _GemmaTokenizerFromFile


_BPE_SETTINGS = ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges")


def _same_backend_settings(backend, reference) -> bool:
    """The loaded backend's normalizer, pre-tokenizer, decoder and BPE settings equal the ones GemmaTokenizer builds
    (read from the loaded objects: the head check cannot see a field written after the vocabulary)."""
    try:
        if type(backend.model) is not type(reference.model):
            return False
        if any(getattr(backend.model, k) != getattr(reference.model, k) for k in _BPE_SETTINGS):
            return False
        for part in ("normalizer", "pre_tokenizer", "decoder"):
            a, b = getattr(backend, part), getattr(reference, part)
            if (a is None) != (b is None) or (a is not None and json.loads(a.__getstate__()) != json.loads(b.__getstate__())):
                return False
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def load_tokenizer(resolved: ResolvedModel):
    from transformers import AutoTokenizer

    _ = resolved.hf_config  # a config transformers cannot read is one clear error, not its traceback
    extra: dict = {}
    from_file = None
    if not resolved.trust_remote_code:  # a remote tokenizer class may read its kwargs its own way
        head = _tokenizer_head(resolved.path)
        if head is not None:
            extra["added_tokens_decoder"] = head.decoder
            from_file = _gemma_backend_is_the_files(head)
    tok = None
    if from_file is not None:
        try:
            tok = from_file.from_pretrained(resolved.path, _from_auto=True, **extra)
        except Exception:  # noqa: BLE001 - the Rust loader refused what the plain path may read: let it decide
            tok = None
        if tok is not None and _same_backend_settings(tok._tokenizer, from_file._reference):
            tok.__class__ = from_file.__mro__[1]  # GemmaTokenizer: the object the plain load gives, from the file's own backend
        else:
            tok = None
    if tok is None:
        tok = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=resolved.trust_remote_code, **extra)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(resolved: ResolvedModel, spec: LoadSpec = LoadSpec(), with_tokenizer: bool = True):
    """Return ``(model, tokenizer, spec)`` with ``spec`` fully resolved (device, compute dtype).

    ``with_tokenizer=False`` returns ``None`` for the tokenizer (random-weight speed checks have none)."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = spec.resolved()
    _ = resolved.hf_config  # config.json checked by transformers too (its sizes were bounded at resolution), before any allocation
    if spec.precision not in PRECISIONS:
        raise LafError(f"unknown precision '{spec.precision}'", f"use one of {', '.join(PRECISIONS)}")
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise LafError(f"device '{spec.device}' was asked for but no CUDA GPU is visible", "use device: cpu or auto")
    kwargs: dict = {
        "trust_remote_code": resolved.trust_remote_code,
        "use_safetensors": None if resolved.allow_pickle else True,
        "attn_implementation": "sdpa",
    }
    if spec.precision == "nf4":
        quiet_bitsandbytes()
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as e:
            raise LafError("NF4 needs bitsandbytes, which is not installed", "pip install bitsandbytes") from e
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_torch_dtype(spec.compute_dtype),
            bnb_4bit_quant_storage=torch.uint8,
        )
        kwargs["dtype"] = torch.float32 if spec.compute_dtype == "fp32" else torch.bfloat16
        kwargs["device_map"] = {"": spec.device if spec.device != "cuda" else 0}
    else:
        kwargs["dtype"] = _torch_dtype(spec.precision)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as e:  # what transformers raises on a folder's bad contents
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise LafError(f"could not load the model from {resolved.path}: {type(e).__name__}: {first}",
                       "check the folder's files (config.json, generation_config.json, weights)") from e
    if spec.precision != "nf4":
        model.to(spec.device)
    disable_avx512bf16_repack(model)
    model.eval()
    return model, (load_tokenizer(resolved) if with_tokenizer else None), spec
