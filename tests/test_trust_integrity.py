"""Run folders carry digests that the gate and the report check; cached rows are validated on read (issue 18, item 8)."""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml

from harness.results import INTEGRITY, seal_run
from tests.conftest import assert_clean_error, run_cli
from tests.synthetic import suite_meta, write_run
from tests.test_trust_templates import write_suite

SUITES = {"general/facts": suite_meta("general")}


def _run(tmp_path):
    base = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0] * 10  # 30 %
    return write_run(tmp_path / "run", SUITES, {"base": {"general/facts": base}, "cand@1": {"general/facts": base}})


def _policy(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"rules": [{"category": "general", "min_gain": 0.2}]}))
    return str(p)


def _gate(run, tmp_path, *extra):
    return run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#cand@1", "--policy", _policy(tmp_path), *extra)


def _edit_records(run):
    """The issue's example: the candidate's 30 % turned into 100 % by hand."""
    lines = []
    for line in (run / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["model"] == "cand@1":
            r["metrics"]["acc"] = 1
        lines.append(json.dumps(r))
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")


def _edit_results(run):
    d = json.loads((run / "results.json").read_text())
    d["results"]["cand@1"]["general/facts"]["acc"]["value"] = 1.0
    (run / "results.json").write_text(json.dumps(d))


TAMPER = {
    "records edited": _edit_records,
    "results edited": _edit_results,
    "integrity.json deleted": lambda run: (run / INTEGRITY).unlink(),
    "integrity.json garbage": lambda run: (run / INTEGRITY).write_text("{not json"),
    "records reformatted": lambda run: (run / "records.jsonl").write_text((run / "records.jsonl").read_text().replace(", ", ",")),
    "killed while publishing": lambda run: (run / ".publishing").write_text("123"),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_gate_and_report_refuse_a_modified_run_folder(tmp_path, case):
    run = _run(tmp_path)
    assert _gate(run, tmp_path)[0] == 1  # untouched: 30 % -> 30 % fails min_gain
    TAMPER[case](run)
    assert_clean_error(_gate(run, tmp_path), "integrity check", "--allow-modified")
    assert_clean_error(run_cli("report", str(run)), "integrity check")


def test_allow_modified_is_recorded_in_the_verdict_and_the_report(tmp_path):
    run = _run(tmp_path)
    _edit_records(run)
    code, out, err = _gate(run, tmp_path, "--allow-modified")
    assert code == 0, err  # the edit "passes" -- and the verdict says why it must not be trusted
    v = json.loads((run / "verdict.json").read_text())
    assert v["candidate"]["integrity"].startswith("modified: records.jsonl changed")
    assert "failed its integrity check" in " ".join(out.split())
    code, _, err = run_cli("report", str(run), "--allow-modified")
    assert code == 0, err
    html = (run / "report.html").read_text()
    assert "failed its integrity check" in html and "--allow-modified" in html


def test_a_real_run_is_sealed_and_an_edited_sqlite_row_is_caught(tiny_model_dir, tmp_path):
    suite = write_suite(tmp_path / "s", {}, rows=[{"q": f"What is {i} plus {i}?", "choices": [str(2 * i), str(i), "no"], "gold": 1} for i in range(10)])
    code, _, err = run_cli("eval", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(tmp_path / "run"),
                           "--cache", str(tmp_path / "c.sqlite"), "--quiet", "--batch-size", "4")
    assert code == 0, err
    run = tmp_path / "run"
    sealed = json.loads((run / INTEGRITY).read_text())
    assert {"results.json", "records.jsonl", "results.sqlite"} <= set(sealed)
    code, _, err = run_cli("report", str(run), "-o", str(tmp_path / "r.json"), "--format", "json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["integrity"] == "verified"
    with sqlite3.connect(run / "results.sqlite") as c:  # the store is what the gate reads: edit a row there
        rec = json.loads(c.execute("SELECT record FROM items WHERE doc_id = 0").fetchone()[0])
        rec["metrics"]["acc"] = 1 - rec["metrics"]["acc"]
        c.execute("UPDATE items SET record = ? WHERE doc_id = 0", (json.dumps(rec),))
    assert_clean_error(run_cli("report", str(run), "-o", str(tmp_path / "r2.json"), "--format", "json"), "results.sqlite changed")


def test_seal_run_declares_the_present_content(tmp_path):
    run = _run(tmp_path)
    _edit_records(run)
    seal_run(run)  # e.g. an import of trusted files: now they are the run's
    assert _gate(run, tmp_path)[0] == 0


# ---------------------------------------------------------------- cache rows are validated on read


BAD_ROWS = {
    "nan log-likelihood": '[NaN, true]',
    "positive log-likelihood": '[3.5, true]',
    "wrong type": '"a string"',
    "not json": "{[",
    "wrong arity": '[-1.0]',
    "greedy not a bool": '[-1.0, "yes"]',
}


def test_bad_cache_rows_are_misses_rescored_and_counted(tiny_model_dir, tmp_path):
    from harness.evaluate import EvalSpec, run_eval

    suite = write_suite(tmp_path / "s", {}, rows=[{"q": f"What is {i} plus {i}?", "choices": [str(2 * i), str(i + 100), "no"], "gold": 0} for i in range(8)])
    spec = dict(suites=[str(suite)], model=str(tiny_model_dir), cache=str(tmp_path / "c.sqlite"), batch_size=4)
    ref = run_eval(EvalSpec(out=str(tmp_path / "ref"), **spec)).to_dict()
    with sqlite3.connect(tmp_path / "c.sqlite") as c:
        keys = [k for (k,) in c.execute("SELECT key FROM responses ORDER BY key")]
        for k, value in zip(keys, BAD_ROWS.values()):
            c.execute("UPDATE responses SET value = ? WHERE key = ?", (value, k))
        # the stored suite result would serve the re-run without reading one response (its own bad rows:
        # tests/test_eval.py); without it, the re-run reads every response
        c.execute("DELETE FROM suite_results")
    logs: list[str] = []
    again = run_eval(EvalSpec(out=str(tmp_path / "again"), **spec), log=logs.append).to_dict()
    req = again["models"]["base"]["requests"]
    assert req["computed"] == len(BAD_ROWS) and req["cache_hits"] == len(keys) - len(BAD_ROWS)
    assert any(f"{len(BAD_ROWS)} invalid cached row(s)" in line for line in logs), logs
    assert again["results"] == ref["results"]
    with sqlite3.connect(tmp_path / "c.sqlite") as c:  # and the rows were rewritten
        assert all(json.loads(v)[0] <= 0 for (v,) in c.execute("SELECT value FROM responses"))
