"""The presentation layer: row builders carry the document's numbers, a pipe gets Markdown tables with whole names,
--format json parses, and the flags every command shares read the same (help, ranges, -o for files)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import yaml

from harness import defaults
from harness.cli.rows import calibration_rows, compare_rows, results_rows
from harness.present import Table, markdown, markdown_table
from harness.results import ResultsDoc
from tests.conftest import markdown_tables, run_cli
from tests.synthetic import suite_meta, write_run

LONG = ("general/world-facts", "general/text")


def usage_error(*argv: str) -> tuple[int, str, str]:
    """``laf`` with bad arguments, in-process: argparse exits through SystemExit (code 2), usage on stderr."""
    import contextlib
    import io

    from harness.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main(list(argv))
    return int(e.value.code or 0), out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def piped_eval(tiny_model_dir, tmp_path_factory):
    """One `laf eval` of two built-in suites with long names; later calls are served from its cache."""
    tmp = tmp_path_factory.mktemp("present")
    args = ["eval", "--model", str(tiny_model_dir), "--suite", LONG[0], "--suite", LONG[1], "--limit", "4", "--out", str(tmp / "out"),
            "--cache", str(tmp / "c.sqlite"), "--quiet", "--batch-size", "4", "--max-length", "256"]
    code, out, err = run_cli(*args, "--format", "json")
    assert code == 0, err
    return {"args": args, "doc": json.loads(out), "out": tmp / "out"}


def test_piped_eval_prints_whole_suite_and_metric_names_in_a_markdown_table(piped_eval):
    for extra in ((), ("--format", "md")):  # the default on a pipe (run_cli is not a terminal) and the explicit flag
        code, out, err = run_cli(*piped_eval["args"], *extra)
        assert code == 0, err
        [table] = markdown_tables(out)
        assert {r["suite"] for r in table} == set(LONG)
        assert "byte_perplexity" in {r["metric"] for r in table if r["suite"] == "general/text"}
        assert "…" not in out  # nothing cut to a terminal width


def test_format_json_and_json_print_the_same_document(piped_eval):
    code, out, err = run_cli(*piped_eval["args"], "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["results"] == piped_eval["doc"]["results"] and set(doc["suites"]) == set(LONG)
    code, out, err = usage_error(*piped_eval["args"], "--json", "--format", "md")  # a contradiction is a usage error
    assert code == 2 and "usage:" in err and "--json" in err and out == ""


def test_format_table_forces_rich(piped_eval):
    code, out, err = run_cli(*piped_eval["args"], "--format", "table")
    assert code == 0, err
    assert markdown_tables(out) == [] and "general/" in out


def test_results_rows_equal_the_documents_numbers(piped_eval):
    doc = ResultsDoc.from_dict(piped_eval["doc"])
    t = results_rows(doc)
    rows = t.records()
    assert len(rows) == sum(len(m) for m in doc.results["base"].values())
    for r in rows:
        got = doc.results["base"][r["suite"]][r["metric"]]
        assert r["base"] == got["value"] and r["base ±"] == got.get("stderr") and r["n"] == got["n"]
        assert r["primary"] == (r["metric"] == doc.suites[r["suite"]].primary_metric)
    # the primary metric comes first within its suite
    for suite in LONG:
        assert [r["primary"] for r in rows if r["suite"] == suite][0] is True


def test_markdown_cells_are_escaped_and_parse_back():
    hostile = "a|b <script>alert(1)</script>\nnext line"
    t = Table(["name", "value"], formats={"value": ".2f"}, right={"value"})
    t.add(hostile, 0.5)
    t.add("general/world-facts", None)
    text = markdown(t)
    assert "<script>" not in text and "|---|---:|" in text
    rows = markdown_tables(text)[0]
    assert rows[0]["name"] == "a|b &lt;script&gt;alert(1)&lt;/script&gt; next line" and rows[0]["value"] == "0.50"
    assert rows[1] == {"name": "general/world-facts", "value": "–"}
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])


SUITES = {"domain/support": suite_meta("domain"), "general/facts": suite_meta("general")}


def _values(rng, n, domain):
    return {"domain/support": (rng.random(n) < domain).astype(int).tolist(), "general/facts": (rng.random(n) < 0.8).astype(int).tolist()}


@pytest.fixture
def two_candidates(tmp_path):
    rng = np.random.default_rng(3)
    base = _values(rng, 200, 0.3)
    return write_run(tmp_path / "run", SUITES, {"base": base, "strong@1": dict(base, **{"domain/support": (rng.random(200) < 0.9).astype(int).tolist()}),
                                                "same@1": dict(base)})


def test_compare_rows_follow_compare_json(two_candidates, tmp_path):
    code, out, err = run_cli("compare", str(two_candidates), "-o", str(tmp_path / "c.json"), "--format", "json")
    assert code == 0 and "deprecated" not in err, err
    doc = json.loads(out)
    assert json.loads((tmp_path / "c.json").read_text()) == doc
    t = compare_rows(doc)
    heads = t.columns[2:]
    assert [h.split(" ", 1)[1] for h in heads] == [r["candidate"] for r in doc["ranking"]]
    by = {r[t.columns[0]]: r for r in t.records()}
    assert [by["Pareto front"][h] for h in heads] == [r["pareto"] for r in doc["ranking"]]
    assert [by["domain p (Holm)"][h] for h in heads] == [r["domain_p_holm"] for r in doc["ranking"]]
    # the same rows reach a pipe as Markdown
    code, out, err = run_cli("compare", str(two_candidates), "-o", str(tmp_path / "c2.json"))
    assert code == 0, err
    printed = {r["change (CI)"]: r for r in markdown_tables(out)[0]}
    assert [printed["Pareto front"][h] for h in heads] == ["yes" if r["pareto"] else "no" for r in doc["ranking"]]


def test_calibration_rows_follow_calibration_json(two_candidates, tmp_path):
    code, out, err = run_cli("calibrate", f"{two_candidates}#base", f"{two_candidates}#same@1", "-o", str(tmp_path / "cal.json"), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert json.loads((tmp_path / "cal.json").read_text()) == doc
    rows = calibration_rows(doc).records()
    assert [(r["suite"], r["metric"], r["n"]) for r in rows] == [(s, v["metric"], v["n"]) for s, v in doc["suites"].items()]


def test_the_old_out_spelling_for_a_file_still_works_with_a_warning(two_candidates, tmp_path):
    code, out, err = run_cli("compare", str(two_candidates), "--out", str(tmp_path / "old.json"))
    assert code == 0 and (tmp_path / "old.json").is_file()
    assert "--out FILE is deprecated" in err and "-o/--output" in err
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"category": "general", "max_drop": 0.5}]}))
    code, out, err = run_cli("gate", "--candidate", f"{two_candidates}#same@1", "--policy", str(policy), "-o", str(tmp_path / "v.json"), "--json")
    assert code == 0 and json.loads((tmp_path / "v.json").read_text())["verdict"] == json.loads(out)["verdict"] == "pass", err


def _walk(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def test_every_json_and_format_flag_has_help_and_every_out_is_a_folder():
    from harness.cli import build_parser

    seen = 0
    for path, p in _walk(build_parser()):
        for a in p._actions:
            if "--json" in a.option_strings or "--output-format" in a.option_strings:
                seen += 1
                assert a.help and a.help != argparse.SUPPRESS, (path, a.option_strings)
            if "-o" in a.option_strings:
                assert "--output" in a.option_strings, (path, a.option_strings)
            if "--out" in a.option_strings and a.help and "deprecated" not in a.help:
                # --out always names a folder; a file is -o/--output
                assert "folder" in a.help, (path, a.help)
    assert seen >= 40


def test_parity_and_diversity_share_evals_flags_and_ranges():
    for bad in (["--batch-size", "0"], ["--max-length", "4"], ["--limit", "0"]):
        code, out, err = usage_error("parity", "x@1", "--out", "never", *bad)
        assert code == 2 and "out of range" in err, (bad, err)
    from harness.cli import build_parser

    subs = dict(next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)
    shared = {"--model", "--device", "--registry"}
    for cmd in ("eval", "parity", "diversity"):
        flags = {o for a in subs[cmd]._actions for o in a.option_strings}
        assert shared <= flags, cmd
    ev = subs["eval"].parse_args(["--suite", "s"])
    assert (ev.max_length, ev.batch_size, ev.registry, ev.model) == (defaults.MAX_LENGTH, defaults.BATCH_SIZE, defaults.REGISTRY, defaults.MODEL)
    pa = subs["parity"].parse_args(["x@1", "--out", "o"])
    assert (pa.max_length, pa.batch_size, pa.registry) == (ev.max_length, ev.batch_size, ev.registry)


def test_help_epilog_documents_the_usage_error_exit_code():
    from harness.cli import build_parser

    epilog = build_parser().epilog
    assert "2 inconclusive gate, or a usage error" in epilog and "usage:" in epilog
    code, out, err = usage_error("gate", "--no-such-flag")
    assert code == 2 and err.startswith("usage:") and out == ""


def test_the_gate_summary_table_is_the_shared_renderers_and_holds_the_verdict(two_candidates, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"category": "domain", "min_gain": 0.05}, {"suite": "general/facts", "max_drop": 0.5, "required": False}]}))
    code, out, err = run_cli("gate", "--candidate", f"{two_candidates}#strong@1", "--policy", str(policy), "-o", str(tmp_path / "v.json"),
                             "--summary", str(tmp_path / "s.md"), "--json")
    assert code == 0, err
    v = json.loads(out)
    [rules] = markdown_tables((tmp_path / "s.md").read_text())
    assert [(r["suite"], r["metric"]) for r in rules] == [(r["suite"], r["metric"]) for r in v["rules"]]
    assert [r["rule"].endswith("(advisory)") for r in rules] == [not r["required"] for r in v["rules"]]


def test_a_named_command_registers_only_its_group_and_the_map_matches_the_modules():
    """`laf eval ...` builds only the eval group's parsers (a fully cached run must not import the config models of
    merge, sweep and the rest); the command -> module map is exactly what each module registers, so it cannot drift."""
    import importlib

    from harness.cli import build_parser, commands

    registered = {}
    for module in commands.MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"harness.cli.{module}").register(sub)
        registered.update({name: module for name in sub.choices})
    assert registered == commands.COMMANDS
    assert set(dict(next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)) == set(registered)

    def names(argv):
        return set(next(a for a in build_parser(argv)._actions if isinstance(a, argparse._SubParsersAction)).choices)

    assert names(["eval", "--suite", "s"]) == {"eval", "suites"}
    assert names(["--debug", "compare", "r"]) == {"gate", "compare", "calibrate"}
    assert names(["schema", "results"]) == {"config", "schema"}
    for argv in ([], ["--help"], ["evaal"], ["-h", "eval"], ["--version"]):  # help and "invalid choice" list every command
        assert names(argv) == set(registered), argv
    args = build_parser(["gate", "--baseline", "a", "--candidate", "b", "--policy", "p"]).parse_args(
        ["gate", "--baseline", "a", "--candidate", "b", "--policy", "p"])
    assert (args.command, args.baseline, args.candidate) == ("gate", "a", "b")
    code, out, err = usage_error("evaal")
    assert code == 2 and "invalid choice" in err and "compare" in err and out == ""
