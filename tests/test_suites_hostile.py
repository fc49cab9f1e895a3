"""Hostile suite files and data: template bombs, broken data files, wrong-shape rows, bad names and options.

Each is one clear error (exit 3, naming the file, the key or the row) from `laf suites validate`, never a traceback,
never unbounded time or memory (tester's report F1-F3, F5-F7, F9, F13, F14)."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import LafError
from harness.suites import load_suite
from harness.suites.sources import data_dir
from harness.suites.templates import MAX_RENDER_SECONDS, SANDBOX, TemplateBudgetError
from tests.conftest import run_cli

ROWS = [{"question": f"What is {i}?", "choices": ["a", "b", "c"], "gold": i % 3} for i in range(3)]


def refused(result, *needles: str) -> str:
    code, out, err = result
    text = " ".join((out + err).split())
    assert code == 3 and "Traceback" not in text, (code, out, err)
    for n in needles:
        assert n in text, text
    return text


def suite_file(folder: Path, doc_to_text: str = "{{question}}", data: str = "data.jsonl", rows=ROWS, name: str = "s", **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if rows is not None and data.endswith(".jsonl") and not (folder / data).exists():
        (folder / data).write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"category": "general", "data": {"path": data},
            "task": {"output_type": "multiple_choice", "doc_to_text": doc_to_text, "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}"},
            **extra}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return folder / f"{name}.yaml"


# ---------------------------------------------------------------- F1-F3: template bombs are bounded, one error each

BOMBS = [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{question}}", "CPU time"),  # F1
    ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", "CPU time"),  # output bound 16M: time first
    ("{{ 'a' * 10**10 }}", "10,000,000,000"),  # F2
    ("{{ (range(100000)|list) * 100000 }}", "10,000,000,000"),
    ("{{ 'a' * 10**8 }}{{question}}", "100,000,000"),  # 100 MB prompts passed validation
    ("{{ 7 ** 100000 }}", "bits"),
    ("{{ 'a'.center(10**9) }}", "center"),
    ("{{ 'a'|center(10**9) }}", "center"),
    ("{{ '{:>1000000000}'.format(1) }}", "formatted field"),
    ("{{ '%1000000000d' % 1 }}", "formatted field"),
    ("{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% else %}{{ s }}{% endif %}{% endmacro %}{{ f('a', 40) }}", "(~)"),
    ("{% macro g() %}{{ 'a' * 999999 }}{% endmacro %}{% for i in range(100000) %}{{ g() }}{% endfor %}", "characters"),
    ("{{ ('a' * 999999).replace('', 'bb') }}", "replace"),
    ("{{ ('a' * 999999)|regex_replace('', 'bb') }}", "regex_replace"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),  # F3
    ("{{ range(10**9)|list|length }}", "OverflowError"),
    ("{{ 1 / 0 }}{{question}}", "ZeroDivisionError"),
]


@pytest.mark.parametrize("template,needle", BOMBS, ids=[f"bomb{i}" for i in range(len(BOMBS))])
def test_a_template_bomb_is_one_error_naming_file_key_and_item(tmp_path, template, needle):
    suite = suite_file(tmp_path, template)
    started = time.monotonic()
    refused(run_cli("suites", "validate", str(suite)), str(suite), "task.doc_to_text", "item 0", needle)
    assert time.monotonic() - started < 30


def test_the_render_budget_restores_the_cpu_timer_and_keeps_real_templates_working():
    calls = []

    def mine(*a):
        calls.append(a)

    old = signal.signal(signal.SIGVTALRM, mine)
    try:
        signal.setitimer(signal.ITIMER_VIRTUAL, 100)
        out = SANDBOX.from_string("{% for c in choices %}{{ loop.index }}. {{ c ~ '!' }} {% endfor %}{{ q|upper }} {{ '%s'|format(q) }}"
                                  " {{ choices|join(',') }} {{ 2 ** 10 }} {{ '{:>3}'.format(1) }}").render(q="hi", choices=["a", "b"])
        assert out == "1. a! 2. b! HI hi a,b 1024   1"
        assert signal.getsignal(signal.SIGVTALRM) is mine and 90 < signal.getitimer(signal.ITIMER_VIRTUAL)[0] <= 101
        with pytest.raises(TemplateBudgetError, match="CPU time"):
            SANDBOX.from_string("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}").render()
        assert signal.getsignal(signal.SIGVTALRM) is mine and 90 < signal.getitimer(signal.ITIMER_VIRTUAL)[0] <= 101  # ours is back
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old)
    assert MAX_RENDER_SECONDS <= 5


def test_a_long_field_used_as_the_prompt_is_refused(tmp_path):  # F14: the prompt size is bounded
    rows = [{**ROWS[0], "question": "word " * 300_000}]
    refused(run_cli("suites", "validate", str(suite_file(tmp_path, "question", rows=rows))), "task.doc_to_text", "item 0", "1,000,000")


# ---------------------------------------------------------------- F5: data readers and format normalizers


def test_a_csv_field_over_128_kib_is_read(tmp_path):
    with open(tmp_path / "big.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "choices", "gold"])
        w.writerow(["q" * 200_000, '["a", "b"]', "0"])
    code, out, err = run_cli("suites", "validate", str(suite_file(tmp_path, data="big.csv", rows=None)))
    assert code == 0 and "1 items" in out, (out, err)


def test_a_csv_field_over_the_row_bound_is_one_error(tmp_path, monkeypatch):
    import harness.io

    monkeypatch.setattr(harness.io, "DATA_LINE_BYTES", 1000)  # the documented bound (16 MiB), made small to test fast
    field = "\n".join(["x" * 500] * 10)
    (tmp_path / "big.csv").write_text(f'question,choices,gold\n"{field}","[""a"", ""b""]",0\n')
    refused(run_cli("suites", "validate", str(suite_file(tmp_path, data="big.csv", rows=None))), "big.csv, line", "field larger than field limit")


BAD_FILES = [
    ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("bad.parquet", "PAR1garbagegarbagePAR1", "not a readable Parquet file"),
]


@pytest.mark.parametrize("name,content,needle", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_broken_data_file_is_one_error_naming_it(tmp_path, name, content, needle):
    (tmp_path / name).write_text(content)
    refused(run_cli("suites", "validate", str(suite_file(tmp_path, data=name, rows=None))), name, needle)


@pytest.mark.parametrize("fmt,field", [("arc_llmfoundry", "query"), ("winogrande_hub", "sentence"), ("hellaswag_hub", "endings"),
                                       ("boolq_llmfoundry", "query"), ("mmlu_hub", "answer")])
def test_rows_in_the_wrong_schema_name_file_row_and_field(tmp_path, fmt, field):
    suite = suite_file(tmp_path)
    spec = yaml.safe_load(suite.read_text())
    spec["data"]["format"] = fmt
    suite.write_text(yaml.safe_dump(spec))
    refused(run_cli("suites", "validate", str(suite)), "data.jsonl, row 1", f"field '{field}'", fmt)


@pytest.mark.parametrize("rows,needle", [
    ([{"question": "q", "mc1_targets": {"x": "notint"}, "mc2_targets": 5}], "field 'mc1_targets'"),
    ([{"question": "q", "mc1_targets": {"x": 1}, "mc2_targets": 5}], "field 'mc2_targets' must be an object"),
    ([{"foo": 1}], "field 'question' is missing"),
    ([7], "not an object"),
])
def test_truthfulqa_files_in_the_wrong_shape_name_row_and_field(tmp_path, rows, needle):
    (tmp_path / "tqa.json").write_text(json.dumps(rows))
    refused(run_cli("suites", "validate", f"truthfulqa_mc:{tmp_path / 'tqa.json'}"), "tqa.json, row 1", needle)


def test_a_good_truthfulqa_file_still_normalizes(tmp_path):
    (tmp_path / "tqa.json").write_text(json.dumps([{"question": "q?", "mc1_targets": {"yes": 1, "no": 0}, "mc2_targets": {"yes": 1, "no": 0}}] * 3))
    docs = load_suite(f"truthfulqa_mc:{tmp_path / 'tqa.json'}").load_docs()
    assert docs[0]["mc1_targets"] == {"choices": ["yes", "no"], "labels": [1, 0]}


# ---------------------------------------------------------------- F6, F7: options and items that lm-eval would crash on


def test_num_fewshot_must_leave_an_item_to_score(tmp_path):
    refused(run_cli("suites", "validate", str(suite_file(tmp_path, options={"num_fewshot": 1_000_000}))), "options.num_fewshot", "3 items")
    refused(run_cli("suites", "validate", str(suite_file(tmp_path, name="t", options={"num_fewshot": 3}))), "options.num_fewshot")
    code, out, err = run_cli("suites", "validate", str(suite_file(tmp_path, name="u", options={"num_fewshot": 2})))
    assert code == 0, (out, err)


@pytest.mark.parametrize("text", ["", "   ", 5])
def test_a_perplexity_item_without_text_is_refused_naming_it(tmp_path, text):
    (tmp_path / "p.jsonl").write_text(json.dumps({"text": "fine prose."}) + "\n" + json.dumps({"text": text}) + "\n")
    (tmp_path / "p.yaml").write_text("category: general\ntype: perplexity\ndata: {path: p.jsonl}\n")
    refused(run_cli("suites", "validate", str(tmp_path / "p.yaml")), "item 1", "'text'")


# ---------------------------------------------------------------- F9: suite names


@pytest.mark.parametrize("name", ["../../../tmp/pwn", "/etc/x", "a\x1bb", "x" * 5000, "a//b", "general/../x", "a/b/c/d/e", ""])
def test_an_unsafe_suite_name_is_refused(tmp_path, name):
    refused(run_cli("suites", "validate", str(suite_file(tmp_path, suite=name))), "'suite'", "not allowed")


def test_a_safe_category_name_is_kept_and_a_builtin_name_is_marked(tmp_path):
    ok = load_suite(str(suite_file(tmp_path, suite="support/faq-v1.2")))
    assert ok.name == "support/faq-v1.2" and "replaces the built-in" not in ok.origin
    shadow = load_suite(str(suite_file(tmp_path, name="t", suite="general/world-facts")))
    assert shadow.name == "general/world-facts" and "replaces the built-in" in shadow.origin
    assert load_suite("general/world-facts").origin == "built-in"


# ---------------------------------------------------------------- F13: devices, pipes, a --data-dir that is no folder


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_or_pipe_as_data_is_refused_as_such(tmp_path):
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    refused(run_cli("suites", "validate", str(suite_file(tmp_path, data="zero.jsonl", rows=None))), "not a regular file")
    os.mkfifo(tmp_path / "fifo.jsonl")
    refused(run_cli("suites", "validate", str(suite_file(tmp_path, name="t", data="fifo.jsonl", rows=None))), "not a regular file")


def test_a_data_dir_that_is_not_a_folder_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "missing", tmp_path / "file"):
        with pytest.raises(LafError, match="--data-dir"):
            data_dir(bad)
        refused(run_cli("suites", "validate", "benchmarks/arc_easy", "--data-dir", str(bad)), "--data-dir", str(bad))
    monkeypatch.delenv("LAF_DATA_DIR", raising=False)
    assert data_dir(tmp_path) == tmp_path and data_dir(None) is None


def test_a_long_perplexity_document_and_the_slice_filter_still_work(tmp_path):
    """Review findings: a 1.2M-character document is a perplexity suite's whole point (scored in rolling windows),
    not a prompt; and the sandbox's bounded slice filter must call jinja's with its context."""
    (tmp_path / "book.jsonl").write_text(json.dumps({"text": "word " * 240_000}) + "\n")
    (tmp_path / "ppl.yaml").write_text("category: general\ntype: perplexity\ndata: {path: book.jsonl}\n")
    code, out, err = run_cli("suites", "validate", str(tmp_path / "ppl.yaml"))
    assert code == 0, (out, err)
    assert SANDBOX.from_string("{{ x | slice(2) | list }}").render(x=[1, 2, 3, 4]) == "[[1, 2], [3, 4]]"
