"""The adapter registry: ``<root>/<name>/<version>/`` with weights, PEFT config and ``manifest.json``.

Versions are immutable. A new version is assembled in a hidden temporary
folder (manifest with the sha256 of every file written last) and renamed into
place, so a crash or a full disk never leaves a partial version behind, and
two writers racing for the same number both end up with their own version.
"""

from __future__ import annotations

import builtins
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from ..errors import LafError
from ..io import LOCK_FILE, NAME_PATTERN, NAME_RULE, atomic_dir, atomic_write_text, check_plain_tree, file_digests, sha256_json

MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest_sha256"  # sha256 of the canonical manifest without this key (io.sha256_json)
# versions are ASCII digits only: `\d` (and str.isdigit) also take '²' and '١٢', which int() refuses or reads as another number
_REF = re.compile(r"^(?P<name>[^@]{1,200}?)(?:@(?P<version>[0-9]{1,9}|latest))?$")
NAME_RE = NAME_PATTERN
MAX_MANIFEST_BYTES = 16 << 20
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,8}")  # what `register` names a version folder: 1, 2, ... (no sign, no leading zero)


def is_version_folder(name: str) -> bool:
    """Whether a folder name is a version number as ``register`` writes it; anything else in an adapter's folder
    ('²', '١٢', '01', 'notes') is never a version: not listed, never the latest."""
    return _VERSION_DIR.fullmatch(name) is not None


def check_registry_name(name: str) -> str:
    """Registry names become folder names: one component, no separators, no '..', nothing hidden
    (the rule of ``io.check_name``, shared by every command that turns a name into a path)."""
    if not isinstance(name, str) or "/" in name or "\\" in name or ".." in name or not NAME_RE.fullmatch(name):
        raise ValueError(f"must be {NAME_RULE}")
    return name


def manifest_digest(manifest: dict) -> str:
    """The digest a manifest stores of itself: sha256 over its canonical JSON without the digest key."""
    return sha256_json({k: v for k, v in manifest.items() if k != MANIFEST_DIGEST})


@dataclass(frozen=True)
class AdapterRef:
    name: str
    version: int | None = None  # None = latest

    @classmethod
    def parse(cls, text: str) -> "AdapterRef":
        """``NAME``, ``NAME@latest`` or ``NAME@VERSION``; a bad reference or name is a ``LafError``."""
        m = _REF.match(text.strip())
        if not m:
            raise LafError(f"'{text}' is not an adapter reference", "write NAME or NAME@VERSION (e.g. support@3)")
        try:
            check_registry_name(m["name"])
        except ValueError as e:
            raise LafError(f"adapter name '{m['name']}' {e}", "use a plain name such as support-bot") from None
        v = m["version"]
        return cls(m["name"], None if v in (None, "latest") else int(v))

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


@dataclass(frozen=True)
class AdapterEntry:
    """One registered version: its reference, folder and manifest."""

    ref: AdapterRef  # always with a version
    path: Path
    manifest: dict

    @property
    def digest(self) -> str:
        """sha256 of the version's recorded file hashes: what ``name@version`` holds, for fingerprints and outputs."""
        return sha256_json(self.manifest.get("files") or {})

    def describe(self, given: str | AdapterRef | None = None) -> str:
        """``quickstart -> quickstart@2`` when ``given`` left the version open, else the ref."""
        g = str(given).strip() if given is not None else str(self.ref)
        return str(self.ref) if g == str(self.ref) else f"{g} -> {self.ref}"


@dataclass
class VerifyResult:
    """What ``Registry.verify`` found: files whose bytes changed, disappeared or were added since registration."""

    ref: AdapterRef
    ok: bool
    mismatched: list[str]
    missing: list[str]
    unexpected: list[str]
    manifest: str = "ok"  # "ok" (digest matches), "changed" (edited since registration), "not covered" (registered before the digest)


def hash_files(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (the manifest excluded), by POSIX relative path."""
    return file_digests(folder, exclude=(MANIFEST,))


class Registry:
    """A registry folder of adapters; nothing is read or created until a method needs it."""

    def __init__(self, root: str | Path = defaults.REGISTRY):
        self.root = Path(root)

    def names(self) -> list[str]:
        """Adapter names in the registry, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name`` (those with a manifest), ascending; ``[]`` for an unknown name."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if is_version_folder(p.name) and p.is_dir() and (p / MANIFEST).exists())

    def resolve(self, ref: AdapterRef | str) -> AdapterEntry:
        """The entry for ``ref`` (latest version when none is given); ``LafError`` naming what exists otherwise."""
        if isinstance(ref, str):
            ref = AdapterRef.parse(ref)
        versions = self.versions(ref.name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise LafError(f"no adapter named '{ref.name}' in registry {self.root} (known: {known})", "train one with `laf train`, or check --registry")
        version = versions[-1] if ref.version is None else ref.version
        if version not in versions:
            raise LafError(f"adapter {ref.name} has no version {version} (versions: {', '.join(map(str, versions))})", f"use one of them, e.g. {ref.name}@{versions[-1]}")
        path = self.root / ref.name / str(version)
        if path.parent.is_symlink():
            raise LafError(f"adapter folder {path.parent} is a symlink; a registry holds its adapters' files itself",
                           "replace the link with the folder it points to (or retrain the adapter)")
        # a symlinked weight file (another adapter's, a system file) would be hashed, scored and exported from outside
        check_plain_tree(path, f"adapter {ref.name}@{version}: its version folder", "remove the links (a version holds only the files "
                         "`laf train`/`laf merge` wrote) or retrain the adapter")
        manifest = read_manifest(path / MANIFEST, f"{ref.name}@{version}")
        if not (path / SAFETENSORS).is_file() and any((path / b).is_file() for b in PICKLE_WEIGHTS):
            raise LafError(
                f"adapter {ref.name}@{version} holds pickle weights ({', '.join(b for b in PICKLE_WEIGHTS if (path / b).is_file())}) and no {SAFETENSORS}; "
                "loading a pickle runs code from the file, so only safetensors adapters are accepted",
                "convert it where you trust the file: PeftModel.from_pretrained(base, FOLDER).save_pretrained(OUT, safe_serialization=True), "
                "then register OUT again (or retrain)",
            )
        return AdapterEntry(AdapterRef(ref.name, version), path, manifest)

    def list(self) -> list[AdapterEntry]:
        """Every readable version of every adapter (``scan`` also says which are broken and why)."""
        return self.scan()[0]

    def scan(self) -> tuple[builtins.list[AdapterEntry], builtins.list[tuple[str, str]]]:
        """``(entries, broken)``: every version that resolves, and ``(ref, reason)`` for each that does not,
        so one damaged manifest never hides the others."""
        entries: builtins.list[AdapterEntry] = []
        broken: builtins.list[tuple[str, str]] = []
        for n in self.names():
            try:
                vs = self.versions(n)
            except OSError as e:
                broken.append((n, f"unreadable: {e.strerror or e}"))
                continue
            for v in vs:
                try:
                    entry = self.resolve(AdapterRef(n, v))
                except LafError as e:
                    broken.append((f"{n}@{v}", e.cause))
                    continue
                problem = manifest_field_problem(entry.manifest)
                if problem:  # a field of the wrong type: listed as damaged, never a crash of the whole listing
                    broken.append((f"{n}@{v}", f"damaged manifest: {problem}; run `laf registry verify {n}@{v}` (restore or retrain it)"))
                else:
                    entries.append(entry)
        return entries, broken

    def register(self, name: str, source: Path, manifest: dict) -> AdapterEntry:
        """Copy the files of ``source`` into the next version of ``name`` with ``manifest``; return its entry.

        The version is assembled in a temporary folder (``io.atomic_dir``), the
        manifest with every file's sha256 written last, and renamed into place;
        a writer that lost the race for a version number takes the next one.
        Raises ``LafError`` (nothing registered) when the registry cannot be written.
        """
        AdapterRef.parse(name)
        _check_manifest_size(name, _manifest_text(manifest))  # before anything is created: the full one is checked again below
        parent = self.root / name
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LafError(f"cannot create {parent}: {e.strerror or e}", "choose a writable registry folder") from e
        check_plain_tree(source, "the adapter folder to register", "register a folder of plain files (save_pretrained writes one)")
        files = sorted(p for p in source.rglob("*") if p.is_file())
        if not (source / SAFETENSORS).is_file() and any((source / b).is_file() for b in PICKLE_WEIGHTS):
            raise LafError(f"{source} holds pickle weights and no {SAFETENSORS}; only safetensors adapters are registered",
                           "save the adapter with save_pretrained(..., safe_serialization=True)")
        try:
            version = 0
            for _ in range(1000):
                version = max(version, (self.versions(name) or [0])[-1]) + 1
                final = parent / str(version)
                if final.exists():
                    continue
                try:
                    with atomic_dir(final) as tmp:
                        for p in files:
                            dst = tmp / p.relative_to(source)
                            dst.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copyfile(p, dst)
                        full = {**manifest, "name": name, "version": version, "ref": f"{name}@{version}", "files": hash_files(tmp)}
                        full.pop(MANIFEST_DIGEST, None)
                        full = json.loads(json.dumps(full, default=str))  # the digest is of what a reader will load
                        full[MANIFEST_DIGEST] = manifest_digest(full)
                        text = _manifest_text(full)
                        _check_manifest_size(name, text)  # never register a version that read_manifest refuses
                        atomic_write_text(tmp / MANIFEST, text)
                except LafError:
                    if final.exists():  # another writer took this version: never overwrite, take the next
                        continue
                    raise
                return AdapterEntry(AdapterRef(name, version), final, full)
            raise LafError(f"could not allocate a version for {name}", "check the registry folder")
        except OSError as e:
            raise LafError(f"writing adapter {name} to {parent} failed: {e.strerror or e}; nothing was registered", "free disk space or fix permissions, then retry (or resume training)") from e

    def verify(self, ref: AdapterRef | str) -> VerifyResult:
        """Re-hash a version's files against its manifest and the manifest against its own digest.

        ``ok`` only when every file matches, some were recorded and the manifest is unchanged. A version
        registered before the manifest digest (``manifest == "not covered"``) stays ``ok`` so it still loads;
        ``laf registry verify`` reports it. This detects accidental and naive edits; it is not a signature:
        whoever can write the folder can recompute every digest.
        """
        entry = self.resolve(ref)
        recorded = entry.manifest.get("files")
        if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
            recorded = {}
        actual = hash_files(entry.path)
        mismatched = sorted(k for k in recorded if k in actual and actual[k] != recorded[k])
        missing = sorted(k for k in recorded if k not in actual)
        unexpected = sorted(k for k in actual if k not in recorded and k != LOCK_FILE)
        stored = entry.manifest.get(MANIFEST_DIGEST)
        if stored is None:
            manifest_state = "not covered"
        elif stored != manifest_digest(entry.manifest):
            manifest_state = "changed"
            mismatched.insert(0, MANIFEST)
        else:
            manifest_state = "ok"
        ok = not (mismatched or missing or unexpected) and bool(recorded)
        return VerifyResult(entry.ref, ok, mismatched, missing, unexpected, manifest_state)


def _manifest_text(manifest: dict) -> str:
    """A manifest as ``register`` writes it (``io.atomic_write_json``'s form)."""
    return json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n"


def _check_manifest_size(name: str, text: str) -> None:
    size = len(text.encode("utf-8", "backslashreplace"))
    if size > MAX_MANIFEST_BYTES:
        raise LafError(f"the manifest of {name} would be {size:,} bytes, above the {MAX_MANIFEST_BYTES:,} a manifest may have "
                       "(laf could not read the version back), so nothing was registered",
                       "record less in it (a shorter description; a merge of merges records its parents by reference, see docs/merging.md)")


# top-level manifest fields that readers (`laf registry list`, show, the report) take apart: each is absent, null or
# of this type; anything else is a damaged (hand-edited) manifest
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "files": (dict,), "base_model": (dict,), "load": (dict,), "data": (dict,), "config": (dict,), "lineage": (dict,),
    "kind": (str,), "created": (str,), "description": (str,), "steps": (int, float), "final_eval_loss": (int, float),
    "final_train_loss": (int, float),
}


def manifest_field_problem(manifest: dict) -> str | None:
    """The first top-level field of ``manifest`` whose type no reader expects (``"base_model is a list, not an
    object"``), or None. ``Registry.scan`` lists such a version as broken instead of handing it to a display."""
    names = {dict: "an object", str: "a string", int: "a number", float: "a number"}
    for key, types in _FIELD_TYPES.items():
        v = manifest.get(key)
        if v is None:
            continue
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            return f"{key} is {_kind(v)}, not {names[types[0]]}"
    files = manifest.get("files") or {}
    bad = next((k for k, v in files.items() if not isinstance(v, str)), None)
    if bad is not None:
        return f"files[{json.dumps(bad)[:80]}] is {_kind(files[bad])}, not a sha256 string"
    base = manifest.get("base_model") or {}
    for key in ("spec", "fingerprint"):
        if base.get(key) is not None and not isinstance(base[key], str):
            return f"base_model.{key} is {_kind(base[key])}, not a string"
    return None


def _kind(v) -> str:
    return {bool: "a boolean", list: "a list", dict: "an object", str: "a string", int: "a number", float: "a number"}.get(type(v), type(v).__name__)


SAFETENSORS = "adapter_model.safetensors"
PICKLE_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")


def read_manifest(path: Path, label: str) -> dict:
    """A version's manifest: a JSON object of bounded size, or a ``LafError`` naming the problem."""
    fix = f"run `laf registry verify {label}`; restore the manifest from a backup or retrain the adapter"
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise LafError(f"{path} is {size:,} bytes; a manifest is at most {MAX_MANIFEST_BYTES:,}", fix)
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except LafError:
        raise
    except RecursionError:
        raise LafError(f"{path} is nested too deeply to be a manifest", fix) from None
    except (OSError, ValueError) as e:
        raise LafError(f"{path} is unreadable: {e}", fix) from None
    if not isinstance(manifest, dict):
        raise LafError(f"{path} is not a JSON object (got {type(manifest).__name__})", fix)
    return manifest
