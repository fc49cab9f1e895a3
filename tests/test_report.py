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
from tests.conftest import run_cli
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
        for i, line in enumerate(lines):
            r = json.loads(line)
            if r["doc_id"] < 3:
                r["prompt"] = f"Question {r['doc_id']} {PLANTED[r['doc_id']]}"
                r["choices"] = [PLANTED[(r["doc_id"] + 1) % 3], " no"]
                r["generation"] = PLANTED[(r["doc_id"] + 2) % 3]
            out.append(json.dumps(r))
        (run / "records.jsonl").write_text("\n".join(out) + "\n")
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
