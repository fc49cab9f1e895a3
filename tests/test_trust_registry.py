"""Issue 18, family "registry integrity": verify covers the manifest, damage to one version never hides
the others, pickle-only adapters are refused, `--registry` goes before or after the action, and training
never registers non-finite weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import LafError
from harness.registry import MANIFEST, MANIFEST_DIGEST, Registry
from tests.conftest import assert_clean_error, run_cli


def _registry(tmp_path: Path, names=("good", "other")) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    (src / "adapter_config.json").write_text('{"r": 8}')
    reg = Registry(tmp_path / "reg")
    for n in names:
        reg.register(n, src, {"kind": "lora", "base_model": {"spec": "tiny", "fingerprint": "ab" * 32}, "final_train_loss": 1.5, "steps": 3})
    return tmp_path / "reg"


def _edit(path: Path, fn) -> None:
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m, indent=2))


def _verify(root: Path, ref: str):
    return run_cli("registry", "--registry", str(root), "verify", ref)


def test_fresh_version_verifies_with_its_manifest_covered(tmp_path):
    root = _registry(tmp_path)
    code, out, _ = _verify(root, "good")
    assert code == 0 and "manifest matches its own digest" in out
    assert MANIFEST_DIGEST in json.loads((root / "good" / "1" / MANIFEST).read_text())


@pytest.mark.parametrize("edit", [
    lambda m: m["base_model"].__setitem__("fingerprint", "cd" * 32),   # claim another base
    lambda m: m.__setitem__("final_train_loss", 0.01),                  # prettier loss
    lambda m: m["files"].__setitem__("adapter_model.safetensors", "0" * 64),  # file digest swapped
    lambda m: m.__setitem__("steps", 3.0),                              # same value, other type
    lambda m: m.pop("kind"),                                            # a field removed
    lambda m: m.__setitem__("extra", {"note": "added"}),                # a field added
    lambda m: m.__setitem__(MANIFEST_DIGEST, "0" * 64),                 # the digest itself
])
def test_any_edit_to_the_manifest_fails_verify_and_loading(tmp_path, edit):
    root = _registry(tmp_path)
    _edit(root / "good" / "1" / MANIFEST, edit)
    code, out, err = _verify(root, "good")
    assert code == 1 and "manifest.json" in out, (out, err)
    res = Registry(root).verify("good")
    assert not res.ok and res.manifest == "changed"
    assert Registry(root).verify("other").ok  # the neighbour is untouched


def test_file_and_manifest_edited_together_still_fail(tmp_path):
    root = _registry(tmp_path)
    v = root / "good" / "1"
    (v / "adapter_model.safetensors").write_bytes(b"\x01" * 64)
    from harness.io import sha256_file

    _edit(v / MANIFEST, lambda m: m["files"].__setitem__("adapter_model.safetensors", sha256_file(v / "adapter_model.safetensors")))
    assert _verify(root, "good")[0] == 1


def test_version_registered_before_the_digest_still_loads_but_verify_says_not_covered(tmp_path):
    root = _registry(tmp_path)
    _edit(root / "good" / "1" / MANIFEST, lambda m: m.pop(MANIFEST_DIGEST))
    res = Registry(root).verify("good")
    assert res.ok and res.manifest == "not covered"  # loaders (eval, merge, export) keep accepting it
    code, out, _ = _verify(root, "good")
    assert code == 1 and "not covered" in out
    code, out, _ = run_cli("registry", "--registry", str(root), "verify", "good", "--json")
    assert code == 1 and json.loads(out)["manifest"] == "not covered" and json.loads(out)["files_ok"] is True


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"text"', "null", "{not json", "[" * 100_000 + "]" * 100_000, ""])
def test_one_broken_manifest_does_not_break_list_for_the_others(tmp_path, content):
    root = _registry(tmp_path)
    (root / "good" / "1" / MANIFEST).write_text(content)
    code, out, err = run_cli("registry", "--registry", str(root), "list")
    assert code == 0 and "Traceback" not in err
    assert "other@1" in out and "broken" in err and "good@1" in err
    code, out, _ = run_cli("registry", "--registry", str(root), "list", "--json")
    rows = json.loads(out)
    assert {r["ref"] for r in rows} == {"good@1", "other@1"} and [r for r in rows if "broken" in r][0]["ref"] == "good@1"
    assert_clean_error(run_cli("registry", "--registry", str(root), "show", "good"), "good@1")
    assert_clean_error(_verify(root, "good"), "good@1")


def test_manifest_with_wrong_types_shows_without_a_traceback(tmp_path):
    root = _registry(tmp_path)
    _edit(root / "good" / "1" / MANIFEST, lambda m: m.update(base_model="x", data=[1], files=[2], trainable_parameters="many", tokens_seen=None))
    code, out, err = run_cli("registry", "--registry", str(root), "show", "good")
    assert code == 0 and "Traceback" not in err
    assert _verify(root, "good")[0] == 1


def test_pickle_only_adapter_is_refused_with_the_conversion(tmp_path):
    root = _registry(tmp_path)
    v = root / "good" / "1"
    (v / "adapter_model.safetensors").rename(v / "adapter_model.bin")
    assert_clean_error(run_cli("registry", "--registry", str(root), "show", "good"), "pickle", "safe_serialization=True")
    with pytest.raises(LafError, match="safetensors"):
        Registry(root).resolve("good")
    src = tmp_path / "binsrc"
    src.mkdir()
    (src / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(LafError, match="pickle"):
        Registry(root).register("newone", src, {})
    assert "newone" not in Registry(root).names() or not Registry(root).versions("newone")


@pytest.mark.parametrize("action", [["list"], ["show", "good"], ["verify", "good"], ["list", "--json"]])
def test_registry_option_goes_before_or_after_the_action(tmp_path, action):
    root = _registry(tmp_path)
    before = run_cli("registry", "--registry", str(root), *action)
    after = run_cli("registry", *action, "--registry", str(root))
    assert before[0] == after[0] == 0 and before[1] == after[1]
    assert "good" in after[1]


def test_training_refuses_to_register_non_finite_weights(tiny_model_dir, tmp_path, monkeypatch):
    """A real run whose optimizer writes NaN into one LoRA tensor on its last step: exit 3, nothing registered,
    the last good checkpoint kept."""
    import torch

    import harness.train.loop as loop
    from tests.test_train import make_config

    real = loop.make_optimizer
    total = 4

    def poisoning_optimizer(params, cfg, device):
        opt = real(params, cfg, device)
        calls = {"n": 0}

        def poison(optimizer, args, kwargs):
            calls["n"] += 1
            if calls["n"] == total:
                with torch.no_grad():
                    params[0].view(-1)[0] = float("nan")

        opt.register_step_post_hook(poison)
        return opt

    monkeypatch.setattr(loop, "make_optimizer", poisoning_optimizer)
    cfg = make_config(tmp_path, tiny_model_dir, precision="fp32", max_steps=total, save_every=2, eval_every=0)
    with pytest.raises(loop.TrainingDiverged) as e:
        loop.train(cfg)
    assert "non-finite" in e.value.cause and "nothing was registered" in e.value.cause and "step-000002" in e.value.cause
    assert e.value.exit_code == 3
    assert not Registry(cfg.registry).versions("unit")
    assert loop.list_checkpoints(cfg.run_dir())  # the last good checkpoint stays for --resume
