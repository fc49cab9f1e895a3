"""The HTML report: self-contained, escaped, small at 10k items, and working in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.report import write_report
from harness.results import seal_run
from tests.conftest import assert_clean_error, run_cli
from tests.synthetic import suite_meta, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLANTED = ['<script>window.__pwned=1</script>', '<img src=x onerror="window.__pwned=2">', '"><svg onload=alert(3)>']

SUITES = {"domain/support": suite_meta("domain"), "general/facts": suite_meta("general"), "bias/crows": suite_meta("bias", "pct_stereotype", ideal=0.5),
          "hallucination/abstain": suite_meta("hallucination", "hallucination_rate", higher_is_better=False)}


def gated_run(tmp_path: Path, n: int = 120, planted: bool = True) -> Path:
    rng = np.random.default_rng(0)
    base = {s: (rng.random(n) < 0.5).astype(int).tolist() for s in SUITES}
    cand = {s: v.copy() for s, v in base.items()}
    cand["domain/support"] = (rng.random(n) < 0.9).astype(int).tolist()
    cand["general/facts"] = [x if rng.random() > 0.2 else 0 for x in base["general/facts"]]
    run = write_run(tmp_path / "run", SUITES, {"base": base, "cand@1": cand})
    if planted:  # put hostile text where model output and data go
        lines = (run / "records.jsonl").read_text().splitlines()
        out = []
        for _i, line in enumerate(lines):
            r = json.loads(line)
            if r["doc_id"] < 3:
                r["prompt"] = f"Question {r['doc_id']} {PLANTED[r['doc_id']]}"
                r["choices"] = [PLANTED[(r["doc_id"] + 1) % 3], " no"]
                r["generation"] = PLANTED[(r["doc_id"] + 2) % 3]
            out.append(json.dumps(r))
        (run / "records.jsonl").write_text("\n".join(out) + "\n")
        seal_run(run)  # the planted text stands in for what a model wrote
    policy = tmp_path / "gate.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"category": "domain", "min_gain": 0.1}, {"category": "general", "max_drop": 0.02},
                                                {"suite": "bias/crows", "max_increase": 0.05, "required": False}]}))
    code, _, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy))
    assert code == 1, err  # the general/facts drop breaks its max_drop rule
    return run


def test_report_is_self_contained_and_escapes_everything(tmp_path):
    run = gated_run(tmp_path)
    code, out, err = run_cli("report", str(run))
    assert code == 0, err
    html = (run / "report.html").read_text()
    assert "<script>window.__pwned" not in html and "<img src=x" not in html and "<svg onload" not in html
    assert len(re.findall(r"<script", html)) == 2  # the JSON data island and our own script
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html), "external reference"
    assert "url(http" not in html and "<link" not in html and "@import" not in html
    for section in ("Verdict", "What the adapter found", "Truthfulness and fairness", "Per-suite results", "Items that flipped", "Audit trail"):
        assert section in html
    assert "ideal 0.5" in html and "@media print" in html


def test_markdown_and_json_formats(tmp_path):
    run = gated_run(tmp_path)
    assert run_cli("report", str(run), "--format", "md")[0] == 0
    md = (run / "report.md").read_text()
    assert "lost-and-found gate" in md and "general/facts" in md
    assert run_cli("report", str(run), "--format", "json", "-o", str(tmp_path / "r.json"))[0] == 0
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["candidate"] == "cand@1" and d["verdict"]["verdict"] in ("pass", "fail", "inconclusive") and d["items"]


def test_ten_thousand_items_make_a_report_under_5_mb(tmp_path):
    run = gated_run(tmp_path, n=2500, planted=False)  # 4 suites x 2,500 = 10,000 items per model
    lines = (run / "records.jsonl").read_text().splitlines()
    long_prompt = "A fairly long question about the support manual of a router, with context. " * 6
    (run / "records.jsonl").write_text("\n".join(json.dumps({**json.loads(x), "prompt": long_prompt + json.loads(x)["prompt"]}) for x in lines) + "\n")
    seal_run(run)
    # a new evaluation in the folder makes the old verdict stale (the report refuses it): gate it again
    assert run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(tmp_path / "gate.yaml"))[0] in (0, 1, 2)
    path = write_report(run)
    size = path.stat().st_size
    assert size < 5 * 2**20, f"{size / 2**20:.1f} MB"
    d = json.loads(re.search(r"<script type='application/json' id='laf-data'>(.*?)</script>", path.read_text(), re.S).group(1))
    flips = sum(1 for it in d["items"] if it[2])
    assert flips > 500 and all(it[2] for it in d["items"][:flips])  # every flip kept, first


def test_empty_or_missing_run_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("report", str(tmp_path / "empty"))
    assert code == 3 and "not a finished evaluation run" in err and "Traceback" not in err


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.skip("headless Chromium not installed (Debian package 'chromium'; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.mark.browser
def test_report_in_headless_chromium(browser, tmp_path):
    run = gated_run(tmp_path)
    path = write_report(run)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors, requests, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    url = path.resolve().as_uri()
    page.goto(url)
    page.wait_for_selector("#items-list details")
    assert errors == [], errors
    assert [u for u in requests if u != url] == [], "the report made network requests"
    assert dialogs == [] and page.evaluate("window.__pwned === undefined")

    # the flip filter
    def flips_shown():
        return page.eval_on_selector_all("#items-list details", "els => els.map(e => e.getAttribute('data-flip'))")

    page.select_option("#flt-flip", "lost")
    lost = flips_shown()
    assert lost and set(lost) <= {"1", "3"}
    page.select_option("#flt-flip", "found")
    found = flips_shown()
    assert found and set(found) <= {"2", "4"}
    page.select_option("#flt-flip", "all")
    page.fill("#flt-q", "onerror")
    page.wait_for_timeout(400)
    shown = page.eval_on_selector_all("#items-list details", "els => els.length")
    assert shown >= 1
    first = page.locator("#items-list details").first
    first.locator("summary").click()
    first.locator(".body").wait_for()
    assert "onerror" in first.inner_text()  # hostile markup shows as text
    assert page.evaluate("window.__pwned === undefined")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("LAF_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["LAF_KEEP_SCREENSHOT"])

    # printing: the print stylesheet hides the interactive controls and the PDF comes out whole
    page.emulate_media(media="print")
    assert page.eval_on_selector("#flt-flip", "e => getComputedStyle(e.closest('.controls') || e).display") == "none"
    assert page.eval_on_selector("#verdict", "e => getComputedStyle(e).display") != "none"
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 2 and len(pdf) > 20_000
    assert requests == [url] or [u for u in requests if u != url] == [], "printing made network requests"
    page.close()


@pytest.mark.browser
def test_ten_thousand_item_report_opens_and_pages(browser, tmp_path):
    run = gated_run(tmp_path, n=2500, planted=False)
    path = write_report(run)
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("#items-list details")
    assert page.eval_on_selector_all("#items-list details", "els => els.length") == 25, "items are rendered a page at a time"
    page.click("#next")
    assert "page 2" in page.inner_text("#items-count")
    assert errors == []
    page.close()


# ---------------------------------------------------------------- hostile text in every field the report shows (issue 18, item 2)

TITLE_JS = "document.title='pwned'"
PAYLOADS = [
    f'<img src=x onerror="{TITLE_JS}">',
    f'"><svg onload="{TITLE_JS}">',
    f"'><img src=x onerror={TITLE_JS}>",
    f"javascript:{TITLE_JS}",
    f"</script><script>{TITLE_JS}</script>",
    f'<a href="javascript:{TITLE_JS}">click</a>',
    f'<iframe srcdoc="<script>parent.{TITLE_JS}</script>"></iframe>',
    "<style>body{display:none}</style>",
    f"<!-- --><details open ontoggle=\"{TITLE_JS}\">",
    f"<math><mtext><table><mglyph><style><img src=x onerror=\"{TITLE_JS}\">",
]
# a folder name cannot hold '/', so the run folder itself carries a payload without one
FOLDER_PAYLOAD = f"run <img src=x onerror={TITLE_JS}>"


def _payload(i: int, field: str) -> str:
    return f"{PAYLOADS[i % len(PAYLOADS)]} [{field}]"


def _rename(obj, mapping: dict, skip=("kind",)):
    """Every dict key and string value equal to an old name becomes the new name (a consistent rename across files)."""
    if isinstance(obj, dict):
        return {mapping.get(k, k): (v if k in skip else _rename(v, mapping, skip)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rename(x, mapping, skip) for x in obj]
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    return obj


@pytest.fixture(scope="module")
def real_tiny_run(tiny_model_dir, tmp_path_factory):
    """A real `laf train` + `laf eval` + `laf gate` of the tiny model: the files the payloads are planted into."""
    from harness.config import validate
    from harness.train import TrainConfig, train

    root = tmp_path_factory.mktemp("real-run")
    rows = [{"instruction": f"What is {i} plus {i}?", "output": f"{2 * i}"} for i in range(40)]
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = validate(TrainConfig, {"name": "toy", "model": str(tiny_model_dir), "data": {"path": str(root / "d.jsonl")}, "max_length": 64,
                                 "max_steps": 2, "optim": {"lr": 5e-3}, "registry": str(root / "reg"), "output_dir": str(root / "train")}, "t.yaml")
    ref = str(train(cfg).entry.ref)
    items = [{"question": f"What is {i} plus {i}?", "choices": [str(2 * i), str(2 * i + 1), "none"], "gold": 0} for i in range(30)]
    (root / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    task = {"output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{gold}}", "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    (root / "toy.yaml").write_text(yaml.safe_dump({"category": "general", "description": "toy sums", "data": {"path": "toy.jsonl"}, "task": task}))
    out = root / "run"
    code, _, err = run_cli("eval", "--model", str(tiny_model_dir), "--adapter", ref, "--registry", str(root / "reg"), "--suite", str(root / "toy.yaml"),
                           "--out", str(out), "--cache", str(root / "c.sqlite"), "--quiet", "--batch-size", "4")
    assert code == 0, err
    policy = root / "gate.yaml"
    policy.write_text(yaml.safe_dump({"min_items": 5, "rules": [{"name": "general holds", "suite": "toy", "max_drop": 0.5},
                                                                {"category": "general", "max_drop": 0.9, "required": False}]}))
    code, _, err = run_cli("gate", "--baseline", str(out), "--candidate", str(out), "--policy", str(policy))
    assert code in (0, 1, 2), err
    assert (out / "verdict.json").exists()
    return out, ref


def planted_run(real: Path, ref: str, dest_parent: Path) -> Path:
    """Copy the real run into a folder named with a payload and plant payloads in every field the report renders."""
    run = dest_parent / FOLDER_PAYLOAD
    shutil.copytree(real, run)
    (run / "results.sqlite").unlink(missing_ok=True)  # the report then reads records.jsonl, which we edit
    for extra in run.glob("report*"):
        extra.unlink()
    names = {ref: _payload(1, "adapter name"), "toy": _payload(2, "suite name"), "general": _payload(3, "category"), "acc": _payload(4, "metric")}
    results = _rename(json.loads((run / "results.json").read_text()), names)
    records = [_rename(json.loads(x), names) for x in (run / "records.jsonl").read_text().splitlines() if x.strip()]
    verdict = _rename(json.loads((run / "verdict.json").read_text()), names)
    # the base model's name: "base" is also a field name (summaries), so rename it where it names the model
    base = _payload(0, "base model name")
    results["models"] = {(base if m == "base" else m): v for m, v in results["models"].items()}
    results["results"] = {(base if m == "base" else m): v for m, v in results["results"].items()}
    for r in records:
        r["model"] = base if r["model"] == "base" else r["model"]
    verdict["baseline"]["model"] = base

    # provenance: model folder paths, cache path, command, machine, packages
    p = results["provenance"]
    p["base_model"].update(spec=_payload(5, "base spec / model folder path"), source=_payload(6, "base source"), fingerprint=_payload(7, "fingerprint"))
    p.update(cache=_payload(8, "cache path"), command=_payload(9, "command"), time=_payload(0, "time"), scoring_version=_payload(1, "scoring"),
             )  # batch_size / share_context are typed: a string there is refused (test_typed_provenance_fields_refuse_text)
    p["machine"] = {"hostname": _payload(4, "hostname"), _payload(5, "machine key"): _payload(6, "machine value")}
    p["packages"] = {**p.get("packages", {}), _payload(7, "package name"): _payload(8, "package version")}
    p["load"] = {**p["load"], "device": _payload(9, "device")}
    # suites
    for meta in results["suites"].values():
        meta.update(description=_payload(0, "suite description"), source=_payload(1, "suite source"), data_sha256=_payload(2, "suite data sha"))  # n_docs is typed (an int): text there is refused like provenance.batch_size
    for per_suite in results["results"].values():
        for metrics in per_suite.values():
            for r in metrics.values():
                r["stderr_note"] = _payload(5, "extra result field")  # n, value, stderr are typed numbers
    # the adapter: identity, weights, what it was trained on, its manifest (name, notes, base model, data path, config)
    cand = names[ref]
    info = results["models"][cand]
    info["identity"] = _payload(6, "identity")
    adapter_dir = run.parent / "adapter"
    adapter_dir.mkdir(exist_ok=True)
    (adapter_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 3.0 - s / 10}) + "\n" for s in range(1, 6)))
    manifest = dict(info["adapter"].get("manifest") or {})
    manifest.update(
        name=_payload(7, "manifest name"), description=_payload(8, "manifest notes"), notes=_payload(9, "manifest notes"), created=_payload(0, "created"),
        kind=_payload(1, "adapter kind"), base_model={"spec": _payload(2, "manifest base model"), "fingerprint": _payload(3, "manifest fp")},
        data={"path": _payload(4, "training data path"), "examples": _payload(5, "examples"), "schema": _payload(6, "schema"),
              "dropped": _payload(7, "dropped"), "dropped_reasons": {_payload(8, "drop reason"): 1}, "content_sha256": _payload(9, "data sha")},
        config={"lora": {"r": _payload(0, "lora r"), "target_modules": [_payload(1, "target module")]}, "note": _payload(2, "config value")},
        packages={_payload(3, "train package"): _payload(4, "train package version")}, hardware={"gpu": _payload(5, "hardware")},
        seed=_payload(6, "seed"), steps=_payload(7, "steps"), trainable_parameters=_payload(8, "trainable"), total_parameters=_payload(9, "total"),
        tokens_seen=_payload(0, "tokens"), final_train_loss=_payload(1, "final loss"), peak_memory_mb=_payload(2, "memory"))
    info["adapter"] = {**info["adapter"], "ref": _payload(3, "adapter ref"), "path": str(adapter_dir), "manifest": manifest,
                       "weights_sha256": _payload(4, "weights sha"), "trained_on": _payload(5, "trained on"), "forced_base_mismatch": True}
    (run / "results.json").write_text(json.dumps(results))
    # per-item records: prompts, choices, targets, generations
    for i, r in enumerate(records):
        r.update(prompt=_payload(i, "prompt"), choices=[_payload(i + 1, "choice"), _payload(i + 2, "choice 2"), "none"],
                 target=_payload(i + 3, "target"), generation=_payload(i + 4, "generation"))
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    seal_run(run)  # planted as if the evaluation had written it
    # the verdict: status, sentences, rule names, policy
    # statuses stay real: a verdict whose status its rules do not give is refused (test_trust_round3); payloads in
    # every free-text field, and the seal recomputed as an attacker with write access would (the renderer-level test
    # below plants payloads in the statuses too)
    for j, rule in enumerate(verdict["rules"]):
        rule.update(rule=_payload(8 + j, "rule name"), message=_payload(9 + j, "verdict sentence"))
    verdict["policy"].update(source=_payload(0, "policy path"), note=_payload(2, "policy field"))  # confidence is typed: text there is refused
    from harness.gate.verdict import seal_verdict

    (run / "verdict.json").write_text(json.dumps(seal_verdict(verdict)))
    # curation: paths, contamination, fingerprints; its numbers are typed (text there is refused: test_report_hostile),
    # so the payloads go in the rule names, the suite name and the paths
    (run / "curation.json").write_text(json.dumps({
        "counts": {_payload(4, "curation rule"): 3, _payload(5, "curation count"): 12, "kept": 12},
        "contamination": {"ngram": 13, "contaminated_item_share": 0.0, "suites": {_payload(7, "contaminated suite"): {
            "items": 10, "contaminated_items": 1, "share": 0.1}}},
        "fingerprints": {"input": _payload(1, "curation input path"), _payload(2, "fingerprint key"): _payload(3, "curation output path")},
    }))
    # a comparison of candidates, in compare.json's shape (`laf schema compare`): its numbers, ranks and statuses are
    # typed (text there is refused: tests/test_artifacts.py), so the payloads go in every text field
    cat, col = _payload(4, "compare category"), _payload(3, "compare column")
    cell = {"metric": _payload(1, "column metric"), "unit": _payload(2, "column unit"), "shown_as": _payload(3, "shown as"), "better": _payload(4, "better"),
            "change": 0.1, "ci_low": 0.0, "ci_high": 0.2, "improvement": 0.1, "improvement_ci": [0.0, 0.2], "p_value": 0.01}
    delta = {"metric": _payload(5, "delta metric"), "n": 10, "base": 0.5, "candidate": 0.6, "improvement": 0.1, "ci_low": 0.0, "ci_high": 0.2,
             "p_value": 0.01, "test": _payload(6, "delta test")}
    (run / "compare.json").write_text(json.dumps({
        "schema": "laf.compare/2", "baseline": {"ref": _payload(7, "compare baseline"), "model": _payload(8, "compare baseline model")},
        "confidence": 0.95, "categories": [cat],
        "columns": [{"key": col, "suites": [_payload(9, "column suite")], "metric": _payload(1, "column metric"), "unit": _payload(2, "column unit"),
                     "shown_as": _payload(3, "shown as"), "better": _payload(4, "better"), "rules": [_payload(0, "column rule")]}],
        "pareto_on": {"quantities": [col], "source": _payload(1, "pareto source"), "orientation": _payload(2, "pareto orientation")},
        "ranking": [{"candidate": _payload(6, "compare candidate"), "ref": _payload(7, "compare ref"), "model": _payload(8, "compare model"),
                     "identity": {_payload(9, "identity key"): _payload(0, "compare identity")}, "resolved_from": _payload(1, "resolved from"),
                     "merge": None, "columns": {col: cell}, "suites": {_payload(2, "compare suite"): delta},
                     "categories": {cat: {**delta, "suites": [_payload(3, "pooled suite")]}}, "verdict": "pass", "exit_code": 0,
                     "failed_rules": [_payload(5, "compare failed rule")], "rank": 1, "pareto": True, "domain_p_holm": 0.01}],
        "winner": {"candidate": _payload(9, "winner"), "reason": _payload(0, "winner reason"), "pairwise": {}},
    }))
    return run


TAG_WITH_HANDLER = re.compile(r"<[a-zA-Z][^<>]*\son[a-z]+\s*=", re.I)
JS_URL_ATTR = re.compile(r"""(href|src|action|formaction|srcdoc)\s*=\s*["']?\s*(javascript:|<)""", re.I)


def _assert_inert(html: str) -> None:
    """No markup from data: every payload is text, and the only scripts are ours."""
    assert "<img" not in html and "<iframe" not in html and "<math" not in html
    # only our own in-page links (the table of contents, the banner's pointer to the comparison)
    assert len(re.findall(r"<a\s", html, re.I)) == len(re.findall(r"""<a href=["']#[a-z-]+["']>""", html))
    assert not TAG_WITH_HANDLER.search(html), TAG_WITH_HANDLER.search(html).group(0)
    assert not JS_URL_ATTR.search(html)
    assert len(re.findall(r"<script", html)) == 2 and len(re.findall(r"<style", html)) == 1
    assert len(re.findall(r"<svg", html)) == len(re.findall(r'<svg class="chart', html))  # only our charts
    assert len(re.findall(r"<details", html)) == 0  # the drill-down builds its own with the DOM, never from HTML
    csp = re.search(r"Content-Security-Policy' content=\"([^\"]+)\"", html).group(1)
    assert "unsafe-inline" not in csp and "script-src 'sha256-" in csp and "unsafe-eval" not in csp


def test_render_html_of_a_dict_full_of_payloads_is_inert():
    """Unit level: the renderer alone, fed payloads in every string of the report dict."""
    from harness.report.html import render_html

    counter = iter(range(10**6))

    def plant(obj, key=""):
        if isinstance(obj, dict):
            return {k: plant(v, k) for k, v in obj.items()}
        if isinstance(obj, list):
            return [plant(x, key) for x in obj]
        if isinstance(obj, str):
            return _payload(next(counter), key)
        return obj

    d = {
        "schema": "laf.report/1", "generated": _payload(0, "generated"), "run_dir": _payload(1, "run dir"), "baseline": _payload(2, "b"), "candidate": _payload(3, "c"),
        "models": {_payload(2, "b"): {"identity": _payload(4, "id"), "adapter": None},
                   _payload(3, "c"): {"identity": _payload(5, "id"), "adapter": {"ref": _payload(6, "ref"), "forced_base_mismatch": True, "trained_on": _payload(7, "t"),
                                                                                   "weights_sha256": _payload(8, "w")}}},
        "suites": {_payload(9, "suite"): {"category": _payload(0, "cat"), "description": _payload(1, "desc"), "source": _payload(2, "src"),
                                          "metrics": {"acc": {"higher_is_better": True, "ideal": None}}, "primary_metric": "acc", "n_docs": _payload(3, "n"),
                                          "data_sha256": _payload(4, "sha"), "seed": _payload(5, "seed")}},
        "results": {_payload(2, "b"): {_payload(9, "suite"): {"acc": {"value": _payload(6, "v"), "stderr": _payload(7, "se"), "n": _payload(8, "n")}}},
                    _payload(3, "c"): {_payload(9, "suite"): {"acc": {"value": 0.5, "stderr": 0.1, "n": 10}}}},
        "provenance": plant({"base_model": {"spec": "x", "source": "x", "fingerprint": "x"}, "load": {"precision": "x"}, "batch_size": "x", "max_length": "x",
                             "scoring_version": "x", "share_context": "x", "time": "x", "command": "x", "machine": {"h": "x"}, "cache": "x", "packages": {"p": "x"}}),
        "spec": None,
        "verdict": {"verdict": _payload(0, "verdict"), "baseline": {"model": _payload(2, "b")}, "candidate": {"model": _payload(3, "c")},
                    "policy": {"source": _payload(1, "policy"), "confidence": _payload(2, "conf")},
                    "rules": [{"status": _payload(3, "status"), "required": True, "rule": _payload(4, "rule"), "suite": _payload(5, "s"), "metric": _payload(6, "m"),
                               "message": _payload(7, "msg")}]},
        "summaries": {"suites": {}, "categories": {_payload(8, "cat"): {"suites": [_payload(9, "s")], "n": _payload(0, "n"), "improvement": _payload(1, "i"),
                                                                          "ci_low": 0.0, "ci_high": 0.1}}},
        "compare": {"categories": [_payload(2, "cc")], "ranking": [{"rank": _payload(3, "r"), "candidate": _payload(4, "c"), "pareto": True, "domain_p_holm": _payload(5, "p"),
                                                                   "verdict": _payload(6, "v"), "categories": {}}], "winner": {"candidate": _payload(7, "w"), "reason": _payload(8, "r")}},
        "training": {"ref": _payload(9, "ref"), "curve": [], **plant({"kind": "x", "created": "x", "trainable_parameters": "x", "total_parameters": "x", "seed": "x",
                                                                      "data": {"path": "x", "examples": "x"}, "config": {"lora": {"r": "x"}}, "packages": {"p": "x"},
                                                                      "hardware": {"h": "x"}, "tokens_seen": "x", "supervised_tokens_seen": "x"})},
        "curation": plant({"counts": {"a": "x"}, "contamination": {"ngram": "x", "suites": {"s": {"items": "x", "contaminated_items": "x", "share": "x"}}},
                           "fingerprints": {"f": "x"}}),
        "items": [[0, 0, 1, _payload(1, "prompt"), [_payload(2, "choice")], _payload(3, "target"), [-1.0], [-2.0], 0, 0, 1, 0, _payload(4, "gen"), _payload(5, "gen")]],
        "item_stats": {"items": 1, "lost": 1, "found": 0, "included": 1, "truncated": False},
    }
    d["curation"]["counts"][_payload(6, "count key")] = _payload(7, "count value")
    html = render_html(d)
    _assert_inert(html)
    for p in PAYLOADS[:3]:
        assert escape_html(p) in html  # the payload is there, as text


def escape_html(s: str) -> str:
    from html import escape

    return escape(s, quote=True)


def test_typed_provenance_fields_refuse_text(real_tiny_run, tmp_path):
    """A number field holding markup is not rendered at all: the report refuses the document, naming the field."""
    real, _ = real_tiny_run
    run = tmp_path / "run"
    shutil.copytree(real, run)
    doc = json.loads((run / "results.json").read_text())
    doc["provenance"]["batch_size"] = PAYLOADS[0]
    (run / "results.json").write_text(json.dumps(doc))
    assert_clean_error(run_cli("report", str(run), "-o", str(tmp_path / "r.html")), "provenance.batch_size")
    assert not (tmp_path / "r.html").exists()


def test_report_of_a_planted_real_run_is_inert(real_tiny_run, tmp_path):
    run = planted_run(*real_tiny_run, tmp_path)
    code, _, err = run_cli("report", str(run))
    assert code == 0, err
    html = (run / "report.html").read_text()
    _assert_inert(html)
    for field in ("adapter name", "suite name", "cache path", "base spec / model folder path", "training data path", "adapter ref", "target module",
                  "train package", "hardware", "rule name", "verdict sentence", "policy path", "policy field", "curation count",
                  "curation input path", "contaminated suite", "category", "hostname", "winner reason", "compare candidate"):
        assert f"[{field}]" in html.lower(), f"the planted field {field!r} is not rendered, so the test does not cover it"
    assert "[suite description]" not in html  # shown only for probe suites (hallucination, bias); this suite is general


@pytest.mark.browser
def test_planted_payloads_never_run_in_headless_chromium(browser, real_tiny_run, tmp_path):
    from html import unescape

    run = planted_run(*real_tiny_run, tmp_path)
    path = write_report(run)
    html = path.read_text()
    title = unescape(re.search(r"<title>(.*?)</title>", html, re.S).group(1))
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors, dialogs, requests = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    url = path.resolve().as_uri()
    page.goto(url)
    assert page.evaluate("document.title") == title, "a planted payload ran while the page loaded"
    page.wait_for_selector("#items-list details", state="attached")
    # open every item and every page so the drill-down renders each prompt, choice, target and generation
    page.select_option("#flt-flip", "all")
    while True:
        page.eval_on_selector_all("#items-list details", "els => els.forEach(d => { d.open = true; })")
        page.wait_for_timeout(50)
        if page.is_disabled("#next"):
            break
        page.eval_on_selector("#next", "b => b.click()")
    page.eval_on_selector("#flt-q", "e => { e.value = 'onerror'; e.dispatchEvent(new Event('input')); }")
    page.wait_for_timeout(300)
    page.wait_for_timeout(300)
    assert page.title() == title and page.title() != "pwned"
    assert page.evaluate("document.title") == title
    assert dialogs == [] and errors == [], (dialogs, errors)
    assert [u for u in requests if u != url] == [], requests
    assert page.evaluate("document.querySelectorAll('img, iframe, math, a[href^=javascript], [onerror], [onload], [ontoggle]').length") == 0
    text = page.inner_text("body")
    for p in PAYLOADS:
        assert p in text, f"{p!r} is not shown as text"
    # a planted rule status cannot reach the page any more: the report refuses a verdict whose statuses are not its own
    assert "[verdict sentence]" in text and "[training data path]" in text
    page.close()


# ---------------------------------------------------------------- the found-vs-lost chart: colour = the row's verdict (issue 29, part 5)

HEX = {"#1a7f37": "green", "#cf222e": "red", "#9a6700": "amber", "#6e7781": "grey"}
EXPECTED_COLOUR = {"pass": "green", "fail": "red", "inconclusive": "amber", "better": "green", "worse": "red", "unclear": "grey"}


def verdict_chart_run(tmp_path: Path) -> tuple[Path, dict]:
    """A gated run whose rows cover every case: a pass, a fail, a passing lower-is-better row whose rate went UP within its
    margin (negative improvement, interval below zero: drawn red before), decided by a category rule pooled over it,
    and a row no rule covers."""
    rng = np.random.default_rng(1)
    n = 2000
    base = {s: (rng.random(n) < 0.5).astype(int).tolist() for s in SUITES}
    cand = {s: list(v) for s, v in base.items()}
    cand["domain/support"] = (rng.random(n) < 0.9).astype(int).tolist()
    cand["general/facts"] = [x if rng.random() > 0.2 else 0 for x in base["general/facts"]]
    cand["hallucination/abstain"] = [1 if (x == 0 and rng.random() < 0.06) else x for x in base["hallucination/abstain"]]  # ~+3 points
    run = write_run(tmp_path / "run", SUITES, {"base": base, "cand@1": cand})
    policy = tmp_path / "gate.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"category": "domain", "min_gain": 0.1}, {"category": "general", "max_drop": 0.02},
                                                {"category": "hallucination", "max_increase": 0.10, "pooled": True}]}))
    code, _, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy))
    assert code == 1, err
    v = json.loads((run / "verdict.json").read_text())
    want = {"domain/support": "pass", "general/facts": "fail", "hallucination/abstain": "pass", "bias/crows": "unclear"}
    got_rules = {r["suite"]: r["status"] for r in v["rules"]}
    assert got_rules == {"domain/support": "pass", "general/facts": "fail", "hallucination (pooled)": "pass"}
    assert v["summaries"]["suites"]["hallucination/abstain"]["ci_high"] < 0  # the rate went up: the row's interval is left of zero
    return run, want


def _chart_rows_from_html(html: str) -> dict:
    rows = {}
    for m in re.finditer(r'<g class="frow" data-verdict="(\w+)">(.*?)</g>', html, re.S):
        label = re.search(r'class="lab">([^<]+)</text>', m.group(2)).group(1)
        stroke = re.search(r'class="fbar"[^>]*stroke="(#[0-9a-f]{6})"', m.group(2)).group(1)
        rows[label] = (m.group(1), HEX[stroke])
    return rows


def test_found_lost_rows_are_coloured_by_their_verdict(tmp_path):
    run, want = verdict_chart_run(tmp_path)
    rows = _chart_rows_from_html(write_report(run).read_text())
    assert {k: v[0] for k, v in rows.items()} == want
    for label, (verdict, colour) in rows.items():
        assert colour == EXPECTED_COLOUR[verdict], (label, verdict, colour)


@pytest.mark.browser
def test_found_lost_bar_colours_match_the_verdicts_in_chromium(browser, tmp_path):
    run, want = verdict_chart_run(tmp_path)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(write_report(run).resolve().as_uri())
    page.wait_for_selector("g.frow")
    shown = page.eval_on_selector_all("g.frow", """els => els.map(g => ({
        label: g.querySelector('text.lab').textContent, verdict: g.getAttribute('data-verdict'),
        text: g.querySelector('tspan.fverdict').textContent,
        bar: getComputedStyle(g.querySelector('line.fbar')).stroke, dot: getComputedStyle(g.querySelector('circle.fdot')).fill,
        word: getComputedStyle(g.querySelector('tspan.fverdict')).fill}))""")
    rgb = {"green": "rgb(26, 127, 55)", "red": "rgb(207, 34, 46)", "amber": "rgb(154, 103, 0)", "grey": "rgb(110, 119, 129)"}
    words = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", "better": "no rule: better", "worse": "no rule: worse",
             "unclear": "no rule: no clear change"}
    assert {r["label"]: r["verdict"] for r in shown} == want
    for r in shown:
        colour = rgb[EXPECTED_COLOUR[r["verdict"]]]
        assert r["text"] == words[r["verdict"]], r  # the verdict the row shows ...
        assert r["bar"] == r["dot"] == r["word"] == colour, r  # ... is the colour it is drawn in
    page.close()


def test_a_rule_on_a_secondary_metric_gets_its_own_row_with_its_verdict(tmp_path):
    """The abstention suite's primary metric (hallucination_rate) improves while the policy's rule on its other metric
    (abstention_rate) fails: the chart shows both rows, the gated one red with the rule's own numbers, so the FAIL is
    never hidden behind an improving primary metric (seen on the real quickstart-preserve run)."""
    rng = np.random.default_rng(3)
    n = 400
    suites = {"domain/support": suite_meta("domain"), "hallucination/abstain": suite_meta("hallucination", "hallucination_rate", higher_is_better=False)}
    suites["hallucination/abstain"]["metrics"]["abstention_rate"] = {"higher_is_better": True, "ideal": None, "aggregation": "mean"}
    base = {"domain/support": (rng.random(n) < 0.4).astype(int).tolist(), "hallucination/abstain": (rng.random(n) < 0.5).astype(int).tolist()}
    cand = {"domain/support": (rng.random(n) < 0.9).astype(int).tolist(), "hallucination/abstain": [0 if rng.random() < 0.3 else x for x in base["hallucination/abstain"]]}
    abstain = {"base": (rng.random(n) < 0.9).astype(int).tolist(), "cand@1": None}
    abstain["cand@1"] = [0 if rng.random() < 0.3 else x for x in abstain["base"]]  # abstention drops ~27 points
    run = write_run(tmp_path / "run", suites, {"base": base, "cand@1": cand})
    lines = []
    counters: dict = {}
    for line in (run / "records.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["suite"] == "hallucination/abstain":
            i = counters.setdefault(rec["model"], 0)
            rec["metrics"]["abstention_rate"] = abstain[rec["model"]][i]
            counters[rec["model"]] = i + 1
        lines.append(json.dumps(rec))
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    doc = json.loads((run / "results.json").read_text())
    for m in ("base", "cand@1"):
        doc["results"][m]["hallucination/abstain"]["abstention_rate"] = {"value": sum(abstain[m]) / n, "stderr": None, "n": n}
    (run / "results.json").write_text(json.dumps(doc))
    seal_run(run)
    policy = tmp_path / "gate.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"category": "domain", "min_gain": 0.1},
                                                {"suite": "hallucination/abstain", "metric": "abstention_rate", "max_drop": 0.10}]}))
    code, _, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy))
    assert code == 1, err
    v = json.loads((run / "verdict.json").read_text())
    gated = next(r for r in v["rules"] if r["metric"] == "abstention_rate")
    assert gated["status"] == "fail" and v["summaries"]["suites"]["hallucination/abstain"]["improvement"] > 0
    html = write_report(run).read_text()
    rows = []
    for m in re.finditer(r'<g class="frow" data-verdict="(\w+)">(.*?)</g>', html, re.S):
        label = re.search(r'class="lab">([^<]+)</text>', m.group(2)).group(1)
        sub = re.search(r'</tspan>([^<]*)</text>', m.group(2)).group(1)
        stroke = re.search(r'class="fbar"[^>]*stroke="(#[0-9a-f]{6})"', m.group(2)).group(1)
        value = float(re.search(r'class="val" text-anchor="end">([^<]+)<', m.group(2)).group(1))
        rows.append((label, sub.split("·")[-1].strip(), m.group(1), HEX[stroke], value))
    abst = [r for r in rows if r[0] == "hallucination/abstain"]
    assert [r[1] for r in abst] == ["hallucination_rate", "abstention_rate (gated)"]
    assert abst[0][2] in ("better", "unclear") and abst[0][4] > 0  # the primary metric, no rule on it: improved
    assert abst[1][2] == "fail" and abst[1][3] == "red"
    assert abst[1][4] == pytest.approx(100 * gated["stats"]["improvement"], rel=1e-2)  # the rule's own numbers
