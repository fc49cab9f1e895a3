"""Reading a model folder that a user handed us: never a hang, never an unbounded read.

A model folder is untrusted. Every file laf or transformers reads from it
(``config.json``, ``generation_config.json``, the tokenizer files, chat
templates including ``additional_chat_templates/*.jinja``, weights, and any
file ``tokenizer_config.json`` names with a ``*_file`` key) must be a regular
file (a symlink is followed; it must lead to a regular file), not a FIFO, a
socket or a device: opening a FIFO blocks forever and ``/dev/zero`` never
ends. Metadata files are bounded in size (:data:`MAX_METADATA_BYTES`),
vocabulary files a little more generously (:data:`MAX_VOCAB_BYTES`); weights
are hashed and loaded in a streaming way, so they only need to be regular.

:func:`check_model_folder` runs on every resolution (``os.stat`` only: it
never opens a file); :func:`read_bounded` is how laf itself reads these files:
opened with ``O_NONBLOCK``, checked on the open descriptor, read up to the bound.
"""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

from ..errors import LafError

MAX_METADATA_BYTES = 64 << 20  # config.json, tokenizer_config.json, chat templates, ...: kilobytes in practice
MAX_VOCAB_BYTES = 512 << 20  # tokenizer.json, tokenizer.model, vocab.*, merges.txt: Gemma 3's tokenizer.json is 33 MB
MAX_FOLDER_ENTRIES = 10_000  # a model folder holds tens of files
MAX_CHAT_TEMPLATES = 1_000
CHAT_TEMPLATE_DIR = "additional_chat_templates"  # transformers' folder of named templates
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")  # streamed: regular, any size
_VOCAB_PREFIXES = ("tokenizer", "vocab", "merges", "spiece", "sentencepiece")
_VOCAB_SUFFIXES = (".model", ".tiktoken")
_READ_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken", ".py", ".tok", ".vocab")
_FIX = "replace it with the regular file from the model's original download or conversion (or remove it)"


def size_limit(name: str) -> int | None:
    """The byte bound for a file of this name in a model folder (``None``: no bound, it is streamed)."""
    low = name.lower()
    if low.endswith(_WEIGHT_SUFFIXES) and not low.endswith(".json"):
        return None
    if low.startswith(_VOCAB_PREFIXES) and not low.startswith("tokenizer_config") or low.endswith(_VOCAB_SUFFIXES):
        return MAX_VOCAB_BYTES
    if low.endswith(_READ_SUFFIXES):
        return MAX_METADATA_BYTES
    return None  # not a file laf or transformers reads (README.md, LICENSE, ...): it only has to be regular


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def _check_stat(path: Path, st: os.stat_result, limit: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise LafError(
            f"{path} is {_kind(st.st_mode)}, not a regular file; laf reads only regular files from a model folder "
            "(reading a FIFO or a device could hang or never end)",
            _FIX,
        )
    if limit is not None and st.st_size > limit:
        raise LafError(
            f"{path} is {st.st_size:,} bytes, over laf's bound of {limit:,} bytes for this file in a model folder",
            _FIX,
        )


def check_regular(path: str | os.PathLike, limit: int | None = -1) -> os.stat_result:
    """``path`` (a symlink is followed) is a regular file within ``limit`` bytes (``-1``: the bound for its name).

    Uses ``os.stat`` only, so a FIFO is seen without being opened."""
    path = Path(path)
    if limit == -1:
        limit = size_limit(path.name)
    try:
        st = os.stat(path)
    except OSError as e:
        raise LafError(f"{path} cannot be read ({e.strerror or type(e).__name__})", _FIX) from None
    _check_stat(path, st, limit)
    return st


def read_bounded(path: str | os.PathLike, limit: int | None = -1) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (``-1``: the bound for its name), opened without
    blocking and checked on the open descriptor (a file swapped for a FIFO after a check cannot hang us)."""
    path = Path(path)
    if limit == -1:
        limit = size_limit(path.name)
    if limit is None:
        limit = MAX_VOCAB_BYTES
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise LafError(f"{path} cannot be read ({e.strerror or type(e).__name__})", _FIX) from None
    try:
        _check_stat(path, os.fstat(fd), limit)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # the file grew after the check
                raise LafError(f"{path} is over laf's bound of {limit:,} bytes for this file in a model folder", _FIX)
        return b"".join(chunks)
    except OSError as e:
        raise LafError(f"{path} cannot be read ({e.strerror or type(e).__name__})", _FIX) from None
    finally:
        os.close(fd)


def read_text_bounded(path: str | os.PathLike, limit: int | None = -1, encoding: str = "utf-8", errors: str = "strict") -> str:
    return read_bounded(path, limit).decode(encoding, errors)


def _entries(folder: Path, limit: int) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            entries = list(itertools.islice(it, limit + 1))
    except OSError as e:
        raise LafError(f"the model folder {folder} cannot be listed ({e.strerror or type(e).__name__})", "check the path and its permissions") from None
    if len(entries) > limit:
        raise LafError(f"{folder} holds more than {limit:,} entries; that is not a model folder",
                       "point at the folder that holds config.json, the tokenizer and the weights")
    return entries


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def check_model_folder(folder: str | os.PathLike) -> None:
    """Every file in the folder (and every ``*.jinja`` in ``additional_chat_templates/``) is a regular file within
    the bound for its name; one :class:`LafError` naming the first that is not. Opens nothing."""
    folder = Path(folder)
    for entry in sorted(_entries(folder, MAX_FOLDER_ENTRIES), key=lambda e: e.name):
        if _is_dir(entry):
            if entry.name == CHAT_TEMPLATE_DIR:
                templates = [e for e in _entries(folder / CHAT_TEMPLATE_DIR, MAX_CHAT_TEMPLATES) if e.name.endswith(".jinja")]
                for t in sorted(templates, key=lambda e: e.name):
                    check_regular(folder / CHAT_TEMPLATE_DIR / t.name, MAX_METADATA_BYTES)
            continue
        check_regular(folder / entry.name)
