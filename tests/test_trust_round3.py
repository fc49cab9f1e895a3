"""Issue 27 (trust, round three): each family the attacker found, closed as a family.

Export never replaces what it reads or what others own; every reader of a run folder applies the same integrity
check and a verdict is sealed; links and special files never let a version or a run read bytes from elsewhere;
printed commands are quoted and card metadata is one clean line; a superiority rule needs a gain strictly above
its margin."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

from harness.io import sha256_json
from harness.registry import Registry
from tests.conftest import assert_clean_error, run_cli
from tests.synthetic import suite_meta, write_run

SUITES = {"domain/skill": suite_meta("domain"), "general/facts": suite_meta("general")}
BASE = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0] * 10  # 40 %


def _register(root: Path, names=("cand", "other")) -> Registry:
    src = root.parent / "adapter-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    (src / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    reg = Registry(root)
    for n in names:
        reg.register(n, src, {"kind": "lora", "base_model": {"spec": "default", "fingerprint": "ab" * 32}, "steps": 3})
    return reg


def _run(tmp_path: Path, cand=None) -> Path:
    cand = cand if cand is not None else BASE
    return write_run(tmp_path / "run", SUITES, {"base": {s: BASE for s in SUITES}, "cand@1": {s: cand for s in SUITES}})


def _policy(tmp_path: Path, rules) -> str:
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump({"rules": rules}))
    return str(p)


def _gate(run: Path, tmp_path: Path, rules, *extra):
    return run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#cand@1", "--policy", _policy(tmp_path, rules), *extra)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _export(reg: Path, *args: str):
    return run_cli("registry", "--registry", str(reg), "export", *args)


# ---------------------------------------------------------------- export never destroys data


@pytest.mark.parametrize("target", ["registry", "adapter folder", "version folder", "inside a version", "parent of registry", "run folder"])
def test_export_target_overlapping_the_registry_or_the_run_is_refused_even_with_force(tmp_path, target):
    reg_root = tmp_path / "data" / "reg"
    _register(reg_root)
    run = _run(tmp_path)
    out = {"registry": reg_root, "adapter folder": reg_root / "cand", "version folder": reg_root / "cand" / "1",
           "inside a version": reg_root / "other" / "1" / "x", "parent of registry": tmp_path / "data", "run folder": run}[target]
    before, run_before = _tree(reg_root), _tree(run)
    for force in ([], ["--force"]):
        assert_clean_error(_export(reg_root, "cand@1", str(out), "--run", str(run), *force), "export target")
    assert _tree(reg_root) == before and _tree(run) == run_before, "nothing read by the export was touched"


def test_force_replaces_only_a_previous_export(tmp_path):
    reg_root = tmp_path / "reg"
    _register(reg_root)
    other_run = _run(tmp_path / "elsewhere")  # a run folder that is not the --run: not an export, never replaced
    before = _tree(other_run)
    assert_clean_error(_export(reg_root, "cand@1", str(other_run), "--force"), "not a previous export")
    assert _tree(other_run) == before
    out = tmp_path / "exp"
    assert _export(reg_root, "cand@1", str(out))[0] == 0
    code, _, err = _export(reg_root, "other@1", str(out), "--force")
    assert code == 0, err
    assert json.loads((out / ".laf-export.json").read_text())["ref"] == "other@1"


# ---------------------------------------------------------------- printed commands and card metadata


@pytest.mark.parametrize("repo", ["a/b; rm -rf ~ #", "a/b$(id)", "a", "a/b/c", "a/-b", "a/b\nc", "a/b..c", "../x", "a/b`id`"])
def test_repo_ids_that_are_not_hub_ids_are_refused(tmp_path, repo):
    reg_root = tmp_path / "reg"
    _register(reg_root)
    assert_clean_error(_export(reg_root, "cand@1", str(tmp_path / "o"), "--repo-id", repo), "repository id")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag,value", [("--license", "mit\nbase_model: evil/x"), ("--license", "a\x1b[2Jb"), ("--license", "mit; rm"),
                                        ("--base-model", "org/x\n---"), ("--base-model", "/etc/passwd"), ("--dataset", "x\ry")])
def test_card_metadata_with_newlines_or_control_characters_is_refused(tmp_path, flag, value):
    reg_root = tmp_path / "reg"
    _register(reg_root)
    assert_clean_error(_export(reg_root, "cand@1", str(tmp_path / "o"), flag, value), "not allowed in a model card")


def test_printed_upload_command_is_quoted(tmp_path):
    reg_root = tmp_path / "reg"
    _register(reg_root)
    out = tmp_path / "my export; touch pwned"
    code, stdout, err = _export(reg_root, "cand@1", str(out), "--repo-id", "acme/cand", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    cmd = doc["upload_command"]
    assert shlex.split(cmd) == ["hf", "upload", "acme/cand", str(out), "."]
    assert cmd in (out / "README.md").read_text()


# ---------------------------------------------------------------- links leave no folder


def test_symlinked_weights_in_a_version_are_refused_everywhere(tmp_path):
    reg_root = tmp_path / "reg"
    reg = _register(reg_root)
    w = reg_root / "cand" / "1" / "adapter_model.safetensors"
    w.unlink()
    w.symlink_to(reg_root / "other" / "1" / "adapter_model.safetensors")  # same bytes: every digest still matches
    assert_clean_error(run_cli("registry", "--registry", str(reg_root), "verify", "cand@1"), "not plain files", "symlink")
    assert_clean_error(_export(reg_root, "cand@1", str(tmp_path / "o")), "symlink")
    with pytest.raises(Exception, match="symlink"):
        reg.resolve("cand@1")
    assert reg.resolve("other@1").ref.version == 1, "the other adapter is unaffected"


@pytest.mark.parametrize("kind", ["symlink to a system file", "fifo", "hard link", "version folder is a link", "linked subfolder"])
def test_links_and_special_files_in_a_version_are_refused(tmp_path, kind):
    reg_root = tmp_path / "reg"
    reg = _register(reg_root)
    v = reg_root / "cand" / "1"
    if kind == "symlink to a system file":
        (v / "notes.txt").symlink_to("/etc/passwd")
    elif kind == "fifo":
        os.mkfifo(v / "pipe")
    elif kind == "hard link":
        os.link(reg_root / "other" / "1" / "adapter_config.json", v / "extra.json")
    elif kind == "version folder is a link":
        v.rename(tmp_path / "moved")
        v.symlink_to(tmp_path / "moved")
    else:
        (v / "sub").symlink_to(reg_root / "other" / "1")
    with pytest.raises(Exception, match="not plain files|symlink") as e:
        reg.resolve("cand@1")
    assert type(e.value).__name__ == "LafError"
    assert_clean_error(_export(reg_root, "cand@1", str(tmp_path / "o")), "not plain files")


def test_registering_a_folder_with_links_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").symlink_to("/etc/passwd")
    (src / "adapter_config.json").write_text("{}")
    with pytest.raises(Exception, match="not plain files"):
        Registry(tmp_path / "reg").register("x", src, {})
    assert not (tmp_path / "reg" / "x" / "1").exists()


@pytest.mark.parametrize("name", ["records.jsonl", "results.json", "integrity.json"])
def test_run_folder_files_that_are_links_are_refused(tmp_path, name):
    run = _run(tmp_path)
    real = tmp_path / f"real-{name}"
    os.replace(run / name, real)
    (run / name).symlink_to(real)  # same bytes, digests match: still not the run's own file
    assert_clean_error(_gate(run, tmp_path, [{"category": "general", "max_drop": 0.05}]), "symlink")
    assert_clean_error(run_cli("report", str(run)), "symlink")


# ---------------------------------------------------------------- sealed verdicts and one integrity check for every reader


def _reseal(path: Path, edit) -> None:
    """An attacker who also recomputes the verdict's own digest."""
    v = json.loads(path.read_text())
    edit(v)
    v.pop("verdict_sha256", None)
    v["verdict_sha256"] = sha256_json(v)
    path.write_text(json.dumps(v))


def _flip(v: dict) -> None:
    v["verdict"], v["exit_code"] = "pass", 0


VERDICT_EDITS = {
    "fail -> pass (no reseal)": (lambda p: p.write_text(p.read_text().replace('"verdict": "fail"', '"verdict": "pass"')), "was edited"),
    "fail -> pass, resealed": (lambda p: _reseal(p, _flip), "its rules give 'fail'"),
    "seal removed": (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "verdict_sha256"})), "no verdict_sha256"),
    "metric the run lacks": (lambda p: _reseal(p, lambda v: v["summaries"]["suites"]["general/facts"].__setitem__("metric", "nosuch")), "does not have"),
    "rule metric the run lacks": (lambda p: _reseal(p, lambda v: v["rules"][0].__setitem__("metric", "nosuch")), "does not have"),
    "candidate the run lacks": (lambda p: _reseal(p, lambda v: v["candidate"].__setitem__("model", "ghost@9")), "not a model of this run"),
    "not an object": (lambda p: p.write_text("[1, 2]"), "not a laf.verdict/1"),
    "NaN inside": (lambda p: _reseal(p, lambda v: v["rules"][0]["stats"].__setitem__("se", float("nan"))), "finite"),
    "rules not a list": (lambda p: _reseal(p, lambda v: v.__setitem__("rules", {"a": 1})), "does not describe"),
}


@pytest.mark.parametrize("case", list(VERDICT_EDITS))
def test_an_edited_verdict_is_refused_by_the_report(tmp_path, case):
    run = _run(tmp_path)
    assert _gate(run, tmp_path, [{"category": "domain", "min_gain": 0.1}])[0] == 1
    assert run_cli("report", str(run))[0] == 0
    edit, needle = VERDICT_EDITS[case]
    edit(run / "verdict.json")
    assert_clean_error(run_cli("report", str(run)), needle)


def test_a_verdict_of_an_earlier_evaluation_is_stale(tmp_path):
    run = _run(tmp_path)
    assert _gate(run, tmp_path, [{"category": "domain", "min_gain": 0.1}])[0] == 1
    verdict = (run / "verdict.json").read_bytes()
    write_run(run, SUITES, {"base": {s: BASE for s in SUITES}, "cand@1": {s: [1] * 100 for s in SUITES}})  # a new evaluation, same folder
    (run / "verdict.json").write_bytes(verdict)
    assert_clean_error(run_cli("report", str(run)), "earlier evaluation")


def test_export_refuses_an_edited_run_and_an_edited_verdict(tmp_path):
    reg_root = tmp_path / "reg"
    _register(reg_root)
    run = _run(tmp_path)
    assert _gate(run, tmp_path, [{"category": "domain", "min_gain": 0.1}])[0] == 1
    code, _, err = _export(reg_root, "cand@1", str(tmp_path / "ok"), "--run", str(run))
    assert code == 0, err
    assert "Verdict: **FAIL**" in (tmp_path / "ok" / "README.md").read_text()
    # the verdict flipped: refused, nothing written
    original = (run / "verdict.json").read_text()
    _reseal(run / "verdict.json", _flip)
    assert_clean_error(_export(reg_root, "cand@1", str(tmp_path / "o1"), "--run", str(run)), "its rules give")
    (run / "verdict.json").write_text(original)
    # a score edited 0.40 -> 0.99 in results.json: the integrity check the gate applies
    d = json.loads((run / "results.json").read_text())
    d["results"]["cand@1"]["domain/skill"]["acc"]["value"] = 0.99
    (run / "results.json").write_text(json.dumps(d))
    assert_clean_error(_export(reg_root, "cand@1", str(tmp_path / "o2"), "--run", str(run)), "integrity check")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


# ---------------------------------------------------------------- superiority needs a gain strictly above the margin


@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_superiority_never_passes_on_no_change(tmp_path, margin):
    run = _run(tmp_path)  # the candidate is identical to the base on every item
    code, _, err = _gate(run, tmp_path, [{"category": "domain", "min_gain": margin}])
    assert code in (1, 2), err
    v = json.loads((run / "verdict.json").read_text())
    assert v["verdict"] != "pass" and v["rules"][0]["status"] != "pass"


def test_superiority_still_passes_a_real_gain(tmp_path):
    run = _run(tmp_path, cand=[1] * 100)
    code, _, err = _gate(run, tmp_path, [{"category": "domain", "min_gain": 0.0}])
    assert code == 0, err


# ---------------------------------------------------------------- cache rows are bound to their keys


def _cache_case(tiny_model_dir, tmp_path):
    from harness.evaluate import EvalSpec, run_eval
    from tests.test_trust_templates import write_suite

    suite = write_suite(tmp_path / "s", {}, rows=[{"q": f"What is {i} plus {i}?", "choices": [str(2 * i), str(i + 100), "no"], "gold": 0} for i in range(8)])
    spec = dict(suites=[str(suite)], model=str(tiny_model_dir), cache=str(tmp_path / "c.sqlite"), batch_size=4)
    ref = run_eval(EvalSpec(out=str(tmp_path / "ref"), **spec)).to_dict()

    def again(out):
        import sqlite3

        with sqlite3.connect(tmp_path / "c.sqlite") as c:  # these tests are about response rows: the stored suite results (the
            c.execute("DELETE FROM suite_results")        # warm path, sealed the same way: tests/test_eval.py) must not answer first
        return run_eval(EvalSpec(out=str(tmp_path / out), **spec)).to_dict()

    return spec, ref, again


def test_cache_rows_rewritten_to_one_plausible_value_are_rescored_and_counted(tiny_model_dir, tmp_path):
    import sqlite3

    spec, ref, again = _cache_case(tiny_model_dir, tmp_path)
    with sqlite3.connect(tmp_path / "c.sqlite") as c:
        n = c.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        c.execute("UPDATE responses SET value = '[-0.01, true]'")  # well formed, finite, plausible: every answer "right"
    doc = again("edited")
    req = doc["models"]["base"]["requests"]
    assert req["cache_rejected"] == n and req["cache_hits"] == 0 and req["computed"] == n
    assert doc["results"] == ref["results"], "scores are the model's, not the edited cache's"
    assert again("healed")["models"]["base"]["requests"]["cache_hits"] == n, "the rows were rewritten with their seals"


def test_cache_values_swapped_between_keys_and_unsealed_caches_are_rescored(tiny_model_dir, tmp_path):
    import sqlite3

    spec, ref, again = _cache_case(tiny_model_dir, tmp_path)
    with sqlite3.connect(tmp_path / "c.sqlite") as c:
        rows = c.execute("SELECT key, value, seal FROM responses").fetchall()
        (k1, v1, s1), (k2, v2, s2) = rows[0], next(r for r in rows if r[1] != rows[0][1])
        c.execute("UPDATE responses SET value = ?, seal = ? WHERE key = ?", (v2, s2, k1))  # another key's value and seal
        c.execute("UPDATE responses SET value = ?, seal = ? WHERE key = ?", (v1, s1, k2))
    doc = again("swapped")
    assert doc["models"]["base"]["requests"]["cache_rejected"] == 2 and doc["results"] == ref["results"]
    # a cache written before the seal column: migrated, every row re-scored once
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as c:
        c.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)")
        c.execute("ATTACH DATABASE ? AS src", (str(tmp_path / "c.sqlite"),))
        c.execute("INSERT INTO responses SELECT key, kind, '[-0.01, true]', created FROM src.responses")
        n = c.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    from harness.evaluate import EvalSpec, run_eval

    doc = run_eval(EvalSpec(out=str(tmp_path / "old-run"), **{**spec, "cache": str(old)})).to_dict()
    assert doc["results"] == ref["results"] and doc["models"]["base"]["requests"]["cache_rejected"] == n > 0


# ---------------------------------------------------------------- tracebacks that became one clear error


@pytest.mark.parametrize("device", ["cuda:banana", "tpu", "cuda:99", "", "cpu ", "cuda:-1"])
def test_unknown_device_is_a_config_error_before_anything_loads(tmp_path, device):
    from harness.errors import LafError
    from harness.models.load import LoadSpec
    from harness.train.config import TrainConfig

    with pytest.raises(LafError, match="device"):
        LoadSpec("fp32", device=device)
    with pytest.raises(Exception, match="device") as e:
        TrainConfig.model_validate({"name": "x", "device": device, "data": {"path": "d.jsonl"}})
    assert type(e.value).__name__ in ("ValidationError", "ConfigError")
    assert_clean_error(run_cli("eval", "--model", "default", "--suite", "general/world-facts", "--device", device, "--out", str(tmp_path / "o")), "device")


@pytest.mark.parametrize("listed", [[{"suite": None}], [None], [{"suite": ["a"]}], [{"x": 1}], [3], "general/world-facts", {"a": 1}])
def test_against_yaml_with_a_suite_entry_that_names_nothing_is_one_error(tmp_path, listed):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "What is two plus two?", "response": "Four."}) + "\n")
    cfg = tmp_path / "against.yaml"
    cfg.write_text(yaml.safe_dump({"eval": {"suites": listed}}))
    assert_clean_error(run_cli("data", "check", str(data), "--against", str(cfg), "--model", "none", "--out", str(tmp_path / "o")), "suite")
    cfg.write_text(yaml.safe_dump([1, 2]))  # a YAML that is not a mapping
    code, _, err = run_cli("data", "check", str(data), "--against", str(cfg), "--model", "none", "--out", str(tmp_path / "o"))
    assert code == 3 and "Traceback" not in err


def test_a_full_disk_while_writing_the_results_store_is_one_error_and_keeps_the_published_run(tmp_path):
    from harness.errors import LafError
    from harness.results import ItemRecord, ResultsStore

    run = _run(tmp_path)
    before = _tree(run)
    store = ResultsStore(run, partial=True)
    store.conn.execute("PRAGMA max_page_count = 3")  # SQLITE_FULL after a few pages: what a full disk gives
    rec = ItemRecord.from_dict(json.loads((run / "records.jsonl").read_text().splitlines()[0]))
    with pytest.raises(LafError, match="unchanged"):
        for i in range(200):
            store.write([ItemRecord.from_dict({**rec.to_dict(), "doc_id": i, "prompt": "x" * 4000})])
    store.close()
    assert _tree(run) == {**before, **{k: v for k, v in _tree(run).items() if k.startswith("results.sqlite.partial")}}


# ---------------------------------------------------------------- merges: huge weights, and the card of a merged adapter


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, tiny_model_dir):
    from tests.test_merge import make_adapter

    reg = tmp_path_factory.mktemp("merge3") / "registry"
    return {"registry": reg, "a": make_adapter(reg, "a", tiny_model_dir, 1), "b": make_adapter(reg, "b", tiny_model_dir, 2)}


def _merge(tmp_path, world, **cfg):
    path = tmp_path / f"merge-{len(list(tmp_path.glob('merge-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({"registry": str(world["registry"]), **cfg}))
    return run_cli("merge", str(path), "--json")


@pytest.mark.parametrize("cfg", [
    {"method": "linear", "weights": [1e300, 1.0]},
    {"method": "task_arithmetic", "weights": [1.0, -1e30], "normalize": False},
    {"method": "task_arithmetic", "weights": [1.0, 1.0], "lambda": 1e300, "normalize": False},
    {"method": "ties", "weights": [1e10, 1e10], "density": 0.5},
])
def test_huge_finite_merge_weights_are_one_error_before_any_weight_is_read(two_adapters, tmp_path, cfg):
    before = sorted(Registry(two_adapters["registry"]).names())
    assert_clean_error(_merge(tmp_path, two_adapters, name="huge", adapters=["a", "b"], **cfg), "within")
    assert sorted(Registry(two_adapters["registry"]).names()) == before, "nothing registered"


def test_an_update_that_overflows_never_reaches_the_svd():
    import torch

    from harness.merge.methods import refactor_dense

    with pytest.raises(ValueError, match="not finite"):
        refactor_dense(torch.full((8, 6), float("inf")), 2)


def test_the_card_of_a_merged_adapter_describes_the_merge(two_adapters, tmp_path):
    code, out, err = _merge(tmp_path, two_adapters, name="mix", adapters=[{"ref": "a", "weight": 0.7}, {"ref": "b", "weight": 0.3}],
                            method="linear", output={"rank": 4})
    assert code == 0, err
    reg = Registry(two_adapters["registry"])
    mix = reg.resolve("mix")
    code, _, err = _export(two_adapters["registry"], "mix@1", str(tmp_path / "card"))
    assert code == 0, err
    card = (tmp_path / "card" / "README.md").read_text()
    merge = card.split("## Merge", 1)[1].split("\n## ", 1)[0]
    for parent, w in (("a", 0.7), ("b", 0.3)):
        e = reg.resolve(parent)
        assert f"`{e.ref}`" in merge and e.manifest["files"]["adapter_model.safetensors"] in merge and f"| {w} |" in merge
    assert "**linear**" in merge and "re-factoring error" in merge
    err_max = mix.manifest["lineage"]["output"]["relative_error"]["max"]
    assert f"{err_max:.4f}" in merge
    for wrong in ("None examples", "rank None", "trainable parameters | 0", "objective | sft", "## Training data"):
        assert wrong not in card, wrong


# ---------------------------------------------------------------- sweeps: every point normalised and validated before anything runs


def _sweep_cfg(tmp_path: Path, model_dir: Path, axes: dict) -> Path:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "response": f"{i}."}) + "\n" for i in range(20)))
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({"name": "sw", "model": str(model_dir), "precision": "fp32", "data": {"path": "d.jsonl"},
                                   "train": {"max_steps": 1}, "registry": str(tmp_path / "reg"), "out_root": str(tmp_path / "reports"),
                                   "eval": {"suites": [{"suite": "general/world-facts", "limit": 5}]}, "sweep": axes}))
    return cfg


@pytest.mark.parametrize("axes,needle", [
    ({"lora.r": [4, 4.0]}, "same configuration"),
    ({"optim.lr": [0.001, 1.0e-3]}, "lists a value twice"),
    ({"optim.lr": [0.001, 0.0010000]}, "lists a value twice"),
    ({"lora.r": [2, 4], "seed": [0, 0.0]}, "same configuration"),
    ({"lora.target_modules": [["q_proj"], ["no_such_proj"]]}, "no_such_proj"),
    ({"lora.r": [4, "4"]}, "sweep"),
])
def test_sweep_points_are_normalised_and_validated_before_any_point_trains(tmp_path, tiny_model_dir, axes, needle):
    cfg = _sweep_cfg(tmp_path, tiny_model_dir, axes)
    assert_clean_error(run_cli("sweep", str(cfg)), needle)
    assert not (tmp_path / "reg").exists() or not any((tmp_path / "reg").iterdir()), "nothing trained or registered"


def test_sweep_equivalent_merge_points_are_refused(tmp_path):
    from harness.errors import ConfigError
    from harness.sweep import _validate_points
    from harness.sweep.config import SweepConfig, expand

    cfg = SweepConfig.model_validate({"name": "sw", "eval": {"suites": ["general/world-facts"]}, "registry": str(tmp_path),
                                      "merge": [{"name": "m", "method": "slerp", "adapters": ["a", "b"]}], "sweep": {"merge.t": [0.5, 0.50000001, 1]}})
    _validate_points(cfg, expand(cfg), tmp_path / "s.yaml")  # distinct values: fine
    cfg = SweepConfig.model_validate({"name": "sw", "eval": {"suites": ["general/world-facts"]}, "registry": str(tmp_path),
                                      "merge": [{"name": "m", "method": "linear", "adapters": ["a", "b"]}], "sweep": {"merge.weights": [[1, 1], [1.0, 1.0]]}})
    with pytest.raises(ConfigError, match="same configuration"):
        _validate_points(cfg, expand(cfg), tmp_path / "s.yaml")


# ---------------------------------------------------------------- a saved run config re-runs from its folder


def test_saved_run_config_rebases_its_paths(tmp_path, monkeypatch):
    from harness.config import resolve_path
    from harness.pipeline.config import load_run_config, saved_config_text, suite_refs
    from tests.test_trust_templates import write_suite

    src = tmp_path / "project" / "configs"
    src.mkdir(parents=True)
    (src / "data.jsonl").write_text(json.dumps({"instruction": "Say hi.", "response": "Hi."}) + "\n")
    suite = write_suite(src / "suites", {}, rows=[{"q": "2+2?", "choices": ["4", "5"], "gold": 0}])
    (src / "policy.yaml").write_text(yaml.safe_dump({"rules": [{"category": "general", "max_drop": 0.05}]}))
    rel_suite = os.path.relpath(suite, src)
    (src / "run.yaml").write_text(yaml.safe_dump({"name": "r", "data": {"path": "data.jsonl"}, "gate": {"policy": "policy.yaml"},
                                                  "eval": {"suites": [rel_suite, {"suite": rel_suite, "limit": 3}, "general/world-facts"]}}))
    cfg, base = load_run_config(src / "run.yaml", ["eval.batch_size=4"])
    saved = tmp_path / "reports" / "r" / "config.yaml"
    saved.parent.mkdir(parents=True)
    saved.write_text(saved_config_text(cfg, base))
    monkeypatch.chdir(tmp_path / "reports")  # another working folder
    again, base2 = load_run_config(saved)
    assert resolve_path(again.data.path, base2) == (src / "data.jsonl").resolve()
    assert resolve_path(again.gate.policy, base2) == (src / "policy.yaml").resolve()
    refs, limits = suite_refs(again, base2)
    assert refs[:2] == [str(suite.resolve())] * 2 and refs[2] == "general/world-facts" and limits == {str(suite.resolve()): 3}
    assert again.eval.batch_size == 4, "--set overrides are part of what ran"
