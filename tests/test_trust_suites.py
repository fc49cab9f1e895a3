"""Suites that lm-eval would get silently wrong, and storage that is corrupted, foreign or read-only (issue 18, 'suites' and 'storage')."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_trust_templates import refused, write_suite

ROWS = [{"q": f"What is {i}?", "choices": ["a", "b", "c"], "gold": i % 3} for i in range(6)]

CASES = {
    # name: (task overrides, rows, key named, words in the message)
    "empty choices": ({}, [{**ROWS[0], "choices": []}, *ROWS[1:]], "task.doc_to_choice", "item 0 has no choices"),
    "gold out of range": ({}, [*ROWS[:2], {**ROWS[2], "gold": 3}], "task.doc_to_target", "gold index 3 is out of range"),
    "gold negative": ({}, [{**ROWS[0], "gold": -1}], "task.doc_to_target", "gold index -1 is out of range"),
    "gold missing": ({}, [*ROWS[:4], {k: v for k, v in ROWS[4].items() if k != "gold"}], "task.doc_to_target", "'gold' is undefined"),
    "gold not a choice": ({"doc_to_target": "answer"}, [{**r, "answer": "zz"} for r in ROWS], "task.doc_to_target", "not one of its choices"),
    "undefined variable": ({"doc_to_text": "{{question}}"}, ROWS, "task.doc_to_text", "'question' is undefined"),
    "unknown metric": ({"metric_list": [{"metric": "acurracy"}]}, ROWS, "task.metric_list[0].metric", "unknown metric 'acurracy'"),
    "unknown aggregation": ({"metric_list": [{"metric": "acc", "aggregation": "median_of_means"}]}, ROWS, "task.metric_list[0].aggregation", "unknown aggregation"),
    "process_docs as a string": ({"process_docs": "utils.process_docs"}, ROWS, "task.process_docs", "cannot name code"),
    "process_results": ({"process_results": "!function utils.x"}, ROWS, "task.process_results", "cannot name code"),
    "max_gen_toks 1e8": ({"output_type": "generate_until", "generation_kwargs": {"max_gen_toks": 1e8}}, ROWS, "task.generation_kwargs.max_gen_toks", "whole number"),
    "temperature inf": ({"output_type": "generate_until", "generation_kwargs": {"temperature": float("inf")}}, ROWS, "line 9", "not a finite number"),
    "temperature negative": ({"output_type": "generate_until", "generation_kwargs": {"temperature": -0.5}}, ROWS, "task.generation_kwargs.temperature", "finite number >= 0"),
    "until not strings": ({"output_type": "generate_until", "generation_kwargs": {"until": [1, 2]}}, ROWS, "task.generation_kwargs.until", "list of strings"),
    "unknown output type": ({"output_type": "multiple_choise"}, ROWS, "task.output_type", "unknown output type"),
    "choices not a list": ({"doc_to_choice": "{{q}}"}, ROWS, "task.doc_to_choice", "not a list"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_suites_validate_names_file_and_key(tmp_path, case):
    override, rows, key, words = CASES[case]
    suite = write_suite(tmp_path, override, rows=rows)
    refused(run_cli("suites", "validate", str(suite)), str(suite), key, words)


def test_eval_refuses_the_same_before_loading_a_model(tmp_path):
    suite = write_suite(tmp_path, {}, rows=[*ROWS[:2], {**ROWS[2], "gold": 7}])
    refused(run_cli("eval", "--model", str(tmp_path / "no-such-model"), "--suite", str(suite), "--out", str(tmp_path / "o"), "--quiet"),
            "task.doc_to_target", "gold index 7")


def test_builtin_suites_still_validate():
    code, out, err = run_cli("suites", "validate", "general/world-facts", "domain/tempo-t4", "general/text", "bias/crows-pairs")
    assert code == 0, out + err


# ---------------------------------------------------------------- the response cache: corrupted, truncated, foreign


def _cache_cases(tmp_path: Path, tiny_cache: Path) -> dict[str, Path]:
    out = {}
    p = tmp_path / "garbage.sqlite"
    p.write_bytes(os.urandom(8192))
    out["not a database"] = p
    p = tmp_path / "truncated.sqlite"
    data = tiny_cache.read_bytes()
    p.write_bytes(data[: len(data) // 3 + 100])
    out["truncated"] = p
    p = tmp_path / "foreign.sqlite"
    with sqlite3.connect(p) as c:
        c.execute("CREATE TABLE responses (id INTEGER, payload BLOB)")
        c.execute("INSERT INTO responses VALUES (1, x'00')")
    out["foreign responses table"] = p
    p = tmp_path / "empty.sqlite"
    p.write_bytes(b"")
    out["empty file"] = p
    return out


@pytest.fixture(scope="module")
def small_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    suite = write_suite(root / "s", {}, rows=[{"q": f"What is {i} plus {i}?", "choices": [str(2 * i), str(i), "no"], "gold": 0} for i in range(12)])
    code, out, err = run_cli("eval", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(root / "run"),
                             "--cache", str(root / "cache.sqlite"), "--quiet", "--batch-size", "4")
    assert code == 0, err
    return root, suite


@pytest.mark.parametrize("case", ["not a database", "truncated", "foreign responses table", "empty file"])
def test_a_broken_or_foreign_cache_is_a_clear_error_or_works(tiny_model_dir, small_run, tmp_path, case):
    root, suite = small_run
    with sqlite3.connect(root / "cache.sqlite") as c:  # a real cache file to truncate
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache = _cache_cases(tmp_path, root / "cache.sqlite")[case]
    code, out, err = run_cli("eval", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(tmp_path / "o"),
                             "--cache", str(cache), "--quiet", "--batch-size", "4")
    assert "Traceback" not in err
    if code == 0:  # an empty or unrelated file: used as an empty cache, results as without it
        assert json.loads((tmp_path / "o" / "results.json").read_text())["results"] == json.loads((root / "run" / "results.json").read_text())["results"]
    else:
        assert code == 3 and "response cache" in err and "--no-cache" in err, err


def test_gate_and_report_read_a_read_only_run_folder(small_run, tmp_path):
    root, _ = small_run
    run = tmp_path / "ro"
    import shutil

    shutil.copytree(root / "run", run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    for p in [run, *run.iterdir()]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        policy = tmp_path / "p.yaml"
        policy.write_text("rules:\n  - {category: general, max_drop: 0.5}\n")
        code, out, err = run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#base", "--policy", str(policy), "-o", str(tmp_path / "v.json"))
        assert code in (0, 1, 2), err
        code, out, err = run_cli("report", str(run), "-o", str(tmp_path / "r.html"))
        assert code == 0, err
        # reading created nothing beside the store (no -wal/-shm/journal) and changed nothing (also when run as root)
        assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    finally:
        for p in [run, *run.iterdir()]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
