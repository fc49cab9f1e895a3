"""A verdict a deploy step can check: an Ed25519 signature over a canonical statement of what was gated.

``laf keygen PATH`` writes the private key (PKCS#8 PEM, mode 0600) and ``PATH.pub``. ``laf gate --sign KEY``
writes ``verdict.json.sig`` beside ``verdict.json``: a DSSE envelope (payload type, base64 payload, key id and
signature over DSSE's pre-authentication encoding) whose payload is an in-toto style statement:

    subject    the adapter NAME@VERSION with the sha256 of its weight file
    predicate  adapter (name, version, weights digest), base model fingerprint, the policy's digest and source,
               every suite's fingerprint and the digest of the item set the candidate was scored on, each
               rule's outcome, the verdict, the verdict document's seal, the time and the tool version

``laf verify-verdict`` checks, in order: the envelope and key, the signature, that ``verdict.json`` is the
document that was signed, the adapter named (and that its registered files still hash to what was gated), the
policy when one is required, and that the verdict is PASS; each failure has its own message. The crypto is the
``cryptography`` package's; nothing here is hand-written. The private key is never printed, logged or stored in
an output: only its path and the public key id are.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from ..errors import LafError
from ..io import atomic_write_bytes, atomic_write_text, canonical_json, sha256_bytes, sha256_json

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://lost-and-found.dev/gate-verdict/v1"
SIG_SUFFIX = ".sig"
MAX_KEY_BYTES = 16 << 10
MAX_SIG_BYTES = 8 << 20


class VerificationError(LafError):
    """The signed verdict does not allow a deploy: exit 1 (an unreadable input stays a LafError, exit 3)."""

    exit_code = 1


# ---------------------------------------------------------------- keys


def _key_fix(path: Path) -> str:
    p = str(path)
    if p.endswith(".pub"):  # a public key: keygen takes the private key's path and adds .pub itself
        p = p[: -len(".pub")]
        return f"create a key pair with `laf keygen {p}` (it writes {p} for the gate job and {path} for the deploy job)"
    return f"create a key pair with `laf keygen {p}` (the private key stays with the gate job; the deploy job gets {p}.pub)"


def keygen(path: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key to ``path`` (0600, created exclusively: an existing key is never replaced) and
    its public key to ``path.pub``. Returns both paths."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    pub = Path(str(path) + ".pub")
    for p in (path, pub):
        try:
            there = p.exists() or p.is_symlink()
        except (OSError, ValueError) as e:
            raise LafError(f"cannot use {p} as a key path: {getattr(e, 'strerror', None) or e}", "choose a PATH in a folder this user can write") from None
        if there:
            raise LafError(f"{p} already exists; a key is never overwritten", "choose another PATH, or remove the old key pair yourself")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fix = "choose a PATH in a folder this user can write (its parent folders must be folders, not files)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocking = next((str(a) for a in reversed(path.parents) if os.path.lexists(a) and not a.is_dir()), None)
        raise LafError(f"cannot create the folder of the key {path}: " + (f"{blocking} is a file, not a folder" if blocking else f"{e.strerror or e}"), fix) from None
    _create_exclusive(path, private, 0o600, fix)
    # from here on PATH is this call's own file: removed again if the pair cannot be completed (never anyone else's)
    try:
        _create_exclusive(pub, public, 0o644, fix)
    except BaseException:
        _remove_own(path)
        raise
    return path, pub


def _create_exclusive(path: Path, data: bytes, mode: int, fix: str) -> None:
    """Create ``path`` holding ``data`` (mode ``mode`` whatever the umask), failing if anything is there already; a file
    this call created but could not fill is removed again."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:  # created by someone else since the check: theirs, never touched
        raise LafError(f"{path} already exists (created while this key was being made); a key is never overwritten",
                       "choose another PATH, or remove the old key pair yourself") from None
    except OSError as e:
        raise LafError(f"cannot write the key pair at {path}: {e.strerror or e}", fix) from None
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        _remove_own(path)
        raise LafError(f"cannot write the key pair at {path}: {e.strerror or e}", fix) from None


def _remove_own(path: Path) -> None:
    """Remove the private key this keygen call created (it cannot be completed); any error doing so is ignored."""
    try:
        path.unlink()
    except OSError:
        pass


def _read_small(path: Path, what: str, limit: int) -> bytes:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise LafError(f"{what} {path} does not exist", _key_fix(path)) from None
    except OSError as e:
        raise LafError(f"cannot read {what} {path}: {e.strerror or e}", _key_fix(path)) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise LafError(f"{what} {path} is not a plain file (a symlink or special file)", "pass the key file itself")
    if st.st_size > limit:
        raise LafError(f"{what} {path} is {st.st_size:,} bytes: not a key", _key_fix(path))
    try:
        return path.read_bytes()
    except OSError as e:
        raise LafError(f"cannot read {what} {path}: {e.strerror or e}", _key_fix(path)) from None


def load_private_key(path: str | Path):
    """The Ed25519 private key at ``path``; refused when anyone but its owner may read or write it, when another
    user owns it, or when it is not an unencrypted Ed25519 PKCS#8 key. No message holds the key's bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    data = _read_small(path, "private key", MAX_KEY_BYTES)
    st = os.stat(path)
    if st.st_mode & 0o077:
        raise LafError(f"private key {path} is readable or writable by others (mode {stat.S_IMODE(st.st_mode):04o}); a signing key must be the owner's alone",
                       f"chmod 600 {path} (and consider the key exposed: make a new pair with `laf keygen`)")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise LafError(f"private key {path} belongs to another user (uid {st.st_uid})", "sign with a key file you own")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, binascii.Error):
        raise LafError(f"{path} is not an unencrypted PEM private key", _key_fix(path)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LafError(f"{path} is not an Ed25519 key", _key_fix(path))
    return key


def load_public_key(path: str | Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    data = _read_small(path, "public key", MAX_KEY_BYTES)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, binascii.Error):
        raise LafError(f"{path} is not a PEM public key", "pass the .pub file `laf keygen` wrote") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LafError(f"{path} is not an Ed25519 public key", "pass the .pub file `laf keygen` wrote")
    return key


def key_id(public_key) -> str:
    """sha256 of the raw 32-byte public key: names the key in the envelope and in messages (never the private key)."""
    from cryptography.hazmat.primitives import serialization

    return sha256_bytes(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed, so the type cannot be swapped under the payload."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


# ---------------------------------------------------------------- the statement


def policy_digest(policy: Mapping) -> str:
    """sha256 of a policy's rules and settings (its source path and the CLI's inconclusive mapping excluded), the
    same for the verdict's copy and for ``load_policy(P).model_dump(mode="json")``."""
    return sha256_json({k: v for k, v in policy.items() if k not in ("source", "inconclusive_as")})


def item_set_digest(doc_hashes: list[str]) -> str:
    return sha256_json(sorted(doc_hashes))


def build_statement(verdict: dict, suites: Mapping[str, dict], items: Mapping[str, list[str]], tool_version: str, signed_at: str) -> dict:
    """The canonical statement of a sealed verdict dict; ``suites``: suite -> its metadata as the run recorded it;
    ``items``: suite -> the candidate's item content hashes."""
    cand = verdict.get("candidate") or {}
    adapter = cand.get("adapter") or {}
    ref = str(cand.get("model") or "")
    name, _, version = ref.partition("@")
    weights = adapter.get("weights_sha256")
    if not adapter or not (version.isascii() and version.isdigit()) or not isinstance(weights, str):
        raise LafError(f"the candidate {ref or '?'} is not a registered adapter version (NAME@VERSION with a recorded weights digest), so the "
                       "verdict cannot be signed for a deploy", "gate an adapter from the registry (laf eval --adapter NAME@VERSION)")
    policy = verdict.get("policy") or {}
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": ref, "digest": {"sha256": weights}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "adapter": {"name": name, "version": int(version), "weights_sha256": weights},
            "base_model_fingerprint": (cand.get("base_model") or {}).get("fingerprint"),
            "baseline": (verdict.get("baseline") or {}).get("model"),
            "policy": {"sha256": policy_digest(policy), "source": policy.get("source"), "inconclusive_as": policy.get("inconclusive_as")},
            "suites": {s: {"fingerprint": sha256_json(meta), "data_sha256": meta.get("data_sha256"), "items": len(items.get(s, [])),
                           "items_sha256": item_set_digest(items.get(s, []))} for s, meta in sorted(suites.items())},
            "rules": [{"rule": r.get("rule"), "suite": r.get("suite"), "metric": r.get("metric"), "required": r.get("required"), "status": r.get("status")}
                      for r in verdict.get("rules") or []],
            "verdict": verdict.get("verdict"),
            "verdict_sha256": verdict.get("verdict_sha256"),
            "gated_at": verdict.get("created"),
            "signed_at": signed_at,
            "tool": {"name": "lost-and-found", "version": tool_version},
        },
    }


def sign_statement(statement: dict, private_key) -> dict:
    """The DSSE envelope of ``statement`` signed by ``private_key``."""
    try:
        payload = canonical_json(statement).encode("utf-8")
    except UnicodeEncodeError:
        raise LafError("the verdict holds text that is not valid Unicode (a lone surrogate, e.g. a \\ud800 escape in the run folder's files), "
                       "so it cannot be signed", "re-run the evaluation from clean inputs; never sign what cannot be shown exactly") from None
    sig = private_key.sign(pae(PAYLOAD_TYPE, payload))
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode("ascii"),
            "signatures": [{"keyid": key_id(private_key.public_key()), "sig": base64.b64encode(sig).decode("ascii")}]}


def signature_path(verdict_path: str | Path) -> Path:
    return Path(str(verdict_path) + SIG_SUFFIX)


def signed_envelope(verdict: dict, suites: Mapping[str, dict], items: Mapping[str, list[str]], key_path: str | Path) -> dict:
    """The signature envelope of a sealed verdict dict (written beside verdict.json as ``.sig`` by the gate); refused
    for a verdict read with --allow-modified or scored with --force-base-mismatch."""
    from .. import __version__
    from ..env import now_iso

    key = load_private_key(key_path)  # checked before anything is built: a loose key is refused, nothing written
    for side in ("baseline", "candidate"):
        info = verdict.get(side) or {}
        if str(info.get("integrity") or "").startswith("modified"):
            raise LafError(f"the {side} run folder failed its integrity check (read with --allow-modified): such a verdict is never signed",
                           "re-run the evaluation and gate it without --allow-modified")
        if (info.get("adapter") or {}).get("forced_base_mismatch"):
            raise LafError(f"the {side} adapter was scored on another base than it was trained on (--force-base-mismatch): such a verdict is never signed",
                           "evaluate the adapter on the base it was trained on")
    return sign_statement(build_statement(verdict, suites, items, __version__, now_iso()), key)


def write_signature(verdict_path: Path, envelope: dict) -> Path:
    return atomic_write_text(signature_path(verdict_path), json.dumps(envelope, indent=2) + "\n")


def _snapshot(path: Path, limit: int) -> bytes | None | bool:
    """What ``path`` holds: its bytes (a regular file up to ``limit``), None (nothing), False (left alone: a link, a
    special file, something too big to be a verdict or a signature, or unreadable)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        return False
    try:
        return path.read_bytes()
    except OSError:
        return False


@contextmanager
def verdict_kept(verdict_path: str | Path) -> Iterator[None]:
    """A gate that fails inside this block leaves ``verdict.json`` and its ``.sig`` as they were before it: the old
    signature, removed when the gate started, comes back (it still matches the old verdict), and a verdict or
    signature the failed gate wrote is taken back. A gate that succeeds keeps what it wrote."""
    from .verdict import MAX_VERDICT_BYTES

    verdict_path = Path(verdict_path)
    before = [(verdict_path, _snapshot(verdict_path, MAX_VERDICT_BYTES)), (signature_path(verdict_path), _snapshot(signature_path(verdict_path), MAX_SIG_BYTES))]
    try:
        yield
    except BaseException:
        for path, old in before:
            if old is False or _snapshot(path, max(MAX_VERDICT_BYTES, MAX_SIG_BYTES)) == old:
                continue
            try:
                if old is None:
                    if path.is_file() and not path.is_symlink():
                        path.unlink()
                elif isinstance(old, bytes):
                    atomic_write_bytes(path, old)
            except Exception:  # noqa: BLE001 - best effort: the error that failed the gate is the one to report
                pass
        raise


# ---------------------------------------------------------------- verification


@dataclass
class Verified:
    ref: str
    verdict: str
    key_id: str
    statement: dict


def _envelope(path: Path) -> dict:
    fix = "sign the verdict with `laf gate --sign KEY` (or `gate: {sign: KEY}` in the run config)"
    if not path.exists() and not path.is_symlink():
        raise VerificationError(f"the verdict is not signed: {path} does not exist", fix)
    data = _read_small(path, "signature file", MAX_SIG_BYTES)
    try:
        env = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise VerificationError(f"{path} is not a signature envelope (not JSON)", fix) from None
    sigs = env.get("signatures") if isinstance(env, dict) else None
    if (not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE or not isinstance(env.get("payload"), str)
            or not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict)
            or not isinstance(sigs[0].get("sig"), str) or not isinstance(sigs[0].get("keyid"), str)):
        raise VerificationError(f"{path} is not a lost-and-found signature envelope (payload type, payload, one signature)", fix)
    return env


def verify_verdict(verdict_path: str | Path, public_key_path: str | Path, adapter: str, registry: str | Path = defaults.REGISTRY,
                   policy: str | Path | None = None, signature: str | Path | None = None) -> Verified:
    """Every check a deploy step needs (see the module doc); ``VerificationError`` (exit 1) naming the first that fails."""
    from cryptography.exceptions import InvalidSignature

    from ..registry import AdapterRef, Registry
    from .verdict import read_verdict

    verdict_path = Path(verdict_path)
    sig_path = Path(signature) if signature else signature_path(verdict_path)
    public = load_public_key(public_key_path)
    env = _envelope(sig_path)
    mine = key_id(public)
    if env["signatures"][0]["keyid"] != mine:
        raise VerificationError(f"the verdict was signed by another key (key id {env['signatures'][0]['keyid'][:16]}..., the key given is {mine[:16]}...)",
                                "verify with the public key of the gate job that signed it")
    try:
        payload = base64.b64decode(env["payload"], validate=True)
        sig = base64.b64decode(env["signatures"][0]["sig"], validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{sig_path}: the payload or signature is not base64: the envelope was edited", "gate and sign again") from None
    try:
        public.verify(sig, pae(PAYLOAD_TYPE, payload))
    except InvalidSignature:
        raise VerificationError(f"the signature in {sig_path} does not match its statement: the statement was edited after signing "
                                "(or signed by another key with the same id)", "never edit a signed statement; gate and sign again") from None
    try:
        statement = json.loads(payload.decode("utf-8"))
        pred = statement["predicate"]
        signed_ref = statement["subject"][0]["name"]
        signed_weights = pred["adapter"]["weights_sha256"]
        signed_verdict = pred["verdict"]
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        raise VerificationError(f"{sig_path}: the signed payload is not a lost-and-found statement", "gate and sign again with laf") from None
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError(f"{sig_path}: the signed statement is of another type ({statement.get('predicateType')})", "verify a laf gate signature")

    # the verdict document beside it is the one that was signed (its seal is in the statement)
    v = read_verdict(verdict_path)
    if v.get("verdict_sha256") != pred.get("verdict_sha256"):
        raise VerificationError(f"{verdict_path} is not the verdict that was signed (its seal differs from the signed statement's)",
                                "use the verdict.json the signing gate wrote, with its .sig")

    # the adapter asked for is the one gated, and its files are still the ones gated
    wanted_version = str(adapter).rpartition("@")[2] if "@" in str(adapter) else ""
    if wanted_version and not (wanted_version.isascii() and wanted_version.isdigit()):
        raise LafError(f"--adapter {adapter!r}: the version is not a plain number (ASCII digits 0-9)", "write NAME@VERSION with ASCII digits, e.g. support@3")
    want = AdapterRef.parse(adapter)
    if want.version is None:
        raise LafError(f"--adapter {adapter} names no version", "write NAME@VERSION: a deploy checks one exact version")
    if str(want) != signed_ref:
        raise VerificationError(f"the signed verdict is about {signed_ref}, not {want}", f"verify the verdict of {want}, or deploy {signed_ref}")
    reg = Registry(registry)
    entry = reg.resolve(want)
    check = reg.verify(want)
    if not check.ok:
        raise VerificationError(f"adapter {want} changed after the gate: its registered files no longer match their manifest "
                                f"(changed: {', '.join(check.mismatched) or '-'}, missing: {', '.join(check.missing) or '-'}, added: {', '.join(check.unexpected) or '-'})",
                                "restore the adapter, or gate the adapter as it is now and sign again")
    current = (entry.manifest.get("files") or {}).get("adapter_model.safetensors")
    if current != signed_weights:
        raise VerificationError(f"adapter {want} changed after the gate: its weights sha256 is {str(current)[:16]}..., the gated one was {str(signed_weights)[:16]}...",
                                "gate the adapter as it is now and sign again, or restore the gated weights")

    if policy is not None:
        from .policy import load_policy

        required = policy_digest(load_policy(policy).model_dump(mode="json"))
        if pred.get("policy", {}).get("sha256") != required:
            raise VerificationError(f"the verdict was reached under another policy ({pred.get('policy', {}).get('source')}) than {policy} "
                                    f"(policy sha256 {str(pred.get('policy', {}).get('sha256'))[:16]}... vs {required[:16]}...)",
                                    "gate under the required policy and sign again")
    if signed_verdict == "pass" and pred.get("policy", {}).get("inconclusive_as") == "pass" and any(
            isinstance(r, dict) and r.get("required") and r.get("status") == "inconclusive" for r in pred.get("rules") or []):
        raise VerificationError(f"the signed verdict for {signed_ref} is PASS only because inconclusive rules were counted as passes (--inconclusive pass)",
                                "gate without --inconclusive pass, with more items or a wider margin")
    if signed_verdict != "pass":
        raise VerificationError(f"the signed verdict for {signed_ref} is {str(signed_verdict).upper()}, not PASS: it may not be deployed",
                                "fix what the gate found (see the verdict's rules) and gate again")
    return Verified(signed_ref, signed_verdict, mine, statement)
