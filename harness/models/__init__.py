"""Base models: resolution (default / folder / GGUF / hub), fingerprints and loading."""

from .load import PRECISIONS, LoadSpec, disable_avx512bf16_repack, load_model, load_tokenizer
from .resolve import DEFAULT_MODEL, ResolvedModel, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "PRECISIONS",
    "LoadSpec",
    "ResolvedModel",
    "disable_avx512bf16_repack",
    "load_model",
    "load_tokenizer",
    "resolve_model",
]
