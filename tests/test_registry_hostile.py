"""Hostile registries and merges: a bound on a merge's inputs (checked before any adapter is read), manifests that
stay bounded over generations of merges and are never registered unreadable, manifest text printed as data (never
Rich markup), wrong-typed manifest fields listed as damaged, and version folders that are not ASCII digits ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.errors import LafError
from harness.registry import MANIFEST, AdapterRef, Registry, manifest_digest
from tests.conftest import assert_clean_error, run_cli
from tests.test_trust_registry import _registry  # versions whose weights are 64 zero bytes: resolve, list, show and verify never parse them

# ---------------------------------------------------------------- helpers


def _reseal(path: Path, fn) -> None:
    """Edit a manifest and recompute its digest, as a careful hand (or attacker) would."""
    m = json.loads(path.read_text())
    fn(m)
    m.pop("manifest_sha256", None)
    m["manifest_sha256"] = manifest_digest(m)
    path.write_text(json.dumps(m))


def _cli(root: Path, *argv: str):
    return run_cli("registry", "--registry", str(root), *argv)


def _merge_config(folder: Path, registry: Path, **cfg) -> Path:
    cfg.setdefault("registry", str(registry))
    path = folder / f"merge-{len(list(folder.glob('merge-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory, tiny_model_dir):
    """One small adapter (rank 2, two modules) on the tiny model."""
    from tests.test_merge import make_adapter

    reg = tmp_path_factory.mktemp("hostile-merge") / "registry"
    make_adapter(reg, "a", tiny_model_dir, 1, r=2, alpha=4, targets=["q_proj", "v_proj"])
    return reg


# ---------------------------------------------------------------- D5: a bound on a merge's inputs


def test_merge_refuses_more_than_max_inputs_before_reading_any_adapter(tmp_path, monkeypatch):
    from harness.cli.merge import load_merge_config
    from harness.merge import engine
    from harness.merge.config import MAX_INPUTS, MergeConfig

    assert MAX_INPUTS == 64
    assert f"at most {MAX_INPUTS} adapters" in (Path(__file__).parents[1] / "docs" / "merging.md").read_text()

    def never(*a, **k):
        raise AssertionError("an adapter was loaded")

    monkeypatch.setattr(engine, "load_adapter", never)
    reg = tmp_path / "reg"  # does not exist: nothing may be read or created
    cfg = _merge_config(tmp_path, reg, name="many", method="linear", adapters=["x@1"] * (MAX_INPUTS + 1))
    assert_clean_error(run_cli("merge", str(cfg)), "'adapters'", f"at most {MAX_INPUTS} adapters", f"got {MAX_INPUTS + 1}")
    assert not reg.exists()
    with pytest.raises(ValueError, match="at most 64 adapters"):
        MergeConfig.model_validate({"name": "m", "method": "linear", "adapters": [{"ref": "x@1"}] * 1000})
    # the bound itself is accepted by validation
    ok = load_merge_config(str(_merge_config(tmp_path, reg, name="edge", method="linear", adapters=["x@1"] * MAX_INPUTS)), [])
    assert len(ok.inputs()) == MAX_INPUTS


# ---------------------------------------------------------------- D7: bounded lineage, never an unreadable manifest


def test_repeated_merges_keep_the_manifest_bounded_and_the_tree_readable(tiny_registry, tmp_path):
    prev, sizes = "a@1", []
    for k in range(1, 6):
        cfg = _merge_config(tmp_path, tiny_registry, name=f"chain{k}", method="linear", adapters=[prev, prev], output={"rank": 2})
        code, out, err = run_cli("merge", str(cfg))
        assert code == 0, err
        prev = f"chain{k}@1"
        sizes.append((tiny_registry / f"chain{k}" / "1" / MANIFEST).stat().st_size)
    assert sizes[-1] <= sizes[1] * 1.05, sizes  # was doubling with every generation
    reg = Registry(tiny_registry)
    lin = reg.resolve("chain5@1").manifest["lineage"]
    p = lin["parents"][0]
    assert p["ref"] == "chain4@1" and p["lineage"]["method"] == "linear" and p["lineage"]["output"]["rank"] == 2
    assert "per_module" not in p["lineage"]["output"]["relative_error"]
    grand = p["lineage"]["parents"][0]
    assert grand["ref"] == "chain3@1" and grand["kind"] == "merge" and "lineage" not in grand  # by reference
    assert grand["weights_sha256"] == reg.resolve("chain3@1").manifest["files"]["adapter_model.safetensors"]
    code, out, err = _cli(tiny_registry, "show", "chain5@1")
    assert code == 0, err
    # deeper generations are followed through the registry, each drawn once
    for ref in ("chain4@1", "chain3@1", "chain2@1", "chain1@1", "a@1"):
        assert ref in out
    assert "(parents shown above)" in out and len(out.splitlines()) < 40
    from harness.merge.lineage import family_tree

    # without the registry the recorded generations (parents and grandparents) are still drawn
    assert any("chain3@1" in line for line in family_tree("chain5@1", reg.resolve("chain5@1").manifest))


def test_a_manifest_the_reader_would_refuse_is_never_registered(tmp_path, monkeypatch):
    import harness.registry as registry_mod

    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    reg = Registry(tmp_path / "reg")
    monkeypatch.setattr(registry_mod, "MAX_MANIFEST_BYTES", 4096)
    with pytest.raises(LafError, match="nothing was registered") as e:
        reg.register("big", src, {"kind": "lora", "description": "x" * 5000})
    assert "4,096" in e.value.cause
    assert not (tmp_path / "reg" / "big").exists()  # refused before anything was created
    # the size is checked against the complete manifest too (file digests included): nothing partial left behind
    with pytest.raises(LafError, match="nothing was registered"):
        reg.register("big", src, {"kind": "lora", "description": "x" * 3900})
    assert reg.versions("big") == [] and not [p for p in (tmp_path / "reg" / "big").iterdir()]
    entry = reg.register("big", src, {"kind": "lora"})
    assert Registry(tmp_path / "reg").resolve("big@1").manifest == entry.manifest


def test_merge_refuses_a_lineage_too_large_before_merging(tiny_registry, tmp_path, monkeypatch):
    import harness.registry as registry_mod

    monkeypatch.setattr(registry_mod, "MAX_MANIFEST_BYTES", 2048)
    before = Registry(tiny_registry).versions("toolarge")
    cfg = _merge_config(tmp_path, tiny_registry, name="toolarge", method="linear", adapters=["a@1"] * 12)
    assert_clean_error(run_cli("merge", str(cfg)), "lineage", "nothing was merged")
    assert Registry(tiny_registry).versions("toolarge") == before == []


# ---------------------------------------------------------------- D8: manifest text is data; wrong types are damage


def test_markup_in_a_manifest_is_printed_not_interpreted(tmp_path):
    root = _registry(tmp_path)
    _reseal(root / "good" / "1" / MANIFEST, lambda m: m.update(load="[/bold] x", base_model={"spec": "[red]spec", "fingerprint": "f"}))
    code, out, err = _cli(root, "show", "good")
    assert code == 0 and "Traceback" not in err, err
    assert "[/bold] x" in out and "[red]spec" in out


def test_verify_prints_hostile_file_names_as_they_are(tmp_path):
    root = _registry(tmp_path)
    v = root / "good" / "1"
    _reseal(v / MANIFEST, lambda m: m["files"].__setitem__("[/x]", "00"))
    (v / "[red]evil").write_bytes(b"")
    code, out, err = _cli(root, "verify", "good")
    assert code == 1 and "Traceback" not in err, err
    assert "missing: [/x]" in out and "not in manifest: [red]evil" in out
    code, out, _ = _cli(root, "verify", "good", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["missing"] == ["[/x]"] and doc["unexpected"] == ["[red]evil"]


@pytest.mark.parametrize("edit, field", [
    (lambda m: m.__setitem__("base_model", [1]), "base_model"),
    (lambda m: m.__setitem__("files", {"adapter_model.safetensors": 5}), "files"),
    (lambda m: m.__setitem__("created", {"a": 1}), "created"),
    (lambda m: m.__setitem__("lineage", "x"), "lineage"),
    (lambda m: m["base_model"].__setitem__("spec", ["x"]), "base_model.spec"),
])
def test_a_wrong_typed_field_lists_that_version_as_damaged_and_the_rest(tmp_path, edit, field):
    root = _registry(tmp_path)
    _reseal(root / "good" / "1" / MANIFEST, edit)
    code, out, err = _cli(root, "list")
    assert code == 0 and "Traceback" not in err, err
    assert "other@1" in out and "good@1" not in out
    assert "broken" in err and "good@1" in err and field in err and "laf registry verify good@1" in err
    code, out, _ = _cli(root, "list", "--json")
    rows = {r["ref"]: r for r in json.loads(out)}
    assert code == 0 and "broken" not in rows["other@1"] and field in rows["good@1"]["broken"]
    code, _, err = _cli(root, "show", "good")  # show still prints what it can
    assert code == 0 and "Traceback" not in err


@pytest.mark.parametrize("lineage", [{"parents": "x"}, {"parents": [1, {"ref": 3}, {"ref": "p@1", "weight": [1]}]},
                                     {"params": "x", "output": {"kind": "adapter", "relative_error": "big", "exact": False},
                                      "parents": []}])
def test_a_damaged_lineage_shows_without_a_traceback(tmp_path, lineage):
    root = _registry(tmp_path)
    _reseal(root / "good" / "1" / MANIFEST, lambda m: m.update(kind="merge", lineage=lineage))
    code, out, err = _cli(root, "show", "good")
    assert code == 0 and "Traceback" not in err, err
    assert "good@1" in out
    if lineage["parents"] != []:
        assert "laf registry verify good@1" in out


def test_a_lineage_that_names_itself_is_drawn_once(tmp_path):
    root = _registry(tmp_path)
    v = root / "good" / "1"
    digest = json.loads((v / MANIFEST).read_text())["files"]["adapter_model.safetensors"]
    me = {"ref": "good@1", "kind": "merge", "weights_sha256": digest}
    _reseal(v / MANIFEST, lambda m: m.update(kind="merge", lineage={"method": "linear", "parents": [me] * 300}))
    code, out, err = _cli(root, "show", "good")
    assert code == 0 and "Traceback" not in err, err
    assert len(out.splitlines()) < 600


# ---------------------------------------------------------------- D9: only ASCII digits are versions


@pytest.mark.parametrize("folder", ["²", "١٢", "01", "0x1", "1 "])
def test_version_folders_that_are_not_ascii_digits_are_ignored(tmp_path, folder):
    import shutil

    root = _registry(tmp_path)
    shutil.copytree(root / "good" / "1", root / "good" / folder)
    (root / "q4").mkdir()
    shutil.copytree(root / "good" / "1", root / "q4" / folder)
    assert Registry(root).versions("good") == [1] and Registry(root).versions("q4") == []
    code, out, err = _cli(root, "list", "--json")
    assert code == 0 and "Traceback" not in err, err
    assert {r["ref"] for r in json.loads(out)} == {"good@1", "other@1"}
    code, out, err = _cli(root, "show", "good")  # latest is still 1, never a phantom version
    assert code == 0 and "good -> good@1" in out, err
    assert_clean_error(_cli(root, "show", "q4"), "no adapter named 'q4'")


def test_references_and_merge_names_take_only_ascii_digit_versions(tmp_path):
    with pytest.raises(LafError, match="not an adapter reference"):
        AdapterRef.parse("x@٣")
    assert AdapterRef.parse("x@3") == AdapterRef("x", 3)
    cfg = _merge_config(tmp_path, tmp_path / "reg", name="mx@٢", method="linear", adapters=["a@1"])
    assert_clean_error(run_cli("merge", str(cfg)), "'name'")
