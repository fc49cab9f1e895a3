"""Issue 27: a signed verdict a deploy step can check (laf keygen, laf gate --sign, laf verify-verdict).

A signed PASS verifies; every tampering is refused with its own message (exit 1), unusable inputs are one clear
error (exit 3), and the private key never appears in any output."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from harness.io import sha256_json
from harness.registry import Registry
from harness.results import seal_run
from tests.conftest import run_cli
from tests.synthetic import suite_meta, write_run

SUITES = {"domain/skill": suite_meta("domain"), "general/facts": suite_meta("general")}
BASE = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0] * 10
GOOD = [1] * 100
POLICY = {"rules": [{"category": "domain", "min_gain": 0.1}, {"category": "general", "max_drop": 0.05}]}


def _refused(result, *needles: str, code: int = 1) -> None:
    rc, out, err = result
    assert rc == code, (rc, out, err)
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


@pytest.fixture()
def world(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(b"\x01" * 64)
    (src / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    reg = Registry(tmp_path / "reg")
    entry = reg.register("cand", src, {"kind": "lora", "base_model": {"spec": "default", "fingerprint": "f" * 64}})

    def run(name: str, cand: list, model: str = "cand@1") -> Path:
        folder = write_run(tmp_path / name, SUITES, {"base": {s: BASE for s in SUITES}, model: {s: cand for s in SUITES}})
        doc = json.loads((folder / "results.json").read_text())
        doc["models"][model]["adapter"] = {"ref": model, "weights_sha256": entry.manifest["files"]["adapter_model.safetensors"]}
        (folder / "results.json").write_text(json.dumps(doc))
        seal_run(folder)
        return folder

    code, _, err = run_cli("keygen", str(tmp_path / "keys" / "gate"))
    assert code == 0, err
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    return {"tmp": tmp_path, "reg": tmp_path / "reg", "run": run, "key": tmp_path / "keys" / "gate", "pub": tmp_path / "keys" / "gate.pub",
            "policy": policy}


def _gate(world, run: Path, *extra: str, policy: Path | None = None):
    return run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#cand@1", "--policy", str(policy or world["policy"]),
                   "--sign", str(world["key"]), *extra)


def _verify(world, verdict: Path, *extra: str, adapter: str = "cand@1", key: Path | None = None):
    return run_cli("verify-verdict", str(verdict), "--key", str(key or world["pub"]), "--adapter", adapter, "--registry", str(world["reg"]), *extra)


def _passing(world) -> Path:
    run = world["run"]("run", GOOD)
    code, _, err = _gate(world, run)
    assert code == 0, err
    assert (run / "verdict.json.sig").is_file()
    return run / "verdict.json"


def _edit_envelope(sig: Path, edit) -> None:
    env = json.loads(sig.read_text())
    st = json.loads(base64.b64decode(env["payload"]))
    edit(st)
    env["payload"] = base64.b64encode(json.dumps(st, sort_keys=True, separators=(",", ":")).encode()).decode()
    sig.write_text(json.dumps(env))


def test_keygen_writes_an_owner_only_private_key_and_never_overwrites(world):
    key, pub = world["key"], world["pub"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = key.read_bytes()
    _refused(run_cli("keygen", str(key)), "already exists", code=3)
    assert key.read_bytes() == before


def test_a_signed_pass_verifies_and_names_what_it_checked(world):
    verdict = _passing(world)
    code, out, err = _verify(world, verdict, "--policy", str(world["policy"]), "--json")
    assert code == 0, err
    doc = json.loads(out)
    pred = doc["statement"]["predicate"]
    assert doc["ok"] and doc["adapter"] == "cand@1" and pred["verdict"] == "pass"
    entry = Registry(world["reg"]).resolve("cand@1")
    assert doc["statement"]["subject"] == [{"name": "cand@1", "digest": {"sha256": entry.manifest["files"]["adapter_model.safetensors"]}}]
    assert pred["base_model_fingerprint"] == "f" * 64 and set(pred["suites"]) == set(SUITES)
    assert all(s["items"] == 100 and len(s["items_sha256"]) == 64 for s in pred["suites"].values())
    assert [r["status"] for r in pred["rules"]] == ["pass", "pass"] and pred["tool"]["name"] == "lost-and-found"
    assert pred["verdict_sha256"] == json.loads(verdict.read_text())["verdict_sha256"]


def test_the_private_key_never_appears_in_any_output(world):
    secret = world["key"].read_text()
    body = "".join(x for x in secret.splitlines() if not x.startswith("-----"))
    run = world["run"]("run", GOOD)
    outputs = [_gate(world, run, "--json", "--junit", str(world["tmp"] / "j.xml"), "--summary", str(world["tmp"] / "s.md")),
               _verify(world, run / "verdict.json", "--json"), run_cli("keygen", str(world["tmp"] / "k2", ), "--json"), run_cli("report", str(run))]
    texts = [o + e for _, o, e in outputs] + [p.read_text(errors="replace") for p in run.iterdir() if p.is_file() and p.suffix != ".sqlite"]
    texts += [(world["tmp"] / "j.xml").read_text(), (world["tmp"] / "s.md").read_text()]
    assert all(body not in t and body[:40] not in t for t in texts)


TAMPER = {
    "wrong key": (lambda w, v: None, {"key": "other"}, "signed by another key"),
    "statement edited (verdict)": (lambda w, v: _edit_envelope(Path(str(v) + ".sig"), lambda st: st["predicate"].__setitem__("base_model_fingerprint", "0" * 64)), {},
                                   "statement was edited"),
    "statement edited (adapter digest)": (lambda w, v: _edit_envelope(Path(str(v) + ".sig"), lambda st: st["subject"][0]["digest"].__setitem__("sha256", "0" * 64)), {},
                                          "statement was edited"),
    "signature bytes flipped": (lambda w, v: _flip_sig(Path(str(v) + ".sig")), {}, "statement was edited"),
    "signature missing": (lambda w, v: Path(str(v) + ".sig").unlink(), {}, "not signed"),
    "signature not an envelope": (lambda w, v: Path(str(v) + ".sig").write_text("[]"), {}, "not a lost-and-found signature envelope"),
    "verdict.json replaced": (lambda w, v: _resealed(v, lambda d: d.__setitem__("created", "2020-01-01T00:00:00+00:00")), {}, "not the verdict that was signed"),
    "weights changed after the gate": (lambda w, v: _change_weights(w), {}, "changed after the gate"),
    "weights and manifest rewritten": (lambda w, v: _rewrite_version(w), {}, "weights sha256 is"),
    "another adapter asked": (lambda w, v: None, {"adapter": "other@1"}, "is about cand@1, not other@1"),
    "another policy required": (lambda w, v: None, {"policy": "strict"}, "another policy"),
}


def _flip_sig(sig: Path) -> None:
    env = json.loads(sig.read_text())
    raw = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    raw[0] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(env))


def _resealed(path: Path, edit) -> None:
    v = json.loads(path.read_text())
    edit(v)
    v.pop("verdict_sha256")
    v["verdict_sha256"] = sha256_json(v)
    path.write_text(json.dumps(v))


def _change_weights(world) -> None:
    w = world["reg"] / "cand" / "1" / "adapter_model.safetensors"
    w.write_bytes(b"\x02" * 64)


def _rewrite_version(world) -> None:
    """An attacker with write access replaces the weights and recomputes the manifest and its digest."""
    from harness.registry import MANIFEST, MANIFEST_DIGEST, hash_files, manifest_digest

    v = world["reg"] / "cand" / "1"
    (v / "adapter_model.safetensors").write_bytes(b"\x03" * 64)
    m = json.loads((v / MANIFEST).read_text())
    m["files"] = hash_files(v)
    m.pop(MANIFEST_DIGEST)
    m[MANIFEST_DIGEST] = manifest_digest(m)
    (v / MANIFEST).write_text(json.dumps(m))
    assert Registry(world["reg"]).verify("cand@1").ok  # the registry alone cannot tell


@pytest.mark.parametrize("case", list(TAMPER))
def test_each_tampering_is_refused_with_its_own_message(world, case):
    verdict = _passing(world)
    edit, opts, needle = TAMPER[case]
    edit(world, verdict)
    extra: list[str] = []
    key = None
    if opts.get("key"):
        assert run_cli("keygen", str(world["tmp"] / "other"))[0] == 0
        key = world["tmp"] / "other.pub"
    if opts.get("adapter"):
        src = world["reg"] / "cand" / "1"
        Registry(world["reg"]).register("other", src, {"kind": "lora"})
    if opts.get("policy"):
        strict = world["tmp"] / "strict.yaml"
        strict.write_text(yaml.safe_dump({"rules": [{"category": "domain", "min_gain": 0.3}]}))
        extra = ["--policy", str(strict)]
    _refused(_verify(world, verdict, *extra, adapter=opts.get("adapter", "cand@1"), key=key), needle)


@pytest.mark.parametrize("cand,inconclusive,needle", [(BASE, "inconclusive", "is FAIL, not PASS"),
                                                      ([1 if i % 10 < 5 else 0 for i in range(100)], "inconclusive", "is INCONCLUSIVE, not PASS"),
                                                      ([1 if i % 10 < 5 else 0 for i in range(100)], "pass", "counted as passes")])
def test_a_signed_fail_or_inconclusive_verdict_never_verifies(world, cand, inconclusive, needle):
    run = world["run"]("run", cand)
    code, _, err = _gate(world, run, "--inconclusive", inconclusive)
    assert code in (0, 1, 2) and "Traceback" not in err
    assert (run / "verdict.json.sig").is_file(), "every verdict is signed: a FAIL is evidence too"
    _refused(_verify(world, run / "verdict.json"), needle)


def test_a_private_key_readable_by_others_is_refused_and_nothing_is_written(world):
    run = world["run"]("run", GOOD)
    os.chmod(world["key"], 0o644)
    _refused(_gate(world, run), "readable or writable by others", "chmod 600", code=3)
    assert not (run / "verdict.json").exists() and not (run / "verdict.json.sig").exists()


@pytest.mark.parametrize("bad", ["missing", "public key as private", "symlink", "garbage"])
def test_unusable_signing_keys_are_one_clear_error(world, bad):
    run = world["run"]("run", GOOD)
    key = world["tmp"] / "bad-key"
    if bad == "public key as private":
        key.write_bytes(world["pub"].read_bytes())
        os.chmod(key, 0o600)
    elif bad == "symlink":
        key.symlink_to(world["key"])
    elif bad == "garbage":
        key.write_bytes(os.urandom(100))
        os.chmod(key, 0o600)
    rc, _, err = run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#cand@1", "--policy", str(world["policy"]), "--sign", str(key))
    assert rc == 3 and "Traceback" not in err
    assert not (run / "verdict.json").exists()


def test_an_unsigned_regate_removes_the_old_signature_and_allow_modified_is_never_signed(world):
    verdict = _passing(world)
    run = verdict.parent
    code, _, _ = run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#cand@1", "--policy", str(world["policy"]))
    assert code == 0 and not (run / "verdict.json.sig").exists()
    _refused(_verify(world, verdict), "not signed")
    (run / "records.jsonl").write_text((run / "records.jsonl").read_text().replace('"acc": 0', '"acc": 1'))
    _refused(_gate(world, run, "--allow-modified"), "never signed", code=3)


def test_run_config_gate_sign_is_checked_before_anything_runs(world, tmp_path):
    from harness.errors import LafError
    from harness.pipeline.config import load_run_config, validate_run

    os.chmod(world["key"], 0o640)
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump({"name": "r", "adapters": [], "eval": {"suites": ["general/world-facts"]},
                                        "gate": {"policy": str(world["policy"]), "sign": str(world["key"])}}))
    cfg, base = load_run_config(cfg_path)
    with pytest.raises(LafError, match="gate.sign.*readable or writable by others"):
        validate_run(cfg, base, cfg_path)
