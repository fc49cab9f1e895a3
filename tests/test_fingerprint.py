"""One model, one fingerprint: the fingerprint follows what the model does, not how its files were saved.

Issue 18, item 9: the default model converted with HF_HUB_OFFLINE=1 and without
differed only in ``"local_files_only": true/false`` in tokenizer_config.json, and
got two fingerprints. Here the tiny fixture's tokenizer is saved by real
transformers processes online and offline; the fingerprints must agree, old
(legacy) fingerprints must still be recognised, and every real change of
behaviour (vocabulary, special tokens, chat templates, generation defaults)
must still change the fingerprint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import LafError
from harness.models import fingerprint as fp
from harness.models import resolve_model
from tests.conftest import REPO, assert_clean_error, run_cli

SAVE = """
import sys
from pathlib import Path
from transformers import AutoTokenizer
from harness.models.convert import save_tokenizer
src, raw, clean = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(src)
tok.save_pretrained(raw)             # what convert_gguf did before: flags and all
save_tokenizer(tok, Path(clean))     # what it does now
"""


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def model(tiny_model_dir, tmp_path, isolated_cache) -> Path:
    return _copy(tiny_model_dir, tmp_path / "m")


def _fp(folder: Path) -> str:
    return fp.fingerprint_folder(folder)


# ---------------------------------------------------------------- online and offline conversions agree


def test_tokenizer_saved_online_and_offline_gives_one_fingerprint(tiny_model_dir, tmp_path, isolated_cache):
    """Two real processes, HF_HUB_OFFLINE=1 and unset, load and save the fixture's tokenizer into copies of the model."""
    folders = {}
    for mode in ("offline", "online"):
        raw, clean = _copy(tiny_model_dir, tmp_path / f"raw-{mode}"), _copy(tiny_model_dir, tmp_path / f"clean-{mode}")
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env["PYTHONPATH"] = str(REPO)
        if mode == "offline":
            env["HF_HUB_OFFLINE"] = "1"
        p = subprocess.run([sys.executable, "-c", SAVE, str(tiny_model_dir), str(raw), str(clean)], env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        folders[mode] = (raw, clean)
    (raw_off, clean_off), (raw_on, clean_on) = folders["offline"], folders["online"]
    # transformers really writes the loader's flag, and differently: this is the bug the issue measured
    flags_off = json.loads((raw_off / "tokenizer_config.json").read_text())
    flags_on = json.loads((raw_on / "tokenizer_config.json").read_text())
    assert flags_off.get("local_files_only") is True and flags_on.get("local_files_only") is False
    assert fp.fingerprint_folder(raw_off, legacy=True) != fp.fingerprint_folder(raw_on, legacy=True)
    # the fingerprint ignores it ...
    assert _fp(raw_off) == _fp(raw_on) == _fp(clean_off) == _fp(clean_on)
    # ... and the conversion no longer writes it at all
    for folder in (clean_off, clean_on):
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        assert not set(cfg) & fp.TOKENIZER_LOADER_FLAGS, cfg
    assert (clean_off / "tokenizer_config.json").read_bytes() == (clean_on / "tokenizer_config.json").read_bytes()


def test_every_loader_flag_is_ignored(model, tmp_path):
    """save_pretrained copies whatever from_pretrained got into init_kwargs: none of it is behaviour."""
    from transformers import AutoTokenizer

    base = _fp(model)
    flags = {"local_files_only": True, "is_local": False, "name_or_path": "/home/someone/models/x", "_commit_hash": "abc123",
             "cache_dir": "/tmp/hf", "token": "hf_secret", "revision": "main", "gguf_file": "model.gguf", "subfolder": "",
             "trust_remote_code": False, "force_download": True, "proxies": {"http": "p"}}
    tok = AutoTokenizer.from_pretrained(model)
    tok.init_kwargs.update(flags)
    other = _copy(model, tmp_path / "flags")
    tok.save_pretrained(other)
    written = json.loads((other / "tokenizer_config.json").read_text())
    assert {"local_files_only", "gguf_file", "_commit_hash"} <= set(written)  # really written by transformers
    assert _fp(other) == base
    assert fp.scrub_tokenizer_config(other) and _fp(other) == base
    assert not set(json.loads((other / "tokenizer_config.json").read_text())) & fp.TOKENIZER_LOADER_FLAGS


# ---------------------------------------------------------------- what is not behaviour does not count


def test_reformatting_and_moving_the_chat_template_do_not_count(model, tmp_path):
    template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    a = _copy(model, tmp_path / "a")
    (a / "chat_template.jinja").write_text(template)
    b = _copy(model, tmp_path / "b")  # the same template inside tokenizer_config.json
    _edit_json(b / "tokenizer_config.json", lambda c: c.update(chat_template=template))
    c = _copy(a, tmp_path / "c")  # tokenizer.json re-serialised: other indentation, other key order
    tj = json.loads((c / "tokenizer.json").read_text())
    (c / "tokenizer.json").write_text(json.dumps(dict(reversed(list(tj.items()))), indent=4, ensure_ascii=True))
    d = _copy(a, tmp_path / "d")  # generation_config written by another transformers version
    _edit_json(d / "generation_config.json", lambda g: g.update(transformers_version="9.9.9", _from_model_config=False))
    assert _fp(a) == _fp(b) == _fp(c) == _fp(d)
    assert _fp(a) != _fp(model)  # but having a template at all is behaviour


# ---------------------------------------------------------------- what is behaviour does


def _vocab_renamed(folder: Path) -> None:
    def fn(t):
        vocab = t["model"]["vocab"]
        tok = next(k for k in vocab if k.isalpha() and len(k) > 2)
        vocab["zq" + tok] = vocab.pop(tok)
    _edit_json(folder / "tokenizer.json", fn)


BEHAVIOUR_CHANGES = {
    "a vocabulary entry": _vocab_renamed,
    "a merge": lambda f: _edit_json(f / "tokenizer.json", lambda t: t["model"]["merges"].pop()),
    "the normalizer": lambda f: _edit_json(f / "tokenizer.json", lambda t: t.update(normalizer={"type": "Lowercase"})),
    "the post-processor": lambda f: _edit_json(f / "tokenizer.json", lambda t: t.update(post_processor=None)),
    "an added token": lambda f: _edit_json(f / "tokenizer.json", lambda t: t["added_tokens"].append(
        {"id": 512, "content": "<tool>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True})),
    "the eos token": lambda f: _edit_json(f / "tokenizer_config.json", lambda c: c.update(eos_token="<pad>")),
    "a chat template": lambda f: (f / "chat_template.jinja").write_text("{{ messages[0]['content'] }}"),
    "a chat template in the config": lambda f: _edit_json(f / "tokenizer_config.json", lambda c: c.update(chat_template="{{ x }}")),
    "a named chat template": lambda f: ((f / fp.CHAT_TEMPLATE_DIR).mkdir(), (f / fp.CHAT_TEMPLATE_DIR / "tool_use.jinja").write_text("{{ tools }}")),
    "the generation eos": lambda f: _edit_json(f / "generation_config.json", lambda g: g.update(eos_token_id=[1, 3])),
    "a special-tokens map": lambda f: (f / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<unk>"})),
    "a model config value": lambda f: _edit_json(f / "config.json", lambda c: c.update(rms_norm_eps=1e-5)),
}


@pytest.mark.parametrize("what", list(BEHAVIOUR_CHANGES))
def test_a_change_of_behaviour_changes_the_fingerprint(model, tmp_path, what):
    base = _fp(model)
    other = _copy(model, tmp_path / "x")
    BEHAVIOUR_CHANGES[what](other)
    assert _fp(other) != base, what


def test_a_template_change_of_one_character_counts(model, tmp_path):
    a, b = _copy(model, tmp_path / "a"), _copy(model, tmp_path / "b")
    (a / "chat_template.jinja").write_text("{{ messages[0]['content'] }}\n")
    (b / "chat_template.jinja").write_text("{{ messages[0]['content'] }} \n")
    assert _fp(a) != _fp(b)


def test_an_edit_that_restores_size_and_mtime_is_still_seen(model):
    """The hash cache is keyed by ctime and inode too: putting the mtime back does not hide an edit."""
    base = _fp(model)
    w = model / "model.safetensors"
    st = w.stat()
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    with open(w, "r+b") as f:  # in place: same inode, same size
        f.write(bytes(data))
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert w.stat().st_mtime_ns == st.st_mtime_ns and w.stat().st_size == st.st_size
    assert _fp(model) != base


# ---------------------------------------------------------------- legacy fingerprints keep working


def test_aliases_hold_the_current_and_the_legacy_fingerprint(model):
    aliases = fp.fingerprint_aliases(model)
    assert _fp(model) in aliases and fp.fingerprint_folder(model, legacy=True) in aliases
    r = resolve_model(str(model))
    assert r.fingerprint_aliases == aliases
    assert r.is_base_of(r.fingerprint) and r.is_base_of(fp.fingerprint_folder(model, legacy=True))
    assert not r.is_base_of("0" * 64) and not r.is_base_of(None)


def test_legacy_fingerprint_of_the_other_flag_value_is_accepted(model, tmp_path):
    """An adapter trained where the base was converted offline stored the legacy fingerprint of the
    `local_files_only: true` folder; a laptop's `false` folder must still recognise it."""
    offline, online = _copy(model, tmp_path / "off"), _copy(model, tmp_path / "on")
    _edit_json(offline / "tokenizer_config.json", lambda c: c.update(local_files_only=True, is_local=True))
    _edit_json(online / "tokenizer_config.json", lambda c: c.update(local_files_only=False, is_local=True))
    stored_by_ci = fp.fingerprint_folder(offline, legacy=True)
    assert stored_by_ci != fp.fingerprint_folder(online, legacy=True)
    assert stored_by_ci in fp.fingerprint_aliases(online)
    assert resolve_model(str(online)).is_base_of(stored_by_ci)


def test_legacy_fingerprint_of_another_model_is_not_accepted(model, tmp_path):
    other = _copy(model, tmp_path / "other")
    _vocab_renamed(other)
    for stored in (fp.fingerprint_folder(other, legacy=True), _fp(other)):
        assert stored not in fp.fingerprint_aliases(model)


def test_legacy_rule_is_the_rule_fingerprints_were_written_with(model):
    """The legacy form is byte-for-byte the old computation (so registries written before still match)."""
    from harness.io import sha256_file, sha256_json

    cfg = json.loads((model / "config.json").read_text())
    old = sha256_json({
        "config": {k: v for k, v in sorted(cfg.items()) if k not in ("transformers_version", "_name_or_path", "_commit_hash")},
        "files": {p.name: sha256_file(p) for p in sorted(model.iterdir())
                  if p.is_file() and (p.name.endswith(".safetensors") or p.name in fp.TOKENIZER_FILES)},
    })
    assert fp.fingerprint_folder(model, legacy=True) == old


# ---------------------------------------------------------------- hostile model folders: one clear error


@pytest.mark.parametrize("name, text", [
    ("tokenizer_config.json", "{not json"),
    ("tokenizer_config.json", "[1, 2, 3]"),
    ("tokenizer.json", "[" * 200_000 + "]" * 200_000),
    ("config.json", "\xff\xfe garbage"),
    ("generation_config.json", "{\"eos_token_id\": "),
])
def test_unreadable_model_json_is_one_clear_error(model, name, text):
    (model / name).write_text(text, encoding="latin-1")
    with pytest.raises(LafError, match=name.replace(".", r"\.")):
        _fp(model)
    assert_clean_error(run_cli("models", "show", str(model)), name)
