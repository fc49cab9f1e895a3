"""Hostile model folders: one clear error (exit 3) naming the file or key, never a hang, a traceback or a giant build.

D2: every file laf or transformers reads from a model folder is a regular file of bounded size (a FIFO would block
the open for ever, /dev/zero never ends), and a config.json whose sizes make the model enormous is refused before
anything is built. D3: a config.json transformers cannot use (unknown model_type, auto_map without
--trust-remote-code, wrong types, non-finite numbers) is refused naming the key, for ``laf models show`` and for the
resolution / loading path that ``laf train`` and ``laf eval`` share, before any weights load.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import LafError
from harness.models import resolve_model
from tests.conftest import assert_clean_error, run_cli


@pytest.fixture(autouse=True)
def no_hang():
    """A regression (a FIFO opened for reading) fails the test after 60 s instead of hanging the suite."""
    def boom(*_):
        raise TimeoutError("hung on a hostile model folder")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def model(tiny_model_dir, tmp_path, isolated_cache) -> Path:
    dst = tmp_path / "m"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def _edit(folder: Path, **changes) -> Path:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))  # json.dumps writes NaN as NaN, as a hostile file may
    return folder


def _show(folder: Path, *extra: str):
    return run_cli("models", "show", str(folder), "--json", *extra)


def test_the_tiny_model_still_shows(model):
    code, out, err = _show(model)
    assert code == 0, err
    assert json.loads(out)["parameters"] > 0


# ---------------------------------------------------------------- D2: files that hang or never end


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def _zero(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize("name, make, needle", [
    ("additional_chat_templates/x.jinja", _fifo, "FIFO"),
    ("additional_chat_templates/x.jinja", _zero, "device"),
    ("chat_template.jinja", _fifo, "FIFO"),
    ("config.json", _fifo, "FIFO"),
    ("tokenizer.json", _zero, "device"),
    ("generation_config.json", _zero, "device"),
    ("tokenizer_config.json", _fifo, "FIFO"),
    ("model.safetensors", _zero, "device"),
])
def test_a_fifo_or_device_in_the_folder_is_named_not_read(model, name, make, needle):
    if name == "config.json" or name == "tokenizer_config.json":
        (model / name).unlink()
    make(model / name)
    t0 = time.monotonic()
    assert_clean_error(_show(model), Path(name).name, needle, "regular file")
    assert time.monotonic() - t0 < 20


def test_an_oversized_template_is_refused_without_reading_it(model):
    from harness.models.files import MAX_METADATA_BYTES

    big = model / "additional_chat_templates" / "big.jinja"
    big.parent.mkdir()
    with open(big, "wb") as f:  # sparse: no disk used
        f.truncate(MAX_METADATA_BYTES + 1)
    assert_clean_error(_show(model), "big.jinja", "over laf's bound")


def test_a_file_named_by_tokenizer_config_is_checked_too(model):
    path = model / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["vocab_file"] = "/dev/zero"
    path.write_text(json.dumps(cfg))
    assert_clean_error(_show(model), "/dev/zero", "device")
    cfg["vocab_file"] = "/nonexistent/left/by/an/old/save/vocab.json"  # a stale path some hub files carry: harmless
    path.write_text(json.dumps(cfg))
    assert _show(model)[0] == 0


def test_a_fifo_in_the_folder_stops_laf_train_before_the_model_loads(model, tmp_path, monkeypatch):
    _fifo(model / "additional_chat_templates" / "x.jinja")
    code, _, err = _train(tmp_path, model, monkeypatch)
    assert_clean_error((code, "", err), "x.jinja", "FIFO")


# ---------------------------------------------------------------- D2: enormous models refused before any build


@pytest.mark.parametrize("changes, key", [
    ({"num_hidden_layers": 200_000, "layer_types": None}, "num_hidden_layers"),
    ({"num_hidden_layers": 10**6, "layer_types": None}, "num_hidden_layers"),
    ({"vocab_size": 10**9}, "vocab_size"),
    ({"hidden_size": 10**7}, "hidden_size"),
    ({"max_position_embeddings": 10**12}, "max_position_embeddings"),
    # each key within its own bound, together over 10^12 parameters
    ({"hidden_size": 1 << 17, "intermediate_size": 1 << 20, "num_hidden_layers": 64, "layer_types": None}, "hidden_size"),
])
def test_a_config_of_an_enormous_model_is_refused_naming_the_key(model, changes, key):
    _edit(model, **changes)
    t0 = time.monotonic()
    with pytest.raises(LafError, match=key):
        resolve_model(model)
    assert_clean_error(_show(model), "config.json", f"key '{key}'", "bound")
    assert time.monotonic() - t0 < 20


def test_a_nested_text_config_is_bounded_too(model):
    _edit(model, text_config={"num_hidden_layers": 10**6})
    assert_clean_error(_show(model), "text_config.num_hidden_layers", "1,024")


# ---------------------------------------------------------------- D3: hostile config.json values


@pytest.mark.parametrize("changes, key, fragment", [
    ({"hidden_size": "abc"}, "hidden_size", "not a whole number"),
    ({"hidden_size": -5}, "hidden_size", "at least 1"),
    ({"num_attention_heads": 0}, "num_attention_heads", "at least 1"),
    ({"vocab_size": 512.5}, "vocab_size", "not a whole number"),
    ({"num_hidden_layers": True}, "num_hidden_layers", "not a whole number"),
    ({"hidden_size": float("nan")}, "hidden_size", "not a finite number"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps", "not a finite number"),
    ({"rope_parameters": {"full_attention": {"rope_theta": float("inf"), "rope_type": "default"}}},
     "rope_parameters.full_attention.rope_theta", "not a finite number"),
    ({"model_type": 7}, "model_type", "must name the architecture"),
    ({"architectures": {"a": 1}}, "architectures", "not a list"),
    ({"auto_map": "evil.py"}, "auto_map", "not an object"),
])
def test_a_bad_value_is_refused_at_resolution_naming_the_key(model, changes, key, fragment):
    _edit(model, **changes)
    with pytest.raises(LafError, match="config.json"):
        resolve_model(model)
    assert_clean_error(_show(model), "config.json", f"key '{key}'", fragment)


def test_a_non_finite_generation_config_is_refused(model):
    (model / "generation_config.json").write_text('{"temperature": NaN}')
    assert_clean_error(_show(model), "generation_config.json", "temperature", "not a finite number")


def test_an_unknown_model_type_is_named(model):
    _edit(model, model_type="nonexistent_xyz")
    assert_clean_error(_show(model), "config.json", "key 'model_type'", "nonexistent_xyz", "does not know")


def test_a_model_type_that_is_not_a_causal_lm_is_named(model):
    _edit(model, model_type="vit")
    assert_clean_error(_show(model), "key 'model_type'", "not a causal language model")


def test_auto_map_without_trust_remote_code_asks_for_it(model):
    _edit(model, model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
    (model / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    assert_clean_error(_show(model), "key 'auto_map'", "--trust-remote-code")


def test_auto_map_on_an_architecture_transformers_knows_needs_no_remote_code(model):
    """transformers uses its own class then, and runs nothing from the folder: accepted, as transformers accepts it."""
    _edit(model, auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
    (model / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    assert _show(model)[0] == 0


def test_a_type_only_transformers_checks_is_one_error(model):
    _edit(model, rms_norm_eps="abc")
    assert_clean_error(_show(model), "config.json", "rms_norm_eps")


# ---------------------------------------------------------------- D3: laf train / laf eval share the check


def _train(tmp_path: Path, model: Path, monkeypatch):
    import transformers

    def never(*a, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(8)))
    cfg = {"name": "hostile", "model": str(model), "precision": "fp32", "data": {"path": "train.jsonl"}, "max_steps": 1,
           "max_length": 32, "batch_size": 2, "eval_every": 0, "save_every": 0, "lora": {"r": 2},
           "registry": str(tmp_path / "registry"), "output_dir": str(tmp_path / "out")}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run_cli("train", str(path), "--quiet")


def _eval(tmp_path: Path, model: Path, monkeypatch):
    import transformers

    def never(*a, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    folder = tmp_path / "suite"
    folder.mkdir()
    rows = [{"question": f"What is {i}?", "choices": [str(i), str(i + 1)], "gold": 0} for i in range(4)]
    (folder / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{gold}}", "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    (folder / "e.yaml").write_text(yaml.safe_dump({"category": "general", "data": {"path": "e.jsonl"}, "task": task}))
    return run_cli("eval", "--model", str(model), "--suite", str(folder / "e.yaml"), "--out", str(tmp_path / "eval-out"),
                   "--cache", str(tmp_path / "c.sqlite"), "--quiet")


@pytest.mark.parametrize("changes, needles", [
    ({"model_type": "nonexistent_xyz"}, ("key 'model_type'", "nonexistent_xyz")),
    ({"hidden_size": "abc"}, ("key 'hidden_size'",)),
    ({"num_hidden_layers": 200_000, "layer_types": None}, ("key 'num_hidden_layers'",)),
    ({"model_type": "evil", "auto_map": {"AutoConfig": "e.C", "AutoModelForCausalLM": "e.M"}}, ("key 'auto_map'", "--trust-remote-code")),
])
@pytest.mark.parametrize("command", ["train", "eval"])
def test_train_and_eval_refuse_a_hostile_config_before_the_model_loads(model, tmp_path, monkeypatch, changes, needles, command):
    _edit(model, **changes)
    result = (_train if command == "train" else _eval)(tmp_path, model, monkeypatch)
    assert_clean_error(result, "config.json", *needles)
