"""Model layer: resolution, fingerprints, loading, the NF4 gradient guard, and every bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.models import LoadSpec, load_model, resolve_model
from harness.models import fingerprint as fp
from tests.conftest import REPO, assert_clean_error, run_cli


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- resolution


def test_folder_resolves_and_fingerprint_is_stable(tiny_model_dir, isolated_cache):
    r = resolve_model(str(tiny_model_dir))
    assert r.kind == "folder" and r.path == tiny_model_dir.resolve()
    assert len(r.fingerprint) == 64
    assert resolve_model(str(tiny_model_dir)).fingerprint == r.fingerprint
    assert r.parameter_count == 107_200


def test_fingerprint_tracks_weights_config_and_tokenizer(tiny_model_dir, tmp_path, isolated_cache):
    base = resolve_model(str(tiny_model_dir)).fingerprint
    # weights
    a = _copy(tiny_model_dir, tmp_path / "a")
    w = a / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    assert resolve_model(str(a)).fingerprint != base
    # config
    b = _copy(tiny_model_dir, tmp_path / "b")
    cfg = json.loads((b / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (b / "config.json").write_text(json.dumps(cfg))
    assert resolve_model(str(b)).fingerprint != base
    # tokenizer
    c = _copy(tiny_model_dir, tmp_path / "c")
    tc = json.loads((c / "tokenizer_config.json").read_text())
    tc["model_max_length"] = 77
    (c / "tokenizer_config.json").write_text(json.dumps(tc))
    assert resolve_model(str(c)).fingerprint != base
    # volatile config keys and reformatting do not count
    d = _copy(tiny_model_dir, tmp_path / "d")
    cfg = json.loads((d / "config.json").read_text())
    cfg["transformers_version"] = "0.0.1"
    (d / "config.json").write_text(json.dumps(cfg, indent=7))
    assert resolve_model(str(d)).fingerprint == base


def test_file_hashes_are_cached_by_path_size_mtime(tiny_model_dir, tmp_path, isolated_cache, monkeypatch):
    a = _copy(tiny_model_dir, tmp_path / "a")
    calls = []
    real, real_canon = fp.sha256_file, fp._canonical_json_digest
    monkeypatch.setattr(fp, "sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    monkeypatch.setattr(fp, "_canonical_json_digest", lambda p: calls.append(Path(p).name) or real_canon(p))
    fp.fingerprint_folder(a)
    first = len(calls)
    assert first >= 2 and {"model.safetensors", "tokenizer.json"} <= set(calls)
    fp.fingerprint_folder(a)
    assert len(calls) == first, "unchanged files must not be re-hashed"
    w = a / "model.safetensors"
    os.utime(w, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    fp.fingerprint_folder(a)
    assert calls[first:] == ["model.safetensors"]


# ---------------------------------------------------------------- bad input (CLI: exit 3, one message, no traceback)


def _assert_clean_error(code, out, err, *needles):
    assert_clean_error((code, out, err), *needles)
    assert "Traceback" not in out and "error:" in err and "fix:" in err


def test_missing_path(tmp_path):
    _assert_clean_error(*run_cli("models", "show", str(tmp_path / "nope")), "not found")


def test_folder_without_config(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"x")
    _assert_clean_error(*run_cli("models", "show", str(tmp_path / "m")), "no config.json")


def test_pickle_checkpoint_refused_unless_allowed(tiny_model_dir, tmp_path, isolated_cache):
    from safetensors.torch import load_file

    p = _copy(tiny_model_dir, tmp_path / "pickle")
    state = load_file(p / "model.safetensors")
    (p / "model.safetensors").unlink()
    torch.save(state, p / "pytorch_model.bin")
    _assert_clean_error(*run_cli("models", "show", str(p)), "pickle", "--allow-pickle")
    code, out, err = run_cli("models", "show", str(p), "--allow-pickle", "--json")
    assert code == 0, err
    assert json.loads(out)["weights"] == ["pytorch_model.bin"]


def test_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_clean_error(*run_cli("models", "show", "some-org/some-model"), "offline", "local")


def test_truncated_gguf(tmp_path, isolated_cache):
    from harness.models.convert import default_gguf

    src, _ = default_gguf()
    bad = tmp_path / "broken.gguf"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(1 << 20))
    _assert_clean_error(*run_cli("models", "show", str(bad)), "truncated or corrupted")
    leftovers = list((isolated_cache / "models").iterdir())
    assert all(p.suffix == ".lock" for p in leftovers), leftovers


def test_gguf_conversion_parses_the_file_once_and_equals_plain_transformers(tmp_path, monkeypatch):
    """The shared parse (``convert._one_gguf_parse``) is a speed-up only: on a tiny gemma3 GGUF written from scratch,
    the converted folder holds exactly the weights and tokenizer plain transformers loads, and the file was parsed
    once instead of three times (config, weights, tokenizer)."""
    import gguf
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.convert import convert_gguf
    from tests.tiny_gguf import write_tiny_gguf

    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    made: list[str] = []
    orig = gguf.GGUFReader

    def counting(path, *a, **k):
        made.append(os.fspath(path))
        return orig(path, *a, **k)

    monkeypatch.setattr(gguf, "GGUFReader", counting)
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=src.name, dtype=torch.float32)
    plain_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=src.name)
    assert len(made) == 3  # what the shared parse saves: transformers reads the file once per object
    made.clear()
    out = convert_gguf(src, tmp_path / "converted")
    assert made == [str(src)]
    assert gguf.GGUFReader is counting  # restored after the conversion
    ours = load_file(str(out / "model.safetensors"))
    ref = plain.state_dict()
    assert ours.keys() <= ref.keys() and len(ours) >= 20
    for k, v in ours.items():
        assert torch.equal(v, ref[k]), k
    tok = AutoTokenizer.from_pretrained(str(out))
    text = "the manual tempo er an"
    assert tok(text).input_ids == plain_tok(text).input_ids and len(tok) == len(plain_tok)


def test_gguf_sha_mismatch(tmp_path, isolated_cache):
    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    (tmp_path / "m.gguf.sha256").write_text("ab" * 32 + "  m.gguf\n")
    _assert_clean_error(*run_cli("models", "show", str(bad)), "sha256")
    assert not any((isolated_cache / "models").glob("gguf-*"))


def test_unwritable_cache_dir(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("LAF_CACHE", str(ro / "cache"))
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a file instead
            f = tmp_path / "afile"
            f.write_text("")
            monkeypatch.setenv("LAF_CACHE", str(f / "cache"))
        _assert_clean_error(*run_cli("models", "show", "default"), "not writable", "LAF_CACHE")
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------- loading and the NF4 gradient guard


@pytest.mark.parametrize("precision", ["fp32", "bf16", "nf4"])
def test_load_precisions(tiny_model_dir, precision, isolated_cache):
    model, tok, spec = load_model(resolve_model(str(tiny_model_dir)), LoadSpec(precision=precision))
    assert spec.device == "cpu" and spec.precision == precision
    ids = tok(["hello world"], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    if precision == "nf4":
        import bitsandbytes as bnb

        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and all(m.support_avx512bf16_for_cpu is False for m in layers)


def _lora_grads(model, ids, seed=0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    return peft_model


def _train_grads(peft_model, ids):
    peft_model.train()
    peft_model.zero_grad()
    out = peft_model(input_ids=ids, labels=ids)
    out.loss.backward()
    return {n: p.grad.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("fix", [True, pytest.param(False, marks=pytest.mark.filterwarnings(
    "ignore:.*an autograd kernel was not registered:UserWarning"))])  # the unfixed case backprops through the repacked kernel on purpose: that is the bug
@pytest.mark.parametrize("compute", ["fp32", "bf16"])
def test_nf4_gradients_after_eval_pass_match_fresh_model(tiny_model_dir, isolated_cache, fix, compute):
    """The guide's bitsandbytes bug: an eval forward must not corrupt later LoRA gradients (with either NF4 compute
    dtype: bf16 is what the preserve example trains with on CPU)."""
    from bitsandbytes.functional import has_avx512bf16

    if not fix and not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: the repack bug cannot show here")
    resolved = resolve_model(str(tiny_model_dir))
    ids = torch.randint(4, 500, (2, 24), generator=torch.Generator().manual_seed(1))

    fresh, _, _ = load_model(resolved, LoadSpec(precision="nf4", compute_dtype=compute))
    ref = _train_grads(_lora_grads(fresh, ids), ids)

    evald, _, _ = load_model(resolved, LoadSpec(precision="nf4", compute_dtype=compute))
    if not fix:
        import bitsandbytes as bnb

        for m in evald.modules():
            if isinstance(m, bnb.nn.Linear4bit):
                m.support_avx512bf16_for_cpu = True
    peft_model = _lora_grads(evald, ids)
    peft_model.eval()
    with torch.no_grad():
        peft_model(input_ids=ids)
    got = _train_grads(peft_model, ids)
    worst = max(((got[n] - ref[n]).norm() / ref[n].norm().clamp_min(1e-12)).item() for n in ref)
    if fix:
        assert worst < 1e-4, f"LoRA gradients after an eval pass differ from a fresh model's (rel err {worst:.3g})"
    else:  # documents that the guard matters on this CPU
        assert worst > 1e-2


def test_nf4_bf16_compute_gradients_agree_with_fp32_compute(tiny_model_dir, isolated_cache):
    """NF4 with bf16 compute (the CPU's AMX path) trains the same LoRA as fp32 compute, to bf16's precision: the
    same quantised weights, only the compute dtype differs. Through our trainer's loss, as training uses it."""
    from harness.train.batching import Batch
    from harness.train.lora import keep_frozen_embeddings_in
    from harness.train.loss import supervised_loss_sum

    resolved = resolve_model(str(tiny_model_dir))
    ids = torch.randint(4, 500, (2, 24), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :6] = -100
    batch = Batch(ids, labels, torch.arange(24).repeat(2, 1), None, 2)
    grads, losses = {}, {}
    for compute in ("fp32", "bf16"):
        model, _, spec = load_model(resolved, LoadSpec(precision="nf4", compute_dtype=compute))
        assert spec.compute_dtype == compute
        if compute == "bf16":
            keep_frozen_embeddings_in(model, torch.bfloat16)
        peft_model = _lora_grads(model, ids)
        peft_model.train()
        loss = supervised_loss_sum(peft_model, batch)
        loss.backward()
        losses[compute] = float(loss)
        grads[compute] = {n: p.grad.detach().float().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert grads["fp32"].keys() == grads["bf16"].keys() and grads["fp32"]
    assert abs(losses["bf16"] - losses["fp32"]) / losses["fp32"] < 1e-2, losses
    rels = []
    for n, g in grads["fp32"].items():
        assert torch.isfinite(grads["bf16"][n]).all()
        rels.append(((grads["bf16"][n] - g).norm() / g.norm().clamp_min(1e-12)).item())
    # bf16 keeps 8 mantissa bits and the residual stream is bf16 here (as in QLoRA on a GPU): on this random fixture
    # the gradients differ by 5 to 23 % per tensor (median 10 %; autocast, which keeps the residual in fp32, 3.5 %).
    # The bitsandbytes repack bug this guards against gives relative errors of 1 and more in every layer.
    rels.sort()
    assert rels[-1] < 0.35 and rels[len(rels) // 2] < 0.15, rels


def test_laf_eval_scores_nf4_in_the_compute_dtype_asked_and_refuses_it_without_nf4(tiny_model_dir, tmp_path, isolated_cache):
    """`laf eval --precision nf4 --compute-dtype bf16` repeats the evaluation of a run trained with
    `train.compute_dtype: bf16`: the identity records it, and fp32 compute is another model (not served from its cache)."""
    args = ("eval", "--model", str(tiny_model_dir), "--suite", "domain/tempo-t4", "--limit", "8", "--precision", "nf4", "--quiet",
            "--cache", str(tmp_path / "c.sqlite"))
    loads = {}
    for dtype in ("bf16", "fp32"):
        code, out, err = run_cli(*args, "--compute-dtype", dtype, "--out", str(tmp_path / dtype))
        assert code == 0, err
        doc = json.loads((tmp_path / dtype / "results.json").read_text())
        loads[dtype] = doc["provenance"]["load"]
        assert doc["models"]["base"]["requests"]["computed"] == doc["models"]["base"]["requests"]["requests"] > 0
    assert loads == {"bf16": {"precision": "nf4", "compute_dtype": "bf16", "device": "cpu"}, "fp32": {"precision": "nf4", "compute_dtype": "fp32", "device": "cpu"}}
    code, out, err = run_cli("eval", "--model", str(tiny_model_dir), "--suite", "domain/tempo-t4", "--precision", "fp32", "--compute-dtype", "bf16",
                             "--out", str(tmp_path / "x"))
    assert code == 2 and "--compute-dtype applies to --precision nf4 only" in " ".join((out + err).split()) and "Traceback" not in err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- tokenizer: the added tokens read from the file's head


def _same_tokenizer(a, b) -> None:
    assert type(a) is type(b) and len(a) == len(b) and a.get_vocab() == b.get_vocab()
    assert a.added_tokens_decoder == b.added_tokens_decoder and a.special_tokens_map == b.special_tokens_map
    assert (a.pad_token_id, a.bos_token_id, a.eos_token_id, a.padding_side) == (b.pad_token_id, b.bos_token_id, b.eos_token_id, b.padding_side)
    added = " ".join(str(t) for t in list(a.added_tokens_decoder.values())[:50])
    for text in ["Hello world", "  two  spaces\n\n\ttab", "Ünïcödé 日本語 🤖", added, "Q: What is 2+2?\nA:" * 3]:
        for special in (True, False):
            assert a(text, add_special_tokens=special)["input_ids"] == b(text, add_special_tokens=special)["input_ids"]
        ids = a(text)["input_ids"]
        assert a.decode(ids) == b.decode(ids) and a.decode(ids, skip_special_tokens=True) == b.decode(ids, skip_special_tokens=True)


def test_tokenizer_loaded_with_the_added_tokens_from_the_head_equals_plain_transformers(tiny_model_dir):
    from transformers import AutoTokenizer

    from harness.models.load import _tokenizer_head, load_tokenizer

    assert _tokenizer_head(tiny_model_dir).decoder  # the fast path is taken on the fixture
    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    if plain.pad_token_id is None:
        plain.pad_token = plain.eos_token
    _same_tokenizer(load_tokenizer(resolve_model(str(tiny_model_dir))), plain)


def _put_first(doc: dict, key: str, value) -> None:
    rest = {k: v for k, v in doc.items() if k != key}
    doc.clear()
    doc[key] = value
    doc.update(rest)


def test_a_tokenizer_head_that_is_not_certain_falls_back_to_transformers(tiny_model_dir, tmp_path):
    from harness.models.load import _tokenizer_head, load_tokenizer

    raw = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    cases = {
        "extra field": lambda d: d["added_tokens"][0].update(evil="__import__('os')"),
        "id not int": lambda d: d["added_tokens"][0].update(id="0"),
        "not a list": lambda d: d.update(added_tokens={"0": "x"}),
        "model first": lambda d: _put_first(d, "model", d["model"]),  # the vocabulary before them
        "listed in config": None,
        "key nested in an earlier object": lambda d: _put_first(d, "normalizer", {"type": "NFC", "added_tokens": d["added_tokens"][:1]}),
    }
    for name, change in cases.items():
        folder = tmp_path / name.replace(" ", "-")
        shutil.copytree(tiny_model_dir, folder)
        doc = json.loads(json.dumps(raw))
        if change is None:
            cfg = json.loads((folder / "tokenizer_config.json").read_text())
            cfg["added_tokens_decoder"] = {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in raw["added_tokens"]}
            (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
        else:
            change(doc)
        (folder / "tokenizer.json").write_text(json.dumps(doc))
        assert _tokenizer_head(folder) is None, name
    # transformers reads these only on the path the kwarg skips: their presence means the plain load
    for extra in ("special_tokens_map.json", "added_tokens.json"):
        folder = tmp_path / extra.replace(".", "-")
        shutil.copytree(tiny_model_dir, folder)
        (folder / extra).write_text(json.dumps({"pad_token": "<pad>"} if extra.startswith("special") else {}))
        assert _tokenizer_head(folder) is None, extra
    deep = tmp_path / "deep"
    shutil.copytree(tiny_model_dir, deep)
    (deep / "tokenizer.json").write_text('{"version": "1.0", "added_tokens": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert _tokenizer_head(deep) is None  # a RecursionError in the parser is a fallback, not a crash
    (tmp_path / "truncated").mkdir()
    shutil.copy(tiny_model_dir / "tokenizer_config.json", tmp_path / "truncated")
    (tmp_path / "truncated" / "tokenizer.json").write_text(json.dumps(raw)[:200])
    assert _tokenizer_head(tmp_path / "truncated") is None
    # a fallback still loads the tokenizer the plain way
    assert load_tokenizer(resolve_model(str(tmp_path / "listed-in-config"))).added_tokens_decoder


def _gemma_like(tiny_model_dir, folder, change=None):
    """The fixture's tokenizer dressed as Gemma's (class, normalizer, pre-tokenizer, decoder, BPE settings as
    ``GemmaTokenizer`` builds them), optionally changed by ``change(doc, cfg)``."""
    from transformers import GemmaTokenizer

    shutil.copytree(tiny_model_dir, folder)
    doc = json.loads((folder / "tokenizer.json").read_text())
    built = json.loads(GemmaTokenizer()._tokenizer.to_str())
    for k in ("normalizer", "pre_tokenizer", "decoder"):
        doc[k] = built[k]
    vocab, merges = doc["model"]["vocab"], doc["model"]["merges"]
    vocab.setdefault("<unk>", max(vocab.values()) + 1)
    doc["model"] = {**{k: v for k, v in built["model"].items() if k not in ("vocab", "merges")}, "vocab": vocab, "merges": merges}
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "GemmaTokenizer"
    if change:
        change(doc, cfg)
    (folder / "tokenizer.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


def test_gemma_tokenizer_loaded_from_the_files_own_backend_equals_plain_transformers(tiny_model_dir, tmp_path):
    """GemmaTokenizer's constructor rebuilds the backend from a Python parse of the whole file; when the file's backend
    is exactly the one it builds, the Rust loader reads it instead (1.5 to 2 s of Gemma 3's cold start). Equal to
    plain AutoTokenizer; anything that differs from what the constructor builds takes the plain path."""
    from transformers import AutoTokenizer, GemmaTokenizer

    from harness.models.load import _gemma_backend_is_the_files, _tokenizer_head, load_tokenizer

    def plain(folder):
        tok = AutoTokenizer.from_pretrained(folder)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok

    same = _gemma_like(tiny_model_dir, tmp_path / "gemma-like")
    assert _gemma_backend_is_the_files(_tokenizer_head(same)) is not None  # the fast path is taken
    ours = load_tokenizer(resolve_model(str(same)))
    assert type(ours) is GemmaTokenizer
    _same_tokenizer(ours, plain(same))
    assert ours.init_kwargs.keys() == plain(same).init_kwargs.keys()
    cases = {
        "another normalizer": lambda d, c: d.update(normalizer={"type": "NFC"}),
        "another pre-tokenizer": lambda d, c: d.update(pre_tokenizer={"type": "Whitespace"}),
        "no decoder": lambda d, c: d.update(decoder=None),
        "ignore merges": lambda d, c: d["model"].update(ignore_merges=True),
        "no byte fallback": lambda d, c: d["model"].update(byte_fallback=False),
        "another unk": lambda d, c: c.update(unk_token="<pad>"),
        "another class": lambda d, c: c.update(tokenizer_class="TokenizersBackend"),
        "a field the layout lacks": lambda d, c: _put_first(d["model"], "extra", {"x": 1}),
        "model before the decoder": lambda d, c: _put_first(d, "decoder", d.pop("decoder")),
    }
    for name, change in cases.items():
        folder = _gemma_like(tiny_model_dir, tmp_path / name.replace(" ", "-"), change)
        head = _tokenizer_head(folder)
        assert head is None or _gemma_backend_is_the_files(head) is None, name
        _same_tokenizer(load_tokenizer(resolve_model(str(folder))), plain(folder))
    # the review's cases: added tokens out of id order (transformers adds them sorted, the Rust loader in file order),
    # a model type AutoTokenizer routes past the config's class, and a whitespace run that made the scan quadratic
    unsorted = _gemma_like(tiny_model_dir, tmp_path / "unsorted-ids", lambda d, c: d["added_tokens"].reverse())
    assert _tokenizer_head(unsorted) is not None and _gemma_backend_is_the_files(_tokenizer_head(unsorted)) is None
    _same_tokenizer(load_tokenizer(resolve_model(str(unsorted))), plain(unsorted))
    routed = _gemma_like(tiny_model_dir, tmp_path / "routed")
    conf = json.loads((routed / "config.json").read_text())
    (routed / "config.json").write_text(json.dumps({**conf, "model_type": "olmo2"}))
    assert _gemma_backend_is_the_files(_tokenizer_head(routed)) is None
    spaced = _gemma_like(tiny_model_dir, tmp_path / "spaced")
    raw = (spaced / "tokenizer.json").read_text()
    i = raw.index('"type": "BPE"') + len('"type": "BPE"')
    (spaced / "tokenizer.json").write_text(raw[:i] + " " * 1_000_000 + ', "x_unknown": 1' + raw[i:])
    head = _tokenizer_head(spaced)  # linear: possessive quantifiers (it took hours with the first pattern)
    assert head is not None and head.parts["model"]["x_unknown"] == 1 and _gemma_backend_is_the_files(head) is None
    # a setting written after the vocabulary passes the head check: the loaded backend is checked too
    late = _gemma_like(tiny_model_dir, tmp_path / "late-dropout", lambda d, c: d["model"].update(dropout=0.5) or d["model"].update(
        {k: d["model"].pop(k) for k in ("vocab", "merges")}))
    text = json.loads((late / "tokenizer.json").read_text())
    assert list(text["model"])[-1] == "merges" and text["model"]["dropout"] == 0.5
    raw = (late / "tokenizer.json").read_text()
    raw = raw.replace('"dropout": 0.5', '"dropout": null', 1)  # the head says null ...
    i = raw.rindex("]")  # ... and a second "dropout" after the merges says 0.5
    (late / "tokenizer.json").write_text(raw[:i + 1] + ', "dropout": 0.5' + raw[i + 1:])
    assert _gemma_backend_is_the_files(_tokenizer_head(late)) is not None  # the head cannot see it
    got = load_tokenizer(resolve_model(str(late)))
    assert got._tokenizer.model.dropout is None and type(got) is GemmaTokenizer
    _same_tokenizer(got, plain(late))


# ---------------------------------------------------------------- the real default model


@pytest.mark.slow
def test_default_model_tokenizer_from_the_head_equals_plain_transformers(default_model):
    """Gemma 3's 6,384 added tokens read from tokenizer.json's head (1.5 s of the 31 MB Python parse saved)."""
    from transformers import AutoTokenizer

    from harness.models.load import _gemma_backend_is_the_files, _tokenizer_head, load_tokenizer

    assert len(_tokenizer_head(default_model.path).decoder) > 6000
    assert _gemma_backend_is_the_files(_tokenizer_head(default_model.path)) is not None  # and its backend read by Rust
    _same_tokenizer(load_tokenizer(default_model), AutoTokenizer.from_pretrained(default_model.path))


@pytest.mark.slow
def test_default_model_show_json(default_model):
    t0 = time.perf_counter()
    code, out, err = run_cli("models", "show", "default", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["kind"] == "default"
    assert 267e6 < info["parameters"] < 269e6
    assert info["fingerprint"] == default_model.fingerprint
    assert time.perf_counter() - t0 < 15


@pytest.mark.slow
def test_two_processes_converting_at_once_do_not_corrupt(tmp_path):
    """Convert the default GGUF in a fresh cache from two processes at the same time."""
    from harness.models.convert import default_gguf

    gguf, _ = default_gguf()
    env = {**os.environ, "LAF_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "harness", "models", "show", str(gguf), "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    fps = {json.loads(o)["fingerprint"] for o, _ in outs}
    assert len(fps) == 1
    folders = [p for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")]
    assert [p.name.startswith("gguf-") for p in folders] == [True], folders
    assert not list((tmp_path / "cache" / "models").glob(".*partial"))


def test_doctor_ready_here(tmp_path):
    code, out, err = run_cli("doctor", "--json", "--out", str(tmp_path / "r"), "--registry", str(tmp_path / "reg"))
    report = json.loads(out)
    assert code == (0 if report["ready"] else 1)
    names = {c["name"] for c in report["checks"]}
    assert {"python", "device", "bitsandbytes NF4", "default model"} <= names
    assert report["ready"], [c for c in report["checks"] if not c["ok"]]
