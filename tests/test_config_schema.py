"""One config schema: training settings typed under a run config's train:, the trainer's config built in one place
(lora.r walks YAML -> typed run config -> attach_lora as objects), identity keys under train: refused, files of the
wrong shape named with their command, one --set rule for train, run and sweep, `laf config schema`, and the stage
fingerprints of the example configs unchanged by all of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.config_schema import KINDS, RUN_STAGE_KEYS, TRAIN_SETTING_KEYS, detect_kind
from harness.pipeline.config import RunConfig, load_run_config
from harness.train.config import IDENTITY_KEYS, LoraSettings, TrainConfig, TrainSettings
from tests.conftest import REPO, assert_clean_error, run_cli

SUITES = [{"suite": "domain/tempo-t4", "limit": 8}]


def _run_config(tmp_path: Path, model: Path | str = "default", name: str = "walk", **over) -> Path:
    rows = (REPO / "examples" / "quickstart" / "train.jsonl").read_text().splitlines()[:24]
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    cfg = {"name": name, "model": str(model), "precision": "fp32", "data": {"path": "train.jsonl", "eval_fraction": 0.0},
           "train": {"max_length": 64, "batch_size": 4, "max_steps": 1, "eval_every": 0, "save_every": 0, "lora": {"r": 16, "alpha": 32}},
           "eval": {"suites": SUITES, "cache": str(tmp_path / "cache.sqlite")},
           "registry": str(tmp_path / "registry"), "out_root": str(tmp_path / "reports")}
    cfg.update(over)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _flat(tmp_path: Path, **over) -> Path:
    cfg = {"name": "flat", "model": "default", "data": {"path": "train.jsonl"}, "max_steps": 1, "lora": {"r": 4}, **over}
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# -- lora.r: YAML -> typed run config -> trainer config -> attach_lora, objects all the way


def test_lora_r_walks_from_yaml_to_attach_lora_as_objects(tiny_model_dir, tmp_path, monkeypatch):
    import harness.train.loop as loop
    from harness.pipeline.stages import RunContext, train_plan
    from harness.pipeline.state import RunState, StageLog
    from harness.train import train

    cfg, base = load_run_config(_run_config(tmp_path, tiny_model_dir))
    assert isinstance(cfg.train, TrainSettings) and isinstance(cfg.train.lora, LoraSettings) and cfg.train.lora.r == 16
    run_dir = tmp_path / "reports" / "walk"
    ctx = RunContext(cfg, base, run_dir, RunState(run_dir), StageLog(), "base-fp", lambda m: None)
    job = train_plan(ctx, tmp_path / "train.jsonl")
    assert isinstance(job.tcfg, TrainConfig) and job.tcfg.lora is cfg.train.lora, "the trainer's config carries the run config's object"

    seen = {}
    real = loop.attach_lora

    class Attached(Exception):
        pass

    def spy(model, lora, **kw):
        seen["lora"], seen["peft"] = lora, real(model, lora, **kw)
        raise Attached  # the walk ends here: no training step is needed to see what attach_lora got

    monkeypatch.setattr(loop, "attach_lora", spy)
    with pytest.raises(Attached):
        train(job.tcfg, config_dir=base)
    assert seen["lora"] is cfg.train.lora and seen["lora"].r == 16
    peft_cfg = seen["peft"].peft_config["default"]
    assert peft_cfg.r == 16 and peft_cfg.lora_alpha == 32


def test_the_trainer_config_is_built_in_one_place_and_checks_both_halves():
    settings = TrainSettings.model_validate({"method": "full", "lora": {"r": 4}})
    with pytest.raises(ValueError, match="method: full trains every weight"):
        TrainConfig.build(settings, name="x", data={"path": "d.jsonl"}, precision="nf4")  # type: ignore[arg-type]
    built = TrainConfig.build(settings, name="x", data={"path": "d.jsonl"}, precision="fp32")  # type: ignore[arg-type]
    assert built.method == "full" and built.lora is settings.lora and built.precision == "fp32"
    # a flat training file and the run config of the same settings make the same trainer config
    flat = TrainConfig.model_validate({"name": "x", "precision": "fp32", "data": {"path": "d.jsonl"}, "method": "full", "lora": {"r": 4}})
    assert flat.math_dict() == built.math_dict()


# -- identity keys under train:


@pytest.mark.parametrize("key,value", [("model", "other"), ("registry", "elsewhere"), ("output_dir", "out"), ("data", {"path": "x.jsonl"})])
def test_an_identity_key_under_train_is_one_error_naming_where_it_goes(tmp_path, key, value):
    path = _run_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["train"][key] = value
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli("run", str(path), "--quiet")
    assert_clean_error((code, out, err), f"{key} is the run's identity", f"write {key}: at the top level of the run config")
    assert err.count("is the run's identity") == 1 and "1 problem(s)" in err
    assert not (tmp_path / "reports" / "walk").exists(), "nothing started"
    with pytest.raises(ValueError, match="identity"):
        TrainSettings.model_validate({key: value})
    assert set(IDENTITY_KEYS) == set(TrainConfig.model_fields) - set(TrainSettings.model_fields)


# -- files of the wrong shape


def test_a_training_file_given_to_run_names_laf_train_and_the_nesting(tmp_path):
    code, out, err = run_cli("run", str(REPO / "examples" / "quickstart-small.yaml"))
    assert_clean_error((code, out, err), "is a training file", "laf train", "under train:", "eval:")
    assert err.count("out_root") == 1, "the run config's keys are listed once"
    assert "unknown key" not in err


def test_other_shapes_name_their_command(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())["gate"]["policy"]))
    assert_clean_error(run_cli("train", str(policy)), "is a gate policy", "laf gate --policy")
    assert_clean_error(run_cli("run", str(policy)), "is a gate policy", "gate.policy")
    assert_clean_error(run_cli("train", str(REPO / "examples" / "sweep-rank.yaml")), "is a sweep config", "laf sweep")
    assert_clean_error(run_cli("run", str(REPO / "examples" / "sweep-rank.yaml")), "is a sweep config", "laf sweep")
    merge = tmp_path / "merge.yaml"
    merge.write_text(yaml.safe_dump({"name": "m", "method": "linear", "adapters": ["a@1", "b@1"]}))
    assert_clean_error(run_cli("run", str(merge)), "is a merge config", "laf merge", "under merge:")
    # a run config where a policy is wanted: where its policy is
    code, out, err = run_cli("gate", "--baseline", str(tmp_path / "b"), "--candidate", str(tmp_path / "c"),
                             "--policy", str(REPO / "examples" / "quickstart.yaml"))
    assert_clean_error((code, out, err), "is a run config", "gate.policy")
    assert [detect_kind(yaml.safe_load(p.read_text())) for p in sorted((REPO / "examples").glob("*.yaml"))] == \
        ["run", "run", "run", "sweep", "sweep", "train", "run", "sweep"]


def test_training_settings_at_the_top_of_a_run_config_name_the_nesting(tmp_path):
    path = _run_config(tmp_path, max_steps=3, lora={"r": 2})
    code, out, err = run_cli("run", str(path))
    assert_clean_error((code, out, err), "train.lora", "train.max_steps", "under a train: block")
    assert err.count("out_root") == 1


def test_unknown_keys_list_the_allowed_keys_once(tmp_path):
    path = _run_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg.update(evals=1, curates=2, gates=3, out_roots=4)
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli("run", str(path))
    assert_clean_error((code, out, err), "key 'evals': unknown key", "key 'gates': unknown key", "key 'out_roots': unknown key")
    assert err.count("allowed:") == 1 and err.count("diversity") == 1


def test_a_file_that_is_not_a_mapping_or_is_hostile_is_one_error(tmp_path):
    p = tmp_path / "x.yaml"
    for text, needle in (("- a\n- b\n", "mapping"), ("name: x\ntrain: {lora: {r: .nan}}\n", "finite"),
                         ("name: x\n" + "train:\n  lora: {r: 8}\n" * 2, "duplicate key"), ("a: " + "x" * (1 << 21), "larger than")):
        p.write_text(text)
        for cmd in ("train", "run", "sweep"):
            assert_clean_error(run_cli(cmd, str(p)), needle)
    p.write_text("name: x\ndata: {path: d.jsonl}\neval: {suites: [domain/tempo-t4]}\ntrain: {lora: {r: [1, 2]}}\n")
    assert_clean_error(run_cli("train", str(p)), "train.lora.r")


# -- --set: one rule for train, run and sweep


def test_set_lora_r_is_accepted_by_train_and_run_alike(tmp_path):
    from harness.cli.train import load_train_config
    from harness.sweep.config import load_sweep_config

    run = _run_config(tmp_path)
    flat = _flat(tmp_path)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({**yaml.safe_load(run.read_text()), "sweep": {"train.optim.lr": [1e-3, 2e-3]}}))
    for spelling in ("lora.r=12", "train.lora.r=12"):
        assert load_run_config(run, [spelling])[0].train.lora.r == 12
        assert load_train_config(str(flat), [spelling]).lora.r == 12
        assert load_sweep_config(sweep, [spelling])[0].train.lora.r == 12
    # identity and stage keys keep their own top-level paths
    cfg, _ = load_run_config(run, ["name=other", "eval.batch_size=2", "data.eval_fraction=0.1"])
    assert (cfg.name, cfg.eval.batch_size, cfg.data.eval_fraction) == ("other", 2, 0.1) if cfg.data else False
    # through the CLI: a bad value is named by the path in the file, the same for both commands
    for cmd, path in (("run", run), ("train", run)):
        assert_clean_error(run_cli(cmd, str(path), "--set", "lora.r=0"), "train.lora.r")
        assert_clean_error(run_cli(cmd, str(path), "--set", "train.lora.r=nan"), "train.lora.r")
    assert_clean_error(run_cli("train", str(flat), "--set", "lora.r=0"), "lora.r")
    assert_clean_error(run_cli("sweep", str(sweep), "--set", "lora.r=0"), "train.lora.r")


def test_sweep_axes_come_from_the_model_fields(tmp_path):
    from harness.sweep.config import NOT_AXES, TRAIN_AXES, setting_paths

    paths = setting_paths(TrainSettings)
    assert {"lora.r", "optim.lr", "optim.eps", "preserve.replay.temperature", "preference.simpo_gamma"} <= set(TRAIN_AXES)
    assert set(TRAIN_AXES) == (set(paths) - NOT_AXES) | {"data.limit"}
    assert TRAIN_AXES["lora.r"] == "r" and TRAIN_AXES["optim.eps"] == "optim_eps"
    run = yaml.safe_load(_run_config(tmp_path).read_text())
    sweep = tmp_path / "sweep.yaml"
    for axes, needle in (({"lora.rank": [2]}, "unknown axis 'lora.rank'"), ({"train.eval_every": [1, 2]}, "unknown axis 'train.eval_every'"),
                         ({"model": ["a", "b"]}, "unknown axis 'model'")):
        sweep.write_text(yaml.safe_dump({**run, "sweep": axes}))
        code, out, err = run_cli("sweep", str(sweep))
        assert_clean_error((code, out, err), needle, "lora.r", "optim.eps")
        assert err.count("optim.eps") == 1


# -- laf config schema


@pytest.mark.parametrize("kind", list(KINDS))
def test_config_schema_is_valid_json_schema(kind):
    code, out, err = run_cli("config", "schema", kind)
    assert code == 0, err
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema" and schema["type"] == "object"
    assert schema["additionalProperties"] is False, "unknown keys are refused, as the loader does"


def _schema(kind: str) -> jsonschema.Draft202012Validator:
    code, out, _ = run_cli("config", "schema", kind)
    assert code == 0
    return jsonschema.Draft202012Validator(json.loads(out))


def test_example_configs_validate_against_their_schema():
    for name in ("quickstart.yaml", "compare.yaml", "quickstart-dpo.yaml", "quickstart-orpo.yaml", "quickstart-small.yaml", "sweep-rank.yaml"):
        doc = yaml.safe_load((REPO / "examples" / name).read_text())
        kind = detect_kind(doc)
        assert kind is not None
        errors = [e.message for e in _schema(kind).iter_errors(doc)]
        assert errors == [], (name, errors)
    dpo = yaml.safe_load((REPO / "examples" / "quickstart-dpo.yaml").read_text())
    assert not list(_schema("merge").iter_errors(dpo["merge"][0]))
    assert not list(_schema("policy").iter_errors(dpo["gate"]["policy"]))
    # and what the models refuse, the schema refuses
    run = _schema("run")
    quick = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    for bad in ({**quick, "train": {**quick["train"], "lora": {"r": 0}}}, {**quick, "train": {**quick["train"], "model": "x"}},
                {**quick, "max_steps": 3}, {k: v for k, v in quick.items() if k != "eval"}):
        assert list(run.iter_errors(bad)), bad


def test_the_shape_key_sets_match_the_models():
    assert TRAIN_SETTING_KEYS == set(TrainSettings.model_fields)
    assert RUN_STAGE_KEYS <= set(RunConfig.model_fields) and not RUN_STAGE_KEYS & set(TrainConfig.model_fields)
    assert not TRAIN_SETTING_KEYS & set(RunConfig.model_fields), "a short --set path must mean one thing"


# -- stage fingerprints of an unchanged config


# train_plan's fingerprints of the example configs as the code before the typed run config computed them (data: the
# repository's examples/quickstart/train.jsonl, base fingerprint "base-fp"). A change here retrains every user's
# adapter on their next `laf run`: keep them byte-identical.
FINGERPRINTS = {
    "quickstart.yaml": "937278e5ad9b30e0d401a62a4d24297c8b4c2bac7390e3c56ade536e2297f6b5",
    "quickstart-dpo.yaml": "5e764fcc271da2ed116ba25b7b92b946ecae3c9f5d097bf0b7f7b812f26a8eb8",
    "quickstart-orpo.yaml": "8225e0008fc4b7a1c1629e3e71a4c39640e93d046df1b9d4aa841f3fbd340333",
    "sweep-rank.yaml:sweep-rank-r2": "9e3bab637e22bd425b66fc8c3038b3e61820a7f46fb23a4f0ec0db1ab5f39937",
    "sweep-rank.yaml:sweep-rank-r32": "c46aed63818b866f4e6e9af4ca4ce7d3d16fb0b3ec8ba450d827ff9cd75bee3a",
    "quickstart-preserve.yaml:quickstart-preserve-rp0-kl0": "30f192a43097079d2dd1565e1d438404e39c78f904cdabd39ae907398ab5481e",  # compute_dtype: bf16 since stop 36, lora.dropout 0 since stop 37
    "quickstart-preserve.yaml:quickstart-preserve-rp0.5-kl0.3": "35a0c5213351e36ada4c422352892c1b4ec7e72583d6e6a58c67ef5dbd63218c",
}
MERGE_CONFIG_SHA = "3f84a1a0f447acf60694574abd62bdf44d586af12683f3b566a5ebefa9189ad8"  # quickstart-dpo's merge entry, as merge_stage hashes it


def test_stage_fingerprints_of_the_example_configs_are_unchanged(tmp_path):
    from harness.io import sha256_json
    from harness.pipeline.stages import RunContext, train_plan
    from harness.pipeline.state import RunState, StageLog
    from harness.sweep import _validate_points
    from harness.sweep.config import expand, load_sweep_config

    data = REPO / "examples" / "quickstart" / "train.jsonl"

    def plan(cfg, base, key):
        run_dir = tmp_path / key.replace(":", "_")
        # an empty registry of its own: quickstart-dpo's `init_from: quickstart@latest` adds the digest of a registered
        # SFT adapter to its plan, so the checkout's adapters_registry/ (after `make demo`) must not decide this test
        cfg = cfg.model_copy(update={"registry": str(tmp_path / "empty-registry")})
        ctx = RunContext(cfg, base, run_dir, RunState(run_dir), StageLog(), "base-fp", lambda m: None)
        return train_plan(ctx, data, key=key).fingerprint

    got = {}
    for name in ("quickstart.yaml", "quickstart-dpo.yaml", "quickstart-orpo.yaml"):
        cfg, base = load_run_config(REPO / "examples" / name)
        got[name] = plan(cfg, base, "train")
    for name in ("sweep-rank.yaml", "quickstart-preserve.yaml"):
        cfg, base = load_sweep_config(REPO / "examples" / name)
        points = expand(cfg)
        _validate_points(cfg, points, REPO / "examples" / name)
        for p in points:
            if f"{name}:{p.name}" in FINGERPRINTS:
                got[f"{name}:{p.name}"] = plan(cfg.model_copy(update={"name": p.name, "train": p.settings}), base, f"train:{p.name}")
    assert got == FINGERPRINTS
    cfg, _ = load_run_config(REPO / "examples" / "quickstart-dpo.yaml")
    assert sha256_json(cfg.merge_configs()[0].model_dump(mode="json", by_alias=True)) == MERGE_CONFIG_SHA


def test_saved_config_round_trips_with_the_same_fingerprint(tmp_path):
    from harness.pipeline.config import saved_config_text

    for name in ("quickstart.yaml", "quickstart-dpo.yaml"):
        cfg, base = load_run_config(REPO / "examples" / name)
        saved = tmp_path / name
        saved.write_text(saved_config_text(cfg, base))
        again, _ = load_run_config(saved)
        tc = cfg.train_config(cfg.data)
        assert again.train_config(again.data).math_dict() | {"data": None} == tc.math_dict() | {"data": None}  # as train_plan hashes it
        assert again.data is not None and Path(again.data.path) == (base / cfg.data.path).resolve()
        assert [m.model_dump() for m in again.merge_configs()] == [m.model_dump() for m in cfg.merge_configs()]


# -- laf train with a run config


def test_laf_train_runs_the_curate_and_train_stages_of_a_run_config(tiny_model_dir, tmp_path):
    from harness.pipeline import run_train_stages

    path = _run_config(tmp_path, tiny_model_dir)
    code, out, err = run_cli("train", str(path), "--set", "lora.r=8", "--json", "--quiet")
    assert code == 0, err
    man = json.loads(out)
    assert man["config"]["lora"]["r"] == 8 and man["config"]["name"] == "walk"
    assert "flat training file" not in err
    state = json.loads((tmp_path / "reports" / "walk" / "state.json").read_text())
    assert {"curate", "train"} <= set(state["stages"]) and state["stages"]["train"]["adapter"] == "walk@1"
    again = run_train_stages(path, ["train.lora.r=8"])  # the same inputs: nothing runs, as `laf run` would find it
    assert again["stages_ran"] == [] and again["stages_skipped"] == ["curate", "train"] and again["adapter"] == "walk@1"
    # a flat training file still trains, with one line saying how to nest it
    flat = _flat(tmp_path, model=str(tiny_model_dir), precision="fp32", max_length=64, batch_size=4, eval_every=0, save_every=0,
                 registry=str(tmp_path / "registry"), output_dir=str(tmp_path / "flat-out"))
    code, out, err = run_cli("train", str(flat), "--json", "--quiet")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "flat training file" in line]
    assert len(notes) == 1 and "under train:" in notes[0]
    assert json.loads(out)["config"]["lora"]["r"] == 4
    shutil.rmtree(tmp_path / "reports")
