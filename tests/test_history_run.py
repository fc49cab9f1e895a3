"""The issue's "done when" on the tiny fixture model: a quickstart-style `laf run`, run twice with `laf release`
between, gates the second candidate against the first (re-scored on the same items, because the release's records
lay in the run's own evaluation folder, which the second run rewrites) and shows both versions in the report's trend."""

from __future__ import annotations

import json

import yaml

from harness.pipeline import run_pipeline
from tests.conftest import run_cli
from tests.test_pipeline import write_config


def test_run_release_run_gates_against_the_release_and_trends(tiny_model_dir, tmp_path):
    url = str(tmp_path / "history.sqlite")
    config = write_config(tmp_path, tiny_model_dir, "hist", str(tmp_path / "cache.sqlite"),
                          eval={"batch_size": 4, "cache": str(tmp_path / "cache.sqlite"),
                                "suites": [{"suite": "domain/tempo-t4", "limit": 40}, {"suite": "general/world-facts", "limit": 40}]})
    cfg = yaml.safe_load(config.read_text())
    cfg["train"]["max_steps"] = 4
    cfg["gate"] = {"policy": {"min_items": 20, "resamples": 500, "rules": [{"category": "domain", "min_gain": 0.0}, {"category": "general", "max_drop": 0.5}]},
                   "baseline": "released"}
    cfg["history"] = url
    config.write_text(yaml.safe_dump(cfg))

    first = run_pipeline(config)
    assert first["adapters"] == ["hist@1"] and first["history"]["new"] is True and "history" in first["stages_ran"]
    v1 = json.loads((tmp_path / "reports" / "hist" / "verdict.json").read_text())
    assert v1["baseline"]["model"] == "base" and any("no version of hist has been released" in n for n in v1["notes"])

    code, out, err = run_cli("release", "hist@1", "--note", "v1 shipped", "--history", url, "--json")
    assert code == 0, err

    second = run_pipeline(config, overrides=["train.seed=1"])  # another training run: a new version
    assert second["adapters"] == ["hist@2"]
    v2 = json.loads((tmp_path / "reports" / "hist" / "verdict.json").read_text())
    assert v2["baseline"]["model"] == "hist@1" and v2["baseline_kind"] == "released"
    assert any("re-scored in this run on the same items" in n for n in v2["notes"])
    assert v2["history"]["release"]["candidate"] == "hist@1"
    # re-scored on the same items: hist@1's records now are the ones the history recorded for it (same cache, same items)
    assert v2["baseline"]["identity"]["records_digest"] == v1["candidate"]["identity"]["records_digest"]

    trend = json.loads((tmp_path / "reports" / "hist" / "eval" / "trend.json").read_text())
    versions = trend["adapters"][0]["versions"]
    assert [v["candidate"] for v in versions] == ["hist@1", "hist@2"]
    assert versions[0]["released"]["note"] == "v1 shipped" and [v["current"] for v in versions] == [False, True]
    html = (tmp_path / "reports" / "hist" / "report.html").read_text()
    assert 'id="trend"' in html and "hist@1" in html and "hist@2" in html

    shown = json.loads(run_cli("history", "show", "hist", "--history", url, "--json")[1])
    assert [(v["candidate"], v["baseline"], v["released"] is not None) for v in shown["versions"]] == [("hist@1", "base", True), ("hist@2", "hist@1", False)]
    # the unchanged second run again: the same run, one entry
    again = run_pipeline(config, overrides=["train.seed=1"])
    assert again["history"]["new"] is False and again["history"]["run_id"] == second["history"]["run_id"]
