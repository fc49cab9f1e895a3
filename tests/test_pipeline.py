"""laf run: the whole flow on the tiny fixture, interrupted with kill -9 during evaluation and resumed; bad configs."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from harness.pipeline import run_pipeline
from tests.conftest import REPO, run_cli

POLICY = {"confidence": 0.95, "min_items": 20, "rules": [
    {"category": "domain", "min_gain": 0.05},
    {"category": "general", "max_drop": 0.05},
    {"category": "bias", "max_increase": 0.1, "required": False},
]}


def write_config(tmp_path: Path, model_dir: Path, name: str, cache: str, **over) -> Path:
    rows = [json.loads(x) for x in (REPO / "examples" / "quickstart" / "train.jsonl").read_text().splitlines()[:160]]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "name": name, "model": str(model_dir), "precision": "nf4", "data": {"path": "train.jsonl"},
        "train": {"max_length": 96, "batch_size": 4, "max_steps": 6, "eval_every": 3, "save_every": 2, "optim": {"lr": 2.0e-3}},
        "eval": {"batch_size": 1, "cache": cache, "suites": [{"suite": "domain/tempo-t4", "limit": 60}, {"suite": "general/world-facts", "limit": 80}, {"suite": "bias/crows-pairs", "limit": 30}]},
        "gate": {"policy": POLICY},
        "registry": str(tmp_path / "registry"), "out_root": str(tmp_path / "reports"),
    }
    for k, v in over.items():
        cfg[k] = v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(cache: Path) -> int:
    try:
        with sqlite3.connect(cache) as c:
            return c.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_run_interrupted_during_eval_resumes_without_repeating_work(tiny_model_dir, tmp_path):
    # the uninterrupted reference, with a cache of its own
    ref = run_pipeline(write_config(tmp_path, tiny_model_dir, "reference", str(tmp_path / "ref.sqlite")), log=lambda m: None)
    assert ref["stages_ran"][:3] == ["curate", "train", "eval"] and (Path(ref["run_dir"]) / "report.html").exists()
    for name in ("verdict.json", "junit.xml", "summary.md", "report.html", "curation.json"):
        assert (Path(ref["run_dir"]) / name).exists(), name

    cache = tmp_path / "run.sqlite"
    config = write_config(tmp_path, tiny_model_dir, "interrupted", str(cache))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(config), "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _rows(cache) < 150:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = _rows(cache)
    run_dir = tmp_path / "reports" / "interrupted"
    state = json.loads((run_dir / "state.json").read_text())["stages"]
    assert state["curate"]["finished"] and state["train"]["finished"] and "eval" not in state

    logs: list[str] = []
    resumed = run_pipeline(config, log=logs.append)
    assert resumed["stages_skipped"][:2] == ["curate", "train"], "finished stages must not run again"
    assert not any(line.startswith("train:") and "unchanged" not in line for line in logs)
    versions = sorted(p.name for p in (tmp_path / "registry" / "interrupted").iterdir())
    assert versions == ["1"], "the adapter was trained once"
    res = json.loads((run_dir / "eval" / "results.json").read_text())
    hits = sum(m["requests"]["cache_hits"] for m in res["models"].values())
    computed = sum(m["requests"]["computed"] for m in res["models"].values())
    assert hits >= saved > 0 and computed + hits == sum(m["requests"]["requests"] for m in res["models"].values())
    # identical numbers to the uninterrupted run (adapter names differ, so compare by position)
    a = json.loads((Path(ref["run_dir"]) / "eval" / "results.json").read_text())["results"]
    assert list(a["base"].items()) == list(res["results"]["base"].items())
    assert list(a["reference@1"].items()) == list(res["results"]["interrupted@1"].items())

    again = run_pipeline(config, log=lambda m: None)
    assert again["stages_skipped"] == ["curate", "train", "eval"]
    changed = run_pipeline(config, overrides=["eval.batch_size=2"], log=lambda m: None)
    assert changed["stages_skipped"] == ["curate", "train"] and "eval" in changed["stages_ran"]


def test_bad_config_problems_are_reported_together_before_any_stage(tiny_model_dir, tmp_path):
    cfg = yaml.safe_load(write_config(tmp_path, tiny_model_dir, "bad", str(tmp_path / "c.sqlite")).read_text())
    cfg["data"]["path"] = "missing.jsonl"
    cfg["eval"]["suites"].append("general/no-such-suite")
    cfg["train"]["lora"] = {"r": 0}
    cfg["gate"]["policy"]["rules"].append({"suite": "hallucination/factqa", "max_increase": 0.1})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli("run", str(path), "--quiet")
    assert code == 3 and "Traceback" not in err
    for needle in ("4 problem(s)", "missing.jsonl", "general/no-such-suite", "train.lora.r", "hallucination/factqa"):
        assert needle in err, (needle, err)
    assert not (tmp_path / "reports" / "bad").exists(), "no stage may start"

    cfg = yaml.safe_load(write_config(tmp_path, tiny_model_dir, "nodata", str(tmp_path / "c.sqlite")).read_text())
    del cfg["data"]
    cfg["adapters"] = ["nosuch@1"]
    cfg["gate"]["policy"]["max_contamination"] = 0.01
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli("run", str(path), "--quiet")
    assert code == 3 and "2 problem(s)" in err and "nosuch" in err and "max_contamination" in err, err


def test_exit_code_comes_from_the_gate(tiny_model_dir, tmp_path):
    config = write_config(tmp_path, tiny_model_dir, "exitcode", str(tmp_path / "c.sqlite"), eval={"batch_size": 8, "cache": str(tmp_path / "c.sqlite"), "suites": [{"suite": "domain/tempo-t4", "limit": 40}]})
    cfg = yaml.safe_load(config.read_text())
    cfg["gate"] = {"policy": {"min_items": 20, "rules": [{"category": "domain", "min_gain": 0.5}]}}
    config.write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli("run", str(config), "--quiet")
    assert code == 1 and "FAIL" in out and "report:" in out


def test_editing_a_datasets_folder_reruns_curate_train_and_eval(tiny_model_dir, tmp_path):
    """A folder input is fingerprinted by its files' content, not its path: an edit inside it re-runs what depends on it."""
    import datasets
    rows = [json.loads(x) for x in (REPO / "examples" / "quickstart" / "train.jsonl").read_text().splitlines()[:40]]
    folder = tmp_path / "train_ds"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    config = write_config(tmp_path, tiny_model_dir, "dsfolder", str(tmp_path / "c.sqlite"),
                          data={"path": "train_ds"},
                          train={"max_length": 96, "batch_size": 4, "max_steps": 2, "eval_every": 0, "save_every": 2, "optim": {"lr": 2.0e-3}},
                          eval={"batch_size": 8, "cache": str(tmp_path / "c.sqlite"), "suites": [{"suite": "domain/tempo-t4", "limit": 20}]})
    cfg = yaml.safe_load(config.read_text())
    del cfg["gate"]
    config.write_text(yaml.safe_dump(cfg))
    first = run_pipeline(config)
    assert first["stages_ran"][:3] == ["curate", "train", "eval"]
    assert run_pipeline(config)["stages_skipped"] == ["curate", "train", "eval"]

    rows[0] = {**rows[0], "instruction": rows[0]["instruction"] + " (edited)"}
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))  # the same path, one example's text changed
    edited = run_pipeline(config)
    assert edited["stages_ran"][:3] == ["curate", "train", "eval"], edited
    assert edited["adapters"] == ["dsfolder@2"]
