"""Hostile run folders and side files for `laf report`, `laf gate --curation`, `laf calibrate`.

Every file a user hands over is untrusted: a curation manifest of the wrong shape, an adapter manifest with
non-finite numbers, a training curve of junk, selection / trend files near the float limit, names full of
Markdown, a model named with '#', a run "folder" that is a file, optional artifacts that are symlinks. Each is
either one clear error (exit 3, the file and the field named) or, where the file is a nicety, left out; never a
traceback, a hang, a NaN shown as a score, or bare NaN / Infinity written into JSON.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from harness.results import seal_run
from tests.conftest import assert_clean_error, run_cli
from tests.synthetic import suite_meta, write_run

SUITES = {"dom": suite_meta("domain"), "gen": suite_meta("general")}


def _run(folder: Path, n: int = 40, models: dict[str, float] | None = None) -> Path:
    """A sealed synthetic run: base and ad@1 (or ``models``: name -> share of items right) on a domain and a general suite."""
    models = models or {"base": 0.5, "ad@1": 0.6}
    values = {m: {s: [1.0] * int(n * p) + [0.0] * (n - int(n * p)) for s in SUITES} for m, p in models.items()}
    return write_run(folder, SUITES, values)


def _edit_results(run: Path, edit=None, raw=None) -> Path:
    """Change results.json (``edit`` on the dict, or ``raw`` on its text) and re-seal, as anyone who can write the folder can."""
    text = (run / "results.json").read_text()
    if edit is not None:
        doc = json.loads(text)
        edit(doc)
        text = json.dumps(doc)
    if raw is not None:
        text = raw(text)
    (run / "results.json").write_text(text)
    seal_run(run)
    return run


def _strict_json(path: Path):
    """JSON as a strict reader sees it: bare NaN / Infinity is an error."""
    def refuse(name):
        raise ValueError(f"bare {name} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _no_non_finite_shown(html: str) -> None:
    text = re.sub(r"<script.*?</script>", "", html, flags=re.S)  # our own script and data island
    assert not re.search(r"[>\s(]-?(nan|inf)(%|<|\s|,)", text, re.I), re.search(r".{60}[>\s(]-?(nan|inf)(%|<|\s|,).{20}", text, re.I | re.S)
    assert not re.search(r'="[^"]*\b(nan|inf)\b', text, re.I), "a non-finite number in an SVG coordinate"


# ---------------------------------------------------------------- D2: curation.json and --curation


BAD_CURATION = {
    "list": ("[1, 2]", "expected a JSON object"),
    "counts_list": ('{"counts": [1, 2]}', "counts"),
    "count_text": ('{"counts": {"kept": "12"}}', "counts.kept"),
    "count_negative": ('{"counts": {"kept": -1}}', "counts.kept"),
    "suite_not_mapping": ('{"contamination": {"contaminated_item_share": 0, "suites": {"dom": 5}}}', "contamination.suites.dom"),
    "fingerprints_list": ('{"fingerprints": [1]}', "fingerprints"),
    "nan": ('{"counts": {"x": NaN}}', "NaN"),
    "inf_1e999": ('{"contamination": {"contaminated_item_share": 1e999, "suites": {}}}', "contamination.contaminated_item_share"),
    "share_nan_in_suite": ('{"contamination": {"contaminated_item_share": 0.1, "suites": {"dom": {"items": 4, "share": NaN}}}}', "NaN"),
    "share_negative": ('{"contamination": {"contaminated_item_share": -3, "suites": {"dom": {"items": 40}}}}', "contaminated_item_share"),
    "share_above_one": ('{"contamination": {"contaminated_item_share": 1.5, "suites": {}}}', "contaminated_item_share"),
    "share_text": ('{"contamination": {"contaminated_item_share": "abc", "suites": {}}}', "contaminated_item_share"),
    "items_text": ('{"contamination": {"contaminated_item_share": 0, "suites": {"dom": {"items": "x"}}}}', "contamination.suites.dom.items"),
    "more_contaminated_than_items": ('{"contamination": {"contaminated_item_share": 0, "suites": {"dom": {"items": 2, "contaminated_items": 3}}}}', "contaminated_items"),
    "deep": ("[" * 100000 + "]" * 100000, "nested too deeply"),
    "deep_but_parsable": ('{"x": ' + "[" * 200 + "]" * 200 + "}", "nested more than"),
}


@pytest.mark.parametrize("case", sorted(BAD_CURATION))
def test_report_refuses_a_curation_json_of_the_wrong_shape(tmp_path, case):
    text, needle = BAD_CURATION[case]
    run = _run(tmp_path / "run")
    (run / "curation.json").write_text(text)
    assert_clean_error(run_cli("report", str(run), "-o", str(tmp_path / "o.html")), "curation.json", needle)
    assert not (tmp_path / "o.html").exists()


def test_report_refuses_curation_bytes_folders_pipes_and_devices(tmp_path):
    for name, make, needle in (
        ("utf8", lambda p: p.write_bytes(b'{"counts": {"a": "\xff"}}'), "not UTF-8"),
        ("dir", lambda p: p.mkdir(), "not a plain file"),
        ("fifo", lambda p: os.mkfifo(p), "not a plain file"),  # never a hang
        ("zero", lambda p: p.symlink_to("/dev/zero"), "is a symlink"),  # never unbounded memory
    ):
        run = _run(tmp_path / name)
        make(run / "curation.json")
        assert_clean_error(run_cli("report", str(run), "-o", str(tmp_path / "o.html")), "curation.json", needle)
    # --curation names a file: a pipe or a device is refused there too
    fifo = tmp_path / "c.fifo"
    os.mkfifo(fifo)
    assert_clean_error(run_cli("report", str(tmp_path / "utf8"), "--curation", str(fifo)), "not a plain file")
    assert_clean_error(run_cli("report", str(tmp_path / "utf8"), "--curation", "/dev/zero"), "not a plain file")


def test_a_valid_curation_is_shown_and_the_json_report_stays_strict(tmp_path):
    run = _run(tmp_path / "run")
    (run / "curation.json").write_text(json.dumps({
        "schema": "laf.curation/1", "counts": {"kept": 12, "near_duplicate": 3},
        "contamination": {"ngram": 13, "contaminated_items": 1, "contaminated_item_share": 0.025, "skipped": [],
                          "suites": {"dom": {"items": 40, "contaminated_items": 1, "share": 0.025, "max_token_share": 0.5}}},
        "fingerprints": {"input_sha256": "ab" * 32}, "settings": {"ngram": 13}}))
    assert run_cli("report", str(run), "-o", str(tmp_path / "o.html"))[0] == 0
    html = (tmp_path / "o.html").read_text()
    assert "near_duplicate" in html and "2.50%" in html and "13-gram" in html
    assert run_cli("report", str(run), "--format", "json", "-o", str(tmp_path / "o.json"))[0] == 0
    d = _strict_json(tmp_path / "o.json")
    assert d["curation"]["contamination"]["suites"]["dom"]["share"] == 0.025 and d["curation"]["settings"] == {"ngram": 13}


def _contamination_policy(tmp_path: Path) -> Path:
    p = tmp_path / "pc.yaml"
    p.write_text(yaml.safe_dump({"max_contamination": 0.01, "rules": [{"category": "general", "max_drop": 0.1}]}))
    return p


@pytest.mark.parametrize("block, needle", [
    ('[1]', "expected a JSON object"),
    ('{"contamination": [1]}', "contamination"),
    ('{"contamination": {"contaminated_item_share": NaN, "suites": {"dom": {"items": 40}}}}', "NaN"),
    ('{"contamination": {"contaminated_item_share": -3, "suites": {"dom": {"items": 40}}}}', "contaminated_item_share"),
    ('{"contamination": {"contaminated_item_share": "abc", "suites": {"dom": {"items": 40}}}}', "contaminated_item_share"),
    ('{"contamination": {"contaminated_item_share": 0, "suites": {"dom": {"items": "x"}}}}', "contamination.suites.dom.items"),
])
def test_gate_curation_is_checked_before_a_verdict_is_written(tmp_path, block, needle):
    """A NaN share never reaches verdict.json, a negative one never passes: the manifest is one clear error."""
    run = _run(tmp_path / "run")
    cur = tmp_path / "c.json"
    cur.write_text(block)
    out = tmp_path / "v.json"
    assert_clean_error(run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(_contamination_policy(tmp_path)),
                               "--curation", str(cur), "-o", str(out)), "c.json", needle)
    assert not out.exists()


def test_gate_curation_folder_and_pipe_are_refused(tmp_path):
    run = _run(tmp_path / "run")
    fifo = tmp_path / "c.fifo"
    os.mkfifo(fifo)
    for cur in (tmp_path, fifo):
        assert_clean_error(run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(_contamination_policy(tmp_path)),
                                   "--curation", str(cur), "-o", str(tmp_path / "v.json")), "not a plain file")


def test_gate_with_a_valid_curation_writes_a_strict_verdict(tmp_path):
    run = _run(tmp_path / "run")
    cur = tmp_path / "c.json"
    cur.write_text(json.dumps({"contamination": {"ngram": 13, "contaminated_item_share": 0.5, "suites": {"dom": {"items": 40, "contaminated_items": 20, "share": 0.5}}}}))
    out = tmp_path / "v.json"
    code, _, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(_contamination_policy(tmp_path)), "--curation", str(cur), "-o", str(out))
    assert code == 1, err
    v = _strict_json(out)
    rule = next(r for r in v["rules"] if r["kind"] == "max_contamination")
    assert rule["status"] == "fail" and "50.00% of 40 evaluation items" in rule["message"]
    assert v["contamination"]["contaminated_item_share"] == 0.5


def test_evaluate_gate_checks_a_contamination_dict_handed_in():
    from harness.errors import LafError
    from harness.results.artifacts import check_contamination

    for bad in ({"contaminated_item_share": float("nan")}, {"contaminated_item_share": -0.5}, {"contaminated_item_share": 0.1, "suites": {"s": 3}}, [1]):
        with pytest.raises(LafError):
            check_contamination(bad)
    assert check_contamination({"contaminated_item_share": 0.0, "suites": {"s": {"items": 3}}})["suites"]["s"]["items"] == 3


# ---------------------------------------------------------------- D6: the adapter manifest and the training curve


@pytest.mark.parametrize("manifest", [
    {"data": "str", "config": [1]},
    {"config": {"lora": "x"}, "packages": "p", "hardware": [1]},
    {"steps": "3", "trainable_parameters": True, "total_parameters": 10**400, "final_train_loss": "low", "data": {"examples": [1]}},
])
def test_report_renders_a_manifest_of_wrong_types(tmp_path, manifest):
    run = _edit_results(_run(tmp_path / "run"), lambda d: d["models"]["ad@1"]["adapter"].update(manifest=manifest))
    code, _, err = run_cli("report", str(run), "-o", str(tmp_path / "o.html"))
    assert code == 0, err
    assert "Training" in (tmp_path / "o.html").read_text()


def test_non_finite_manifest_numbers_are_never_shown_or_written(tmp_path):
    run = _edit_results(_run(tmp_path / "run"), raw=lambda t: t.replace(
        '"manifest": null', '"manifest": {"final_train_loss": 1e999, "final_eval_loss": -1e999, "trainable_parameters": 1e999, '
                            '"total_parameters": 5, "steps": 3, "config": {"lr": 1e999}}', 1))
    assert run_cli("report", str(run), "-o", str(tmp_path / "o.html"))[0] == 0
    html = (tmp_path / "o.html").read_text()
    _no_non_finite_shown(html)
    assert "Infinity" not in html
    assert run_cli("report", str(run), "--format", "json", "-o", str(tmp_path / "o.json"))[0] == 0
    t = _strict_json(tmp_path / "o.json")["training"]
    assert t["final_train_loss"] is None and t["trainable_parameters"] is None and t["total_parameters"] == 5 and t["config"] == {"lr": None}


def test_training_curve_keeps_only_finite_numeric_points(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "metrics.jsonl").write_text("\n".join([
        '{"step": 1, "loss": NaN}', '{"step": 2, "loss": Infinity, "eval_loss": 1e999}', '{"step": "a", "loss": "b"}', '{"step": 3, "loss": [1]}',
        '[1, 2]', 'not json', '{"step": NaN, "loss": 1.0}', '{"step": 4, "loss": 2.5, "eval_loss": 2.0}', '{"step": true, "loss": 1}', "x" * 100_000,
    ]) + "\n")
    run = _edit_results(_run(tmp_path / "run"), lambda d: d["models"]["ad@1"]["adapter"].update(manifest={"steps": 4}, path=str(adapter)))
    assert run_cli("report", str(run), "--format", "json", "-o", str(tmp_path / "o.json"))[0] == 0
    curve = _strict_json(tmp_path / "o.json")["training"]["curve"]
    assert [c["step"] for c in curve] == [1, 2, 3, 4]
    assert [c["loss"] for c in curve] == [None, None, None, 2.5] and curve[1]["eval_loss"] is None
    code, _, err = run_cli("report", str(run), "-o", str(tmp_path / "o.html"))
    assert code == 0, err
    html = (tmp_path / "o.html").read_text()
    assert "Training loss" in html
    _no_non_finite_shown(html)


def test_training_curve_of_a_pipe_or_without_an_adapter_path_is_left_out(tmp_path, monkeypatch):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    os.mkfifo(adapter / "metrics.jsonl")  # never a hang
    run = _edit_results(_run(tmp_path / "run"), lambda d: d["models"]["ad@1"]["adapter"].update(manifest={"steps": 4}, path=str(adapter)))
    assert run_cli("report", str(run), "--format", "json", "-o", str(tmp_path / "o.json"))[0] == 0
    assert _strict_json(tmp_path / "o.json")["training"]["curve"] == []
    # no adapter path: never ./metrics.jsonl of wherever laf runs
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    _edit_results(run, lambda d: d["models"]["ad@1"]["adapter"].pop("path"))
    assert run_cli("report", str(run), "--format", "json", "-o", str(tmp_path / "o2.json"))[0] == 0
    assert _strict_json(tmp_path / "o2.json")["training"]["curve"] == []


# ---------------------------------------------------------------- D7: selection.json and trend.json


HUGE_RULES = [{"kind": "min_gain", "improvement": 1e308, "ci_low": -1e308, "ci_high": 1e308},
              {"kind": "max_drop", "improvement": 1e308, "ci_low": -1e308, "ci_high": 1e308}]
SIDE_FILES = {
    "selection_junk": ("selection.json", {"curve": [1, "a", None, {"step": "x", "rules": "y"}, {"step": 2, "rules": [1, {"kind": 3}]}], "suites": {"a": 1, "b": [2]}}),
    "selection_huge": ("selection.json", {"adapter": "ad@1", "chosen_step": 1, "curve": [{"step": 1, "rules": HUGE_RULES}, {"step": 2, "rules": HUGE_RULES}]}),
    "selection_1e999": ("selection.json", '{"adapter": "ad@1", "chosen_step": 1, "curve": [{"step": 1, "rules": [{"kind": "min_gain", "improvement": 1e999}]}]}'),
    "trend_huge": ("trend.json", {"schema": "laf.trend/1", "adapters": [{"name": "a", "candidate": "ad@1", "suites": ["dom"], "versions": [
        {"candidate": "ad@1", "verdict": "pass", "current": True, "suites": {"dom": {"metric": "acc", "value": 1e308, "ci_low": -1e308, "ci_high": 1e308}}},
        {"candidate": "ad@0", "suites": {"dom": {"metric": "acc", "value": -1e308, "ci_low": 1.0}}}]}]}),
    "trend_junk": ("trend.json", {"schema": "laf.trend/1", "adapters": [1, {"name": "a", "versions": [1, {"suites": {"dom": 3}, "released": "yes"}]}]}),
}


@pytest.mark.parametrize("case", sorted(SIDE_FILES))
def test_selection_and_trend_files_never_fail_the_report(tmp_path, case):
    name, doc = SIDE_FILES[case]
    run = _run(tmp_path / "run")
    (run / name).write_text(doc if isinstance(doc, str) else json.dumps(doc))
    code, _, err = run_cli("report", str(run), "-o", str(tmp_path / "o.html"))
    assert code == 0, err
    _no_non_finite_shown((tmp_path / "o.html").read_text())
    assert run_cli("report", str(run), "--format", "json", "-o", str(tmp_path / "o.json"))[0] == 0
    _strict_json(tmp_path / "o.json")  # no bare NaN / Infinity copied from the file


def test_charts_whose_span_overflows_are_left_out():
    from harness.report import svg
    from harness.report.sweep import chart, frontier_section, selection_section

    assert svg._nice_ticks(0.0, float("inf")) == [] and svg._nice_ticks(-1e308, 1e308) == [] and svg._nice_ticks(1e300, 1e300) == []
    assert svg.forest([{"label": "a", "value": 1e308, "lo": -1e308, "hi": 1e308, "verdict": None}], " pt", "t") == ""
    assert svg.forest([{"label": "a", "value": float("nan"), "lo": 0.0, "hi": 1.0, "verdict": None}], " pt", "t") == ""
    assert svg.pareto([{"label": "a", "x": 1e308, "y": -1e308, "front": True}, {"label": "b", "x": -1e308, "y": 1e308, "front": False}], "t") == ""
    assert svg.trend([{"label": "a", "value": 1e308, "lo": -1e308, "hi": 1e308}, {"label": "b", "value": -1e308}], "t") == ""
    assert svg.ideal_gauge("g", 0.0, 1.0, None, float("-inf"), float("inf")) == ""
    line = svg.line_chart([{"name": "loss", "points": [(1, 1e300), (2, float("nan")), ("3", 1.0), (4, 2.0)], "color": "#000"}], "t")
    assert line and "nan" not in line.lower()
    assert svg.line_chart([{"name": "loss", "points": [(1e300, 1.0), (1e300, 2.0)], "color": "#000"}], "t") == ""
    assert selection_section({"a": [1, "x", {"step": 1, "rules": HUGE_RULES}]}, {"a": 1}) == ""
    assert chart([{"name": "p", "domain": {"improvement": 1e308, "ci_low": -1e308, "ci_high": 1e308}}]) == ""
    front = {"points": [{"name": "p", "found": {"value": 1e308}, "lost": {"value": 1.0}, "verdict": "pass"}], "found": {"scale": 100}, "lost": {}}
    assert frontier_section(front) == ""


# ---------------------------------------------------------------- D13: Markdown from names


MD_NAME = "ad![p](https://evil.example/px.png)`x`**B**_u_[c](javascript:alert(1))"


def test_md_escape_makes_no_markup_and_keeps_plain_names():
    from harness.present import markdown_table, md_escape

    for plain in ("token_f1", "general/facts", "runs/eval#ad@1", "change (CI)", "+1.0 (−2.0 to +3.0)", "ad@1"):
        assert md_escape(plain) == plain
    esc = md_escape(MD_NAME + "\n# H|<b>\\")
    for raw in ("![", "`x`", "**B**", "_u_", "\n", "<b>"):
        assert raw not in esc
    assert not re.search(r"(?<!\\)[\[\]`*]", esc)  # every bracket, backtick and star escaped
    assert esc.endswith("\\\\") and "\\|" in esc
    mdi = pytest.importorskip("markdown_it")
    html = mdi.MarkdownIt("commonmark").enable("table").render("\n".join(markdown_table(["model", "x"], [[MD_NAME, "1"]])) + "\n\n" + esc + "\n")
    assert "<img" not in html and "<a " not in html and "<code>" not in html and "<strong>" not in html and "<em>" not in html and "<h1>" not in html
    assert "evil.example/px.png" in html  # the name is there, as text


def test_md_code_spans_hold_any_text():
    from harness.present import markdown_table, md_code

    mdi = pytest.importorskip("markdown_it")
    md = mdi.MarkdownIt("commonmark").enable("table")
    for text in ("a@1", "x`y", "`a``", "![p](https://evil.example/px.png)", "p|q"):
        html = md.render("\n".join(markdown_table(["ref"], [[md_code(text)]], escape=False)) + "\n")
        assert html.count("<code>") == 1 and "<img" not in html and "<a " not in html, (text, html)
    assert md_code("a@1") == "`a@1`"


def test_report_md_and_gate_summary_show_names_as_text(tmp_path):
    mdi = pytest.importorskip("markdown_it")
    md = mdi.MarkdownIt("commonmark").enable("table")
    run = _run(tmp_path / "run", models={"base": 0.5, MD_NAME: 0.6})
    assert run_cli("report", str(run), "--format", "md", "-o", str(tmp_path / "r.md"))[0] == 0  # not gated: the results table
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"min_items": 10, "rules": [{"category": "domain", "min_gain": 0.0}, {"category": "general", "max_drop": 0.05}]}))
    code, _, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy), "--summary", str(tmp_path / "s.md"))
    assert code in (0, 1, 2), err
    assert run_cli("report", str(run), "--format", "md", "-o", str(tmp_path / "g.md"))[0] == 0  # gated: the gate's summary
    for f in ("r.md", "s.md", "g.md"):
        html = md.render((tmp_path / f).read_text())
        assert "evil.example/px.png" in html, f
        assert "<img" not in html and "<a " not in html and "<em>" not in html, f
        assert "<strong>B" not in html and "<code>x</code>" not in html, f


# ---------------------------------------------------------------- D14: '#' in a model name, a run "folder" that is a file


def test_report_on_a_model_whose_name_holds_a_hash(tmp_path):
    run = _run(tmp_path / "run", models={"base": 0.5, "ad#x": 0.6})
    assert run_cli("report", str(run), "--format", "json", "-o", str(tmp_path / "o.json"))[0] == 0
    d = _strict_json(tmp_path / "o.json")
    assert d["candidate"] == "ad#x" and d["summaries"]["suites"]["dom"]["n"] == 40
    assert run_cli("report", str(run), "--candidate", "ad#x", "-o", str(tmp_path / "o.html"))[0] == 0


def test_report_on_a_run_folder_whose_path_holds_a_hash(tmp_path):
    run = _run(tmp_path / "h#x" / "run")
    code, _, err = run_cli("report", str(run), "--format", "json", "-o", str(tmp_path / "o.json"))
    assert code == 0, err
    assert _strict_json(tmp_path / "o.json")["summaries"]["suites"]["gen"]["n"] == 40


def test_a_run_folder_that_is_a_file_is_said_to_be_one(tmp_path):
    f = tmp_path / "afile"
    f.write_text("hi")
    assert_clean_error(run_cli("report", str(f)), "is a file, not a run folder", "laf eval --out")
    run = _run(tmp_path / "run")
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"category": "general", "max_drop": 0.05}]}))
    assert_clean_error(run_cli("gate", "--baseline", str(run), "--candidate", str(f), "--policy", str(policy)), "is a file, not a run folder")
    assert_clean_error(run_cli("gate", "--baseline", f"{f}#base", "--candidate", str(run), "--policy", str(policy)), "is a file, not a run folder")


# ---------------------------------------------------------------- D15: calibrate on too few items


def test_calibrate_warns_when_too_few_items_measure_the_noise(tmp_path):
    a, b = _run(tmp_path / "a", n=1, models={"base": 1.0}), _run(tmp_path / "b", n=1, models={"base": 1.0})
    code, out, err = run_cli("calibrate", str(a), str(b), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["warnings"]) == 2 and all("only 1 paired item" in w for w in doc["warnings"])
    assert all("not a measurement of noise" in s["warning"] for s in doc["suites"].values())
    assert "# WARNING: suite dom has only 1 paired item" in doc["suggested_policy_yaml"]
    assert yaml.safe_load(doc["suggested_policy_yaml"])["min_items"] == 30  # the comment keeps the YAML valid
    code, out, err = run_cli("calibrate", str(a), str(b))
    assert code == 0 and "WARNING: suite gen has only 1 paired item" in re.sub(r"\s+", " ", out), out
    # below min_items but enough to estimate something: still said
    c, e = _run(tmp_path / "c", n=10, models={"base": 0.5}), _run(tmp_path / "e", n=10, models={"base": 0.6})
    doc = json.loads(run_cli("calibrate", str(c), str(e), "--json")[1])
    assert doc["warnings"] and "min_items (30)" in doc["warnings"][0]


def test_calibrate_on_enough_items_has_no_warning(tmp_path):
    a, b = _run(tmp_path / "a", n=40, models={"base": 0.5}), _run(tmp_path / "b", n=40, models={"base": 0.55})
    code, out, err = run_cli("calibrate", str(a), str(b), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["warnings"] == [] and all("warning" not in s for s in doc["suites"].values()) and "WARNING" not in doc["suggested_policy_yaml"]


# ---------------------------------------------------------------- D16: optional artifacts that are symlinks


@pytest.mark.parametrize("name", ["sweep.json", "diversity.json", "parity.json", "parity/parity.json"])
def test_symlinked_optional_artifacts_are_refused(tmp_path, name):
    run = _run(tmp_path / "run")
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    (run / name).parent.mkdir(exist_ok=True)
    (run / name).symlink_to(target)
    assert_clean_error(run_cli("report", str(run), "-o", str(tmp_path / "o.html")), "is a symlink")


def test_symlinked_curation_in_the_run_folder_is_refused_but_a_named_one_is_read(tmp_path):
    run = _run(tmp_path / "run")
    elsewhere = tmp_path / "cur.json"
    elsewhere.write_text(json.dumps({"counts": {"kept_elsewhere": 7}}))
    (run / "curation.json").symlink_to(elsewhere)
    assert_clean_error(run_cli("report", str(run), "-o", str(tmp_path / "o.html")), "curation.json", "is a symlink")
    (run / "curation.json").unlink()
    assert run_cli("report", str(run), "--curation", str(elsewhere), "-o", str(tmp_path / "o.html"))[0] == 0
    assert "kept_elsewhere" in (tmp_path / "o.html").read_text()


def test_symlinked_selection_and_trend_are_never_followed(tmp_path):
    run = _run(tmp_path / "run")
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"adapter": "FROM-ELSEWHERE", "chosen_step": 1, "curve": [
        {"step": 1, "rules": [{"kind": "min_gain", "improvement": 0.1, "ci_low": 0.0, "ci_high": 0.2},
                              {"kind": "max_drop", "improvement": 0.0, "ci_low": -0.1, "ci_high": 0.1}]}]}))
    trend = tmp_path / "trend.json"
    trend.write_text(json.dumps({"schema": "laf.trend/1", "store": "TREND-ELSEWHERE", "adapters": [{"name": "a", "candidate": "ad@1", "suites": ["dom"], "versions": [
        {"candidate": "ad@1", "current": True, "suites": {"dom": {"metric": "acc", "value": 0.5}}}]}]}))
    (run / "selection.json").symlink_to(sel)
    (run / "trend.json").symlink_to(trend)
    assert run_cli("report", str(run), "-o", str(tmp_path / "o.html"))[0] == 0
    html = (tmp_path / "o.html").read_text()
    assert "FROM-ELSEWHERE" not in html and "TREND-ELSEWHERE" not in html
    # the same files copied in are shown (the refusal is of the link, not of the content)
    (run / "selection.json").unlink()
    (run / "trend.json").unlink()
    (run / "selection.json").write_text(sel.read_text())
    (run / "trend.json").write_text(trend.read_text())
    assert run_cli("report", str(run), "-o", str(tmp_path / "o.html"))[0] == 0
    html = (tmp_path / "o.html").read_text()
    assert "FROM-ELSEWHERE" in html and "TREND-ELSEWHERE" in html


def test_gate_refuses_a_symlinked_parity_json_found_in_the_run_folder(tmp_path):
    run = _run(tmp_path / "run")
    target = tmp_path / "parity.json"
    target.write_text(json.dumps({"adapter": "ad@1", "pairs": []}))
    (run / "parity.json").symlink_to(target)
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"parity": "merged", "max_kl": 0.01}]}))
    assert_clean_error(run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy), "-o", str(tmp_path / "v.json")), "is a symlink")
