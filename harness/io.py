"""Small file helpers shared by every stage: hashing, canonical JSON, atomic writes.

Nothing already written may be lost or left half-written, so every output goes
to a temporary path in the same folder and is renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import LafError

_BLOCK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def file_digests(folder: str | os.PathLike, *, exclude: tuple[str, ...] = (), digest: Callable[[Path], str] = sha256_file) -> dict[str, str]:
    """Relative POSIX path -> sha256 of every file below ``folder`` (in path order), except the names in ``exclude``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): digest(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in exclude}


def hash_tree(folder: str | os.PathLike, *, exclude: tuple[str, ...] = (), digest: Callable[[Path], str] = sha256_file) -> str:
    """One sha256 over a folder's files: their relative paths and contents, so editing, adding, removing or
    renaming any file changes it. ``digest`` may be a caching file hasher (``models.fingerprint.cached_file_sha256``)."""
    return sha256_json(file_digests(folder, exclude=exclude, digest=digest))


def hash_path(path: str | os.PathLike, *, digest: Callable[[Path], str] = sha256_file) -> str:
    """The content hash of an input that may be a file or a folder (a saved ``datasets`` dataset)."""
    path = Path(path)
    return hash_tree(path, digest=digest) if path.is_dir() else digest(path)


def special_entries(folder: str | os.PathLike, *, limit: int = 100_000) -> list[str]:
    """Every entry below ``folder`` (which itself must be a real folder) that is not a plain file or folder:
    symlinks (to a file, a folder or nothing), FIFOs, sockets, devices; and files with several hard links (the same
    bytes as a file elsewhere, which another writer can change). Walks without following any link. What a registry
    version, a run folder or an export source may hold is plain files only, so weights are never read from outside."""
    import stat

    root = Path(folder)
    if root.is_symlink():
        return ["(the folder itself is a symlink)"]
    found: list[str] = []
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            count += 1
            if count > limit:
                return [*found, f"(more than {limit:,} entries)"]
            p = Path(dirpath) / name
            try:
                st = os.lstat(p)
            except OSError:
                continue
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                found.append(f"{rel} (symlink)")
            elif stat.S_ISDIR(st.st_mode):
                continue
            elif not stat.S_ISREG(st.st_mode):
                found.append(f"{rel} (not a regular file)")
            elif st.st_nlink > 1:
                found.append(f"{rel} (hard link: {st.st_nlink} names share its bytes)")
    return found


def check_plain_tree(folder: str | os.PathLike, what: str, fix: str) -> None:
    """``LafError`` naming each symlink, hard link or special file below ``folder`` (see :func:`special_entries`)."""
    bad = special_entries(folder)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise LafError(f"{what} {folder} holds entries that are not plain files: {shown}; "
                       "links and special files could make it read bytes from outside the folder", fix)


def canonical_json(obj: Any) -> str:
    """A stable serialisation for hashing: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_json(obj: Any) -> str:
    # surrogatepass: a lone surrogate (a "\ud800" escape in a hostile file) hashes deterministically instead of raising
    return sha256_bytes(canonical_json(obj).encode("utf-8", "surrogatepass"))


def _check_writable_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LafError(
            f"cannot create folder {folder}: {e.strerror or e}",
            "choose a writable location (check permissions and free space)",
        ) from e
    if not os.access(folder, os.W_OK):
        raise LafError(f"folder {folder} is not writable", "choose a writable location or fix its permissions")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_INPUTS: set[str] | None = None  # real paths read as inputs inside protecting_inputs(): no output replaces one
_DEVICE_PREFIXES = ("/dev/", "/proc/self/fd/")  # a path a user names to reach a stream: /dev/stdout, /dev/null, >(...)
_OPEN_FD = re.compile(r"/dev/(?:fd/(?P<a>\d{1,9})|std(?P<std>out|err))|/proc/self/fd/(?P<b>\d{1,9})")


@contextlib.contextmanager
def protecting_inputs() -> Iterator[None]:
    """A command that reads runs and writes outputs runs inside this: the files its readers mark with
    :func:`protect_inputs` cannot be replaced by its outputs (``laf report RUN -o RUN/results.json`` is an error, not
    the run's loss). Commands that write into their own run folders (eval, run, sweep) do not use it."""
    global _INPUTS
    saved, _INPUTS = _INPUTS, set()
    try:
        yield
    finally:
        _INPUTS = saved


def protect_inputs(*paths: str | os.PathLike) -> None:
    """Mark files read as inputs (a no-op outside :func:`protecting_inputs`)."""
    if _INPUTS is not None:
        _INPUTS.update(os.path.realpath(p) for p in paths)


def _kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def _output_mode(path: Path) -> tuple[str, int | None]:
    """How an output reaches ``path``, and the descriptor for ``"fd"``: ``"replace"`` (absent, or a regular file:
    write beside it, rename over it), ``"fd"`` (``/dev/stdout``, ``/dev/fd/N``: the open descriptor itself) or
    ``"stream"`` (a pipe or terminal the user named as ``/dev/...``: write into it). Anything else is an error:
    replacing a device, a named pipe or a symlink with a regular file would break what it was (as root,
    ``-o /dev/null`` would replace the system's ``/dev/null``), and following a symlink that sits in a shared or
    downloaded folder would let that folder choose which file laf overwrites."""
    try:
        link = path.lstat()
    except (FileNotFoundError, NotADirectoryError):  # a parent that is a file: _check_writable_dir names it
        return "replace", None
    except OSError as e:
        raise LafError(f"cannot write {path}: {e.strerror or e}", "choose a writable location") from None
    if _INPUTS and os.path.realpath(path) in _INPUTS:
        raise LafError(f"{path} is one of this command's own inputs: writing the output there would replace what it read",
                       "write the output to another path")
    if stat.S_ISREG(link.st_mode):
        return "replace", None
    try:
        target = path.stat()
    except OSError:
        target = None
    fd = _open_fd(path)
    if fd is not None:
        return "fd", fd
    named_stream = os.path.abspath(path).startswith(_DEVICE_PREFIXES)
    if target is not None and named_stream and (stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode)):
        return "stream", None
    if stat.S_ISLNK(link.st_mode):
        raise LafError(f"{path} is a symlink: laf does not write its outputs through links", "give the real path of the file to write")
    raise LafError(f"{path} is {_kind(link.st_mode)}, not a file laf can write its output to",
                   "give a file path (an existing regular file is replaced atomically)")


def _open_fd(path: Path) -> int | None:
    """The descriptor ``/dev/stdout``, ``/dev/fd/N`` or ``/proc/self/fd/N`` names, when this process has it open:
    written to as it is (a pipe, a socket, a terminal, or the file a shell redirected it to, at its own offset)."""
    m = _OPEN_FD.fullmatch(os.path.abspath(path))
    if m is None:
        return None
    fd = 1 if m["std"] == "out" else 2 if m["std"] == "err" else int(m["a"] or m["b"])
    try:
        os.fstat(fd)
    except OSError:
        return None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_stream(path: Path, data: bytes) -> None:
    """Write into a pipe or terminal named by the user; a pipe nobody reads is an error, never a hang."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        why = "no process is reading from it" if e.errno == 6 else (e.strerror or str(e))  # ENXIO: a FIFO with no reader
        raise LafError(f"cannot write {path}: {why}", "start the reader first, or write to a file") from None
    try:
        os.set_blocking(fd, True)
        _write_all(fd, data)
    except OSError as e:
        raise LafError(f"writing {path} failed: {e.strerror or e}", "check the device, or write to a file") from None
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    mode, fd = _output_mode(path)
    if fd is not None:
        import sys

        for f in (sys.stdout, sys.stderr):  # what the command printed before comes first
            with contextlib.suppress(Exception):
                f.flush()
        try:
            _write_all(fd, data)
        except OSError as e:
            raise LafError(f"writing {path} failed: {e.strerror or e}", "check where it leads, or write to a file") from None
        return path
    if mode == "stream":
        _write_stream(path, data)
        return path
    _check_writable_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError):  # disk full, file too large, read-only: one clear error, the old file untouched
            raise LafError(f"writing {path} failed: {e.strerror or e}; any earlier {path.name} is unchanged",
                           "free disk space (or choose a writable location) and run again") from e
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    # a lone surrogate (a "\ud800" escape in a hostile name) is written as that escape: valid UTF-8, and in JSON
    # (where it can only sit inside a string) the same escape reads back as the same string
    return atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, exist_ok: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it into place on success.

    On any error the temporary folder is removed, so ``final`` either does not
    exist or is complete. With ``exist_ok`` a folder that another process
    finished first is kept and ours discarded (two converters racing).
    """
    final = Path(final)
    _check_writable_dir(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; finished ones get the usual permissions
        try:
            os.rename(tmp, final)
        except OSError:
            if final.exists() and exist_ok:
                shutil.rmtree(tmp, ignore_errors=True)
            elif final.exists():
                raise LafError(f"{final} already exists", "choose another name or remove it first") from None
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


MAX_JSON_BYTES = 64 << 20  # the largest JSON document read whole


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file read whole: a regular file of at most ``max_bytes``, UTF-8, nested no deeper than the parser's
    recursion allows. A pipe, a folder, ``/dev/zero``, bad bytes or a nesting bomb is one clear error."""
    path = Path(path)
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:  # a FIFO: no hang
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise LafError(f"{path} is {_kind(mode)}, not a JSON file", "give the path of a regular file")
            raw = f.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise LafError(f"file not found: {path}", "check the path") from e
    except IsADirectoryError:
        raise LafError(f"{path} is a folder, not a JSON file", "give the path of the file inside it") from None
    except OSError as e:
        raise LafError(f"cannot read {path}: {e.strerror or e}", "check the path and its permissions") from None
    if len(raw) > max_bytes:
        raise LafError(f"{path} is larger than {max_bytes >> 20} MB: not a file laf wrote", "give the right file, or regenerate it")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise LafError(f"{path} is not UTF-8 text (byte {e.start})", "fix or regenerate the file") from None
    except json.JSONDecodeError as e:
        raise LafError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}", "fix or regenerate the file") from e
    except RecursionError:
        raise LafError(f"{path}: JSON nested too deeply", "fix or regenerate the file") from None


@dataclass(frozen=True)
class BadLine:
    """A line of a JSONL file that is not UTF-8 (``kind="encoding"``) or not JSON (``kind="json"``)."""

    line: int
    kind: str
    message: str
    text: str


def _lines(f, max_line: int | None) -> Iterator[tuple[bytes, bool]]:
    """``(line, too_long)`` of a binary file; with ``max_line`` a longer line is skipped in blocks (its first
    bytes are returned with ``too_long``), so one huge line never sits in memory."""
    if max_line is None:
        for raw in f:
            yield raw, False
        return
    while raw := f.readline(max_line + 1):
        if len(raw) <= max_line or raw.endswith(b"\n"):
            yield raw, False
            continue
        head = raw[:160]
        while raw and not raw.endswith(b"\n"):
            raw = f.readline(_BLOCK)
        yield head, True


DATA_LINE_BYTES = 16 << 20  # one JSONL line or CSV row of a data file: far above any example, far below the memory
DATA_JSON_BYTES = 256 << 20  # a .json data file is parsed whole; bigger data belongs in JSONL (streamed line by line)


def bounded_text_lines(f, path: Path):
    """The lines of a text file, each at most ``DATA_LINE_BYTES`` characters read (a longer one is an error:
    a CSV row cannot be skipped without its quoting context)."""
    while line := f.readline(DATA_LINE_BYTES + 1):
        if len(line) > DATA_LINE_BYTES and not line.endswith("\n"):
            raise LafError(f"{path}: a CSV line is longer than {DATA_LINE_BYTES:,} characters", "split the field, or write the data as JSONL")
        yield line


class DuplicateKey(ValueError):
    pass


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``object_pairs_hook`` that refuses an object naming one key twice (``json`` keeps the last silently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DuplicateKey(f"key {twice[:60]!r} appears twice in one object: which value is meant is ambiguous")
    return out


def scan_jsonl(path: str | os.PathLike, max_line: int | None = None, strict_keys: bool = False) -> Iterator[tuple[int, Any] | BadLine]:
    """``(line number, value)`` for every non-blank line of a JSONL file, or a :class:`BadLine` for one that
    cannot be read; the caller decides whether a bad line is an error or a counted problem. A UTF-8 byte
    order mark on the first line is dropped; with ``max_line`` a longer line is a ``BadLine`` (``kind="size"``);
    with ``strict_keys`` an object naming a key twice is a ``BadLine`` (user data: which value was meant?)."""
    hook = unique_keys if strict_keys else None
    with open(path, "rb") as f:
        for i, (raw, too_long) in enumerate(_lines(f, max_line), 1):
            if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if too_long:
                yield BadLine(i, "size", f"line longer than {max_line:,} bytes", raw.decode("utf-8", "replace"))
                continue
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadLine(i, "encoding", f"not valid UTF-8 ({e.reason} at byte {e.start})", raw[:160].decode("utf-8", "replace"))
                continue
            try:
                yield i, json.loads(text, object_pairs_hook=hook)
            except DuplicateKey as e:
                yield BadLine(i, "json", str(e), text.strip()[:160])
            except json.JSONDecodeError as e:
                yield BadLine(i, "json", f"not valid JSON: {e.msg} (column {e.colno})", text.strip()[:160])
            except RecursionError:
                yield BadLine(i, "json", "JSON nested too deeply", text.strip()[:160])


def read_jsonl(path: str | os.PathLike, fix: str = "fix that line or regenerate the file") -> list:
    """Every value of a JSONL file; the first unreadable line is an error naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise LafError(f"file not found: {path}", "check the path")
    out = []
    for item in scan_jsonl(path):
        if isinstance(item, BadLine):
            raise LafError(f"{path}, line {item.line}: {item.message}", fix)
        out.append(item[1])
    return out


# ---------------------------------------------------------------- names that become paths

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = (
    "1-64 characters of letters, digits, '_', '-', '.', starting with a letter or digit, "
    "with no path separators, no '..' and not absolute"
)


def check_name(name: object, what: str = "name") -> str:
    """The one check for every user-given name that becomes a folder or file name (run, adapter, merge, train
    names): a plain component, never a path. Raises ``ValueError`` (pydantic turns it into a config error)."""
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string")
    if "/" in name or "\\" in name or "\x00" in name or ".." in name or os.path.isabs(name) or not NAME_PATTERN.fullmatch(name):
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise ValueError(f"{what} {shown!r} is not allowed: must be {NAME_RULE}")
    return name


# ---------------------------------------------------------------- one writer per output folder

LOCK_FILE = ".laf.lock"


def _lock_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8")[:4096] or "{}")
    except (OSError, ValueError):
        return "another process (no details recorded)"
    if not isinstance(info, dict):
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: {str(info.get('command'))[:200]}"


@contextlib.contextmanager
def exclusive_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` for the life of a run (``what`` names the run in the error).

    The lock is an ``fcntl.flock`` on ``folder/.laf.lock``, so it dies with its process (``kill -9`` leaves no
    stale lock); the file records the holder's pid, host, command and start time for the error a second run
    gets at once (``LafError``, exit 3) instead of interleaving its files with ours.
    """
    import fcntl
    import socket
    import sys
    from datetime import datetime, timezone

    folder = Path(folder)
    _check_writable_dir(folder)
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as e:
        raise LafError(f"cannot create the lock file {path}: {e.strerror or e}", "choose a writable output folder") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LafError(
                f"{folder} is in use by another {what} ({_lock_holder(path)})",
                "wait for it to finish, or choose another output folder",
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:1000],
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "what": what}
        with contextlib.suppress(OSError):  # the details are a courtesy; the flock is the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock; the file stays (removing it would race a waiting locker)
