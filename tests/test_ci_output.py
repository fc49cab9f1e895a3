"""CI logs: `laf run` with stdout and stderr piped prints progress while a stage runs; GitHub Actions groups,
annotations and the step summary; --quiet."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from harness.cli.ci import escape_data, escape_property, workflow_command
from tests.conftest import REPO, assert_clean_error, run_cli
from tests.test_pipeline import write_config

# one rule of each kind: a required failure, an inconclusive required rule (too few items), an advisory failure
POLICY = {"confidence": 0.95, "min_items": 10, "rules": [
    {"category": "domain", "min_gain": 0.5},
    {"category": "general", "max_drop": 0.05, "min_items": 100000},
    {"category": "bias", "min_gain": 0.5, "required": False},
]}
INTERVAL = 0.1  # the tiny model scores a few hundred requests a second: lines must come faster than a suite ends
PROGRESS = re.compile(r"^\[ *\S+\] (train|evaluate): .* (\d+)/(\d+) \(\d+%\)")


def ci_config(tmp_path: Path, model_dir: Path, name: str) -> Path:
    path = write_config(tmp_path, model_dir, name, str(tmp_path / "cache.sqlite"))
    cfg = yaml.safe_load(path.read_text())
    cfg["train"].update(max_steps=4, eval_every=2, save_every=0)
    cfg["eval"] = {"batch_size": 4, "cache": str(tmp_path / "cache.sqlite"),
                   "suites": [{"suite": "domain/tempo-t4", "limit": 24}, {"suite": "general/world-facts", "limit": 300}, {"suite": "bias/crows-pairs", "limit": 12}]}
    cfg["gate"] = {"policy": POLICY}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def piped_run(tiny_model_dir, tmp_path_factory):
    """`laf run` as a CI runner starts it: both streams piped, GitHub Actions variables set; every stderr line timed on arrival."""
    tmp = tmp_path_factory.mktemp("ci")
    config = ci_config(tmp, tiny_model_dir, "ci")
    summary = tmp / "step-summary.md"
    summary.write_text("earlier step\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env.update(LAF_PROGRESS_INTERVAL=str(INTERVAL), GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line.rstrip("\n")) for line in proc.stderr))
    reader.start()
    out = proc.stdout.read()
    code = proc.wait(timeout=600)
    reader.join()
    return {"code": code, "stdout": out, "lines": lines, "summary": summary, "config": config, "tmp": tmp}


def test_progress_lines_arrive_while_the_stage_runs(piped_run):
    lines = piped_run["lines"]
    text = [t for _, t in lines]
    assert piped_run["code"] == 1, "\n".join(text[-30:])
    assert "Traceback" not in "\n".join(text)
    progress = [(t, PROGRESS.match(s)) for t, s in lines if PROGRESS.match(s)]
    train = [m for _, m in progress if m.group(1) == "train"]
    ev = [(t, m) for t, m in progress if m.group(1) == "evaluate"]
    assert train and ev, "\n".join(text)
    assert [int(m.group(2)) for m in train][-1] == int(train[-1].group(3)), "training ends with a line at 100 %"
    # lines come during the stage, not all at its end: evaluation progress spreads over the stage's time
    # and reports partial counts; no silence longer than a few intervals from the first stage to the last line
    end_of_eval = next(t for t, s in reversed(lines) if s == "::endgroup::")
    partial = [t for t, m in ev if int(m.group(2)) < int(m.group(3))]
    assert partial and end_of_eval - partial[0] > 2 * INTERVAL, "partial progress was printed before the stage ended"
    start = next(t for t, s in lines if s.startswith("::group::"))
    stamps = [t for t, _ in lines if start <= t <= end_of_eval]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) < 8 * INTERVAL + 3, f"a {max(gaps):.1f} s silence in the log"
    for _, m in ev:
        assert "·" in m.string and ("req/s" in m.string or "cache" in m.string)
    assert any("ETA" in m.string for _, m in ev + [(0, m) for m in train])


def test_github_actions_groups_annotations_and_step_summary(piped_run):
    text = [t for _, t in piped_run["lines"]]
    markers = [t for t in text if t.startswith(("::group::", "::endgroup::"))]
    assert [m.split(":")[4] for m in markers if m.startswith("::group::")] == ["curate", "train", "evaluate"]
    assert markers == [x for pair in zip([m for m in markers if m.startswith("::group::")], ["::endgroup::"] * 3) for x in pair], "groups never nest"
    errors = [t for t in text if t.startswith("::error")]
    warnings = [t for t in text if t.startswith("::warning")]
    assert len(errors) == 1 and len(warnings) == 2, (errors, warnings)
    # the required domain rule failed: its numbers, escaped per the workflow-command rules
    assert errors[0].startswith("::error title=laf gate FAIL%3A domain suites%3A min gain 0.5::FAIL (required rule): domain/tempo-t4 acc:")
    assert "%25" in errors[0] and "n=24" in errors[0] and "95%25 CI" in errors[0]
    assert any("INCONCLUSIVE (required rule): general/world-facts" in w and "fewer than the 100000" in w for w in warnings)
    assert any("FAIL (advisory rule): bias/crows-pairs" in w and "title=laf gate FAIL%3A bias suites%3A min gain 0.5 (advisory)" in w for w in warnings)
    assert "::" not in piped_run["stdout"], "workflow commands stay off stdout"
    assert "verdict: FAIL" in piped_run["stdout"]
    summary = piped_run["summary"].read_text()
    assert summary.startswith("earlier step\n"), "the step summary is appended to, never overwritten"
    assert "lost-and-found gate: **FAIL**" in summary and "| domain suites: min gain 0.5 | domain/tempo-t4 | acc |" in summary
    assert "HTML report:" in summary and "report.html" in summary


def test_gate_on_github_actions_and_an_unwritable_step_summary(piped_run, tmp_path, monkeypatch):
    run = piped_run["tmp"] / "reports" / "ci" / "eval"
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a folder: cannot be appended to
    code, _, err = run_cli("gate", "--baseline", f"{run}#base", "--candidate", str(run), "--policy", str(policy), "-o", str(tmp_path / "v.json"))
    assert code == 1, err
    assert sum(line.startswith("::error ") for line in err.splitlines()) == 1
    assert sum(line.startswith("::warning ") for line in err.splitlines()) == 3  # two rules and the summary problem
    assert "could not append the summary to GITHUB_STEP_SUMMARY" in err and "Traceback" not in err
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "s.md"))
    monkeypatch.delenv("GITHUB_ACTIONS")
    code, _, err = run_cli("gate", "--baseline", f"{run}#base", "--candidate", str(run), "--policy", str(policy), "-o", str(tmp_path / "v.json"))
    assert code == 1 and "::" not in err and not (tmp_path / "s.md").exists(), "nothing GitHub-specific outside GitHub Actions"


def test_quiet_keeps_stage_lines_and_the_verdict(piped_run):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")} | {"LAF_PROGRESS_INTERVAL": str(INTERVAL), "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "harness", "run", str(piped_run["config"]), "--quiet", "--set", "gate.inconclusive=fail"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    code, out, err = p.returncode, p.stdout, p.stderr
    assert code == 1, err
    lines = err.splitlines()
    assert lines[:2] == ["train: unchanged, using ci@1", "evaluate: unchanged"], err
    assert not any(PROGRESS.match(x) or x[:1].isspace() for x in lines), err
    assert "verdict: FAIL" in out and "report:" in out and "category" not in out, "no results table"


def test_quiet_log_progress_writes_stage_lines_only(monkeypatch):
    import io

    from harness.cli import output
    from harness.cli.ci import LogProgress
    from harness.train.loop import StepEvent

    buf = io.StringIO()
    monkeypatch.setattr(output.err_console, "file", buf)
    for quiet in (True, False):
        buf.seek(0), buf.truncate()
        with LogProgress(quiet=quiet, interval=0.01) as p:
            p.log("evaluate: base on 1 suite")
            p.log("  loading tiny")
            for done in (0, 5, 10):
                time.sleep(0.02)
                p.eval_update("base", "domain/x", done, 10, 0)
            p.train_update(StepEvent(2, 2, {"loss": 1.0, "lr": 1e-3, "tokens_per_s": 10.0}))
        lines = buf.getvalue().splitlines()
        if quiet:
            assert lines == ["evaluate: base on 1 suite"]
        else:
            assert lines[:2] == ["evaluate: base on 1 suite", "  loading tiny"]
            assert any(PROGRESS.match(x) and "5/10 (50%)" in x and "ETA" in x for x in lines), lines
            assert any("10/10 (100%)" in x and "done in" in x for x in lines) and any("step 2/2 (100%)" in x for x in lines), lines


def test_bad_progress_interval_is_a_clean_error(piped_run, monkeypatch):
    monkeypatch.setenv("LAF_PROGRESS_INTERVAL", "soon")
    assert_clean_error(run_cli("run", str(piped_run["config"])), "LAF_PROGRESS_INTERVAL", "seconds")
    monkeypatch.setenv("LAF_PROGRESS_INTERVAL", "nan")
    assert_clean_error(run_cli("run", str(piped_run["config"])), "LAF_PROGRESS_INTERVAL")


def test_workflow_command_escaping():
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("a: b, c%") == "a%3A b%2C c%25"
    assert workflow_command("warning", "x\ny", title="t:1") == "::warning title=t%3A1::x%0Ay"
    assert workflow_command("group", "train: 3 steps") == "::group::train: 3 steps"


def test_each_training_of_a_sweep_measures_its_own_rate(monkeypatch):
    """A sweep trains its points one after another in one process: the second point's s/step and ETA come from its
    own start (they used to include the first point's whole training), and each point prints its own 'done in'."""
    import io

    from harness.cli import output
    from harness.cli.ci import LogProgress
    from harness.train.loop import StepEvent

    buf = io.StringIO()
    monkeypatch.setattr(output.err_console, "file", buf)
    with LogProgress(interval=0.01) as p:
        for point, pause in (("r2", 0.3), ("r4", 0.02)):
            p.log(f"train: {point} on train.jsonl")
            for step in (1, 2, 3):
                time.sleep(pause)
                p.train_update(StepEvent(step, 3, {"loss": 1.0, "lr": 1e-3, "tokens_per_s": 10.0}))
    text = buf.getvalue()
    second = text.split("train: r4 on train.jsonl", 1)[1].splitlines()
    rates = [float(m.group(1)) for x in second if (m := re.search(r"([0-9.]+) s/step", x))]
    assert rates and max(rates) < 0.2, second  # the first point's 0.3 s steps are not in the second point's rate
    assert text.count("step 3/3 (100%)") >= 2 and text.count("done in") >= 2, text
