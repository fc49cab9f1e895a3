"""Hostile training inputs that used to be found late or not at all: a YAML yes/no where a number goes, an
output_dir inside the registry or holding someone else's files, a registry that cannot be written, a damaged or
missing init_from adapter and a missing replay file: each is one error before the model loads, nothing written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.config import validate
from harness.errors import LafError
from harness.train import train
from harness.train.config import TrainConfig


def _rows(path: Path) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Say {i}.", "completion": f" {i} {i}"}) + "\n" for i in range(12)))
    return path


def _config(tmp_path: Path, model: Path, **over) -> TrainConfig:
    raw = {"name": "atk", "model": str(model), "precision": "fp32", "data": {"path": str(_rows(tmp_path / "d.jsonl"))}, "max_length": 32,
           "max_steps": 1, "eval_every": 0, "save_every": 0, "registry": str(tmp_path / "registry"), "output_dir": str(tmp_path / "run"), **over}
    return validate(TrainConfig, raw, "t.yaml")


@pytest.mark.parametrize("key, value", [("optim", {"lr": True}), ("lora", {"r": True}), ("lora", {"alpha": True}), ("batch_size", True),
                                        ("max_steps", True), ("preserve", {"kl": {"weight": True}})])
def test_a_yes_no_where_a_number_goes_is_refused(tmp_path, key, value):
    with pytest.raises(LafError, match="expected a number, got a yes/no value"):
        validate(TrainConfig, {"name": "x", "model": "default", "data": {"path": "d.jsonl"}, key: value}, "t.yaml")


def test_merge_weights_and_booleans_that_are_settings_still_read(tmp_path):
    cfg = validate(TrainConfig, {"name": "x", "model": "default", "data": {"path": "d.jsonl"}, "gradient_checkpointing": True, "optim": {"lr": 1e-4}},
                   "t.yaml")
    assert cfg.gradient_checkpointing is True and cfg.optim.lr == 1e-4


def _refused_fast(cfg, *needles):
    t0 = time.perf_counter()
    with pytest.raises(LafError) as e:
        train(cfg)
    assert all(n in str(e.value) for n in needles), str(e.value)
    assert time.perf_counter() - t0 < 5, "the check must come before the model loads"


def test_output_dir_inside_the_registry_is_refused_and_nothing_is_written(tiny_model_dir, tmp_path):
    version = tmp_path / "registry" / "victim" / "1"
    version.mkdir(parents=True)
    (version / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    _refused_fast(_config(tmp_path, tiny_model_dir, output_dir=str(version)), "is inside the registry")
    assert sorted(p.name for p in version.iterdir()) == ["metrics.jsonl"]  # no lock file, no reset curve
    assert (version / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'


def test_output_dir_holding_files_laf_did_not_write_is_refused(tiny_model_dir, tmp_path):
    out = tmp_path / "userdir"
    (out / "snapshots").mkdir(parents=True)
    (out / "snapshots" / "thesis.txt").write_text("precious")
    _refused_fast(_config(tmp_path, tiny_model_dir, output_dir=str(out)), "holds files laf did not write", "snapshots/thesis.txt")
    assert (out / "snapshots" / "thesis.txt").read_text() == "precious"
    (out / "snapshots" / "thesis.txt").unlink()
    (out / "notes.md").write_text("mine")
    _refused_fast(_config(tmp_path, tiny_model_dir, output_dir=str(out)), "notes.md")


def test_a_registry_that_cannot_be_created_is_found_before_training(tiny_model_dir, tmp_path):
    (tmp_path / "afile").write_text("")
    _refused_fast(_config(tmp_path, tiny_model_dir, registry=str(tmp_path / "afile")), "is a file, not a folder")
    assert not (tmp_path / "run").exists()


def test_a_damaged_or_missing_init_from_and_a_missing_replay_file_are_found_before_the_model_loads(tiny_model_dir, tmp_path):
    first = train(_config(tmp_path, tiny_model_dir, output_dir=str(tmp_path / "first"))).entry
    (first.path / "adapter_config.json").write_text("not json {")
    _refused_fast(_config(tmp_path, tiny_model_dir, init_from="atk@1", output_dir=str(tmp_path / "second")), "does not match its manifest",
                  "laf registry verify atk@1")
    _refused_fast(_config(tmp_path, tiny_model_dir, init_from="nosuch@1", output_dir=str(tmp_path / "third")), "no adapter named 'nosuch'")
    _refused_fast(_config(tmp_path, tiny_model_dir, output_dir=str(tmp_path / "fourth"),
                          preserve={"replay": {"source": str(tmp_path / "nothere.txt"), "ratio": 0.25}}), "nothere.txt")


def test_a_record_naming_a_key_twice_is_a_problem_not_a_silent_last_wins(tmp_path):
    from harness.data.formats import read_examples

    p = tmp_path / "dup.jsonl"
    p.write_text('{"instruction": "a", "instruction": "b", "output": "c"}\n{"instruction": "x", "output": "y"}\n')
    read = read_examples(p, strict=False)
    assert len(read.examples) == 1 and read.examples[0].line == 2
    assert [(pr.line, "appears twice" in pr.message) for pr in read.problems] == [(1, True)]
    with pytest.raises(LafError, match="line 1.*appears twice"):
        read_examples(p, strict=True)
    j = tmp_path / "dup.json"
    j.write_text('[{"instruction": "a", "output": "c", "output": "d"}]')
    with pytest.raises(LafError, match="appears twice"):
        read_examples(j, strict=False)


@pytest.mark.parametrize("over", [{"weights": [True, False]}, {"lambda": True}, {"output": {"rank": True}}])
def test_a_yes_no_in_a_merge_config_is_refused(over):
    from harness.merge.config import MergeConfig

    with pytest.raises(LafError, match="expected a number, got a yes/no value"):
        validate(MergeConfig, {"name": "m", "method": "linear", "adapters": ["a@1", "b@1"], **over}, "m.yaml")


def test_a_sweep_points_own_selection_folder_is_not_foreign(tiny_model_dir, tmp_path):
    """Review finding: a sweep point with select: keeps its selection in points/NAME/select; retraining the point
    must not take that folder for someone else's files."""
    from harness.train.loop import check_outputs

    out = tmp_path / "points" / "p1"
    (out / "select" / "registry").mkdir(parents=True)
    (out / "snapshots" / "step-000002").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("")
    cfg = _config(tmp_path, tiny_model_dir, output_dir=str(out))
    check_outputs(cfg, out)  # no error
