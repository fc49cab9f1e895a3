"""Content fingerprints of base models: a function of what the model does, not of how it was saved.

A base model's fingerprint is a sha256 over

- its weight files (byte for byte),
- its ``config.json`` and ``generation_config.json``, parsed, with the keys that
  only record who wrote the file dropped (``transformers_version``,
  ``_name_or_path``, ``_commit_hash``, any ``_``-prefixed key),
- what its tokenizer does: the parsed ``tokenizer.json`` (vocabulary, merges,
  normalizer, pre-tokenizer, post-processor, decoder, added tokens), the
  tokenizer settings of ``tokenizer_config.json`` and ``special_tokens_map.json``
  (special tokens and the like) without the loader's run-time flags
  (``local_files_only``, ``is_local``, ``name_or_path``, ``cache_dir``,
  ``token``, ``gguf_file``, ...), raw vocabulary files (``tokenizer.model``,
  ``merges.txt``, ...), and every chat template wherever it is stored
  (``chat_template.jinja``, ``chat_template.json``, ``additional_chat_templates/``
  or the ``chat_template`` key), so moving a template between those files does
  not count but changing one character of it does.

So the same model converted with ``HF_HUB_OFFLINE=1`` and without gets one
fingerprint, and a changed vocabulary entry, special token or chat template
gets another.

Fingerprints written before this rule (``legacy``) hashed the tokenizer files as
written. :func:`fingerprint_aliases` returns the current fingerprint together
with the legacy one of the same folder (and of the same folder with only the
loader flags flipped, the one difference the old rule saw between an online
and an offline conversion), so adapters registered under the old rule are still
recognised as trained on this base.

Hashing a 1 GB safetensors file takes seconds, so per-file digests are cached
by (absolute path, size, mtime, ctime, inode) in the harness cache; an edited
file changes its ctime even when its size and mtime are put back, and is
re-hashed.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path

from ..env import cache_dir
from ..errors import LafError
from ..io import atomic_write_json, canonical_json, sha256_bytes, sha256_file, sha256_json
from .files import MAX_METADATA_BYTES, check_regular, read_bounded, read_text_bounded

FINGERPRINT_SCHEME = "laf-base-fingerprint/2"
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
CHAT_TEMPLATE_DIR = "additional_chat_templates"  # transformers' folder of named templates
# Tokenizer files that are JSON and hashed as parsed content; the rest are hashed as bytes.
_JSON_TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "vocab.json", "added_tokens.json")
# Keys that change with the library that wrote the file, not with the model.
VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "_commit_hash")
# Arguments of from_pretrained that transformers copies into tokenizer_config.json on save_pretrained:
# where and how the files were fetched, never what the tokenizer does.
TOKENIZER_LOADER_FLAGS = frozenset({
    "local_files_only", "is_local", "name_or_path", "cache_dir", "force_download", "resume_download", "proxies",
    "token", "use_auth_token", "revision", "subfolder", "trust_remote_code", "gguf_file", "user_agent",
    "from_pipeline", "from_auto_class", "tokenizer_file", "special_tokens_map_file", "vocab_file", "merges_file",
    "files_loaded", "device_map", "local_dir", "_commit_hash", "_from_auto", "_from_pipeline", "_is_local",
})
# Flags whose only difference between an online and an offline conversion made old fingerprints differ.
_LEGACY_FLIP_FLAGS = ("local_files_only", "is_local")

_lock = threading.Lock()


def _hash_cache_path() -> Path:
    return cache_dir() / "file-hashes.json"


def _load_hash_cache() -> dict:
    try:
        cache = json.loads(_hash_cache_path().read_text())
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _cached_digest(path: str | os.PathLike, kind: str, compute) -> str:
    """``compute(path)``, remembered by (path, kind, size, mtime_ns, ctime_ns, inode)."""
    path = Path(path).resolve()
    stamp = _stamp(path)
    key = str(path) if kind == "sha256" else f"{path}#{kind}"
    with _lock:
        hit = _load_hash_cache().get(key)
        if isinstance(hit, list) and hit[:-1] == stamp:
            return hit[-1]
    digest = compute(path)
    with _lock:
        cache = _load_hash_cache()
        cache[key] = [*stamp, digest]
        try:
            atomic_write_json(_hash_cache_path(), cache, indent=None)
        except Exception:
            pass  # a read-only cache only costs speed, never correctness
    return digest


def cached_file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, remembered by (path, size, mtime, ctime, inode)."""
    return _cached_digest(path, "sha256", lambda p: sha256_file(p))


def _read_json(path: Path):
    raw = read_bounded(path)  # a regular file within the bound for its name (files.py), read without blocking
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise LafError(
            f"{path} is not a readable JSON file ({type(e).__name__}: {str(e)[:200]}), so the model cannot be fingerprinted",
            "restore the file from the model's original download or conversion",
        ) from e


def _without_private(d: dict, drop=()) -> dict:
    return {k: v for k, v in sorted(d.items()) if k not in drop and not str(k).startswith("_")}


def canonical_config(config: dict) -> dict:
    """config.json (or generation_config.json) without the keys that record who wrote it."""
    return _without_private(config, VOLATILE_CONFIG_KEYS)


def _legacy_canonical_config(config: dict) -> dict:
    return {k: v for k, v in sorted(config.items()) if k not in VOLATILE_CONFIG_KEYS}


def canonical_tokenizer_config(cfg: dict) -> dict:
    """tokenizer_config.json without loader flags, private keys and the chat template (hashed with the others)."""
    return _without_private(cfg, TOKENIZER_LOADER_FLAGS | {"chat_template"})


def scrub_tokenizer_config(folder: str | os.PathLike) -> bool:
    """Remove the loader's run-time flags that save_pretrained copies into ``tokenizer_config.json``.

    Returns True when the file changed. The file is rewritten the way
    transformers writes it (sorted keys, indent 2).
    """
    path = Path(folder) / "tokenizer_config.json"
    if not os.path.lexists(path):
        return False
    cfg = _read_json(path)
    if not isinstance(cfg, dict):
        return False
    clean = {k: v for k, v in cfg.items() if k not in TOKENIZER_LOADER_FLAGS}
    if clean == cfg:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(clean, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return True


def _canonical_json_digest(path: Path) -> str:
    return sha256_bytes(canonical_json(_read_json(path)).encode("utf-8"))


def _chat_templates(folder: Path, tok_cfg: dict | None) -> dict[str, str]:
    """Every chat template the tokenizer would load, by name, with transformers' precedence (files over the config key)."""
    out: dict[str, str] = {}
    value = (tok_cfg or {}).get("chat_template")
    json_file = folder / "chat_template.json"
    if os.path.lexists(json_file):
        loaded = _read_json(json_file)
        value = loaded.get("chat_template", value) if isinstance(loaded, dict) else value
    if isinstance(value, str):
        out["default"] = value
    elif isinstance(value, list):  # [{"name": ..., "template": ...}]
        out.update({str(t.get("name")): str(t.get("template")) for t in value if isinstance(t, dict)})
    elif isinstance(value, dict):
        out.update({str(k): str(v) for k, v in value.items()})
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        out["default"] = read_text_bounded(jinja, MAX_METADATA_BYTES, errors="surrogateescape")
    extra = folder / CHAT_TEMPLATE_DIR
    if extra.is_dir():
        for p in sorted(extra.glob("*.jinja")):  # check_model_folder bounded their number
            out[p.stem] = read_text_bounded(p, MAX_METADATA_BYTES, errors="surrogateescape")
    return out


def tokenizer_identity(folder: str | os.PathLike) -> dict:
    """What the tokenizer does, as a small hashable dict (digests of its parts)."""
    folder = Path(folder)
    files: dict[str, str] = {}
    tok_cfg = None
    for name in TOKENIZER_FILES:
        p = folder / name
        if not os.path.lexists(p) or name in ("chat_template.jinja", "chat_template.json"):
            continue
        check_regular(p)  # a FIFO or a device is named, not hashed for ever
        if name == "tokenizer_config.json":
            tok_cfg = _read_json(p)
            if not isinstance(tok_cfg, dict):
                raise LafError(f"{p} holds a JSON {type(tok_cfg).__name__}, not an object", "restore the file from the model's original download")
            files[name] = sha256_json(canonical_tokenizer_config(tok_cfg))
        elif name in _JSON_TOKENIZER_FILES:
            files[name] = _cached_digest(p, "canonical-json", _canonical_json_digest)
        else:
            files[name] = cached_file_sha256(p)
    templates = {k: sha256_bytes(v.encode("utf-8", "surrogateescape")) for k, v in sorted(_chat_templates(folder, tok_cfg).items())}
    return {"files": files, "chat_templates": templates}


def _weights(folder: Path, allow_pickle: bool) -> dict[str, str]:
    suffixes = WEIGHT_SUFFIXES + (PICKLE_SUFFIXES if allow_pickle else ())
    return {p.name: cached_file_sha256(p) for p in sorted(folder.iterdir())
            if p.name.endswith(suffixes) and not p.is_dir() and check_regular(p, None)}


def fingerprint_files(folder: Path, allow_pickle: bool = False) -> dict[str, str]:
    """Relative path -> sha256 of the bytes of every weight and tokenizer file (the legacy rule's inputs)."""
    suffixes = WEIGHT_SUFFIXES + (PICKLE_SUFFIXES if allow_pickle else ())
    out: dict[str, str] = {}
    for p in sorted(Path(folder).iterdir()):
        if p.is_dir():
            continue
        if p.name.endswith(suffixes) or p.name in TOKENIZER_FILES:
            check_regular(p)
            out[p.name] = cached_file_sha256(p)
    return out


def read_model_config(folder: Path) -> dict:
    """config.json as a dict, or one clear error naming the file."""
    cfg = _read_json(folder / "config.json")
    if not isinstance(cfg, dict):
        raise LafError(f"{folder / 'config.json'} holds a JSON {type(cfg).__name__}, not an object", "restore the model's config.json")
    return cfg


def fingerprint_folder(folder: str | os.PathLike, allow_pickle: bool = False, legacy: bool = False) -> str:
    """The base model's fingerprint; ``legacy=True`` gives the one written before tokenizer files were canonicalised."""
    folder = Path(folder)
    if legacy:
        return sha256_json({"config": _legacy_canonical_config(read_model_config(folder)), "files": fingerprint_files(folder, allow_pickle)})
    gen = folder / "generation_config.json"
    generation = _read_json(gen) if os.path.lexists(gen) else None
    return sha256_json({
        "scheme": FINGERPRINT_SCHEME,
        "config": canonical_config(read_model_config(folder)),
        "generation": canonical_config(generation) if isinstance(generation, dict) else generation,
        "weights": _weights(folder, allow_pickle),
        "tokenizer": tokenizer_identity(folder),
    })


def _flag_variants(raw: bytes) -> list[bytes]:
    """tokenizer_config.json with each boolean loader flag flipped, in every combination (same bytes otherwise)."""
    options = []
    for flag in _LEGACY_FLIP_FLAGS:
        t, f = f'"{flag}": true'.encode(), f'"{flag}": false'.encode()
        if raw.count(t) + raw.count(f) == 1:
            options.append((t, f) if t in raw else (f, t))
    out = []
    for choice in itertools.product((False, True), repeat=len(options)):
        data = raw
        for flip, (old, new) in zip(choice, options):
            if flip:
                data = data.replace(old, new)
        out.append(data)
    return out


def fingerprint_aliases(folder: str | os.PathLike, allow_pickle: bool = False) -> frozenset[str]:
    """Every fingerprint that names this folder's model: the current one and the legacy ones.

    The legacy ones are the old rule applied to the folder as it is, and to the
    folder with only ``local_files_only`` / ``is_local`` flipped in
    ``tokenizer_config.json`` (an adapter trained where the base was converted
    offline stored that form). An adapter whose stored base fingerprint is in
    this set was trained on this model.
    """
    folder = Path(folder)
    current = fingerprint_folder(folder, allow_pickle)
    out = {current}
    try:
        files = fingerprint_files(folder, allow_pickle)
        config = _legacy_canonical_config(read_model_config(folder))
        tok = folder / "tokenizer_config.json"
        variants = _flag_variants(read_bounded(tok)) if tok.is_file() else [None]
        for data in variants:
            if data is not None:
                files = {**files, "tokenizer_config.json": sha256_bytes(data)}
            out.add(sha256_json({"config": config, "files": files}))
    except (OSError, LafError):
        pass  # the legacy forms are a courtesy; the current fingerprint already succeeded
    return frozenset(out)
