"""Non-finite scores are an error, never a prediction, and never let a gate pass (issue 18, item 4)."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3

import pytest
import yaml

from harness.errors import LafError
from harness.results import dumps_strict
from tests.conftest import assert_clean_error, run_cli
from tests.synthetic import suite_meta, write_run
from tests.test_trust_templates import write_suite


@pytest.fixture(scope="module")
def broken_adapters(tiny_model_dir, tmp_path_factory):
    """A real 4-step adapter of the tiny model, and copies of it registered with NaN, +inf and -inf LoRA weights."""
    import torch
    from safetensors.torch import load_file, save_file

    from harness.config import validate
    from harness.registry import Registry
    from harness.train import TrainConfig, train

    root = tmp_path_factory.mktemp("nan")
    rows = [{"instruction": f"What is {i} plus {i}?", "output": f"{2 * i}"} for i in range(40)]
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = validate(TrainConfig, {"name": "good", "model": str(tiny_model_dir), "data": {"path": str(root / "d.jsonl")}, "max_length": 64,
                                 "max_steps": 4, "optim": {"lr": 5e-3}, "registry": str(root / "reg"), "output_dir": str(root / "run")}, "t.yaml")
    entry = train(cfg).entry
    reg = Registry(root / "reg")
    manifest = {k: v for k, v in entry.manifest.items() if k not in ("files", "name", "version", "ref")}
    refs = {"good": str(entry.ref)}
    for name, value in (("nan", float("nan")), ("posinf", float("inf")), ("neginf", float("-inf"))):
        src = root / f"src-{name}"
        shutil.copytree(entry.path, src)
        (src / "manifest.json").unlink()
        w = load_file(src / "adapter_model.safetensors")
        save_file({k: torch.full_like(t, value) if "lora_B" in k else t for k, t in w.items()}, src / "adapter_model.safetensors")
        refs[name] = str(reg.register(name, src, manifest).ref)
    return root / "reg", refs


@pytest.fixture(scope="module")
def mc_suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    return write_suite(root, {}, rows=[{"q": f"What is {i} plus {i}?", "choices": [str(2 * i), str(i), "no"], "gold": i % 3} for i in range(9)])


@pytest.mark.parametrize("kind", ["nan", "posinf", "neginf"])
def test_an_adapter_with_non_finite_weights_is_an_error_not_a_score(tiny_model_dir, broken_adapters, mc_suite, tmp_path, kind):
    reg, refs = broken_adapters
    cache = tmp_path / "c.sqlite"
    result = run_cli("eval", "--model", str(tiny_model_dir), "--adapter", refs[kind], "--registry", str(reg), "--suite", str(mc_suite),
                     "--out", str(tmp_path / "o"), "--cache", str(cache), "--quiet", "--batch-size", "4")
    # refused before its first item by the "adapter is applied" check (issue 29), which names the adapter and the module
    assert_clean_error(result, f"adapter {refs[kind]}", "holds non-finite values")
    assert not (tmp_path / "o" / "results.json").exists(), "nothing is published for a run with a broken model"
    with sqlite3.connect(cache) as c:  # the base's answers are cached, the broken ones never
        values = [json.loads(v) for (v,) in c.execute("SELECT value FROM responses")]
    assert values and all(math.isfinite(v[0]) for v in values)


def test_a_healthy_adapter_still_scores_and_writes_strict_json(tiny_model_dir, broken_adapters, mc_suite, tmp_path):
    reg, refs = broken_adapters
    code, out, err = run_cli("eval", "--model", str(tiny_model_dir), "--adapter", refs["good"], "--registry", str(reg), "--suite", str(mc_suite),
                             "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c.sqlite"), "--quiet", "--batch-size", "4", "--limit", "1")
    assert code == 0, err

    def strict(text):
        return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"bare {c} in a results file")))

    doc = strict((tmp_path / "o" / "results.json").read_text())
    assert doc["results"]["base"]  # n = 1: lm-eval's stderr is NaN there; written as null, not NaN
    for line in (tmp_path / "o" / "records.jsonl").read_text().splitlines():
        strict(line)


def test_results_files_never_hold_bare_nan():
    with pytest.raises(LafError):
        dumps_strict({"acc": float("nan")})
    with pytest.raises(LafError):
        dumps_strict([1.0, float("-inf")])


# ---------------------------------------------------------------- the gate never passes a non-finite record

SUITES = {"general/facts": suite_meta("general")}


def _policy(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"rules": [{"category": "general", "max_drop": 0.5}]}))
    return str(p)


def _planted(tmp_path, bad, field="metric"):
    """A sealed two-model run whose candidate has one bad value among forty items (as if the evaluation wrote it)."""
    from harness.results import seal_run

    base = [1, 0, 1, 0] * 10
    run = write_run(tmp_path / "run", SUITES, {"base": {"general/facts": base}, "cand@1": {"general/facts": base}})
    lines = (run / "records.jsonl").read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if json.loads(line)["model"] == "cand@1" and json.loads(line)["doc_id"] == 3)
    r = json.loads(lines[i])
    if field == "metric":
        r["metrics"]["acc"] = bad
    else:
        r["loglikelihoods"] = [bad, -1.0]
    lines[i] = json.dumps(r)
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    seal_run(run)
    return run


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None], ids=["nan", "inf", "-inf", "null"])
def test_gate_is_an_error_when_a_paired_record_is_not_finite(tmp_path, bad):
    run = _planted(tmp_path, bad)
    code, out, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", _policy(tmp_path))
    assert code == 3 and "Traceback" not in err, (code, out, err)
    assert "PASS" not in out.upper() and ("non-finite" in err), err
    assert not (run / "verdict.json").exists()


def test_report_is_an_error_on_non_finite_records(tmp_path):
    run = _planted(tmp_path, float("nan"))
    assert_clean_error(run_cli("report", str(run)), "non-finite")


def test_a_results_json_with_bare_nan_is_refused(tmp_path):
    run = _planted(tmp_path, 1)
    text = (run / "results.json").read_text().replace('"value": 0.5', '"value": NaN', 1)
    assert "NaN" in text
    (run / "results.json").write_text(text)
    assert_clean_error(run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", _policy(tmp_path), "--allow-modified"),
                       "not valid JSON", "NaN")


def test_gate_is_an_error_when_a_loglikelihood_is_nan(tmp_path):
    run = _planted(tmp_path, float("nan"), field="loglikelihoods")
    code, out, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", _policy(tmp_path))
    assert code == 3 and "non-finite" in err, (code, out, err)
