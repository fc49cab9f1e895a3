"""Content fingerprints of base models.

A base model's fingerprint is a sha256 over its weight files, its canonicalised
config and its tokenizer files. Hashing a 1 GB safetensors file takes seconds,
so per-file digests are cached by (absolute path, size, mtime) in the harness
cache; an edited file changes size or mtime and is re-hashed.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from ..env import cache_dir
from ..io import atomic_write_json, sha256_file, sha256_json

WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
# Keys that change with the library that wrote the file, not with the model.
VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "_commit_hash")

_lock = threading.Lock()


def _hash_cache_path() -> Path:
    return cache_dir() / "file-hashes.json"


def _load_hash_cache() -> dict:
    try:
        return json.loads(_hash_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def cached_file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered by (path, size, mtime_ns)."""
    path = Path(path).resolve()
    st = path.stat()
    key = str(path)
    stamp = [st.st_size, st.st_mtime_ns]
    with _lock:
        cache = _load_hash_cache()
        hit = cache.get(key)
        if hit and hit[:2] == stamp:
            return hit[2]
    digest = sha256_file(path)
    with _lock:
        cache = _load_hash_cache()
        cache[key] = [*stamp, digest]
        try:
            atomic_write_json(_hash_cache_path(), cache, indent=None)
        except Exception:
            pass  # a read-only cache only costs speed, never correctness
    return digest


def canonical_config(config: dict) -> dict:
    return {k: v for k, v in sorted(config.items()) if k not in VOLATILE_CONFIG_KEYS}


def fingerprint_files(folder: Path, allow_pickle: bool = False) -> dict[str, str]:
    """Relative path -> sha256 for every file that defines the model's behaviour."""
    suffixes = WEIGHT_SUFFIXES + (PICKLE_SUFFIXES if allow_pickle else ())
    out: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        if p.name.endswith(suffixes) or p.name in TOKENIZER_FILES:
            out[p.name] = cached_file_sha256(p)
    return out


def fingerprint_folder(folder: str | os.PathLike, allow_pickle: bool = False) -> str:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    return sha256_json({"config": canonical_config(config), "files": fingerprint_files(folder, allow_pickle)})
