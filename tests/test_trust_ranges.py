"""Issue 18, family "argument and config ranges": an out-of-range number is exit 2 (CLI argument) or 3
(config value) with a message naming the key and its allowed range -- never a silently emptied dataset,
an overflow traceback or a run that would take days."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.data.curate import CurationSettings, curate
from harness.errors import LafError
from tests.conftest import assert_clean_error, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _cli_exit(*argv: str) -> tuple[int, str]:
    """Run ``laf`` in a subprocess (argparse exits through SystemExit) and return (code, stderr)."""
    p = subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    return p.returncode, p.stderr


def _data(tmp_path: Path) -> Path:
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"instruction": f"q {i}", "output": f"a {i}"}) + "\n" for i in range(5)))
    return p


# ---------------------------------------------------------------- CLI arguments: exit 2, range named


@pytest.mark.parametrize("args,needle", [
    (["--ngram", "0"], "4..1000"), (["--ngram", "-3"], "4..1000"),
    (["--near-dup-threshold", "0"], "(0, 1]"), (["--near-dup-threshold", "1.5"], "(0, 1]"),
    (["--near-dup-threshold", "nan"], "(0, 1]"), (["--near-dup-threshold", "inf"], "(0, 1]"),
    (["--shingle-size", "0"], "1..64"), (["--max-length", "0"], "8..1048576"), (["--max-length", "1"], "8..1048576"),
    (["--max-length", "-5"], "8..1048576"), (["--max-length", "1e9"], "not a whole number"),
])
def test_data_check_rejects_out_of_range_arguments(tmp_path, args, needle):
    code, err = _cli_exit("data", "check", str(_data(tmp_path)), "--model", "none", "--out", str(tmp_path / "o"), *args)
    assert code == 2 and needle in err and args[0] in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [["--limit", "0"], ["--limit", "-1"], ["--batch-size", "0"], ["--max-length", "1"], ["--limit", "99999999999999"]])
def test_eval_rejects_out_of_range_arguments(tmp_path, args):
    code, err = _cli_exit("eval", "--suite", "general/world-facts", "--out", str(tmp_path / "o"), *args)
    assert code == 2 and "out of range" in err and args[0] in err, err


@pytest.mark.parametrize("value", ["1", "1.0", "0.5", "-0.1", "nan"])
def test_gate_compare_rejects_a_confidence_outside_half_to_one(tmp_path, value):
    code, err = _cli_exit("compare", str(tmp_path), "--confidence", value)
    assert code == 2 and "--confidence" in err, err


# ---------------------------------------------------------------- config values: exit 3, key and range named


def _train(tmp_path, tiny_model_dir, *sets: str):
    cfg = {"name": "r", "model": str(tiny_model_dir), "data": {"path": str(_data(tmp_path))}, "registry": str(tmp_path / "reg"), "output_dir": str(tmp_path / "run")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return run_cli("train", str(tmp_path / "c.yaml"), "--quiet", *[x for s in sets for x in ("--set", s)])


@pytest.mark.parametrize("setting,key,needle", [
    ("lora.r=100000000", "lora.r", "4096"), ("seed=73786976294838206464", "seed", "4294967295"), ("seed=-1", "seed", "0"),
    ("max_length=0", "max_length", "8"), ("max_length=1", "max_length", "8"), ("max_length=-5", "max_length", "8"),
    ("batch_size=0", "batch_size", "0"), ("optim.lr=-1", "optim.lr", "0"), ("optim.lr=.inf", "optim.lr", "finite"),
("max_steps=1000000000000", "max_steps", "10000000"), ("epochs=.nan", "epochs", "finite"),
    ("optim.betas=[0.9, 1.5]", "optim.betas", "1"), ("lora.alpha=.inf", "lora.alpha", "finite"), ("grad_accum=0", "grad_accum", "0"),
])
def test_train_rejects_out_of_range_config_values(tmp_path, tiny_model_dir, setting, key, needle):
    code, out, err = _train(tmp_path, tiny_model_dir, setting)
    assert_clean_error((code, out, err), key, needle)
    assert not (tmp_path / "reg").exists() and not (tmp_path / "run").exists()


def _policy_error(tmp_path, **over):
    from harness.gate.policy import load_policy

    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump({"rules": [{"category": "general", "max_drop": 0.02}], **over}).replace("'.inf'", ".inf"))
    with pytest.raises(LafError) as e:
        load_policy(str(p))
    assert e.value.exit_code == 3
    return e.value.cause


def test_policy_rejects_absurd_resamples_seed_and_infinite_margins(tmp_path):
    assert "resamples" in _policy_error(tmp_path, resamples=10**9)
    assert "seed" in _policy_error(tmp_path, seed=2**66)
    p = tmp_path / "inf.yaml"
    p.write_text("rules:\n  - {category: general, max_drop: .inf}\n")
    from harness.gate.policy import load_policy

    with pytest.raises(LafError) as e:
        load_policy(str(p))
    assert "not a finite number" in e.value.cause and "line 2" in e.value.cause


@pytest.mark.parametrize("suites,needle", [
    ([{"suite": "general/world-facts", "limit": -5}], "limit"),
    ([{"suite": "general/world-facts", "limt": 5}], "limt"),
    ([{"suite": "general/world-facts", "limit": 0}], "limit"),
    ([{"limit": 5}], "suite"),
])
def test_run_config_checks_each_suite_entry(tmp_path, suites, needle):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"name": "r", "adapters": ["a@1"], "eval": {"suites": suites}, "out_root": str(tmp_path / "o")}))
    assert_clean_error(run_cli("run", str(tmp_path / "r.yaml"), "--quiet"), "eval.suites", needle)


@pytest.mark.parametrize("eval_over", [{"max_length": 0}, {"batch_size": 0}, {"limit": 10**12}])
def test_run_config_eval_numbers(tmp_path, eval_over):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"name": "r", "adapters": ["a@1"], "eval": {"suites": ["general/world-facts"], **eval_over}, "out_root": str(tmp_path / "o")}))
    assert_clean_error(run_cli("run", str(tmp_path / "r.yaml"), "--quiet"), f"eval.{next(iter(eval_over))}")


@pytest.mark.parametrize("over,needle", [({"seed": 2**66}, "seed"), ({"output": {"rank": 10**8}}, "65536"), ({"lambda": float("inf")}, "not a finite number")])
def test_merge_config_ranges(tmp_path, over, needle):
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"name": "m", "method": "linear", "adapters": ["a@1", "b@1"], "registry": str(tmp_path / "reg"), **over}))
    assert_clean_error(run_cli("merge", str(tmp_path / "m.yaml")), needle)


@pytest.mark.parametrize("over", [{"ngram": 0}, {"ngram": -1}, {"shingle_size": 0}, {"near_duplicate_threshold": 0.0}, {"near_duplicate_threshold": 1.01},
                                  {"near_duplicate_threshold": float("nan")}, {"max_length": 1}])
def test_library_curation_refuses_out_of_range_settings_too(tmp_path, over):
    with pytest.raises(LafError) as e:
        curate(_data(tmp_path), CurationSettings(model=None, **over))
    assert next(iter(over)) in e.value.cause and "allowed" in e.value.cause
